"""SAM2 as the method uses it: one image encoding, then batches of prompts through the mask decoder.

Frames: prompts are pixel coordinates in the SAM frame (the image squashed to ``image_size``², 1024²).
Mask logits come out at the low-res grid, ``4 * image_size / 16`` = 256².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import Sam2Model

from ..transforms import normalize


@dataclass
class SamImageEmbedding:
    """Encoded target image.

    embedding: ``(1, C, 64, 64)`` stride-16 features (C = 256 for official models).
    high_res: the stride-4 ``(1, C/8, 256, 256)`` and stride-8 ``(1, C/4, 128, 128)`` features after the
        decoder's ``conv_s0``/``conv_s1``.
    """

    embedding: torch.Tensor
    high_res: list[torch.Tensor]


class Sam2Segmenter:
    """Thin wrapper over a transformers ``Sam2Model`` (image encoder, prompt encoder, mask decoder)."""

    def __init__(self, model: Sam2Model):
        self.model = model.eval()
        self.image_size = int(model.config.prompt_encoder_config.image_size)
        self._pos: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def encode(self, image: torch.Tensor, add_no_memory_embedding: bool = False) -> SamImageEmbedding:
        """``image``: ``(3, S, S)`` in [0, 1] in the SAM frame. Runs the Hiera encoder and FPN neck once.

        ``add_no_memory_embedding=False`` is the paper's behaviour (METHOD.md 11.1); transformers'
        ``get_image_embeddings`` would add it.
        """
        x = normalize(image.to(self.device, self.dtype)).unsqueeze(0)
        out = self.model.get_image_features(x, return_dict=True)
        sizes = self.model.backbone_feature_sizes
        maps = []
        for feat, (h, w) in zip(out.fpn_hidden_states, sizes):  # each (h*w, 1, C)
            maps.append(feat.permute(1, 2, 0).reshape(1, -1, h, w))
        if add_no_memory_embedding:
            maps[-1] = maps[-1] + self.model.no_memory_embedding.view(1, -1, 1, 1)
        return SamImageEmbedding(embedding=maps[-1], high_res=maps[:-1])

    def _positional(self) -> torch.Tensor:
        if self._pos is None:
            self._pos = self.model.get_image_wide_positional_embeddings()
        return self._pos

    @torch.inference_mode()
    def decode(
        self,
        emb: SamImageEmbedding,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``B`` independent prompts against one encoded image.

        points: ``(B, P, 2)`` pixel ``(x, y)`` in the SAM frame; labels: ``(B, P)`` (1 positive, 0 negative).
            Without boxes the prompt encoder appends one padding point, as SAM2 does.
        boxes: ``(B, 4)`` ``x0, y0, x1, y1`` in the SAM frame.
        multimask: True returns mask tokens 1-3, logits ``(B, 3, 256, 256)`` and predicted IoUs ``(B, 3)``;
            False returns SAM2's single-mask output ``(B, 1, 256, 256)``, ``(B, 1)`` (token 0, with SAM2's
            stability fallback to the best multimask token).
        """
        dev, dt = self.device, self.dtype
        pts = points.to(dev, dt)[None] if points is not None else None
        lbl = labels.to(dev).int()[None] if labels is not None else None
        bxs = boxes.to(dev, dt)[None] if boxes is not None else None
        sparse, dense = self.model.prompt_encoder(input_points=pts, input_labels=lbl, input_boxes=bxs, input_masks=None)
        masks, iou, _, _ = self.model.mask_decoder(
            image_embeddings=emb.embedding,
            image_positional_embeddings=self._positional(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=emb.high_res,
        )
        return masks[0], iou[0]
