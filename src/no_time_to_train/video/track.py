"""Tracking every instance of the memory's categories through a video: the algorithm.

For each frame ``t``, in order, decoded one at a time:

1. **Propagate**: SAM2's video model segments every live track on ``t`` from its memory (the masks and object
   pointers of its recent frames and keyframes), see :class:`~.propagate.Propagator`.
2. **Detect** (keyframes only: frame 0, every ``keyframe_interval``-th frame and the listed ``keyframes``): the
   image pipeline (the paper's method, the segmenter's ``MethodConfig``) finds the instances on ``t``; those
   scoring above ``min_score`` are associated with the live tracks by mask IoU (:mod:`.tracker`): a match
   refreshes its track (the detection's mask becomes a new conditioning frame of its memory), an unmatched
   detection starts a new track, a track duplicating a matched one ends.
3. **Backward** (optional, on by default): a track born on a keyframe after frame 0 is also propagated
   backward over the previous ``TrackConfig.lag`` frames (they are kept decoded for this), until it is lost for
   ``end_after`` frames or its mask overlaps another track's (then the instance was already followed there).
4. **End**: a track lost (empty mask or low object score) for ``end_after`` consecutive frames ends.

Frame ``t``'s result is final once frame ``t + lag`` is processed (``lag = 0`` without the backward pass), so
results stream out with a delay of ``lag`` frames. Each result is a :class:`~no_time_to_train.Detections` with
``track_ids``; its labels and scores are the tracks' (see :class:`~.tracker.Track`) as known at that moment;
:meth:`VideoTracker.tracks` gives the final ones.

Memory: the frames of the lag window, the live tracks' bounded SAM2 memories, the models. Nothing grows with
the video's length except the list of finished tracks (a few numbers each).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import InputError
from ..matching import mask_extents, upsample_masks
from ..types import Detections
from .config import TrackConfig
from .propagate import Propagator
from .source import open_video
from .tracker import TrackBook, mask_iou

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """One frame's tracks: ``index`` (0-based), ``name``, ``image`` ``(H, W, 3) uint8`` and ``detections``
    (with ``track_ids``; scores descending)."""

    index: int
    name: str
    image: np.ndarray
    detections: Detections


class _Packed:
    """A bool mask ``(H, W)`` stored 8 pixels to a byte while its frame waits in the lag window."""

    __slots__ = ("bits", "shape")

    def __init__(self, mask: np.ndarray):
        self.bits, self.shape = np.packbits(mask, axis=None), mask.shape

    def unpack(self) -> np.ndarray:
        return np.unpackbits(self.bits, count=self.shape[0] * self.shape[1]).reshape(self.shape).astype(bool)


@dataclass
class _Pending:
    index: int
    name: str
    image: np.ndarray
    masks: dict  # track id -> _Packed


def video_model_for(seg) -> torch.nn.Module:
    """The segmenter's SAM2 as a ``Sam2VideoModel``, sharing the proposer's weights (loaded once, then kept).

    A segmenter built from a ``Sam2VideoModel`` object uses it; one built from a file, directory or hub id loads
    the video modules from the same source (:func:`~no_time_to_train.models.checkpoints.load_sam2_video`).
    """
    cached = getattr(seg, "_sam2_video", None)
    if cached is not None:
        return cached
    from transformers import Sam2VideoModel

    from ..errors import CheckpointError

    source = seg._sam2_source
    if isinstance(source, Sam2VideoModel):
        model = seg.proposer.model  # the same object, on the segmenter's device and dtype
    elif isinstance(source, torch.nn.Module):
        raise CheckpointError(f"tracking needs SAM2's video model, but the segmenter's proposer is a "
                              f"{type(source).__name__}; build the segmenter with sam2= a Sam2VideoModel, Meta's full "
                              "SAM2 checkpoint, or a sam2_video directory or hub id")
    else:
        from ..models.checkpoints import load_sam2_video

        if not seg.proposer.name.startswith("SAM2"):  # "SAM2", or "SAM2 (openvino)" under an exported runtime
            raise CheckpointError(f"tracking needs SAM2; the proposer is {seg.proposer.name}")
        # Under an exported runtime (onnxruntime / openvino) the proposer holds no PyTorch model: the video model
        # then loads its own copy of the weights instead of sharing the proposer's.
        model = load_sam2_video(source, device=seg.device, dtype=seg.dtype, image_model=seg.proposer.model)
    seg._sam2_video = model
    return model


class VideoTracker:
    """Runs the algorithm above for one segmenter and one :class:`TrackConfig` (see :meth:`run`)."""

    def __init__(self, segmenter, config: TrackConfig | None = None):
        self.seg = segmenter
        self.config = config or TrackConfig()
        self.book = TrackBook(self.config.match_iou, self.config.end_after, self.config.max_tracks)
        self.frames = 0
        self.keyframes = 0

    # -- model calls -------------------------------------------------------------------------------------
    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        """The frame as the video model's input ``(3, S, S)``: squashed and normalised as the proposer's."""
        return self.seg.proposer.pixels(self.seg.to_sam_frame(image))[0]

    def detect(self, image: np.ndarray) -> Detections:
        """The image pipeline on one frame, keeping detections scoring above ``min_score``."""
        dets = self.seg.predict(image)
        return dets[dets.scores > self.config.min_score]

    def _masks(self, logits: torch.Tensor, scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Low-res logits ``(K, h, w)`` -> ``(K, H, W)`` bool, emptied where the object score is low."""
        cfg = self.seg.config
        masks = upsample_masks(logits, size, cfg.mask_threshold, cfg.mask_upsampling)
        masks &= (scores > self.config.object_score_threshold).to(masks.device)[:, None, None]
        return masks.cpu().numpy()

    # -- the algorithm -----------------------------------------------------------------------------------
    def run(self, source: Any) -> Iterator[FrameResult]:
        """Track through ``source`` (what :func:`~.source.open_video` takes); yields each frame's result in order."""
        frames = open_video(source)
        if len(self.seg.memory) == 0:
            raise InputError("the memory holds no references: add references (or load a memory) before tracking")
        model = video_model_for(self.seg)
        forward = Propagator(model, self.config.max_cond_frames)
        pending: deque[_Pending] = deque()
        for frame in frames:
            image, t = frame.image, frame.index
            size = image.shape[:2]
            keyframe = self.config.is_keyframe(t)
            pixels = self._pixels(image) if len(forward) or keyframe else None
            ids, logits, scores = forward.step(t, pixels) if len(forward) else ([], None, None)
            current = dict(zip(ids, self._masks(logits, scores, size))) if ids else {}
            if keyframe:
                self.keyframes += 1
                current = self._keyframe(t, image, pixels, current, forward, pending)
            for tid in list(current):
                visible = bool(current[tid].any())
                if self.book.observe(t, tid, visible):
                    forward.remove([tid])
                if not visible:
                    del current[tid]
            pending.append(_Pending(t, frame.name, image, {tid: _Packed(m) for tid, m in current.items()}))
            self.frames += 1
            while len(pending) > self.config.lag:
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def _keyframe(self, t: int, image: np.ndarray, pixels: torch.Tensor, current: dict, forward: Propagator,
                  pending: deque) -> dict:
        """Detect on keyframe ``t``, associate, refresh / start / end tracks; returns the frame's masks by track."""
        dets = self.detect(image)
        ids = list(current)
        stacked = np.stack([current[i] for i in ids]) if ids else np.zeros((0, *image.shape[:2]), bool)
        assoc = self.book.associate(t, ids, stacked, dets.masks, dets.scores, dets.labels)
        forward.remove(assoc.duplicates)
        for tid in assoc.duplicates:
            current.pop(tid, None)
        for tid, d in assoc.refreshed + assoc.new:
            forward.add(t, tid, torch.from_numpy(dets.masks[d]))
            current[tid] = dets.masks[d]
        if assoc.refreshed or assoc.new:
            forward.step(t, pixels)  # turns the detections' masks into conditioning memories
        if assoc.new and t > 0 and self.config.backward:
            self._backward(t, pixels, {tid: dets.masks[d] for tid, d in assoc.new}, pending)
        if assoc.new or assoc.duplicates:
            log.debug("frame %d: %d refreshed, %d new, %d duplicates ended", t, len(assoc.refreshed), len(assoc.new),
                      len(assoc.duplicates))
        return current

    def _backward(self, t: int, pixels: torch.Tensor, new: dict, pending: deque) -> None:
        """Follow the tracks born on keyframe ``t`` back through the frames waiting in ``pending``."""
        back = Propagator(self.video_model, self.config.max_cond_frames, reverse=True)
        for tid, mask in new.items():
            back.add(t, tid, torch.from_numpy(mask))
        back.step(t, pixels)
        lost = dict.fromkeys(new, 0)
        for p in reversed(pending):
            if t - p.index > self.config.lag or not len(back):
                break
            ids, logits, scores = back.step(p.index, self._pixels(p.image))
            masks = self._masks(logits, scores, p.image.shape[:2])
            others = [m.unpack() for tid, m in p.masks.items() if tid not in new]
            taken = np.stack(others) if others else np.zeros((0, *p.image.shape[:2]), bool)
            done = []
            for tid, mask in zip(ids, masks):
                if mask.any() and (mask_iou(mask[None], taken) > self.config.match_iou).any():
                    done.append(tid)  # another track already follows this instance here
                    continue
                if mask.any():
                    p.masks[tid] = _Packed(mask)
                    self.book.get(tid).seen(p.index)
                    lost[tid] = 0
                else:
                    lost[tid] += 1
                    if lost[tid] >= self.config.end_after:
                        done.append(tid)
            back.remove(done)

    @property
    def video_model(self):
        return video_model_for(self.seg)

    def _result(self, p: _Pending) -> FrameResult:
        seg = self.seg
        names, cat_ids = seg.memory.category_names, seg.memory.category_ids
        ids = sorted(p.masks, key=lambda tid: (-self.book.get(tid).score, tid))
        if not ids:
            dets = Detections.empty(p.image.shape[:2], names, category_ids=cat_ids,
                                    box_convention=seg.config.box_convention, track_ids=np.zeros((0,), np.int64))
            return FrameResult(p.index, p.name, p.image, dets)
        masks = np.stack([p.masks[tid].unpack() for tid in ids])
        tracks = [self.book.get(tid) for tid in ids]
        dets = Detections(
            masks=masks,
            boxes=mask_extents(torch.from_numpy(masks)).numpy().astype(np.float32),
            scores=np.array([tr.score for tr in tracks], np.float32),
            labels=np.array([tr.label for tr in tracks], np.int64),
            category_names=list(names),
            category_ids=list(cat_ids),
            box_convention=seg.config.box_convention,
            track_ids=np.array(ids, np.int64),
        )
        return FrameResult(p.index, p.name, p.image, dets)

    def tracks(self) -> list[dict]:
        """Every track so far (live and ended): id, final ``label`` and ``score`` (the rule of :mod:`.tracker`),
        ``category`` name, first and last visible frame, frame it ended on (None: still live)."""
        names = self.seg.memory.category_names
        return [{**t.summary(), "category": names[t.label]} for t in self.book.all_tracks()]
