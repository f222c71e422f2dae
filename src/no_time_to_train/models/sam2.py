"""SAM2 (and the SAM 3 tracker, which shares its decoder) as the method uses it: one image encoding, then batches
of prompts through the mask decoder.

Frames: prompts are pixel coordinates in the SAM frame (the image squashed to ``image_size``², 1024²).
Mask logits come out at the low-res grid, ``4 * image_size / 16`` = 256².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import Sam2Model

from .proposer import Proposer


@dataclass
class SamImageEmbedding:
    """Encoded target image.

    embedding: ``(1, C, 64, 64)`` stride-16 features (C = 256 for official models).
    high_res: the stride-4 ``(1, C/8, 256, 256)`` and stride-8 ``(1, C/4, 128, 128)`` features after the
        decoder's ``conv_s0``/``conv_s1``.
    """

    embedding: torch.Tensor
    high_res: list[torch.Tensor]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields as named tensors (an exported image encoder's outputs, in order)."""
        return {"image_embedding": self.embedding, **{f"high_res_{i}": t for i, t in enumerate(self.high_res)}}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "SamImageEmbedding":
        """Inverse of :meth:`tensors`."""
        levels = sum(k.startswith("high_res_") for k in tensors)
        return cls(tensors["image_embedding"], [tensors[f"high_res_{i}"] for i in range(levels)])


class Sam2Segmenter(Proposer):
    """The SAM2 / SAM 2.1 proposer: a thin wrapper over a transformers ``Sam2Model``.

    ``shared_image_decoder`` (default) decodes multimask prompts with :meth:`_decode_shared_image`, which equals
    the model's own mask decoder but shares the image between prompts instead of copying it per prompt.
    """

    name = "SAM2"
    model: Sam2Model

    def __init__(self, model: Sam2Model, shared_image_decoder: bool = True):
        super().__init__(model)
        self.shared_image_decoder = shared_image_decoder
        self._pos_tokens: torch.Tensor | None = None
        self._image_features = model.get_image_features
        self._decode_impl = self._decode_shared_image

    def compile(self, **kwargs) -> None:
        """``torch.compile`` the image encoder and the (shared-image) mask decoder; kwargs go to torch.compile."""
        self._image_features = torch.compile(self.model.get_image_features, **kwargs)
        self._decode_impl = torch.compile(self._decode_shared_image, **kwargs)

    @torch.inference_mode()
    def encode(self, image: torch.Tensor, add_no_memory_embedding: bool = False) -> SamImageEmbedding:
        """``image``: ``(3, S, S)`` in [0, 1] in the SAM frame. Runs the Hiera encoder and FPN neck once.

        ``add_no_memory_embedding=False`` is the paper's behaviour (METHOD.md 11.1); transformers'
        ``get_image_embeddings`` would add it.
        """
        out = self._image_features(self.pixels(image), return_dict=True)
        sizes = self.model.backbone_feature_sizes
        maps = []
        for feat, (h, w) in zip(out.fpn_hidden_states, sizes):  # each (h*w, 1, C)
            maps.append(feat.permute(1, 2, 0).reshape(1, -1, h, w))
        if add_no_memory_embedding:
            maps[-1] = maps[-1] + self.model.no_memory_embedding.view(1, -1, 1, 1)
        return SamImageEmbedding(embedding=maps[-1], high_res=maps[:-1])

    def _on_new_positional(self) -> None:
        self._pos_tokens = None

    def _positional_tokens(self) -> torch.Tensor:
        """The positional embedding as contiguous tokens ``(1, h*w, C)``."""
        pos = self._positional()
        if self._pos_tokens is None:
            self._pos_tokens = pos.flatten(2).transpose(1, 2).contiguous()
        return self._pos_tokens

    @torch.inference_mode()
    def decode(
        self,
        emb: SamImageEmbedding,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`Proposer.decode`. Logits are ``(B, 3, 256, 256)`` for official models; the single-mask
        output is token 0, with SAM2's stability fallback to the best multimask token.
        """
        sparse, dense = self.prompt_embeddings(points, labels, boxes)
        if self.shared_image_decoder and multimask:
            return self._decode_impl(emb, sparse[0], dense, self._positional_tokens())
        masks, iou, _, _ = self.model.mask_decoder(
            image_embeddings=emb.embedding,
            image_positional_embeddings=self._positional(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=emb.high_res,
        )
        return masks[0], iou[0]

    def _decode_shared_image(
        self, emb: SamImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' ``Sam2MaskDecoder.forward`` (multimask output) for ``B`` prompts on ONE image.

        sparse: ``(B, T, C)`` prompt tokens; dense: the no-mask embedding ``(1, C, h, w)``; key_pe: the image-wide
        positional embedding as tokens ``(1, h*w, C)`` (computed once, outside: no state changes in here, so
        that a compiled version is not recompiled after the first call).
        The maths is the decoder's, operation for operation, called through its own submodules; what
        differs is only how the image is shared between prompts. transformers copies the image embedding,
        its positional encoding and both high-resolution maps once per prompt (``repeat_interleave``) and
        runs the first layer's image-side projections (which do not depend on the prompt until the first
        image update) once per prompt. Here they are computed once and broadcast, which saves memory
        traffic, about a fifth of the decoder's FLOPs and ``B`` copies of four image-sized tensors.
        Returns logits ``(B, 3, 4h, 4w)`` for mask tokens 1-3 and their predicted IoUs ``(B, 3)``.
        """
        dec = self.model.mask_decoder
        tr = dec.transformer
        b = sparse.shape[0]
        _, c, h, w = emb.embedding.shape
        output_tokens = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.expand(b, -1, -1), sparse), dim=1).to(dec.iou_token.weight.dtype)
        point_pe = tokens  # (B, T, C): the prompt tokens are also the queries' positional embedding
        keys = (emb.embedding + dense).flatten(2).transpose(1, 2)  # (1, h*w, C), shared until layer 0 updates it
        queries = point_pe
        for layer in tr.layers:
            shared = keys.shape[0] == 1
            if layer.skip_first_layer_pe:
                queries = _attend(layer.self_attn, queries, queries, queries, b)
            else:
                q = queries + point_pe
                queries = queries + _attend(layer.self_attn, q, q, queries, b)
            queries = layer.layer_norm1(queries)
            q = queries + point_pe
            k = keys + key_pe
            queries = layer.layer_norm2(queries + _attend(layer.cross_attn_token_to_image, q, k, keys, b))
            queries = layer.layer_norm3(queries + layer.mlp(queries))
            q = queries + point_pe
            k = k if shared else keys + key_pe  # keys unchanged since the token-to-image step
            keys = layer.layer_norm4(keys + _attend(layer.cross_attn_image_to_token, k, q, queries, b))
        q = queries + point_pe
        k = keys + key_pe
        queries = tr.layer_norm_final_attn(queries + _attend(tr.final_attn_token_to_image, q, k, keys, b))

        iou_token_out = queries[:, 1, :]
        mask_tokens_out = queries[:, 2 : 2 + dec.num_mask_tokens, :]
        image = keys.expand(b, -1, -1).transpose(1, 2).view(b, c, h, w)
        feat_s0, feat_s1 = emb.high_res  # (1, C/8, 4h, 4w), (1, C/4, 2h, 2w): broadcast over prompts
        up = dec.upscale_conv1(image) + feat_s1
        up = dec.activation(dec.upscale_layer_norm(up))
        up = dec.activation(dec.upscale_conv2(up) + feat_s0)
        hyper_in = torch.stack(
            [dec.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(dec.num_mask_tokens)], dim=1
        )
        _, c8, hh, ww = up.shape
        masks = (hyper_in @ up.view(b, c8, hh * ww)).view(b, -1, hh, ww)
        iou_pred = dec.iou_prediction_head(iou_token_out)
        return masks[:, 1:], iou_pred[:, 1:]


class Sam3TrackerProposer(Sam2Segmenter):
    """The SAM 3 tracker (transformers ``Sam3TrackerModel``): SAM2's prompt encoder and mask decoder on SAM 3's
    ViT, in a 1008² frame (72² embedding, 288² logits), normalised with mean 0.5 and std 0.5 (its processor's).

    Its module layout is SAM2's, so the shared-image decoder applies unchanged.
    """

    name = "SAM 3 tracker"
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)


def _attend(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, batch: int) -> torch.Tensor:
    """transformers' ``Sam2Attention.forward`` on ``(Bx, N, C)`` inputs whose batch ``Bx`` is 1 or ``batch``.

    A batch-1 input is shared by every prompt: it is projected once and broadcast (no copy). Uses the
    attention implementation the model is configured with, as the module itself does.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.sam2.modeling_sam2 import eager_attention_forward

    heads, hd = attn.num_attention_heads, attn.head_dim

    def project(linear, x):
        y = linear(x).view(x.shape[0], -1, heads, hd).transpose(1, 2)
        return y.expand(batch, -1, -1, -1)

    q, k, v = project(attn.q_proj, query), project(attn.k_proj, key), project(attn.v_proj, value)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    out, _ = interface(attn, q, k, v, attention_mask=None, dropout=0.0, scaling=attn.scaling, is_causal=False)
    return attn.o_proj(out.reshape(batch, -1, heads * hd).contiguous())
