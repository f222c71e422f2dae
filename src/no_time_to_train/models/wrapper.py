"""What the model wrappers (the proposers, :class:`~.encoder.PatchEncoder`) share."""

from __future__ import annotations

import torch


class ModelWrapper:
    """Holds one transformers model, in eval mode, as ``self.model``."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.model.parameters()).dtype
