"""Track bookkeeping and tracking settings on hand-made masks, where each rule's outcome is known exactly."""

import numpy as np
import pytest

from no_time_to_train import InputError
from no_time_to_train.video.config import TrackConfig
from no_time_to_train.video.tracker import Track, TrackBook, mask_iou


def box(y0, y1, x0, x1, h=20, w=20):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def stack(*masks):
    return np.stack(masks) if masks else np.zeros((0, 20, 20), bool)


def test_mask_iou_exact():
    a = stack(box(0, 10, 0, 10), np.zeros((20, 20), bool))
    b = stack(box(0, 10, 5, 15), box(0, 10, 0, 10))
    iou = mask_iou(a, b)
    assert iou[0, 0] == pytest.approx(50 / 150)
    assert iou[0, 1] == 1.0
    assert (iou[1] == 0).all()  # an empty mask overlaps nothing
    assert mask_iou(a[:0], b).shape == (0, 2)


def test_first_keyframe_starts_tracks_by_score():
    book = TrackBook(match_iou=0.5, end_after=3, max_tracks=10)
    dets = stack(box(0, 5, 0, 5), box(10, 15, 10, 15))
    a = book.associate(0, [], stack(), dets, np.array([0.4, 0.9]), np.array([0, 1]))
    assert a.new == [(1, 1), (2, 0)]  # the higher score gets the lower id
    assert a.refreshed == [] and a.duplicates == [] and a.ignored == []
    assert book.get(1).label == 1 and book.get(2).label == 0


def test_association_refreshes_overlapping_track_and_starts_new_one():
    book = TrackBook(match_iou=0.5)
    book.associate(0, [], stack(), stack(box(0, 10, 0, 10)), np.array([0.8]), np.array([0]))
    # frame 5: track 1 moved by 2 px; a detection of the same object (IoU 80/120 > 0.5) and a new one
    tracks = stack(box(0, 10, 2, 12))
    dets = stack(box(10, 20, 10, 20), box(0, 10, 0, 10))
    a = book.associate(5, [1], tracks, dets, np.array([0.6, 0.7]), np.array([0, 0]))
    assert a.refreshed == [(1, 1)] and a.new == [(2, 0)]
    assert book.get(1).detections == [(0, 0, 0.8), (5, 0, pytest.approx(0.7))]


def test_association_below_threshold_is_a_new_track():
    book = TrackBook(match_iou=0.5)
    book.associate(0, [], stack(), stack(box(0, 10, 0, 10)), np.array([0.8]), np.array([0]))
    # IoU 50/150 = 0.33 <= 0.5: not the same instance
    a = book.associate(5, [1], stack(box(0, 10, 5, 15)), stack(box(0, 10, 0, 10)), np.array([0.9]), np.array([0]))
    assert a.refreshed == [] and a.new == [(2, 0)]
    assert set(book.live) == {1, 2}


def test_greedy_matching_by_iou_and_duplicates_end():
    book = TrackBook(match_iou=0.5)
    book.associate(0, [], stack(), stack(box(0, 10, 0, 10), box(0, 10, 0, 9)), np.array([0.9, 0.8]),
                   np.array([0, 0]))
    # both tracks drifted onto the same object; one detection: the track with the higher IoU keeps it,
    # the other duplicates it and ends
    tracks = stack(box(0, 10, 0, 9), box(0, 10, 0, 10))
    a = book.associate(5, [1, 2], tracks, stack(box(0, 10, 0, 10)), np.array([0.5]), np.array([1]))
    assert a.refreshed == [(2, 0)]
    assert a.duplicates == [1]
    assert set(book.live) == {2}
    assert book.get(1).ended == 5


def test_max_tracks_caps_new_tracks():
    book = TrackBook(max_tracks=2)
    dets = stack(box(0, 3, 0, 3), box(5, 8, 5, 8), box(10, 13, 10, 13))
    a = book.associate(0, [], stack(), dets, np.array([0.5, 0.9, 0.7]), np.array([0, 0, 0]))
    assert a.new == [(1, 1), (2, 2)] and a.ignored == [0]


def test_track_ends_after_m_consecutive_lost_frames():
    book = TrackBook(end_after=3)
    book.associate(0, [], stack(), stack(box(0, 5, 0, 5)), np.array([0.9]), np.array([0]))
    assert book.observe(0, 1, True) is False
    assert book.observe(1, 1, False) is False
    assert book.observe(2, 1, False) is False
    assert book.observe(3, 1, True) is False  # seen again: the count restarts
    assert [book.observe(f, 1, False) for f in (4, 5, 6)] == [False, False, True]
    track = book.get(1)
    assert track.ended == 6 and (track.first, track.last) == (0, 3)
    assert 1 not in book.live and book.finished == [track]


def test_category_vote_and_score():
    t = Track(1, 0, [(0, 2, 0.5), (10, 1, 0.4), (20, 1, 0.3), (30, 2, 0.1)])
    # sums: label 2 -> 0.6, label 1 -> 0.7: label 1 wins; score = mean of its detections
    assert t.label == 1 and t.score == pytest.approx(0.35)
    tie = Track(2, 0, [(0, 3, 0.5), (5, 1, 0.5)])
    assert tie.label == 1  # ties go to the lower category index


def test_track_config_keyframes_and_lag():
    cfg = TrackConfig(keyframe_interval=10, keyframes=(25, 3, 3))
    assert cfg.keyframes == (3, 25)
    assert [i for i in range(31) if cfg.is_keyframe(i)] == [0, 3, 10, 20, 25, 30]
    assert TrackConfig(keyframe_interval=0).is_keyframe(0) and not TrackConfig(keyframe_interval=0).is_keyframe(15)
    assert cfg.lag == 10 and TrackConfig(backward=False).lag == 0 and TrackConfig(backward_frames=4).lag == 4
    assert TrackConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad", [dict(keyframe_interval=-1), dict(end_after=0), dict(match_iou=1.5),
                                 dict(keyframes=(-2,)), dict(backward_frames=0), dict(min_score="x")])
def test_track_config_rejects_bad_values(bad):
    with pytest.raises(InputError, match="TrackConfig"):
        TrackConfig(**bad)
    with pytest.raises(InputError, match="unknown tracking setting"):
        TrackConfig.from_dict({"keyframe_every": 3})
