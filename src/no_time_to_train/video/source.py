"""Frames of a video, read lazily: a video file (PyAV), a folder or glob of frame images, or an iterable of arrays.

Only the frame being processed (plus whatever the caller keeps) is ever in memory: a two-hour video is read
frame by frame, never loaded whole. Frames are ``(H, W, 3) uint8`` RGB arrays.

Frame names (used in outputs and to match per-frame ground truth): a frame image keeps its file stem; a frame of a
video file or of an array iterable is named by its zero-based index, ``000000``, ``000001`` ...
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..imageio import load_image

#: File name endings read as video files (with PyAV); any other file is read as one frame image.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".ts", ".mts", ".gif"})
_GLOB_CHARS = set("*?[")


@dataclass
class Frame:
    """One decoded frame: ``index`` (0-based position in the video), ``name`` and ``image`` ``(H, W, 3) uint8``."""

    index: int
    name: str
    image: np.ndarray


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _require_av(path: Path):
    try:
        import av
    except ImportError:
        raise InputError(f"reading the video file {path} needs PyAV: pip install 'no-time-to-train[video]' "
                         "(or pass a folder of frame images instead)") from None
    return av


class FrameSource:
    """A video to read frame by frame. Build one with :func:`open_video`.

    name: the video's name (file or folder stem) for outputs. ``len()`` is the frame count when it is known
    up front (frame folders, and video files whose container records it; an estimate for some containers),
    else raises TypeError; ``fps`` the frame rate (``None`` for frame folders and iterables).
    """

    def __init__(self, name: str, frames: "callable", length: int | None = None, fps: float | None = None,
                 path: Path | None = None):
        self.name = name
        self._frames = frames
        self.length = length
        self.fps = fps
        self.path = path

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"the frame count of {self.name} is not known before reading it")
        return self.length

    def __iter__(self) -> Iterator[Frame]:
        return self._frames()

    def __repr__(self) -> str:
        return f"FrameSource({self.name!r}, frames={self.length}, fps={self.fps})"


def _video_file(path: Path) -> FrameSource:
    av = _require_av(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream; give a video file or a folder of frames")
            stream = container.streams.video[0]
            length = int(stream.frames) or None
            fps = float(stream.average_rate) if stream.average_rate else None
    except InputError:
        raise
    except Exception as exc:  # av.error.* (invalid data, unknown format ...), OSError
        raise InputError(f"cannot read the video file {path}: {exc}; it may be corrupt or in an unsupported "
                         "format (convert it with ffmpeg, or extract its frames into a folder)") from exc

    def frames() -> Iterator[Frame]:
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    yield Frame(i, f"{i:06d}", frame.to_ndarray(format="rgb24"))
        except Exception as exc:
            if isinstance(exc, (InputError, GeneratorExit)):
                raise
            raise InputError(f"cannot decode the video file {path}: {exc}; it may be truncated or corrupt") from exc

    return FrameSource(path.stem, frames, length, fps, path)


def _frame_files(files: list[Path], name: str, path: Path | None) -> FrameSource:
    def frames() -> Iterator[Frame]:
        for i, f in enumerate(files):
            yield Frame(i, f.stem, load_image(f))

    return FrameSource(name, frames, len(files), None, path)


def _arrays(items: Iterable[Any], name: str) -> FrameSource:
    try:
        length = len(items)  # type: ignore[arg-type]
    except TypeError:
        length = None

    def frames() -> Iterator[Frame]:
        for i, item in enumerate(items):
            try:
                yield Frame(i, f"{i:06d}", load_image(item))
            except InputError as exc:
                raise InputError(f"frame {i} of {name}: {exc}") from exc

    return FrameSource(name, frames, length, None)


def open_video(source: Any, name: str | None = None) -> FrameSource:
    """A :class:`FrameSource` for ``source``:

    - a video file (``.mp4``, ``.mov``, ``.avi``, ``.mkv``, ``.webm`` ...; decoded lazily with PyAV);
    - a folder of frame images (sorted by file name; use zero-padded numbers);
    - a glob pattern of frame images (sorted), or a list of frame image paths (in the given order);
    - an iterable of ``(H, W, 3)`` arrays or PIL images (read as it is iterated: a generator is fine).

    ``name`` overrides the video's name. Raises InputError naming the source when it does not exist, holds no
    frames, or is an unreadable video file.
    """
    from ..data.coco import list_images

    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file() and is_video_file(path):
            src = _video_file(path)
        elif path.is_dir() or path.is_file() or _GLOB_CHARS & set(str(source)):
            files = list_images(str(source)) if not path.is_dir() else list_images(path)
            stem = path.name if path.is_dir() else path.parent.name or "frames"
            src = _frame_files(files, stem, path if path.is_dir() else None)
        else:
            raise InputError(f"video input {str(source)!r} does not exist: give a video file, a folder or glob of "
                             "frame images")
    elif isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        files = [Path(s) for s in source]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"frame files not found: {', '.join(missing[:3])}")
        src = _frame_files(files, files[0].parent.name or "frames", None)
    elif isinstance(source, np.ndarray) and source.ndim == 4:
        src = _arrays(list(source), name or "video")
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, np.ndarray, dict)):
        src = _arrays(source, name or "video")
    else:
        raise InputError(f"cannot read a video from a {type(source).__name__}: give a video file, a folder or glob "
                         "of frame images, or an iterable of (H, W, 3) arrays")
    if name:
        src.name = name
    return src


def list_videos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The videos named by CLI inputs: video files; folders of video files (each file a video); a folder of frame
    images (one video); globs of video files. Keeps input order, drops duplicates."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            videos = sorted(q for q in p.iterdir() if q.is_file() and is_video_file(q))
            out += videos or [p]
        elif p.is_file():
            out.append(p)
        elif _GLOB_CHARS & set(str(item)):
            hits = sorted(Path(q) for q in glob.glob(str(item), recursive=True))
            videos = [q for q in hits if q.is_file() and is_video_file(q)]
            out += videos or [p]  # a glob of frame images is one video
        else:
            raise InputError(f"video input {str(item)!r} does not exist: give video files, folders of frames or "
                             "of videos, or glob patterns")
    seen: set[Path] = set()
    return [q for q in out if not (q in seen or seen.add(q))]
