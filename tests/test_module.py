"""PromptBartModule: real Trainer run on contract batches, checkpoint round trip, guards, config."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ehrgen.config import CONFIG_DIR
from ehrgen.errors import InputError
from ehrgen.models.losses import cooc_from_tensors
from ehrgen.module import (
    PromptBartModule,
    half_prefix_length,
    mask_spans,
    vocab_layout,
    warmup_length,
    warmup_linear_decay,
)

N_CODES = 20
TOKENIZER = {"kind": "flat", "codes": [f"{400 + i}" for i in range(N_CODES)], "min_count": 1}
HIER_TOKENIZER = {"kind": "hierarchical", "categories": ["401", "402"], "codes": ["4010", "4011", "4020"]}


def model_config(overrides: list[str] | None = None, name: str = "flat") -> DictConfig:
    """The real conf/model/<name>.yaml, shrunk to the tiny size."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=[f"+model={name}", "model/size=tiny", *(overrides or [])])
    return cfg.model


def make_batch(n: int = 4, seed: int = 0, vocab: int = 7 + N_CODES) -> dict[str, torch.Tensor]:
    """Synthetic batch to the DataModule contract: ``<s> (<v> codes <\\v>)+ </s>``, right-padded."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(n):
        seq = [0]
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            k = int(torch.randint(1, 4, (1,), generator=g))
            seq += [4, *torch.randperm(vocab - 7, generator=g)[:k].add(7).tolist(), 5]
        seqs.append([*seq, 2])
    width = max(map(len, seqs))
    clean = torch.full((n, width), 1, dtype=torch.long)
    for i, s in enumerate(seqs):
        clean[i, : len(s)] = torch.tensor(s)
    mask = (clean != 1).long()
    corrupted = clean.masked_fill((torch.rand(clean.shape, generator=g) < 0.3) & (clean >= 7), 6)
    return {
        "input_ids": corrupted,
        "attention_mask": mask,
        "decoder_input_ids": clean[:, :-1],
        "decoder_attention_mask": mask[:, :-1],
        "labels": clean[:, 1:].masked_fill(clean[:, 1:] == 1, -100),
        "age": torch.rand(n, generator=g) * 80 + 10,
        "sex": torch.randint(0, 2, (n,), generator=g),
    }


def cooc_matrix(n: int = N_CODES) -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 30, size=(n, n))  # cells below and above the small-cell rule's 11
    counts = np.triu(counts, 1)
    return sp.csr_matrix(counts + counts.T)


class ListDataModule(LightningDataModule):
    """Fixed batches; records ``set_epoch`` calls like the streaming DataModule would receive."""

    def __init__(self, train: list[dict], val: list[dict]) -> None:
        super().__init__()
        self.train, self.val, self.epochs = train, val, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=None)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[PromptBartModule, Trainer, ListDataModule, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("fit")
    # No fractional cap here: the schedule test below checks a plain 10-step warmup.
    overrides = ["model.warmup_steps=10", "model.warmup_fraction=null"]
    module = PromptBartModule(model_config(overrides), TOKENIZER, cooc_matrix())
    data = ListDataModule([make_batch(seed=s) for s in range(3)], [make_batch(seed=10 + s) for s in range(2)])
    trainer = Trainer(
        max_steps=3,
        accelerator="cpu",
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data)
    return module, trainer, data, root


def test_component_losses_logged_on_logging_steps_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = PromptBartModule(model_config(), TOKENIZER, cooc_matrix())
    data = ListDataModule([make_batch(seed=s) for s in range(4)], [make_batch(seed=10)])
    trainer = Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=2,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    rows = pl.read_csv(Path(trainer.logger.log_dir) / "metrics.csv").drop_nulls("train/loss")
    assert rows["step"].to_list() == [1, 3]
    for name in ("lm", "age", "sex", "cooc"):
        assert rows[f"train/{name}"].null_count() == 0, name


def test_trainer_runs_and_logs(trained: tuple) -> None:
    module, trainer, data, _ = trained
    assert trainer.global_step == 3
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/lm", "train/age", "train/sex", "train/cooc", "val/loss", "val/lm"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert float(metrics["train/cooc"]) > 0  # the matrix is installed and the regulariser active
    assert 1.0 < float(metrics["val/perplexity"]) < 10 * N_CODES
    for key in ("val/token_acc", "val/code_acc", "val/recon_jaccard"):
        assert 0.0 <= float(metrics[key]) <= 1.0, key
    assert data.epochs == [0]


def test_optimizer_groups_and_schedule(trained: tuple) -> None:
    module, trainer, _, _ = trained
    decay, no_decay = trainer.optimizers[0].param_groups
    assert decay["weight_decay"] == pytest.approx(0.01) and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for name, p in module.named_parameters():
        is_norm = "layernorm" in name.lower() or "layer_norm" in name.lower()
        assert (id(p) in no_decay_ids) == (name.endswith("bias") or is_norm), name
    # 3 steps into a 10-step warmup: lr factor 4/10 (the first step is never at lr 0).
    assert decay["lr"] == pytest.approx(float(module.cfg["lr"]) * 0.4)
    assert warmup_linear_decay(0, 10, 100) == pytest.approx(0.1)
    assert warmup_linear_decay(10, 10, 100) == pytest.approx(1.0)
    assert warmup_linear_decay(55, 10, 100) == pytest.approx(0.5)
    assert warmup_linear_decay(100, 10, 100) == 0.0
    assert warmup_linear_decay(10**6, 10, math.inf) == 1.0


def test_detached_time_head_does_not_change_the_codes_clipping() -> None:
    torch.manual_seed(0)
    module = PromptBartModule(model_config(), TOKENIZER, cooc_matrix())
    assert module.model.time_head is not None and module.model.visit_times_detach
    head = {id(p) for p in module.model.time_head.parameters()}
    out = module.model(**{k: v for k, v in make_batch().items() if k != "labels"})
    (out.logits.square().mean() + out.gap_logits.square().mean() + out.stay_logits.square().mean()).backward()
    grads = {id(p): p.grad.clone() for p in module.parameters() if p.grad is not None}
    assert head & grads.keys() and grads.keys() - head

    def clipped_trunk(head_scale: float) -> list[torch.Tensor]:
        for p in module.parameters():
            if id(p) in grads:
                p.grad = grads[id(p)] * (head_scale if id(p) in head else 1.0)
        module.configure_gradient_clipping(None, 1e-3, "norm")
        head_norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in module.model.time_head.parameters()])
        )
        assert head_norm <= 1e-3 * (1 + 1e-5)
        return [p.grad.clone() for p in module.parameters() if id(p) in grads and id(p) not in head]

    small, large = clipped_trunk(1.0), clipped_trunk(1e3)
    # a global norm would shrink the trunk's step when the head's gradient grows
    assert all(torch.equal(a, b) for a, b in zip(small, large, strict=True))
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in small])) == pytest.approx(1e-3, rel=1e-4)


def test_warmup_length_caps_short_runs() -> None:
    assert warmup_length(1000, 0.1, 300) == 30  # a short run leaves warmup after 10%
    assert warmup_length(1000, 0.1, 10**6) == 1000  # a long one keeps warmup_steps
    assert warmup_length(1000, None, 300) == 1000
    assert warmup_length(1000, 0.1, math.inf) == 1000  # unknown length: no cap
    assert warmup_length(1000, 0.0, 300) == 0
    with pytest.raises(InputError, match="warmup_fraction"):
        warmup_length(10, 1.5, 100)
    with pytest.raises(InputError, match="warmup_steps"):
        warmup_length(-1, 0.1, 100)


def test_default_config_schedule_leaves_warmup_on_short_runs() -> None:
    cfg = model_config()
    assert cfg.warmup_steps == 1000 and cfg.warmup_fraction == pytest.approx(0.1)
    module = PromptBartModule(cfg, TOKENIZER)
    module.trainer = SimpleNamespace(estimated_stepping_batches=200)  # what configure_optimizers reads
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factor = scheduler.lr_lambdas[0]
    # warmup = min(1000, 0.1 * 200) = 20 steps, then linear decay to 0 at step 200
    assert factor(0) == pytest.approx(1 / 20)
    assert factor(19) == pytest.approx(1.0)
    assert factor(110) == pytest.approx(0.5)
    assert factor(200) == 0.0


def test_checkpoint_round_trip_weights_only(trained: tuple) -> None:
    module, trainer, _, root = trained
    path = root / "manual.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    payload = raw["ehrgen"]
    assert payload["tokenizer"] == TOKENIZER
    assert payload["config"]["net"]["d_model"] == 64
    assert isinstance(payload["cooc"]["indices"], torch.Tensor)
    assert raw["hyper_parameters"]["tokenizer"] == TOKENIZER
    # Lightning's own checkpoint (ModelCheckpoint) must load the same way.
    saved = list((root / "checkpoints").glob("*.ckpt"))
    assert saved and torch.load(saved[0], weights_only=True, map_location="cpu")["ehrgen"]

    restored = PromptBartModule.load(path)
    assert restored.loss_fn.n_codes == N_CODES
    # the checkpoint's co-occurrence follows the small-cell rule: counts 1..10 are suppressed
    shared = cooc_from_tensors(payload["cooc"])
    assert shared.data.min() >= 11 and shared.nnz < sp.csr_matrix(cooc_matrix()).nnz
    reference = PromptBartModule(model_config(), TOKENIZER, cooc_matrix().multiply(cooc_matrix() >= 11))
    assert torch.equal(restored.loss_fn.frequent().to_dense(), reference.loss_fn.frequent().to_dense())
    module.eval()
    restored.eval()
    batch = make_batch(seed=99)
    with torch.no_grad():
        torch.testing.assert_close(restored(batch).logits, module(batch).logits)


def test_non_finite_loss_names_the_step() -> None:
    module = PromptBartModule(model_config(), TOKENIZER)
    batch = make_batch()
    batch["age"][0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"global step 0.*learning rate.*fp16"):
        module.training_step(batch, 0)


def test_reconstruction_prefix_and_sets() -> None:
    is_code = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    # Row 0: 4 codes, 2 given -> prefix ends after the 2nd code (index 3). Row 1: 1 code, none given.
    assert half_prefix_length(is_code).tolist() == [4, 1]
    seq = torch.tensor([[0, 4, 7, 8, 9, 5, 4, 10, 5, 2], [0, 4, 7, 5, 2, 1, 1, 1, 1, 1]])
    hidden = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert mask_spans(seq, hidden).tolist() == [[0, 4, 7, 6, 5, 4, 6, 5, 2], [0, 4, 6, 5, 2, 1, 1, 1, 1]]

    torch.manual_seed(0)
    module = PromptBartModule(model_config(), TOKENIZER).eval()
    batch = make_batch(n=3, seed=5)
    preds, targets = module.reconstruct(batch)
    assert len(preds) == len(targets) == 3
    seq = torch.cat([batch["decoder_input_ids"][:, :1], batch["labels"].clamp(min=1)], 1)
    for row, target in zip(seq.tolist(), targets, strict=True):
        codes = [t for t in row if t >= 7]
        assert target == set(codes[len(codes) // 2 :])
    assert all(all(7 <= t < 7 + N_CODES for t in p) for p in preds)


def test_layout_levels_and_compile_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert vocab_layout(TOKENIZER) == (7 + N_CODES, 7, N_CODES)
    hier = PromptBartModule(model_config(name="hierarchical"), HIER_TOKENIZER, sp.csr_matrix(np.eye(2)))
    assert hier.layout == (9, 7, 2)  # specials + 2 categories; codes are not in the model's vocab
    assert hier.model.vocab_size == 9 and hier.loss_fn.n_codes == 2
    batch = make_batch(vocab=9)  # category sequences
    losses = hier.loss_fn(hier(batch), batch)
    assert all(math.isfinite(v.item()) for v in losses.values())
    with pytest.raises(InputError, match="level"):
        PromptBartModule(model_config(name="hierarchical"), TOKENIZER)

    module = PromptBartModule(model_config(["model.compile=true"]), TOKENIZER)
    calls = []
    monkeypatch.setattr(module.model, "compile", lambda *a, **k: calls.append(1))
    module.setup("validate")
    assert calls == []
    module.setup("fit")
    module.setup("fit")
    assert calls == [1]
