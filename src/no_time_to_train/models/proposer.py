"""The proposer role: the promptable segmenter that turns point prompts into candidate masks.

Every proposer wraps one transformers model of the SAM family (``Sam2Model``, ``SamModel``, ``SamHQModel``) and
offers the same small interface, which is all the predictor, the reference path, the app and the benchmark use:

- ``image_size``: the side ``S`` of the square frame the model takes (read from the model's config);
- ``encode(image (3, S, S) in [0, 1])`` -> an opaque image embedding (normalised with the model's own
  processor statistics);
- ``decode(emb, points, labels, boxes, multimask)`` -> low-res mask logits ``(B, 3, h, w)`` and predicted IoUs
  ``(B, 3)`` for mask tokens 1-3, or the single-mask output ``(B, 1, h, w)``, ``(B, 1)``;
- ``describe()``: what the proposer is, for logs and run records.

Frames: prompts are pixel ``(x, y)`` in the frame of the image squashed to ``S``² (the method's frame for every
proposer); the low-res logits cover that same square.
"""

from __future__ import annotations

import torch

from ..errors import CheckpointError
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from .wrapper import ModelWrapper


class Proposer(ModelWrapper):
    """Base class of the proposers: the shared plumbing (frame size, normalisation, prompt encoding).

    Subclasses set ``name`` (for messages) and implement :meth:`encode` and :meth:`decode`.
    ``image_mean``/``image_std``: the per-channel statistics of the model's transformers image processor, in
    [0, 1] units. SAM, SAM-HQ and SAM2 all use the ImageNet statistics (Meta's ``pixel_mean``/``pixel_std``
    ``(123.675, 116.28, 103.53)``/``(58.395, 57.12, 57.375)`` in 0-255 units are the same numbers times 255);
    the SAM 3 tracker uses 0.5 / 0.5.
    """

    name = "proposer"
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.image_size = int(model.config.prompt_encoder_config.image_size)
        self._pos: torch.Tensor | None = None

    @property
    def decoder_width(self) -> int:
        """Channel width of the mask decoder (sizes its memory per prompt)."""
        return int(self.model.config.mask_decoder_config.hidden_size)

    def describe(self) -> dict:
        """What this proposer is: its family, frame size, decoder width and where it came from."""
        cfg = self.model.config
        return {
            "proposer": self.name,
            "model_type": cfg.model_type,
            "image_size": self.image_size,
            "decoder_width": self.decoder_width,
            "name_or_path": getattr(cfg, "_name_or_path", "") or "",
        }

    def compile(self, **kwargs) -> None:
        """``torch.compile`` the expensive parts; kwargs go to ``torch.compile``. The default does nothing."""

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """``(3, S, S)`` in [0, 1] -> the model's normalised input ``(1, 3, S, S)`` on its device and dtype."""
        x = image.to(self.device, self.dtype)
        return normalize(x, self.image_mean, self.image_std).unsqueeze(0)

    def _positional(self) -> torch.Tensor:
        """Image-wide positional embedding ``(1, C, h, w)`` (computed once per model, device and dtype)."""
        if self._pos is None or self._pos.device != self.device or self._pos.dtype != self.dtype:
            with torch.inference_mode():
                self._pos = self.model.get_image_wide_positional_embeddings()
            self._on_new_positional()
        return self._pos

    def _on_new_positional(self) -> None:
        """Hook for subclasses that derive caches from the positional embedding."""

    def prompt_embeddings(
        self, points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's prompt encoder on ``B`` prompts for one image: sparse ``(1, B, T, C)``, dense ``(1, C, h, w)``.

        points ``(B, P, 2)`` and labels ``(B, P)``, boxes ``(B, 4)``, in the SAM frame (see :meth:`decode`).
        """
        dev, dt = self.device, self.dtype
        pts = points.to(dev, dt)[None] if points is not None else None
        lbl = labels.to(dev).int()[None] if labels is not None else None
        bxs = boxes.to(dev, dt)[None] if boxes is not None else None
        return self.model.prompt_encoder(input_points=pts, input_labels=lbl, input_boxes=bxs, input_masks=None)

    def encode(self, image: torch.Tensor, add_no_memory_embedding: bool = False):
        """Encode ``image (3, S, S)`` in [0, 1] (the SAM frame) once, for any number of :meth:`decode` calls.

        ``add_no_memory_embedding`` only means something to SAM2-family proposers (SAM2 adds a learned "no
        memory" vector to image embeddings); the others ignore it.
        """
        raise NotImplementedError

    def decode(
        self,
        emb,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``B`` independent prompts against one encoded image.

        points: ``(B, P, 2)`` pixel ``(x, y)`` in the SAM frame; labels: ``(B, P)`` (1 positive, 0 negative).
            Without boxes the prompt encoder appends one padding point, as SAM does.
        boxes: ``(B, 4)`` ``x0, y0, x1, y1`` in the SAM frame.
        multimask: True returns mask tokens 1-3, logits ``(B, 3, h, w)`` (``h = w = S / 4``) and predicted IoUs
            ``(B, 3)``, in token order; False returns the single-mask output ``(B, 1, h, w)``, ``(B, 1)``.
        """
        raise NotImplementedError


#: transformers ``model_type`` -> the proposer family that wraps it.
PROPOSER_TYPES = {
    "sam2": "sam2",
    "sam2_video": "sam2",
    "sam3_tracker": "sam3_tracker",
    "sam": "sam",
    "sam_hq": "sam_hq",
}


def make_proposer(model: torch.nn.Module) -> Proposer:
    """The proposer wrapping ``model`` (a transformers ``Sam2Model``, ``Sam3TrackerModel``, ``SamModel`` or
    ``SamHQModel``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = PROPOSER_TYPES.get(model_type)
    if family == "sam2":
        from .sam2 import Sam2Segmenter

        return Sam2Segmenter(model)
    if family == "sam3_tracker":
        from .sam2 import Sam3TrackerProposer

        return Sam3TrackerProposer(model)
    if family == "sam":
        from .sam import SamProposer

        return SamProposer(model)
    if family == "sam_hq":
        from .sam import SamHQProposer

        return SamHQProposer(model)
    raise CheckpointError(
        f"a {type(model).__name__} (model_type {model_type!r}) cannot propose masks; give a SAM2, SAM 3 tracker, "
        "SAM or SAM-HQ model (Sam2Model, Sam3TrackerModel, SamModel, SamHQModel)"
    )
