"""The multi-task network: one shared encoder, mean pooling, one linear head per label set."""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``mask`` is 1 (<s> and </s> included, as e5 does)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: dict[str, int], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in heads.items()})
        import inspect

        self._token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self._token_types else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.dropout(self.pooled(input_ids, attention_mask))
        return {name: head(pooled) for name, head in self.heads.items()}


class ExportModule(nn.Module):
    """What goes into ONNX: calibrated probabilities per head, in a fixed output order."""

    def __init__(self, model: MultiTaskModel, temperatures: dict[str, float]):
        super().__init__()
        self.model = model
        self.names = list(model.heads)
        self.register_buffer("inv_t", torch.tensor([1.0 / temperatures.get(n, 1.0) for n in self.names]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pooled = self.model.pooled(input_ids, attention_mask)
        return tuple(torch.softmax(self.model.heads[n](pooled) * self.inv_t[i], dim=-1)
                     for i, n in enumerate(self.names))
