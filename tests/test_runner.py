"""The per-image loop: results written behind the model in input order, nothing computed is lost on failure."""

import json
import threading

import numpy as np
import pytest

from no_time_to_train.distributed import DistContext
from no_time_to_train.resultstore import ResultStore
from no_time_to_train.runner import WriteBehind, run_images


class FakeSegmenter:
    """``predict`` returns the image's first pixel value; raises on the image whose pixel is ``fail_on``."""

    def __init__(self, fail_on=None):
        self.fail_on = fail_on
        self.seen = []

    def predict(self, image):
        v = int(image[0, 0, 0])
        self.seen.append(v)
        if v == self.fail_on:
            raise RuntimeError(f"model failed on image {v}")
        return v


def _items(n):
    return [(f"img{i}", np.full((4, 5, 3), i, np.uint8)) for i in range(n)]


def _lines(store):
    return [json.loads(line) for line in store.path.read_text().splitlines()]


def test_results_are_written_in_input_order(tmp_path):
    store = ResultStore(tmp_path)
    n = run_images(FakeSegmenter(), _items(7), store, DistContext(), lambda k, p, im, d: {"v": d, "h": im.shape[0]},
                   quiet=True)
    assert n == 7
    assert _lines(store) == [{"key": f"img{i}", "v": i, "h": 4} for i in range(7)]
    # a rerun finds everything done and predicts nothing
    seg = FakeSegmenter()
    assert run_images(seg, _items(7), ResultStore(tmp_path), DistContext(), lambda *a: {}, quiet=True) == 0
    assert seg.seen == []


def test_model_failure_keeps_every_finished_result(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(RuntimeError, match="model failed on image 3"):
        run_images(FakeSegmenter(fail_on=3), _items(6), store, DistContext(), lambda k, p, im, d: {"v": d}, quiet=True)
    assert [r["key"] for r in _lines(store)] == ["img0", "img1", "img2"]
    # the resumed run predicts only what is missing
    seg = FakeSegmenter()
    assert run_images(seg, _items(6), ResultStore(tmp_path), DistContext(), lambda k, p, im, d: {"v": d}, quiet=True) == 3
    assert seg.seen == [3, 4, 5]
    assert [r["v"] for r in _lines(store)] == list(range(6))


def test_write_failure_reaches_the_caller(tmp_path):
    def record(key, path, image, dets):
        if dets == 1:
            raise OSError("disk full")
        return {"v": dets}

    store = ResultStore(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        run_images(FakeSegmenter(), _items(8), store, DistContext(), record, quiet=True)
    keys = [r["key"] for r in _lines(store)]
    assert keys[0] == "img0" and "img1" not in keys
    assert len(keys) <= 3  # the error stops the loop within the writes already queued


def test_write_behind_bounds_pending_writes_and_keeps_order():
    gate = threading.Event()
    done = []

    def slow(i):
        gate.wait(5)
        done.append(i)

    submitted = []

    def producer(w):
        for i in range(5):
            w.submit(slow, i)
            submitted.append(i)

    with WriteBehind(max_pending=2) as w:
        t = threading.Thread(target=producer, args=(w,))
        t.start()
        t.join(0.3)
        assert submitted == [0, 1]  # the third submit waits for the first write
        gate.set()
        t.join(5)
    assert done == [0, 1, 2, 3, 4]


def test_write_behind_finishes_writes_when_the_loop_fails():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(max_pending=3) as w:
            for i in range(3):
                w.submit(done.append, i)
            raise KeyboardInterrupt
    assert done == [0, 1, 2]
