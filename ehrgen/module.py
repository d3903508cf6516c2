"""PromptBartModule: the LightningModule that trains PromptBart on DataModule batches.

Batch contract (dict of tensors): ``input_ids, attention_mask [B, Le]`` (corrupted encoder input),
``decoder_input_ids, decoder_attention_mask [B, Ld]`` (clean sequence without its last token),
``labels [B, Ld]`` (clean sequence without ``<s>``, -100 at padding), ``age [B]`` (years, float),
``sex [B]`` (0=M, 1=F).

Checkpoints hold only plain Python values and tensors (``torch.load(weights_only=True)`` reads
them): ``hyper_parameters`` (the resolved model config and the tokenizer dict) plus
``checkpoint["ehrgen"]`` with the same config, tokenizer and the co-occurrence count matrix as
index/value tensors.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import scipy.sparse as sp
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from ehrgen.data.cohort import Cohort
from ehrgen.data.vocab import Tokenizer, token_event_types, tokenizer_from_dict
from ehrgen.errors import InputError
from ehrgen.metrics.lm import CodeAccuracy, Perplexity, ReconstructionJaccard, TokenAccuracy, code_positions
from ehrgen.models.losses import IGNORE_INDEX, PromptBartLoss, cooc_from_tensors, cooc_to_tensors
from ehrgen.models.prompt_bart import EOS_ID, PAD_ID, PromptBart, PromptBartOutput, advance_history
from ehrgen.models.visit_times import time_support, visits_time_labels
from ehrgen.privacy.small_cells import MIN_CELL, suppress
from ehrgen.sampling.code_curves import token_age_curves

MASK_ID = 6
MODEL_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "age", "sex")
CHECKPOINT_KEY = "ehrgen"
OFFSETS_KEY = "model.logit_offsets"

log = logging.getLogger(__name__)


class VocabLayout(NamedTuple):
    """What the model needs from a tokenizer: its output size and where the content tokens are."""

    vocab_size: int  # model vocabulary: every id the tokenizer's ``encode`` can emit
    token_offset: int  # first code (flat) or category (hierarchical) token
    n_tokens: int  # number of code / category tokens


def vocab_layout(tokenizer: Tokenizer | Mapping[str, Any]) -> VocabLayout:
    """Layout of a tokenizer (or its dict); the hierarchical model's vocabulary stops before the codes."""
    if isinstance(tokenizer, Mapping):
        tokenizer = tokenizer_from_dict(dict(tokenizer))
    lo, hi = tokenizer.content_range
    return VocabLayout(vocab_size=hi, token_offset=lo, n_tokens=hi - lo)


def warmup_length(warmup_steps: int, warmup_fraction: float | None, total: float | None) -> int:
    """Warmup steps: ``warmup_steps``, capped at ``warmup_fraction`` of the run's total steps.

    The cap keeps short runs (a few hundred steps) from ending before the warmup does. ``None``
    for the fraction, or an unknown/infinite total, leaves ``warmup_steps`` as is.
    """
    if warmup_steps < 0:
        raise InputError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_fraction is None or total is None or not math.isfinite(total):
        return int(warmup_steps)
    if not 0.0 <= warmup_fraction <= 1.0:
        raise InputError(f"model.warmup_fraction must be in [0, 1] or null, got {warmup_fraction}")
    return min(int(warmup_steps), int(warmup_fraction * total))


def warmup_linear_decay(step: int, warmup: int, total: float | None) -> float:
    """LR factor: linear warmup over ``warmup`` steps, then linear decay to 0 at ``total`` (None/inf: flat)."""
    if step < warmup:
        return (step + 1) / warmup  # never 0: the first optimiser step already learns
    if total is None or not math.isfinite(total) or total <= warmup:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


def _plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def token_types(tokenizer: Tokenizer, layout: VocabLayout) -> list[int]:
    """Event type id of every model token: 0 for specials, 1 + ``EVENT_TYPES`` index otherwise."""
    return token_event_types(tokenizer, layout.token_offset, layout.vocab_size)


class PromptBartModule(LightningModule):
    """PromptBart + loss + LM metrics; built from the model config, tokenizer dict and cooc matrix."""

    def __init__(
        self,
        model: Mapping[str, Any] | DictConfig,
        tokenizer: Mapping[str, Any],
        cooc: sp.spmatrix | None = None,
    ) -> None:
        super().__init__()
        cfg, tok = _plain(model), _plain(tokenizer)
        # Plain dicts only: the checkpoint must load with weights_only=True. Not sent to loggers
        # (the tokenizer holds the whole code list); the entry point logs the run config.
        self.save_hyperparameters({"model": cfg, "tokenizer": tok}, logger=False)
        self.cfg, self.tokenizer_dict = cfg, tok
        self.tokenizer: Tokenizer = tokenizer_from_dict(tok)
        level = cfg.get("level")
        if level is not None and level != self.tokenizer.level:
            raise InputError(
                f"model.level={level!r} but the tokenizer is {self.tokenizer.level!r}-level; "
                "use model=flat with the code tokenizer, model=hierarchical with the category one"
            )
        self.layout = vocab_layout(self.tokenizer)
        self.model: PromptBart = instantiate(
            cfg["net"],
            vocab_size=self.layout.vocab_size,
            token_types=token_types(self.tokenizer, self.layout),
        )
        self.loss_fn = PromptBartLoss(
            token_offset=self.layout.token_offset,
            n_tokens=self.layout.n_tokens,
            age_scale=self.model.age_scale,
            **cfg.get("loss", {}),
        )
        self._cooc: dict[str, Any] | None = None
        if cooc is not None:
            self.set_cooccurrence(cooc)
        self.val_metrics = self._metrics()
        self.test_metrics = self._metrics()
        recon = cfg.get("reconstruction", {})
        self.recon_batches = int(recon.get("batches", 2))
        self.recon_extra_tokens = int(recon.get("extra_tokens", 16))
        self._compiled = False

    def _metrics(self) -> nn.ModuleDict:
        offset, n = self.layout.token_offset, self.layout.n_tokens
        return nn.ModuleDict(
            {
                "perplexity": Perplexity(offset, n),
                "token_acc": TokenAccuracy(),
                "code_acc": CodeAccuracy(offset, n),
                "recon_jaccard": ReconstructionJaccard(),
            }
        )

    def set_cooccurrence(self, cooc: sp.spmatrix) -> None:
        """Install the train-split code x code count matrix (token order, from ``token_offset``)."""
        self.loss_fn.set_cooccurrence(cooc)
        # What rides in checkpoints follows the small-cell rule (counts 1..10 of real visits
        # suppressed); a resumed run recomputes the full matrix from its cohort.
        shared = sp.csr_matrix(cooc, copy=True)
        shared.data = suppress(shared.data)
        shared.eliminate_zeros()
        self._cooc = cooc_to_tensors(shared)

    def set_time_support(self, cohort: Cohort) -> None:
        """Limit generated visit times to the bins the train split occupies (small-cell safe)."""
        visits = cohort.read("train").select("visits").to_arrow().column("visits")
        labels, _ = visits_time_labels(visits)
        support = time_support(labels, MIN_CELL)
        self.model.time_head.support.copy_(torch.tensor(support))

    def init_age_profile(self, cohort: Cohort) -> None:
        """Start the age-profile table at the train split's own age-and-sex curves of each output
        token (:func:`~ehrgen.sampling.code_curves.token_age_curves`) instead of zero.

        Trained from zero for the default CPU budget, the table stays short of the data's age
        effects (docs/benchmarks.md, fidelity: data-initialised age profiles); a fitted start
        leaves training only the part the context explains. Curves of tokens below the
        small-cell rule stay 0, so the table holds no more than the stage-2 curves do.
        """
        if self.model.age_profile is None:
            return
        curves = token_age_curves(cohort, self.tokenizer, self.model.profile_knots.tolist())
        table = torch.as_tensor(curves, dtype=self.model.age_profile.dtype) / self.model.age_profile_scale
        with torch.no_grad():
            self.model.age_profile.copy_(table)

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Mapping[str, Tensor]) -> PromptBartOutput:
        return self.model(**{k: batch[k] for k in MODEL_INPUTS})

    def _losses(self, batch: Mapping[str, Tensor]) -> tuple[PromptBartOutput, dict[str, Tensor]]:
        out = self(batch)
        return out, self.loss_fn(out, batch)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        _, losses = self._losses(batch)
        self._check_finite(losses)
        # Loggers only receive step values on logging steps (trainer.log_every_n_steps), and each
        # self.log call costs 1-3 ms of Lightning bookkeeping: a large share of a small model's
        # step (docs/benchmarks.md, Training (a)). Logging on those steps only writes the same
        # values; the progress bar's loss then refreshes every log_every_n_steps steps.
        if self._is_logging_step():
            size = batch["labels"].shape[0]
            for name, value in losses.items():
                self.log(
                    f"train/{name}",
                    value,
                    on_step=True,
                    on_epoch=False,
                    prog_bar=name == "loss",
                    batch_size=size,
                )
        return self.loss_fn.objective(losses)

    def _is_logging_step(self) -> bool:
        """Whether Lightning writes step-level metrics after this optimizer step."""
        trainer = self._trainer
        if trainer is None:
            return True
        return (self.global_step + 1) % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop

    def _check_finite(self, losses: Mapping[str, Tensor]) -> None:
        if bool(torch.isfinite(self.loss_fn.objective(losses))):
            return
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        raise FloatingPointError(
            f"non-finite training loss at global step {self.global_step} ({terms}). Likely causes: "
            "learning rate too high (lower model.lr or raise model.warmup_steps), fp16 overflow "
            "(use trainer.precision=bf16-mixed or 32-true), no gradient clipping "
            "(trainer.gradient_clip_val). Stopped before saving: the last good checkpoint is kept."
        )

    def _eval_step(self, batch: Mapping[str, Tensor], batch_idx: int, stage: str) -> None:
        out, losses = self._losses(batch)
        size = batch["labels"].shape[0]
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        for name in ("perplexity", "token_acc", "code_acc"):
            metrics[name].update(out.logits, batch["labels"])
            self.log(f"{stage}/{name}", metrics[name], on_step=False, on_epoch=True, batch_size=size)
        if batch_idx < self.recon_batches:
            preds, targets = self.reconstruct(batch)
            if targets:
                metrics["recon_jaccard"].update(preds, targets)
                self.log(f"{stage}/recon_jaccard", metrics["recon_jaccard"], on_step=False, on_epoch=True)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    # ------------------------------------------------------------------ reconstruction

    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, Tensor]) -> tuple[list[set[int]], list[set[int]]]:
        """Give each patient's first half of codes, complete greedily; (predicted, true) code sets.

        The encoder sees the clean sequence with every code after the given half masked as in
        span infilling (one ``<mask>`` per run within a visit; visit markers stay), the decoder is
        forced through the prefix and then runs greedily until ``</s>``. Patients without codes
        are skipped. Prediction and target are the code sets after the prefix.
        """
        labels = batch["labels"]
        seq = torch.cat(
            [batch["decoder_input_ids"][:, :1], labels.masked_fill(labels == IGNORE_INDEX, PAD_ID)], 1
        )
        is_code = code_positions(seq, self.layout.token_offset, self.layout.n_tokens)
        keep = is_code.any(1)
        if not bool(keep.any()):
            return [], []
        seq, is_code = seq[keep], is_code[keep]
        prefix_len = half_prefix_length(is_code)
        positions = torch.arange(seq.shape[1], device=seq.device)
        hidden = is_code & (positions[None, :] >= prefix_len[:, None])
        enc_ids = mask_spans(seq, hidden)
        max_len = min(self.model.max_length, seq.shape[1] + self.recon_extra_tokens)
        generated = self.greedy_complete(
            enc_ids, seq, prefix_len, batch["age"][keep], batch["sex"][keep], max_len
        )
        pred_mask = code_positions(generated, self.layout.token_offset, self.layout.n_tokens)
        preds = [set(row[m].tolist()) for row, m in zip(generated.cpu(), pred_mask.cpu(), strict=True)]
        targets = [set(row[m].tolist()) for row, m in zip(seq.cpu(), hidden.cpu(), strict=True)]
        return preds, targets

    @torch.no_grad()
    def greedy_complete(
        self, enc_ids: Tensor, seq: Tensor, prefix_len: Tensor, age: Tensor, sex: Tensor, max_len: int
    ) -> Tensor:
        """Greedy tokens after each row's forced prefix ``seq[:, :prefix_len]`` (PAD elsewhere)."""
        batch, device = seq.shape[0], seq.device
        encoder = self.model.encode(enc_ids, (enc_ids != PAD_ID).long(), age, sex)
        generated = torch.full((batch, max_len), PAD_ID, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        current, cache = seq[:, :1], None
        seen = torch.zeros(batch, self.model.vocab_size, dtype=torch.bool, device=device)
        history = torch.zeros(batch, self.model.vocab_size, dtype=torch.int8, device=device)
        for t in range(1, max_len):
            logits, cache = self.model.decode_step(
                current, encoder.states, encoder.mask, age, sex, cache, history=history
            )
            nxt = logits[:, -1].argmax(-1)
            forced = t < prefix_len
            if t < seq.shape[1]:
                nxt = torch.where(forced, seq[:, t], nxt)
            free = ~forced & ~done
            generated[:, t] = torch.where(free, nxt, PAD_ID)
            done |= free & (nxt == EOS_ID)
            if bool(done.all()):
                break
            current = nxt[:, None]
            advance_history(history, seen, torch.where(done & ~forced, PAD_ID, nxt))
        return generated

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW without weight decay on biases and LayerNorm; warmup then linear decay per step."""
        norm_params = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") or id(param) in norm_params else decay).append(param)
        opt_cfg = self.cfg.get("optimizer") or {
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": self.cfg.get("lr", 1e-4),
            "weight_decay": self.cfg.get("weight_decay", 0.01),
        }
        optimizer = instantiate(opt_cfg)([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        total = float(self.trainer.estimated_stepping_batches)
        fraction = self.cfg.get("warmup_fraction", 0.1)
        warmup = warmup_length(
            int(self.cfg.get("warmup_steps", 1000)), None if fraction is None else float(fraction), total
        )
        scheduler = LambdaLR(optimizer, lambda step: warmup_linear_decay(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the codes' model and a detached visit-time head apart.

        A global norm over both would let the time head's gradients shrink the codes' steps, so a
        run with the head would not train the same codes' model as one without it.
        """
        head = self.model.time_head
        by_value = gradient_clip_algorithm == "value"  # per element: nothing couples
        if not gradient_clip_val or by_value or head is None or not self.model.visit_times_detach:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        head_ids = {id(p) for p in head.parameters()}
        trunk = [p for p in self.parameters() if id(p) not in head_ids]
        for params in (trunk, list(head.parameters())):
            nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ------------------------------------------------------------------ hooks

    def setup(self, stage: str) -> None:
        if self.cfg.get("compile", False) and stage == "fit" and not self._compiled:
            # In place, so parameter names (and checkpoints) stay those of the plain model.
            self.model.compile()
            self._compiled = True

    def on_fit_start(self) -> None:
        # Logit offsets belong to the weights they were fit for (ehrgen.calibration, after a
        # run); a resumed run validates the uncalibrated model and is calibrated again at its end.
        self.model.logit_offsets.zero_()
        if self.loss_fn.w_cooc and not self.loss_fn.n_codes:
            log.warning(
                "model.loss.w_cooc=%s but no co-occurrence matrix was given: the regulariser is off",
                self.loss_fn.w_cooc,
            )

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.cfg,
            "tokenizer": self.tokenizer_dict,
            "layout": self.layout._asdict(),
            "cooc": self._cooc,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before logit offsets existed are uncalibrated: zero offsets.
        for key in ("state_dict", "current_model_state"):  # the latter: raw weights beside an EMA
            state = checkpoint.get(key)
            if state is not None and OFFSETS_KEY not in state:
                state[OFFSETS_KEY] = torch.zeros_like(self.model.logit_offsets)
        payload = checkpoint.get(CHECKPOINT_KEY) or {}
        if payload.get("cooc") is not None and self._cooc is None:
            self.set_cooccurrence(cooc_from_tensors(payload["cooc"]))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> PromptBartModule:
        """Restore a trained module from a checkpoint without unpickling code (weights_only)."""
        return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)


def mask_spans(seq: Tensor, hidden: Tensor) -> Tensor:
    """``seq`` with each run of consecutive ``hidden`` tokens replaced by one ``<mask>``, left-aligned."""
    prev_hidden = torch.nn.functional.pad(hidden[:, :-1], (1, 0), value=False)
    keep = ~hidden | ~prev_hidden
    tokens = torch.where(hidden, MASK_ID, seq)
    width = seq.shape[1]
    # Dropped tokens are written to a spare last column, which is then cut off.
    target = torch.where(keep, keep.long().cumsum(1) - 1, width)
    out = torch.full((seq.shape[0], width + 1), PAD_ID, dtype=seq.dtype, device=seq.device)
    out.scatter_(1, target, tokens)
    return out[:, : int((keep & (seq != PAD_ID)).sum(1).max())]


def half_prefix_length(is_code: Tensor) -> Tensor:
    """Tokens up to and including each row's ``n_codes // 2``-th code (1 = ``<s>`` when none given)."""
    given = is_code.sum(1) // 2
    before_kth = (is_code.cumsum(1) < given[:, None]).sum(1)  # index of the k-th code when k >= 1
    return torch.where(given > 0, before_kth + 1, torch.ones_like(given))
