"""What tracking writes for one video, as its frames stream in: YouTube-VIS results, instance PNGs, an overlay MP4.

- ``<name>.json``: YouTube-VIS-style results, one entry per track: ``{"video_id", "video_name", "track_id",
  "category_id", "category_name", "score", "segmentations": [RLE or null per frame], "frames": [first, last]}``
  (the per-frame RLEs are COCO's, ``counts`` as text); plus, under ``"video"``, the frame names and sizes.
  Written atomically when the video ends; while it runs the masks go to ``<name>.frames.jsonl.partial`` (one
  line per frame), so memory does not grow with the video's length until that final write.
- ``<name>/<frame>.png`` (on request): 16-bit instance maps, value = track id (0: background).
- ``<name>.mp4`` (on request): the frames with each track tinted in its own colour and labelled ``name #id``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from ..resultstore import write_atomic
from ..types import decode_rle, encode_rle
from ..visualize import overlay
from .track import FrameResult


def track_map(result: FrameResult) -> np.ndarray:
    """``(H, W) uint16``: 0 = background, else the id of the track covering the pixel (higher scores on top)."""
    dets = result.detections
    out = np.zeros(dets.image_size, np.uint16)
    if np.any(dets.track_ids > np.iinfo(np.uint16).max):
        raise InputError(f"frame {result.name}: track ids above 65535 do not fit a 16-bit PNG; write no PNGs "
                         "(drop --save-masks) or track a shorter video")
    for i in np.argsort(dets.scores, kind="stable"):
        out[dets.masks[i]] = dets.track_ids[i]
    return out


class Mp4Writer:
    """Frames ``(H, W, 3) uint8`` into an H.264 MP4 (MPEG-4 part 2 when PyAV's FFmpeg has no libx264); odd sizes
    are padded to even ones, as the YUV 4:2:0 pixel format needs."""

    def __init__(self, path: str | os.PathLike, fps: float | None):
        try:
            import av
        except ImportError:
            raise InputError("--visualize writes an MP4 with PyAV: pip install 'no-time-to-train[video]'") from None
        self.path = Path(path)
        self.fps = fps or 25.0
        self._av = av
        self._container = av.open(str(self.path), mode="w", format="mp4")
        self._stream = None

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self._stream is None:
            codec = "libx264" if "libx264" in self._av.codecs_available else "mpeg4"
            from fractions import Fraction

            self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
        pad = np.zeros((self._stream.height, self._stream.width, 3), np.uint8)
        pad[:h, :w] = frame[: self._stream.height, : self._stream.width]
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(pad, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()


class VideoResultWriter:
    """Writes one video's outputs into ``directory`` as its frames arrive (see the module docstring).

    category_ids: the dataset id of each label index (``Detections.category_ids``; the label index when None).
    """

    def __init__(self, directory: str | os.PathLike, name: str, video_id: int, category_names: list[str],
                 category_ids: list[int | None], *, save_masks: bool = False, visualize: bool = False,
                 fps: float | None = None):
        self.dir = Path(directory)
        self.name, self.video_id = name, video_id
        self.category_names = list(category_names)
        self.category_ids = [i if i is not None else k for k, i in enumerate(category_ids or [None] * len(category_names))]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.partial = self.dir / f"{name}.frames.jsonl.partial"
        self._lines = open(self.partial, "w", encoding="utf-8")
        self.masks_dir = self.dir / name if save_masks else None
        if self.masks_dir is not None:
            self.masks_dir.mkdir(exist_ok=True)
        self.mp4 = Mp4Writer(self.dir / f"{name}.mp4.partial", fps) if visualize else None
        self.frames = 0

    def add(self, result: FrameResult) -> None:
        dets = result.detections
        h, w = dets.image_size
        tracks = {str(int(t)): encode_rle(m) for t, m in zip(dets.track_ids, dets.masks)}
        self._lines.write(json.dumps({"frame": result.index, "name": result.name, "height": h, "width": w,
                                      "tracks": tracks}) + "\n")
        if self.masks_dir is not None:
            Image.fromarray(track_map(result)).save(self.masks_dir / f"{result.name}.png")
        if self.mp4 is not None:
            self.mp4.write(np.asarray(overlay(result.image, dets)))
        self.frames += 1

    def finish(self, tracks: list[dict]) -> Path:
        """Write ``<name>.json`` from the streamed frames and the final ``tracks`` (:meth:`VideoTracker.tracks`)."""
        self._lines.close()
        if self.mp4 is not None:
            self.mp4.close()
            os.replace(self.mp4.path, self.dir / f"{self.name}.mp4")
        frames, per_track = [], {}
        with open(self.partial, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                frames.append({"name": rec["name"], "height": rec["height"], "width": rec["width"]})
                for tid, rle in rec["tracks"].items():
                    per_track.setdefault(int(tid), {})[len(frames) - 1] = rle
        entries = []
        for t in tracks:
            segs = per_track.get(t["id"])
            if not segs:
                continue  # a track whose every mask was superseded never shows
            entries.append({
                "video_id": self.video_id, "video_name": self.name, "track_id": t["id"],
                "category_id": self.category_ids[t["label"]], "category_name": self.category_names[t["label"]],
                "score": t["score"], "frames": [min(segs), max(segs)],
                "segmentations": [segs.get(i) for i in range(len(frames))],
            })
        doc = {"video": {"id": self.video_id, "name": self.name, "length": len(frames), "frames": frames},
               "tracks": entries}
        out = write_atomic(self.dir / f"{self.name}.json", json.dumps(doc))
        self.partial.unlink()
        return out

    def abort(self) -> None:
        """Close files after a failure (the partial files stay until a rerun overwrites them)."""
        self._lines.close()
        if self.mp4 is not None:
            try:
                self.mp4.close()
            except Exception:  # the video is redone anyway
                pass


def read_video_results(path: str | os.PathLike) -> dict[str, Any]:
    """A ``<name>.json`` written by :class:`VideoResultWriter` (``{"video": ..., "tracks": [...]}``)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the tracking results {p}: {exc}") from exc
    if not isinstance(doc, dict) or "tracks" not in doc or "video" not in doc:
        raise InputError(f"{p} is not a tracking results file of nttt track (no 'video' and 'tracks')")
    return doc


def track_masks(doc: dict, frame: int) -> dict[int, np.ndarray]:
    """The masks ``{track id: (H, W) bool}`` of one frame of a results document (for tests and tools)."""
    return {t["track_id"]: decode_rle(t["segmentations"][frame]) for t in doc["tracks"]
            if t["segmentations"][frame] is not None}
