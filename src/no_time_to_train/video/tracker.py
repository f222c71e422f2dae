"""Track bookkeeping: identities, association of keyframe detections with live tracks, ending, categories.

Pure numpy, no model: given masks and scores it decides which detection continues which track, which starts a
new one and which track ends. The rules (also in README, "Video"):

- **Association** (on a keyframe): every (live track, detection) pair whose mask IoU is above ``match_iou`` is
  a candidate; pairs are taken greedily by decreasing IoU (ties: lower track id, then lower detection index),
  each track and detection at most once. A matched track is *refreshed* (the detection's mask restarts it).
- **Duplicates**: an unmatched live track whose mask overlaps a detection matched to another track with IoU
  above ``match_iou`` follows the same instance; it ends (the older identity that matched survives).
- **New tracks**: unmatched detections, highest score first, while fewer than ``max_tracks`` tracks are live.
- **Ending**: a track is *lost* on a frame where its mask is empty or its object score is low; it ends after
  ``end_after`` consecutive lost frames. A visible frame resets the count.
- **Category and score**: each track keeps the (category, score) of every detection associated with it (the
  one that started it and each refresh). Its category is the one with the largest sum of scores (ties: the
  lowest category index); its score is the mean score of its detections of that category.

Track ids are 1, 2, 3 ... in order of birth (0 is the background in instance PNGs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(N, M)`` of bool masks ``a (N, H, W)`` and ``b (M, H, W)``; two empty masks have IoU 0."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


@dataclass
class Track:
    """One instance followed through the video. ``born``: the frame it started on (before a backward pass);
    ``first``/``last``: the first and last frames it is visible on; ``detections``: ``(frame, label, score)`` of
    every detection associated with it."""

    id: int
    born: int
    detections: list[tuple[int, int, float]] = field(default_factory=list)
    lost: int = 0
    first: int | None = None
    last: int | None = None
    ended: int | None = None

    @property
    def label(self) -> int:
        """The category index with the largest sum of detection scores (ties: the lowest index)."""
        sums: dict[int, float] = {}
        for _, label, score in self.detections:
            sums[label] = sums.get(label, 0.0) + score
        return min(sums, key=lambda k: (-sums[k], k))

    @property
    def score(self) -> float:
        """Mean score of the track's detections of its category."""
        label = self.label
        scores = [s for _, lab, s in self.detections if lab == label]
        return float(sum(scores) / len(scores))

    def seen(self, frame: int) -> None:
        self.first = frame if self.first is None else min(self.first, frame)
        self.last = frame if self.last is None else max(self.last, frame)

    def summary(self) -> dict:
        return {"id": self.id, "label": self.label, "score": round(self.score, 6), "born": self.born,
                "first": self.first, "last": self.last, "ended": self.ended, "detections": len(self.detections)}


@dataclass
class Association:
    """What one keyframe did: ``refreshed`` ``[(track id, detection index)]``, ``new`` ``[(track id, detection
    index)]``, ``duplicates`` (track ids ended as duplicates), ``ignored`` (detection indices that started nothing
    because ``max_tracks`` tracks were live)."""

    refreshed: list[tuple[int, int]]
    new: list[tuple[int, int]]
    duplicates: list[int]
    ignored: list[int]


class TrackBook:
    """The live and finished tracks of one video and the rules above."""

    def __init__(self, match_iou: float = 0.5, end_after: int = 15, max_tracks: int = 50):
        self.match_iou = match_iou
        self.end_after = end_after
        self.max_tracks = max_tracks
        self.live: dict[int, Track] = {}
        self.finished: list[Track] = []
        self._by_id: dict[int, Track] = {}
        self._next_id = 1

    def all_tracks(self) -> list[Track]:
        """Every track, live or finished, by id."""
        return [self._by_id[i] for i in sorted(self._by_id)]

    def get(self, track_id: int) -> Track:
        """The track ``track_id``, live or finished."""
        return self._by_id[track_id]

    def associate(self, frame: int, track_ids: list[int], track_masks: np.ndarray, det_masks: np.ndarray,
                  det_scores: np.ndarray, det_labels: np.ndarray) -> Association:
        """Apply the association rules on keyframe ``frame``.

        track_ids / track_masks ``(K, H, W)``: the live tracks' masks on this frame (propagated); det_masks
        ``(N, H, W)``, det_scores ``(N,)``, det_labels ``(N,)``: the keyframe's detections (already filtered
        by score). Updates the book (refreshed tracks record their detection, duplicates end, new tracks are
        born) and returns what happened.
        """
        iou = mask_iou(track_masks, det_masks)
        pairs = [(-iou[t, d], track_ids[t], d, t) for t in range(len(track_ids)) for d in range(len(det_scores))
                 if iou[t, d] > self.match_iou]
        used_t: set[int] = set()
        used_d: set[int] = set()
        refreshed: list[tuple[int, int]] = []
        for _, tid, d, _t in sorted(pairs):
            if tid in used_t or d in used_d:
                continue
            used_t.add(tid)
            used_d.add(d)
            refreshed.append((tid, d))
            self.live[tid].detections.append((frame, int(det_labels[d]), float(det_scores[d])))
        matched_dets = [d for _, d in refreshed]
        duplicates = [tid for t, tid in enumerate(track_ids)
                      if tid not in used_t and any(iou[t, d] > self.match_iou for d in matched_dets)]
        for tid in duplicates:
            self.end(tid, frame)
        new: list[tuple[int, int]] = []
        ignored: list[int] = []
        rest = sorted((d for d in range(len(det_scores)) if d not in used_d), key=lambda d: (-float(det_scores[d]), d))
        for d in rest:
            if len(self.live) >= self.max_tracks:
                ignored.append(d)
                continue
            track = Track(self._next_id, frame, [(frame, int(det_labels[d]), float(det_scores[d]))])
            self._next_id += 1
            self.live[track.id] = track
            self._by_id[track.id] = track
            new.append((track.id, d))
        return Association(refreshed, new, duplicates, ignored)

    def observe(self, frame: int, track_id: int, visible: bool) -> bool:
        """Record whether live track ``track_id`` is visible on ``frame``; returns True when this ends it."""
        track = self.live[track_id]
        if visible:
            track.lost = 0
            track.seen(frame)
            return False
        track.lost += 1
        if track.lost >= self.end_after:
            self.end(track_id, frame)
            return True
        return False

    def end(self, track_id: int, frame: int) -> None:
        track = self.live.pop(track_id)
        track.ended = frame
        self.finished.append(track)
