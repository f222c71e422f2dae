"""Long runs over many images or references: sharded across ranks, resumable, with progress.

Used by the ``predict``, ``evaluate`` and ``fill-memory`` commands. Each item's result is appended to the
rank's :class:`ResultStore` as soon as it exists; a rerun skips what is done; rank 0 merges once, in input
order, so a resumed run and a one-shot run give identical files. Runs on any number of ranks do too when
every process uses the same number of CPU threads (each item is computed alone, but on CPU the thread count
sets the order of float sums; torchrun gives each process one thread).
"""

from __future__ import annotations

import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .distributed import DistContext
from .errors import InputError
from .imageio import load_image
from .resultstore import ResultStore

log = logging.getLogger(__name__)

ON_ERROR = ("stop", "skip")  # what run_images does with an unreadable image


def pending(items: Sequence[tuple[Any, Any]], store: ResultStore, dist: DistContext) -> list[tuple[Any, Any]]:
    """This rank's share of the items not finished yet.

    Every rank reads the store, then all wait at a barrier before anyone writes, so all ranks shard the
    same to-do list: each item is processed exactly once.
    """
    done = store.done()
    todo = [it for it in items if it[0] not in done]
    dist.barrier()
    if dist.is_main and done:
        log.info("resuming: %d of %d items already done", len(items) - len(todo), len(items))
    return dist.shard(todo)


def prefetched(loader: Callable[[Any], Any], sources: Iterable[Any], depth: int = 2):
    """Yield ``loader(source)`` for each source, decoding up to ``depth`` items ahead in a thread.

    Image decoding then overlaps model compute (PIL and torch release the GIL).
    """
    sources = list(sources)
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(loader, s) for s in sources[:depth]]
        for i in range(len(sources)):
            result = futures[i].result()
            if i + depth < len(sources):
                futures.append(pool.submit(loader, sources[i + depth]))
            futures[i] = None  # free the decoded image once consumed
            yield result


class WriteBehind:
    """Runs writes (RLE, PNGs, the fsync'ed result line) in one background thread, in submission order.

    The model's next image then overlaps the last image's writing. At most ``max_pending`` writes wait at a
    time (each holds its image and masks). A failed write is raised in the caller at the next ``submit`` or at
    exit. On leaving the ``with`` block, normally or by an exception, every submitted write is finished first,
    so an interrupted run keeps all the results it computed.
    """

    def __init__(self, max_pending: int = 2):
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nttt-writer")
        self._pending: list = []

    def submit(self, fn: Callable, *args) -> None:
        while len(self._pending) >= self.max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(fn, *args))

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for future in self._pending:
                if exc_type is None:
                    future.result()
                else:  # finish the writes, keep the exception that is already on its way
                    future.exception()
        finally:
            self._pool.shutdown(wait=True)


def progress(total: int, desc: str, dist: DistContext, quiet: bool, unit: str = "img"):
    """A progress bar with rate and ETA (rank 0 only; other ranks log nothing)."""
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=quiet or not dist.is_main)


def run_images(
    segmenter,
    items: Sequence[tuple[Any, Any]],
    store: ResultStore,
    dist: DistContext,
    record: Callable[[Any, Any, np.ndarray, Any], dict],
    quiet: bool = False,
    desc: str = "predict",
    on_error: str = "stop",
) -> int:
    """Predict every pending ``(key, image_path)`` of this rank and append ``record(key, path, image, dets)``.

    Images are decoded one or two ahead in a thread, and ``record`` plus the append run behind in another
    (:class:`WriteBehind`), so the models are not kept waiting by either. An image that cannot be read
    stops the run with an :class:`InputError` naming it (``on_error="stop"``), or is recorded as skipped
    (:meth:`ResultStore.skip`, with the reason) and the run goes on (``on_error="skip"``). Returns the number
    of images processed (or skipped) by this rank.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    mine = pending(items, store, dist)
    bar = progress(len(mine), desc, dist, quiet)

    def load(item):
        try:
            return item, load_image(item[1]), None
        except InputError as exc:
            return item, None, exc

    def write(key, path, image, dets):
        store.append(key, **record(key, path, image, dets))
        bar.update(1)

    def skip(key, reason):
        store.skip(key, reason)
        bar.update(1)

    try:
        with WriteBehind() as writer:
            for (key, path), image, error in prefetched(load, mine):
                if error is None:
                    writer.submit(write, key, path, image, segmenter.predict(image))
                elif on_error == "skip":
                    log.warning("skipped: %s", error)
                    writer.submit(skip, key, str(error))
                else:
                    raise InputError(f"{error}; to skip unreadable images and go on, rerun with --on-error skip "
                                     "(finished images are kept)") from error
    finally:
        bar.close()
        store.close()
    return len(mine)


def encode_vector(v: torch.Tensor) -> str:
    return base64.b64encode(v.detach().float().cpu().numpy().astype("<f4").tobytes()).decode("ascii")


def decode_vector(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype="<f4").copy())


def run_references(
    segmenter,
    keys: Sequence[Any],
    make_item: Callable[[Any], dict],
    store: ResultStore,
    dist: DistContext,
    batch_size: int = 8,
    quiet: bool = False,
) -> int:
    """Encode every pending reference of this rank; each vector is stored as soon as its batch is done.

    ``make_item(key)`` builds what :meth:`ReferenceSegmenter.add_reference` takes (image, mask, category,
    ...), on demand, so only one batch of masks is in memory at a time. An item's optional ``record`` dict
    (JSON values, e.g. how its mask was made) is stored with its vector.
    """
    mine = [key for key, _ in pending([(k, None) for k in keys], store, dist)]
    bar = progress(len(mine), "fill-memory", dist, quiet, unit="ref")
    try:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            items = [make_item(k) for k in chunk]
            vectors, weights, _ = segmenter.encode_references(items, batch_size)
            for key, item, vec, w in zip(chunk, items, vectors, weights):
                store.append(key, **item.get("record", {}), vector=encode_vector(vec), weight=float(w))
            bar.update(len(chunk))
    finally:
        bar.close()
        store.close()
    return len(mine)
