"""``TrackConfig``: every knob of video tracking, with its default and what it does.

The image method's own settings (``MethodConfig``) apply unchanged on keyframes; these only decide when the
image pipeline runs and how its detections become tracks (the algorithm: :mod:`no_time_to_train.video.track`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import InputError


@dataclass(frozen=True)
class TrackConfig:
    #: Run the image pipeline on frame 0 and every N-th frame after it (0: only frame 0 and ``keyframes``).
    #: 15 frames (0.5 s at 30 fps): a propagated frame costs about 14% of a keyframe at paper size, so every 15th
    #: frame costs about 1.35x propagation alone, 5x less than the image pipeline on every frame; denser
    #: keyframes cost much more, sparser ones find newcomers later (benchmarks/RESULTS.md, section 6).
    keyframe_interval: int = 15
    #: Extra keyframes, as frame indices (e.g. scene cuts), on top of the interval's.
    keyframes: tuple[int, ...] = ()
    #: Detections scoring at most this are ignored by tracking (they neither start nor refresh a track).
    min_score: float = 0.3
    #: A detection and a live track whose masks overlap with IoU above this are the same instance.
    match_iou: float = 0.5
    #: A track ends after this many consecutive frames with an empty mask or a low object score (the M of
    #: "ends when lost for M frames"); a brief occlusion shorter than this keeps its identity.
    end_after: int = 15
    #: SAM2's object-presence logit at or below this counts as "object not visible" on that frame.
    object_score_threshold: float = 0.0
    #: At most this many tracks are followed at once (each costs a memory-attention and decoder pass per frame);
    #: when full, new detections start no track (the highest scoring ones start first).
    max_tracks: int = 50
    #: Conditioning frames (keyframe masks) each track's memory keeps, the most recent ones; with SAM2's 7-frame
    #: memory bank and 16 object pointers this bounds the memory per track whatever the video's length.
    max_cond_frames: int = 3
    #: Follow a track born on a keyframe after frame 0 backward too, so that it covers the frames before the
    #: keyframe that found it (up to ``backward_frames`` frames back; output then lags that many frames).
    backward: bool = True
    #: How far the backward pass reaches, in frames; None means one keyframe interval (back to the previous
    #: keyframe, where the instance was not detected), or 15 when the interval is 0.
    backward_frames: int | None = None

    def __post_init__(self) -> None:
        ints = {"keyframe_interval": 0, "end_after": 1, "max_tracks": 1, "max_cond_frames": 1}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"TrackConfig.{name} must be an integer >= {low}, got {value!r}")
        for name in ("min_score", "match_iou"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise InputError(f"TrackConfig.{name} must be a number in [0, 1), got {value!r}")
        if self.backward_frames is not None and (not isinstance(self.backward_frames, int) or self.backward_frames < 1):
            raise InputError(f"TrackConfig.backward_frames must be an integer >= 1 or None, got {self.backward_frames!r}")
        bad = [k for k in self.keyframes if isinstance(k, bool) or not isinstance(k, int) or k < 0]
        if bad:
            raise InputError(f"TrackConfig.keyframes must be frame indices >= 0, got {bad}")
        object.__setattr__(self, "keyframes", tuple(sorted(set(self.keyframes))))

    def is_keyframe(self, index: int) -> bool:
        """Whether the image pipeline runs on frame ``index``."""
        if index == 0 or index in self.keyframes:
            return True
        return self.keyframe_interval > 0 and index % self.keyframe_interval == 0

    @property
    def lag(self) -> int:
        """Frames a result waits before it is final (the backward pass may still add masks to it)."""
        if not self.backward:
            return 0
        if self.backward_frames is not None:
            return self.backward_frames
        return self.keyframe_interval or 15

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keyframes"] = list(self.keyframes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrackConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown tracking setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{**d, "keyframes": tuple(d.get("keyframes", ()))})
