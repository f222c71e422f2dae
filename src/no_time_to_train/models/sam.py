"""The original SAM (``SamModel``) and SAM-HQ (``SamHQModel``) as proposers.

Both take the image squashed to ``S``² (``S`` = the config's ``image_size``, 1024 for every release) like
SAM2, not SAM's own longest-side resize with padding: the method's frames are shared by every proposer.
Their mask decoders are run as transformers wrote them (one image, ``B`` prompts as its point batch);
logits come out at ``4 * S / patch`` = 256² for official models.

SAM-HQ's decoder has a fifth output token, the HQ token, whose mask is added to every SAM mask (transformers'
and HQ-SAM's default ``hq_token_only=False``) and which has no IoU prediction of its own. Here "mask tokens
1-3" of SAM-HQ are therefore SAM's multimask tokens 1-3, each refined by the HQ mask, with SAM's predicted
IoUs for those tokens, *in token order*: transformers sorts them by predicted IoU, which is undone so that
``MethodConfig.multimask_tokens`` keeps naming tokens. The single-mask output is token 0 plus the HQ mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .proposer import Proposer


@dataclass
class SamV1Embedding:
    """Encoded target image for SAM / SAM-HQ.

    embedding: ``(1, C, h, w)`` neck output (C = 256, ``h = w = S / 16`` = 64 for official models).
    vit_features: SAM-HQ only: ``(1, h, w, D)`` output of the ViT's first global-attention block (the early
        features the HQ decoder fuses in); None for SAM.
    """

    embedding: torch.Tensor
    vit_features: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields as named tensors (an exported image encoder's outputs, in order); no None."""
        return {"image_embedding": self.embedding,
                **({"vit_features": self.vit_features} if self.vit_features is not None else {})}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "SamV1Embedding":
        """Inverse of :meth:`tensors`."""
        return cls(tensors["image_embedding"], tensors.get("vit_features"))


class SamProposer(Proposer):
    """The original SAM (ViT-B/L/H) as a proposer: 3 multimask tokens (1-3) and a single-mask token (0)."""

    name = "SAM"

    @torch.inference_mode()
    def encode(self, image: torch.Tensor, add_no_memory_embedding: bool = False) -> SamV1Embedding:
        """See :meth:`Proposer.encode` (``add_no_memory_embedding`` is ignored: SAM has no memory)."""
        return SamV1Embedding(self.model.get_image_embeddings(self.pixels(image)))

    @torch.inference_mode()
    def decode(self, emb: SamV1Embedding, points=None, labels=None, boxes=None, multimask: bool = True):
        """See :meth:`Proposer.decode`."""
        return _run_decoder(self, emb, points, labels, boxes, multimask)


class SamHQProposer(Proposer):
    """SAM-HQ (ViT-B/L/H) as a proposer; see the module docstring for what its tokens 1-3 are."""

    name = "SAM-HQ"

    @torch.inference_mode()
    def encode(self, image: torch.Tensor, add_no_memory_embedding: bool = False) -> SamV1Embedding:
        """See :meth:`Proposer.encode` (``add_no_memory_embedding`` is ignored: SAM-HQ has no memory)."""
        out = self.model.vision_encoder(pixel_values=self.pixels(image))
        early = out.intermediate_embeddings[0] if out.intermediate_embeddings else None
        return SamV1Embedding(out.last_hidden_state, early)

    @torch.inference_mode()
    def decode(self, emb: SamV1Embedding, points=None, labels=None, boxes=None, multimask: bool = True):
        """See :meth:`Proposer.decode`; tokens 1-3 come back in token order (not sorted by IoU)."""
        raw_iou: list[torch.Tensor] = []
        head = self.model.mask_decoder.iou_prediction_head
        hook = head.register_forward_hook(lambda _module, _args, out: raw_iou.append(out))
        try:
            masks, iou = _run_decoder(
                self, emb, points, labels, boxes, multimask, hq_token_only=False,
                intermediate_embeddings=[emb.vit_features] if emb.vit_features is not None else None,
            )
        finally:
            hook.remove()
        if multimask:  # transformers returns tokens 1-3 sorted by IoU: put them back in token order
            token_iou = raw_iou[0][0, :, 1:4]
            order = torch.sort(token_iou, dim=1, descending=True).indices  # the same sort transformers makes
            masks = torch.empty_like(masks).scatter_(1, order[:, :, None, None].expand_as(masks), masks)
            iou = token_iou
        return masks, iou


def _run_decoder(proposer: Proposer, emb: SamV1Embedding, points, labels, boxes, multimask: bool, **extra):
    """transformers' SAM / SAM-HQ mask decoder on one image and ``B`` prompts: ``(B, T, h, w)``, ``(B, T)``."""
    sparse, dense = proposer.prompt_embeddings(points, labels, boxes)
    masks, iou = proposer.model.mask_decoder(
        image_embeddings=emb.embedding,
        image_positional_embeddings=proposer._positional(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        **extra,
    )
    return masks[0], iou[0]
