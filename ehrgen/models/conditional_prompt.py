"""Conditional prompts: patient demographics -> learned prompt vectors for BART's encoder or decoder.

Each numeric feature ``x_i`` (divided by its scale so ages in years land near [0, 1]) becomes a
vector ``x_i * w_i + b_i`` (a per-feature linear map), each categorical value a row of one shared
embedding table (features are offset into it). The ``F`` feature vectors of width ``d_hidden`` are
concatenated and reparameterised through ``Linear - tanh - Linear`` into ``prompt_length`` vectors
of width ``d_model``. The bottleneck is prefix-tuning's reparameterisation: optimising prompt
vectors directly is unstable, optimising them through a small MLP is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ConditionalPrompt(nn.Module):
    """Numeric + categorical features ``[B, n]`` -> prompt vectors ``[B, prompt_length, d_model]``."""

    def __init__(
        self,
        d_model: int,
        prompt_length: int = 4,
        d_hidden: int = 128,
        numeric_scales: Sequence[float] = (100.0,),
        cardinalities: Sequence[int] = (2,),
    ) -> None:
        super().__init__()
        if prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {prompt_length}")
        n_num, n_cat = len(numeric_scales), len(cardinalities)
        if n_num + n_cat == 0:
            raise ValueError("ConditionalPrompt needs at least one numeric or categorical feature")
        self.prompt_length = prompt_length
        self.d_model = d_model
        self.register_buffer("numeric_scales", torch.tensor(list(numeric_scales), dtype=torch.float32))
        self.num_weight = nn.Parameter(torch.randn(n_num, d_hidden))
        self.num_bias = nn.Parameter(torch.zeros(n_num, d_hidden))
        # One table for all categorical features; feature j's values start at offsets[j].
        offsets = torch.tensor([0, *list(cardinalities)[:-1]], dtype=torch.long).cumsum(0)[:n_cat]
        self.register_buffer("cat_offsets", offsets)
        # Unit-scale feature vectors (nn.Embedding's default) so that patients' prompts differ from
        # the first step; the bottleneck MLP maps them to the scale BART expects.
        self.cat_embedding = nn.Embedding(max(int(sum(cardinalities)), 1), d_hidden)
        self.reparam = nn.Sequential(
            nn.Linear((n_num + n_cat) * d_hidden, d_hidden),
            nn.Tanh(),
            nn.Linear(d_hidden, prompt_length * d_model),
        )

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        """``numeric [B, n_num]`` (raw units), ``categorical [B, n_cat]`` (0-based codes)."""
        parts = []
        if self.num_weight.shape[0]:
            x = (numeric.to(self.num_weight.dtype) / self.numeric_scales.to(self.num_weight.dtype))[..., None]
            parts.append(x * self.num_weight + self.num_bias)  # [B, n_num, d_hidden]
        if self.cat_offsets.numel():
            parts.append(self.cat_embedding(categorical.long() + self.cat_offsets))  # [B, n_cat, d_hidden]
        features = torch.cat(parts, dim=1).flatten(1)
        return self.reparam(features).view(-1, self.prompt_length, self.d_model)
