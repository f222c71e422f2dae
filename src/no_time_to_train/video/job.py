"""The tracking job over many videos (``nttt track``, the app): resumable per video, sharded across ranks.

Each video is tracked start to end and its outputs (:mod:`.outputs`) are written when it ends; only then is it
recorded as done in the run's :class:`~no_time_to_train.resultstore.ResultStore`. A rerun skips finished videos,
so a killed run (even ``kill -9``) loses at most the video in flight. An unreadable video stops the run naming it,
or with ``on_error="skip"`` is recorded as skipped (listed in ``skipped.json``; a rerun retries it). Rank 0 merges
every video's tracks into one YouTube-VIS-style ``results.json`` and lists the videos in ``videos.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..resultstore import ResultStore, write_json_atomic
from ..runner import ON_ERROR, pending, progress
from .config import TrackConfig
from .outputs import VideoResultWriter, read_video_results
from .source import open_video
from .track import VideoTracker

log = logging.getLogger(__name__)


def _names(paths: Sequence[Path]) -> list[str]:
    """Output names per video, unique even when two folders hold videos of the same name."""
    stems = [p.stem if p.is_file() else p.name for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{i:04d}_{s}" if s in dup else s for i, s in enumerate(stems)]


def track_one(seg, source, writer: VideoResultWriter, config: TrackConfig, bar=None) -> dict:
    """Track one video into ``writer``; returns its summary (frames, keyframes, tracks)."""
    tracker = VideoTracker(seg, config)
    try:
        for result in tracker.run(source):
            writer.add(result)
            if bar is not None:
                bar.update(1)
    except BaseException:
        writer.abort()
        raise
    path = writer.finish(tracker.tracks())
    return {"frames": tracker.frames, "keyframes": tracker.keyframes, "tracks": len(tracker.tracks()),
            "results": path.name}


def track_videos(seg, videos: Sequence[str | os.PathLike], output: str | os.PathLike, dist, *,
                 config: TrackConfig, signature: dict, save_masks: bool = False, visualize: bool = False,
                 overwrite: bool = False, quiet: bool = False, on_error: str = "stop") -> list[dict]:
    """Track every video of ``videos`` (paths: video files or frame folders) into ``output``.

    Returns, on rank 0, one record per video ``{"id", "file_name", "name", "frames", "tracks", "results"}``
    (skipped videos: ``{"file_name", "error"}``); other ranks return [].
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    paths = [Path(v) for v in videos]
    names = _names(paths)
    out = Path(output)
    store = ResultStore(out / "parts", dist.rank)
    items = [(str(p), i) for i, p in enumerate(paths)]
    merged = [out / n for n in ("results.json", "videos.json", "skipped.json")]
    with store.claim({**signature, "tracking": config.to_dict(), "save_masks": save_masks, "visualize": visualize},
                     dist, overwrite, outputs=merged, what=f"output folder {out}"):
        (out / "videos").mkdir(parents=True, exist_ok=True)
        mine = pending(items, store, dist)
        bar = progress(0, "track", dist, quiet, unit="frame")
        try:
            for key, i in mine:
                try:
                    source = open_video(paths[i], name=names[i])
                except InputError as exc:
                    if on_error == "skip":
                        log.warning("skipped: %s", exc)
                        store.skip(key, str(exc))
                        continue
                    raise InputError(f"{exc}; to skip unreadable videos and go on, rerun with --on-error skip "
                                     "(finished videos are kept)") from exc
                if source.length:
                    bar.total = (bar.total or 0) + source.length
                bar.set_description(f"track {names[i]}")
                writer = VideoResultWriter(out / "videos", names[i], i + 1, seg.memory.category_names,
                                           seg.memory.category_ids, save_masks=save_masks, visualize=visualize,
                                           fps=source.fps)
                try:
                    summary = track_one(seg, source, writer, config, bar)
                except InputError as exc:
                    if on_error != "skip":
                        raise InputError(f"{exc}; to skip unreadable videos and go on, rerun with --on-error "
                                         "skip (finished videos are kept)") from exc
                    log.warning("skipped: %s", exc)
                    store.skip(key, str(exc))
                    continue
                store.append(key, id=i + 1, name=names[i], **summary)
        finally:
            bar.close()
            store.close()
        dist.barrier()
        if not dist.is_main:
            return []
        return _merge(out, paths, store)


def _merge(out: Path, paths: Sequence[Path], store: ResultStore) -> list[dict]:
    recs = store.records()
    videos, results, skipped = [], [], []
    for p in paths:
        rec = recs.get(str(p))
        if rec is None:
            continue
        if "skipped" in rec:
            skipped.append({"file_name": str(p), "error": rec["skipped"]})
            continue
        doc = read_video_results(out / "videos" / rec["results"])
        info = doc["video"]
        videos.append({"id": rec["id"], "file_name": str(p), "name": rec["name"], "length": info["length"],
                       "frames": [f["name"] for f in info["frames"]],
                       "height": info["frames"][0]["height"] if info["frames"] else 0,
                       "width": info["frames"][0]["width"] if info["frames"] else 0,
                       "tracks": rec["tracks"], "results": f"videos/{rec['results']}"})
        results += doc["tracks"]
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "videos.json", videos, indent=1)
    if skipped:
        write_json_atomic(out / "skipped.json", skipped, indent=1)
        log.warning("%d unreadable video(s) skipped, listed in %s", len(skipped), out / "skipped.json")
    log.info("%d tracks in %d videos written to %s", len(results), len(videos), out / "results.json")
    return videos + skipped


def load_track_results(directory: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """``(videos, results)`` of an ``nttt track`` output folder (``videos.json``, ``results.json``)."""
    d = Path(directory)
    try:
        videos = json.loads((d / "videos.json").read_text(encoding="utf-8"))
        results = json.loads((d / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{d} is not a finished nttt track output folder (videos.json and results.json "
                         f"readable): {exc}") from exc
    return videos, results
