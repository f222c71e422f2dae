"""``ReferenceSegmenter``: the public object. Add references, save/load memory, predict(image) -> Detections."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .config import MethodConfig
from .errors import InputError
from .imageio import ImageLike, MaskLike, describe, load_image, load_mask
from .matching import (
    batched_nms,
    classify,
    full_res_masks,
    guided_points,
    mask_boxes_inclusive,
    mask_embeddings,
    mask_extents,
    point_grid,
    select_best_token,
    soft_merge_decay,
)
from .memory import ReferenceMemory
from .models.encoder import PatchEncoder, wrap_encoder
from .models.proposer import Proposer, make_proposer
from .prompts import mask_from_prompt
from .references import encode_references, prepare_reference
from .transforms import resize_for_encoder, squash_for_sam
from .types import Detections

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


# Models loaded from files or ids, shared within the process while some segmenter holds them.
_LOADED: "weakref.WeakValueDictionary[tuple, torch.nn.Module]" = weakref.WeakValueDictionary()


def _source_key(src: Any) -> tuple:
    """Identity of a model source: a path with its size and modification time, or the id itself."""
    if src is None:
        return (None,)
    path = Path(src)
    if path.exists():
        stat = path.stat()
        return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return (str(src),)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _jsonable(value):
    """Prompt values (tuples, arrays) as plain lists for the memory's JSON metadata."""
    return np.asarray(value, dtype=float).round(2).tolist()


@dataclass
class Proposals:
    """Proposals (the proposer's masks) that passed the IoU filter: logits ``(N, h, w)`` and predicted IoUs ``(N,)``."""

    logits: torch.Tensor
    iou: torch.Tensor


@dataclass
class Candidates:
    """Proposals that survived scoring and NMS, in ranking order (descending predicted IoU).

    logits: ``(K, h, w)`` low-res mask logits; scores, labels: ``(K,)``; embeddings: ``(K, D)`` unit mask
    features (used by soft merging).
    """

    logits: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor


class ReferenceSegmenter:
    """Training-free reference-based instance segmentation.

    sam2, encoder: a Meta checkpoint file, a Hugging Face directory, a hub id, or an already-built
        transformers model; ``None`` picks the paper's models (SAM2 Hiera-L 2.0, DINOv2 ViT-L/14).
        ``sam2`` names the proposer: SAM2 / SAM 2.1, SAM, SAM-HQ or the SAM 3 tracker (README, "Model weights").
        Models are loaded on first use: building a memory from masks never loads the proposer. A model loaded
        from a file or id is shared by every segmenter of the process asking for the same weights,
        device, dtype and attention implementation (it is loaded once).
    device, dtype: where and in which precision the models run (fp32 is the paper's setting).
    config: the method's hyper-parameters (paper values by default).
    memory: a memory file, a :class:`ReferenceMemory`, or a shared memory on the hub (``"hf://user/repo"``).

    Fast modes, all off by default (the faithful setting); they change the numbers slightly, see
    ``benchmarks/RESULTS.md`` for how much:
        autocast: ``"bf16"`` / ``"fp16"`` runs the three model forwards under ``torch.autocast`` (weights
            stay in ``dtype``; scoring, NMS and merging stay in fp32). Meant for CUDA.
        compile: ``True`` (or a dict of ``torch.compile`` keyword arguments) compiles the SAM2 (or SAM 3
            tracker) image encoder, the mask decoder and DINOv2 on first use (SAM and SAM-HQ run uncompiled).
        attn_implementation: a transformers attention backend for both models (``"sdpa"``, ``"eager"``,
            ``"flash_attention_2"`` ...); ``None`` keeps the models' own (transformers' default is SDPA).

    runtime: what runs the networks (:mod:`no_time_to_train.runtime`): ``"torch"`` (eager, the faithful
        reference), ``"onnxruntime"`` / ``"openvino"`` (an ONNX export: ``export_dir``, else the models are
        exported once into the cache, keyed by their weights' sha256 and the encoder size; float32 only),
        ``"compiled"`` (``torch.compile``, inductor: the same as ``compile=True``) or ``"auto"`` (the device's
        default, ``runtime.CPU_DEFAULT`` / ``GPU_DEFAULT``). Every runtime gives the same detections within
        float rounding (README, "Runtimes").
    export_dir: an ``nttt export onnx`` directory for the exported runtimes. With ``sam2``/``encoder`` also
        given, their weights must be the exported ones; without, the export alone is used (no PyTorch model).
    """

    def __init__(
        self,
        sam2: Any = None,
        encoder: Any = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        config: MethodConfig | None = None,
        memory: str | os.PathLike | ReferenceMemory | None = None,
        *,
        autocast: str | torch.dtype | None = None,
        compile: bool | dict = False,
        attn_implementation: str | None = None,
        runtime: str = "auto",
        export_dir: str | os.PathLike | None = None,
    ):
        from . import runtime as runtimes

        self.config = config or MethodConfig()
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.autocast = resolve_dtype(autocast) if autocast is not None else None
        if self.autocast == torch.float32:
            self.autocast = None
        self.compile = ({} if compile is True else dict(compile)) if compile else None
        plain = self.dtype == torch.float32 and self.autocast is None and self.compile is None
        self.runtime = runtimes.resolve(runtime, self.device.type, plain_fp32=plain)
        self.export_dir = Path(export_dir) if export_dir is not None else None
        if self.runtime == "compiled":
            if self.device.type == "cpu":
                runtimes.check_compiler()
            self.compile = {"backend": "inductor", **(self.compile or {})}
        elif self.runtime in runtimes.EXPORTED_RUNTIMES:
            runtimes.require(self.runtime)
            if self.dtype != torch.float32 or self.autocast is not None or self.compile is not None:
                raise InputError(f"the {self.runtime} runtime runs float32 ONNX exports: use dtype float32, no "
                                 "autocast and no compile (or runtime='torch')")
        elif self.export_dir is not None:
            raise InputError(f"export_dir (--export-dir) is for the onnxruntime and openvino runtimes, not "
                             f"{self.runtime!r}: add --runtime onnxruntime or --runtime openvino")
        self.attn_implementation = attn_implementation
        self._sam2_source, self._encoder_source = sam2, encoder
        self._sam2: Proposer | None = None  # the proposer (historical name: tests and tools set it)
        self._encoder: PatchEncoder | None = None
        self.memory = ReferenceMemory(config=self.config.to_dict())
        if isinstance(memory, ReferenceMemory):
            self.memory = memory
        elif memory is not None:
            self.load_memory(memory)

    @classmethod
    def from_preset(cls, name: str, sam2: Any = None, encoder: Any = None, config: MethodConfig | None = None,
                    **kwargs: Any) -> "ReferenceSegmenter":
        """A segmenter with the models of preset ``name`` (see :mod:`no_time_to_train.presets`).

        ``sam2``/``encoder`` replace the preset's models (e.g. a local Meta file of the same model); ``config``
        replaces its settings; other keyword arguments go to the constructor.
        """
        from .presets import get_preset

        preset = get_preset(name)
        return cls(sam2=sam2 or preset.proposer, encoder=encoder or preset.encoder,
                   config=config or MethodConfig().replace(**preset.settings), **kwargs)

    # -- models ----------------------------------------------------------------------------------------
    def _model(self, src: Any, kind: str) -> torch.nn.Module:
        if isinstance(src, torch.nn.Module):
            model = src.to(self.device, self.dtype)
        else:
            key = (kind, _source_key(src), str(self.device), self.dtype, self.attn_implementation)
            model = _LOADED.get(key)
            if model is None:
                from .models import checkpoints

                load = checkpoints.load_proposer if kind == "sam2" else checkpoints.load_encoder
                model = load(src, device=self.device, dtype=self.dtype)
                _LOADED[key] = model
        if self.attn_implementation and model.config._attn_implementation != self.attn_implementation:
            model.set_attn_implementation(self.attn_implementation)
        return model

    @property
    def proposer(self) -> Proposer:
        """The mask proposer (SAM2 by default; whichever family ``sam2`` names), loaded on first use."""
        if self._sam2 is None:
            proposer = self._exported("proposer") if self._runs_export else make_proposer(
                self._model(self._sam2_source, "sam2"))
            if proposer.image_size != self.config.sam_image_size:
                raise InputError(
                    f"the {proposer.name} proposer takes {proposer.image_size}² images but the config's "
                    f"sam_image_size is {self.config.sam_image_size}; set sam_image_size={proposer.image_size}"
                )
            if self.compile is not None:
                proposer.compile(**self.compile)
            self._sam2 = proposer
        return self._sam2

    @property
    def _runs_export(self) -> bool:
        return self.runtime in ("onnxruntime", "openvino")

    def _exported(self, role: str):
        """The runtime-backed proposer or encoder: from ``export_dir``, else from the cache (exported on first use)."""
        from .models.export import cached_export
        from .models.exported import load_exported

        src = self._sam2_source if role == "proposer" else self._encoder_source
        if self.export_dir is not None and src is None:
            return load_exported(role, self.export_dir, self.runtime, self.device)
        model = self._model(src, "sam2" if role == "proposer" else "encoder")
        if self.export_dir is not None:
            return load_exported(role, self.export_dir, self.runtime, self.device, model=model)
        if role == "proposer":
            directory = cached_export(role, make_proposer(model), {}, self.runtime)
        else:
            encoder = wrap_encoder(model)
            size = encoder.input_size(self.config.encoder_size)
            directory = cached_export(role, encoder, {"encoder_size": size}, self.runtime)
        return load_exported(role, directory, self.runtime, self.device)

    @property
    def sam2(self) -> Proposer:
        """The proposer under its historical name (whatever its family)."""
        return self.proposer

    @property
    def encoder(self) -> PatchEncoder:
        if self._encoder is None:
            encoder = self._exported("encoder") if self._runs_export else wrap_encoder(
                self._model(self._encoder_source, "encoder"))
            encoder.input_size(self.config.encoder_size)  # a size that does not fit the patch size fails now
            if self.compile is not None:
                encoder.compile(**self.compile)
            self._encoder = encoder
            self.memory.check_encoder(self.encoder_identity)
        return self._encoder

    @property
    def encoder_size(self) -> int:
        """The encoder's input side ``S`` for ``config.encoder_size`` (``"auto"`` resolved; loads the encoder)."""
        return self.encoder.input_size(self.config.encoder_size)

    @property
    def encoder_identity(self) -> dict:
        """What a memory records of the encoder: its ``describe()`` plus the input side (``input_size``)."""
        return {**self.encoder.describe(), "input_size": self.encoder_size}

    # -- memory ----------------------------------------------------------------------------------------
    @property
    def categories(self) -> list[str]:
        return self.memory.category_names

    def add_reference(
        self,
        image: ImageLike,
        mask: MaskLike | None = None,
        *,
        category: str,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        category_id: int | None = None,
        crop_box: Sequence[float] | None = None,
        negative: bool = False,
        source: dict | None = None,
    ) -> int:
        """Add one reference instance of ``category`` and return its row in the memory.

        image: path, PIL image or ``(H, W, 3)`` uint8 array. Give exactly one of:
          mask: ``(H, W)`` bool array or a mask file at the image's resolution;
          box: ``(x0, y0, x1, y1)`` pixels; SAM2 turns it into a mask (single-mask output);
          points: clicks ``[(x, y, 1), (x, y, 0), ...]`` (1 object, 0 background); SAM2 makes the mask.
        crop_box: optional ``(x0, y0, x1, y1)`` to centre the context crop on (default: the given box, else
        the mask's tight box). negative: an example of what ``category`` is NOT (an extension, see
        ``MethodConfig.negative_temperature``). source: free-form provenance stored in the memory.
        """
        return self.add_references([dict(image=image, mask=mask, box=box, points=points, category=category,
                                         category_id=category_id, crop_box=crop_box, negative=negative,
                                         source=source)])[0]

    def add_references(self, items: Sequence[dict], batch_size: int = 8) -> list[int]:
        """Add many references at once (encoded in batches). Each item takes :meth:`add_reference`'s arguments.

        All items are validated and encoded before the memory changes, so a bad item adds nothing.
        """
        vectors, weights, meta = self.encode_references(items, batch_size)
        self.memory.check_encoder(self.encoder_identity)
        self.memory.encoder = self.memory.encoder or self.encoder_identity
        rows = []
        for (category, category_id, src), vec, w in zip(meta, vectors, weights):
            self.memory.add(vec, float(w), category, category_id, **src)
            rows.append(len(self.memory) - 1)
        return rows

    def reference_mask(self, image: ImageLike, *, box=None, points=None, name: str = "reference") -> np.ndarray:
        """The ``(H, W)`` bool mask the proposer makes for a box or clicks on ``image`` (what box/point references use)."""
        return mask_from_prompt(self.proposer, load_image(image), box=box, points=points, name=name)[0]

    def encode_references(self, items: Sequence[dict], batch_size: int = 8):
        """Reference vectors without touching the memory.

        Returns ``vectors (B, D)``, ``weights (B,)`` and per item ``(category, category_id, source)``.
        """
        crops, meta = [], []
        for item in items:
            category = item.get("category")
            if not isinstance(category, str) or not category.strip():
                raise InputError("add_reference: category must be a non-empty string")
            image_src = item["image"]
            name = f"reference {describe(image_src)} ({category})"
            prompts = [k for k in ("mask", "box", "points") if item.get(k) is not None]
            if len(prompts) != 1:
                raise InputError(f"{name}: give exactly one of mask, box or points (got {', '.join(prompts) or 'none'})")
            image = load_image(image_src)
            src = dict(item.get("source") or {})
            crop_box = item.get("crop_box")
            if prompts == ["mask"]:
                mask = load_mask(item["mask"], image.shape[:2], name=f"mask of {name}")
            else:
                mask, iou = mask_from_prompt(self.proposer, image, box=item.get("box"), points=item.get("points"), name=name)
                src.update(prompt=prompts[0], prompt_value=_jsonable(item[prompts[0]]), sam2_iou=round(iou, 4))
                if prompts == ["box"] and crop_box is None:
                    crop_box = tuple(float(v) for v in item["box"])
            crops.append(prepare_reference(image, mask, self.config, crop_box, name=name,
                                           patch_size=self.encoder.patch_size))
            if isinstance(image_src, (str, os.PathLike)):
                src.setdefault("image", str(image_src))
            if item.get("negative"):
                src["negative"] = True
            meta.append((category, item.get("category_id"), src))
        vectors, weights = encode_references(self.encoder, crops, batch_size=batch_size)
        return vectors, weights, meta

    def remove_category(self, name: str) -> int:
        """Remove a category and its references; returns how many references were removed."""
        return self.memory.remove_category(name)

    def save_memory(self, path: str | os.PathLike) -> Path:
        self.memory.config = self.config.to_dict()
        return self.memory.save(path)

    def load_memory(self, path: str | os.PathLike) -> ReferenceMemory:
        """Load a memory file, or a shared one from the Hugging Face hub (``"hf://user/repo"``, see :mod:`.hub`)."""
        from .hub import download_memory, is_hub_source

        if is_hub_source(path):
            path = download_memory(path)
        memory = ReferenceMemory.load(path)
        if self._encoder is not None:
            memory.check_encoder(self.encoder_identity)
        self.memory = memory
        return memory

    # -- prediction stages (each one job; the benchmark times them separately) --------------------------
    def _autocast(self):
        """Autocast context for the model forwards when a reduced-precision fast mode is on, else a no-op."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def to_sam_frame(self, image: np.ndarray) -> torch.Tensor:
        """The target squashed to the SAM frame: ``(3, S, S)`` in [0, 1] (PIL bicubic, METHOD.md 5.1)."""
        return squash_for_sam(image, self.config.sam_image_size)

    def encode_sam(self, t_sam: torch.Tensor):
        """The proposer's image embedding of the squashed target (one image-encoder pass)."""
        with self._autocast():
            return self.proposer.encode(t_sam, self.config.add_no_memory_embedding)

    def encode_features(self, t_sam: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(G*G, D)`` float32 of the squashed target resized to the encoder's input side ``S``²
        (``G = S / patch size``; 518² and 37x37 for the paper's DINOv2)."""
        with self._autocast():
            return self.encoder.patch_tokens(resize_for_encoder(t_sam, self.encoder_size)[None])[0]

    def encode_target(self, image: np.ndarray) -> tuple[Any, torch.Tensor]:
        """The proposer's embedding of the squashed image and the encoder's patch tokens ``(G*G, D)`` of its resize."""
        t_sam = self.to_sam_frame(image)
        return self.encode_sam(t_sam), self.encode_features(t_sam)

    def prompt_points(self, tokens: torch.Tensor | None = None, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """Point prompts ``(P, 2)`` in the SAM frame.

        ``prompt_mode="grid"`` (the paper): the ``points_per_side``² grid. ``"guided"`` (a fast deviation):
        the centres of the ``guided_points`` DINOv2 patches most similar (cosine) to any prototype, in
        row-major patch order; it needs the target's ``tokens`` and the ``prototypes``.
        """
        cfg = self.config
        if cfg.prompt_mode == "grid":
            return point_grid(cfg.points_per_side, cfg.sam_image_size, cfg.point_grid)
        if tokens is None or prototypes is None:
            raise InputError("prompt_mode='guided' needs the target's DINOv2 tokens and the prototypes")
        return guided_points(tokens, prototypes.to(tokens.device), cfg.guided_points, cfg.sam_image_size)

    def propose(self, emb: Any, tokens: torch.Tensor | None = None,
                prototypes: torch.Tensor | None = None) -> Proposals:
        """Decode the prompts in batches; keep the best token per prompt if its predicted IoU passes.

        ``tokens``/``prototypes`` are only used by ``prompt_mode="guided"``.
        """
        cfg = self.config
        points = self.prompt_points(tokens, prototypes)
        batch = self._point_batch_size()
        kept_logits, kept_iou = [], []
        for start in range(0, len(points), batch):  # every prompt, including a last partial batch
            pts = points[start : start + batch, None, :]
            with self._autocast():
                logits, iou = self.proposer.decode(emb, pts, torch.ones(len(pts), 1, dtype=torch.int32))
            logits, iou = select_best_token(logits.float(), iou.float(), cfg.multimask_tokens)
            keep = iou > cfg.iou_threshold
            kept_logits.append(logits[keep])
            kept_iou.append(iou[keep])
        return Proposals(torch.cat(kept_logits), torch.cat(kept_iou))

    def _point_batch_size(self) -> int:
        bs = self.config.point_batch_size
        if bs != "auto":
            return int(bs)
        from .resources import auto_point_batch_size

        return auto_point_batch_size(self.proposer, self.device, dtype=self.autocast)

    def predict(self, image: ImageLike) -> Detections:
        """Find every instance of the memory's categories in ``image`` (path, PIL image or array)."""
        prototypes = self.memory.prototypes(self.config.prototype)
        img = load_image(image)
        emb, tokens = self.encode_target(img)
        proposals = self.propose(emb, tokens, prototypes)
        return self.finish(proposals, tokens, prototypes, img.shape[:2])

    def finish(self, proposals: Proposals, tokens: torch.Tensor, prototypes: torch.Tensor,
               image_size: tuple[int, int]) -> Detections:
        """Score, NMS, upsample survivors, soft-merge and keep the top detections."""
        return self.merge(self.select(proposals, tokens, prototypes), image_size)

    def select(self, proposals: Proposals, tokens: torch.Tensor, prototypes: torch.Tensor) -> Candidates:
        """Score every proposal against the prototypes, class-aware NMS, cap, drop non-positive scores.

        Works on the low-res logits only; the survivors come out in NMS (ranking) order. ``tokens``: the
        target's ``(G*G, D)`` patch tokens (any encoder's square grid).
        """
        cfg = self.config
        dev = tokens.device
        grid = math.isqrt(tokens.shape[0])  # tokens are the encoder's square (G*G, D) patch grid
        masks_lr = proposals.logits.to(dev) > cfg.mask_threshold  # (N, h, w)
        emb = mask_embeddings(masks_lr, tokens.float(), grid)
        scores, labels = classify(emb, prototypes.to(dev), self.memory.negatives(), cfg.negative_temperature)
        rank = proposals.iou.to(dev) if cfg.nms_rank_by == "predicted_iou" else scores
        keep = batched_nms(mask_boxes_inclusive(masks_lr).to(dev), rank, labels, cfg.nms_threshold)
        keep = keep[: cfg.max_pre_merge]
        keep = keep[scores[keep] > 0]
        return Candidates(proposals.logits[keep].to(dev), scores[keep], labels[keep], emb[keep])

    def merge(self, candidates: Candidates, image_size: tuple[int, int]) -> Detections:
        """Upsample the survivors to the image, soft-merge their scores and keep the top detections.

        Memory, for ``K`` candidates, ``N`` detections kept and an ``H x W`` image: the output's ``N*H*W``
        bytes, plus the candidates' full-resolution masks: ``K*H*W`` bytes, or ``K*H*W/8`` (bit-packed) once
        that would exceed ``matching.DENSE_MASK_BYTES`` (1 GiB), plus working chunks of about
        ``max(matching.WORK_BYTES, 9*H*W)`` bytes for upsampling and ``13 * K * 65536`` bytes for the
        soft-merge intersections. The packed path gives the same bits as the dense one.
        """
        cfg = self.config
        names, ids = self.memory.category_names, self.memory.category_ids
        if len(candidates.scores) == 0:
            return Detections.empty(image_size, names, category_ids=ids, box_convention=cfg.box_convention)
        masks = full_res_masks(candidates.logits, image_size, cfg.mask_threshold, cfg.mask_upsampling)
        scores, labels = candidates.scores, candidates.labels
        if cfg.soft_merge:
            scores = scores * soft_merge_decay(masks, candidates.embeddings, labels, cfg.merge_exponent)
        order = torch.sort(scores, descending=True, stable=True).indices[: cfg.max_detections]
        if cfg.score_threshold is not None:
            order = order[scores[order] > cfg.score_threshold]
        masks = masks[order]
        return Detections(
            masks=masks.cpu().numpy(),
            boxes=mask_extents(masks).cpu().numpy().astype(np.float32),
            scores=scores[order].cpu().numpy().astype(np.float32),
            labels=labels[order].cpu().numpy().astype(np.int64),
            category_names=list(names),
            category_ids=list(ids),
            box_convention=cfg.box_convention,
        )

    # -- video ------------------------------------------------------------------------------------------
    def segment_video(self, source: Any, config: "TrackConfig | None" = None, *, progress: bool = False, **settings):
        """Find the memory's categories in a video and follow every instance through it; yields, frame by frame,
        :class:`Detections` with ``track_ids`` (identities across frames; scores descending).

        source: a video file (PyAV decodes it lazily), a folder or glob of frame images, a list of frame paths,
        or an iterable of ``(H, W, 3)`` arrays (a generator is fine: frames are read one at a time).
        config: a :class:`~no_time_to_train.video.config.TrackConfig`; keyword ``settings`` override its fields
        (``keyframe_interval=30``, ``backward=False`` ...). The algorithm is in :mod:`no_time_to_train.video.track`.
        SAM2's video modules are loaded from the same weights as the proposer (``sam2``), sharing its tensors.

        For the frames' indices, names and images and the tracks' final categories and scores, use
        :class:`~no_time_to_train.video.track.VideoTracker` directly (``run`` yields ``FrameResult`` objects;
        ``tracks()``).
        """
        from .video.config import TrackConfig
        from .video.track import VideoTracker

        cfg = TrackConfig.from_dict({**(config or TrackConfig()).to_dict(), **settings})
        tracker = VideoTracker(self, cfg)
        from tqdm import tqdm

        with tqdm(desc="track", unit="frame", disable=not progress) as bar:
            for result in tracker.run(source):
                bar.update(1)
                yield result.detections
