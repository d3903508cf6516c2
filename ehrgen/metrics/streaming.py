"""torchmetrics classes that accumulate fidelity and validity statistics over batches.

For use inside training/validation loops (e.g. on samples generated each epoch). Each keeps
sums as states (``dist_reduce_fx="sum"``, so DDP reduction is exact) and computes through the
same pure functions as ``ehrgen.evaluate`` (:mod:`ehrgen.metrics.functional`). Inputs are
multi-hot or count matrices ``[batch, n_codes]`` over one vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

from ehrgen.data.rules import VALIDITY_RULES, ValidityRule
from ehrgen.metrics import functional as F
from ehrgen.metrics.validity import membership


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class CodeFrequencyJSD(Metric):
    """Jensen-Shannon divergence (bits) between accumulated code counts of two cohorts."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_codes: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("real", default=torch.zeros(num_codes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("synthetic", default=torch.zeros(num_codes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, real: torch.Tensor, synthetic: torch.Tensor) -> None:
        self.real += real.reshape(-1, self.real.numel()).sum(0).double()
        self.synthetic += synthetic.reshape(-1, self.synthetic.numel()).sum(0).double()

    def compute(self) -> torch.Tensor:
        return torch.tensor(float(F.js_divergence(_np(self.real), _np(self.synthetic))))


class PrevalenceAgreement(Metric):
    """R^2, Pearson r and top-k overlap of per-code patient prevalence (real is the reference)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_codes: int, top_k: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.top_k = top_k
        for side in ("real", "synthetic"):
            self.add_state(side, default=torch.zeros(num_codes, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"n_{side}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, real: torch.Tensor, synthetic: torch.Tensor) -> None:
        self.real += (real > 0).sum(0).double()
        self.synthetic += (synthetic > 0).sum(0).double()
        self.n_real += real.shape[0]
        self.n_synthetic += synthetic.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        p = _np(self.real) / max(float(self.n_real), 1.0)
        q = _np(self.synthetic) / max(float(self.n_synthetic), 1.0)
        seen = (p > 0) | (q > 0)
        return {
            "r2": torch.tensor(float(F.r2_score(p[seen], q[seen]))),
            "pearson": torch.tensor(float(F.pearson_r(p[seen], q[seen]))),
            f"top{self.top_k}_overlap": torch.tensor(float(F.top_k_overlap(p, q, self.top_k))),
        }


class CooccurrenceAgreement(Metric):
    """R^2 of within-visit pair frequencies (pairs per visit) and co-occurrence scores.

    States are dense ``[V, V]`` pair counts: fine for training-time monitoring on vocabularies
    of a few thousand codes; ``ehrgen.evaluate`` uses sparse per-patient pairs instead.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_codes: int, **kwargs):
        super().__init__(**kwargs)
        for side in ("real", "synthetic"):
            zeros = torch.zeros(num_codes, num_codes, dtype=torch.float64)
            self.add_state(f"pairs_{side}", default=zeros, dist_reduce_fx="sum")
            self.add_state(
                f"visits_{side}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(self, real_visits: torch.Tensor, synthetic_visits: torch.Tensor) -> None:
        """Multi-hot visits ``[n_visits, V]``."""
        for side, v in (("real", real_visits), ("synthetic", synthetic_visits)):
            x = (v > 0).double()
            getattr(self, f"pairs_{side}").add_(x.T @ x)
            setattr(self, f"visits_{side}", getattr(self, f"visits_{side}") + x.shape[0])

    def compute(self) -> dict[str, torch.Tensor]:
        iu = np.triu_indices(self.pairs_real.shape[0], 1)
        pr, ps = _np(self.pairs_real)[iu], _np(self.pairs_synthetic)[iu]
        seen = (pr > 0) | (ps > 0)
        fr = pr[seen] / max(float(self.visits_real), 1.0)
        fs = ps[seen] / max(float(self.visits_synthetic), 1.0)

        def score(pairs: torch.Tensor) -> float:
            p = _np(pairs)
            present = np.diag(p) > 0
            partners = ((p > 0).sum(1) - present)[present]
            return float(partners.mean()) if present.any() else float("nan")

        return {
            "r2": torch.tensor(float(F.r2_score(fr, fs))),
            "score_real": torch.tensor(score(self.pairs_real)),
            "score_synthetic": torch.tensor(score(self.pairs_synthetic)),
        }


class CountKS(Metric):
    """Two-sample KS statistic and asymptotic p-value of integer counts (e.g. visits per patient).

    Values above ``max_value`` share the top bin, so pick it above the largest expected count.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, max_value: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.max_value = max_value
        for side in ("real", "synthetic"):
            zeros = torch.zeros(max_value + 1, dtype=torch.float64)
            self.add_state(side, default=zeros, dist_reduce_fx="sum")

    def update(self, real: torch.Tensor, synthetic: torch.Tensor) -> None:
        for side, v in (("real", real), ("synthetic", synthetic)):
            idx = v.reshape(-1).long().clamp(0, self.max_value)
            getattr(self, side).add_(torch.bincount(idx, minlength=self.max_value + 1).double())

    def compute(self) -> dict[str, torch.Tensor]:
        d, p = F.ks_from_histograms(_np(self.real), _np(self.synthetic))
        return {"statistic": torch.tensor(float(d)), "pvalue": torch.tensor(float(p))}


class ValidityRate(Metric):
    """Share of patients breaking each clinical validity rule (the sampler's own table)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, codes: Sequence[str], rules: Sequence[ValidityRule] = VALIDITY_RULES, **kwargs):
        super().__init__(**kwargs)
        self.rules = tuple(rules)
        self.register_buffer("membership", torch.from_numpy(membership(list(codes), self.rules)))
        self.add_state(
            "broken", default=torch.zeros(len(self.rules), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("patients", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, codes: torch.Tensor, sex: torch.Tensor, age: torch.Tensor) -> None:
        """``codes``: multi-hot ``[batch, V]`` (any visit); ``sex`` 0/1; ``age`` in years."""
        covered = (codes > 0).double() @ self.membership.double().T  # [batch, R]
        sex_np, age_np = sex.cpu().numpy(), age.cpu().double().numpy()
        allowed = np.stack([r.allows(sex_np, age_np) for r in self.rules], 1)
        forbidden = torch.from_numpy(~allowed).to(covered.device)
        self.broken += ((covered > 0) & forbidden).sum(0).double()
        self.patients += codes.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        rate = self.broken / self.patients.clamp(min=1.0)
        return {rule.name: rate[i] for i, rule in enumerate(self.rules)}
