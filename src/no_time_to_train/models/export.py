"""ONNX export of the proposer and the patch encoder, through their interfaces, with a manifest.

An export directory holds, per role it was made for:

- proposer: ``image_encoder.onnx`` (``image (3, S, S)`` in [0, 1] in the SAM frame -> the embedding's named
  tensors, :meth:`tensors` of the family's embedding class), ``decoder_points.onnx`` (that embedding,
  ``points (B, P, 2)`` pixel ``(x, y)`` in the SAM frame and ``labels (B, P)`` int64 -> multimask
  ``masks (B, 3, h, w)`` and ``iou (B, 3)``), ``decoder_points_single.onnx`` (the same, single-mask:
  ``(B, 1, h, w)``, ``(B, 1)``) and ``decoder_boxes.onnx`` (``boxes (B, 4)`` -> single-mask); ``B`` and ``P``
  are dynamic;
- encoder: ``patch_encoder.onnx`` (``images (N, 3, S, S)`` in [0, 1] -> ``tokens (N, G*G, D)``, ``N`` dynamic);

and ``manifest.json``: the preset, input sizes, every graph's input/output names and shapes and file sha256, the
source weights' sha256 (of the state dict, :func:`weights_sha256`), the exporter versions and the verification
(max abs difference to PyTorch on a real image). Each graph is the wrapper's own ``encode``/``decode``/
``patch_tokens`` traced (so normalisation, the prompt encoder and the shared-image decoder are inside).

:func:`read_manifest` refuses a directory that is not an export, is corrupt, or lacks the role asked for;
:func:`cached_export` exports on first use into the cache (``NTTT_CACHE_DIR``, else
``~/.cache/no-time-to-train``), keyed by the weights' sha256 and the settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..resultstore import file_sha256
from ..transforms import resize_for_encoder, squash_for_sam

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "no-time-to-train ONNX export"
FORMAT_VERSION = 1
OPSET = 17
#: A graph fails verification when its max abs difference to PyTorch exceeds this fraction of the output's
#: largest magnitude (fp32 graph optimisations reorder sums: differences of about 1e-6 relative are normal).
VERIFY_RELATIVE_TOLERANCE = 1e-3

#: proposer graph -> (prompt inputs, multimask)
DECODERS = {"decoder_points": (("points", "labels"), True), "decoder_points_single": (("points", "labels"), False),
            "decoder_boxes": (("boxes",), False)}
ROLES = ("proposer", "encoder")


# -- identity ----------------------------------------------------------------------------------------------
def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of a model's weights: every state-dict entry's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_root() -> Path:
    """The folder of exports made on first use: ``$NTTT_CACHE_DIR/exports``, else ``~/.cache/no-time-to-train/exports``."""
    base = os.environ.get("NTTT_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "no-time-to-train"
    return Path(base) / "exports"


# -- export ------------------------------------------------------------------------------------------------
class _Graph(torch.nn.Module):
    """A wrapper's method as a module for the exporter (the model is registered so its weights are found)."""

    def __init__(self, model: torch.nn.Module, fn: Callable[..., tuple]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *inputs):
        return self.fn(*inputs)


def _export_graph(fn, model, inputs: dict[str, torch.Tensor], outputs: list[str], dynamic: dict, path: Path,
                  opset: int) -> tuple[dict, list[torch.Tensor]]:
    """Trace ``fn(*inputs)`` into ``path``; returns (its input/output names, dtypes and shapes, PyTorch's outputs).

    Shapes are the example's, with each dynamic axis given its name (e.g. ``["prompts", 3, 256, 256]``).
    """
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the round trip checks the graph
        # eval(): the exporter restores the wrapper's training flag afterwards, recursively, onto the model
        torch.onnx.export(_Graph(model, fn).eval(), tuple(inputs.values()), str(path), dynamo=False,
                          opset_version=opset, input_names=list(inputs), output_names=outputs, dynamic_axes=dynamic)
    onnx.checker.check_model(str(path))
    result = fn(*inputs.values())
    expected = [result] if isinstance(result, torch.Tensor) else list(result)

    def entries(named):
        return [{"name": n, "dtype": str(t.dtype).removeprefix("torch."),
                 "shape": [dynamic.get(n, {}).get(i, d) for i, d in enumerate(t.shape)]} for n, t in named]

    return {"inputs": entries(inputs.items()), "outputs": entries(zip(outputs, expected))}, expected


def verification_image(size: int = 640) -> np.ndarray:
    """A deterministic ``(size*3/4, size, 3)`` uint8 test picture (gradients, discs, stripes) when none is given."""
    h, w = size * 3 // 4, size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 17.0) * np.cos(y / 23.0)], axis=-1)
    for cx, cy, r, colour in ((0.3, 0.4, 0.15, (0.9, 0.2, 0.1)), (0.7, 0.6, 0.2, (0.1, 0.3, 0.9))):
        disc = (x - cx * w) ** 2 + (y - cy * h) ** 2 < (r * w) ** 2
        img[disc] = colour
    return (img.clip(0, 1) * 255).astype(np.uint8)


def _proposer_prompts(size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Example prompts per decoder graph (also the verification prompts), pixel coordinates in the SAM frame."""
    g = torch.linspace(0.1, 0.9, 4) * size
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 1, 2)
    clicks = torch.tensor([[[0.3, 0.4], [0.6, 0.5]], [[0.7, 0.6], [0.2, 0.2]], [[0.5, 0.5], [0.1, 0.9]]]) * size
    return {"decoder_points": {"points": grid, "labels": torch.ones(16, 1, dtype=torch.int64)},
            "decoder_points_single": {"points": clicks, "labels": torch.tensor([[1, 0], [1, 1], [1, 0]])},
            "decoder_boxes": {"boxes": torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.4, 0.3, 0.95, 0.9]]) * size}}


def _export_proposer(proposer, out: Path, image: torch.Tensor, opset: int) -> tuple[dict, dict]:
    """Write the proposer's graphs into ``out``; returns (manifest section, {graph: (inputs, io, torch outputs)})."""
    emb = proposer.encode(image)
    names = list(emb.tensors())
    cls = type(emb)
    graphs = {"image_encoder": ({"image": image}, *_export_graph(
        lambda x: tuple(proposer.encode(x).tensors().values()), proposer.model, {"image": image}, names, {},
        out / "image_encoder.onnx", opset))}
    for graph, prompts in _proposer_prompts(proposer.image_size).items():
        keys, multimask = DECODERS[graph]

        def decode(*tensors, keys=keys, multimask=multimask):
            e = cls.from_tensors(dict(zip(names, tensors[: len(names)])))
            return proposer.decode(e, **dict(zip(keys, tensors[len(names):])), multimask=multimask)

        inputs = {**emb.tensors(), **prompts}
        dynamic = {k: ({0: "prompts", 1: "points"} if k != "boxes" else {0: "prompts"}) for k in keys}
        dynamic.update(masks={0: "prompts"}, iou={0: "prompts"})
        graphs[graph] = (inputs, *_export_graph(decode, proposer.model, inputs, ["masks", "iou"], dynamic,
                                                 out / f"{graph}.onnx", opset))
    no_memory = getattr(proposer.model, "no_memory_embedding", None)
    section = {"name": proposer.name, "class": type(proposer).__name__, "embedding": cls.__name__,
               "image_size": proposer.image_size, "decoder_width": proposer.decoder_width,
               "describe": proposer.describe(), "weights_sha256": weights_sha256(proposer.model),
               "no_memory_embedding": no_memory.detach().float().flatten().tolist() if no_memory is not None else None}
    return section, graphs


@contextlib.contextmanager
def _fixed_position_embeddings(model: torch.nn.Module):
    """DINOv2's position-embedding interpolation replaced by its value, for an export at one input size.

    The interpolation depends only on the weights and the input side (fixed in an export), and the
    antialiased bicubic resize DINOv2 with registers uses has no ONNX operator. The first call computes it
    (before tracing); later calls return that tensor, which the trace records as a constant.
    """
    embeddings = getattr(model, "embeddings", None)
    original = getattr(embeddings, "interpolate_pos_encoding", None)
    if original is None:
        yield
        return
    values: dict = {}

    def fixed(x, height, width):
        key = (int(x.shape[1]), int(height), int(width))
        if key not in values:
            values[key] = original(x, height, width).detach().clone()
        return values[key]

    embeddings.interpolate_pos_encoding = fixed
    try:
        yield
    finally:
        del embeddings.interpolate_pos_encoding  # the class's method again


def _export_encoder(encoder, out: Path, image: torch.Tensor, encoder_size: int | str, opset: int) -> tuple[dict, dict]:
    """Write ``patch_encoder.onnx`` into ``out``; returns (manifest section, {graph: (inputs, io, torch outputs)})."""
    size = encoder.input_size(encoder_size)
    inputs = {"images": resize_for_encoder(image, size)[None]}
    with _fixed_position_embeddings(encoder.model):
        encoder.patch_tokens(inputs["images"])  # computes the position embeddings outside the trace
        graph = _export_graph(encoder.patch_tokens, encoder.model, inputs, ["tokens"],
                              {"images": {0: "images"}, "tokens": {0: "images"}}, out / "patch_encoder.onnx", opset)
    section = {"family": encoder.family, "class": type(encoder).__name__, "input_size": size,
               "patch_size": encoder.patch_size, "dim": encoder.dim, "num_prefix": encoder.num_prefix,
               "mean": list(encoder.mean), "std": list(encoder.std), "describe": encoder.describe(),
               "weights_sha256": weights_sha256(encoder.model)}
    return section, {"patch_encoder": (inputs, *graph)}


def export_onnx(out_dir: str | os.PathLike, *, proposer=None, encoder=None, encoder_size: int | str = "auto",
                image: np.ndarray | None = None, image_name: str | None = None, preset: str | None = None,
                verify_runtime: str = "onnxruntime", opset: int = OPSET, overwrite: bool = False) -> dict:
    """Export ``proposer`` and/or ``encoder`` (torch wrappers, fp32) as ONNX into ``out_dir``; returns the manifest.

    image: the ``(H, W, 3)`` uint8 picture the export is traced and verified on (default
    :func:`verification_image`); it goes through the predictor's own resizes (SAM frame, encoder size).
    Every graph is run under ``verify_runtime`` and compared with PyTorch on the same inputs; the max abs
    differences go into the manifest's ``verification``, and a graph that differs by more than
    :data:`VERIFY_RELATIVE_TOLERANCE` of its output's magnitude fails the export (nothing is left behind).
    """
    from ..runtime import require

    onnx = require("export")
    if proposer is None and encoder is None:
        raise InputError("nothing to export: give a proposer, an encoder or both")
    for wrapper in (proposer, encoder):
        if wrapper is not None and wrapper.dtype != torch.float32:
            raise InputError(f"ONNX exports are float32; load the models with --dtype float32 (got {wrapper.dtype})")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"the export folder {out} is not empty; give a new folder or --overwrite")
    image_name = image_name or ("built-in test picture" if image is None else "given image")
    picture = verification_image() if image is None else image
    size = proposer.image_size if proposer is not None else 1024
    t_sam = squash_for_sam(picture, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "preset": preset,
            "versions": {"no_time_to_train": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "transformers": _version("transformers"), "opset": opset, "exporter": "torch.onnx (TorchScript)"},
            "graphs": {}, "verification": {"image": image_name, "runtime": verify_runtime, "max_abs_diff": {}},
        }
        checks: dict = {}
        with torch.inference_mode():
            if proposer is not None:
                manifest["proposer"], more = _export_proposer(proposer, tmp, t_sam, opset)
                checks.update(more)
            if encoder is not None:
                manifest["encoder"], more = _export_encoder(encoder, tmp, t_sam, encoder_size, opset)
                checks.update(more)
        for graph, (_, io, _) in checks.items():
            path = tmp / f"{graph}.onnx"
            manifest["graphs"][graph] = {"file": path.name, "sha256": file_sha256(path), **io}
        manifest["verification"]["max_abs_diff"] = _verify(tmp, checks, verify_runtime)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _verify(directory: Path, checks: dict, runtime: str) -> dict[str, float]:
    """Run every graph under ``runtime`` on its export inputs; max abs difference to PyTorch per graph."""
    from .exported import open_graph

    diffs = {}
    for graph, (inputs, _, expected) in checks.items():
        got = open_graph(directory / f"{graph}.onnx", runtime)({k: v.numpy() for k, v in inputs.items()})
        diff, scale = 0.0, 0.0
        for g, e in zip(got, expected):
            e = e.float().numpy()
            if g.shape != e.shape:
                raise InputError(f"export check failed: {graph} gives shape {g.shape} under {runtime}, PyTorch {e.shape}")
            diff = max(diff, float(np.abs(g - e).max()) if e.size else 0.0)
            scale = max(scale, float(np.abs(e).max()) if e.size else 0.0)
        if not np.isfinite(diff) or diff > VERIFY_RELATIVE_TOLERANCE * max(scale, 1.0):
            raise InputError(f"export check failed: {graph} under {runtime} differs from PyTorch by {diff:.3g} "
                             f"(outputs up to {scale:.3g}); please report this with the model and versions")
        diffs[graph] = diff
        log.info("verified %s under %s: max abs difference to PyTorch %.3g", graph, runtime, diff)
    return diffs


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# -- reading ------------------------------------------------------------------------------------------------
def read_manifest(directory: str | os.PathLike, role: str, check_files: bool = True) -> dict:
    """The manifest of an export directory that holds ``role`` (``"proposer"`` or ``"encoder"``).

    Refused with an InputError: a missing folder or manifest, a manifest that is not an export's (or of a
    newer format), a missing role, and (``check_files``) a graph file that is missing or whose sha256 differs
    from the manifest's (a corrupt or altered export).
    """
    d = Path(directory)
    fix = f"make one with: nttt export onnx -o {d}"
    if not (d / MANIFEST).is_file():
        raise InputError(f"{d} is not an export directory (no {MANIFEST}); {fix}")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{d / MANIFEST} is unreadable ({exc}); the export is corrupt: {fix}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{d / MANIFEST} is not a no-time-to-train export manifest; {fix}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{d} is an export of format version {manifest.get('format_version')}, this version reads "
                         f"{FORMAT_VERSION}; re-export: nttt export onnx -o {d} --overwrite")
    if role not in manifest:
        raise InputError(f"the export {d} has no {role} (it holds {', '.join(r for r in ROLES if r in manifest)}); "
                         f"export the {role} too: nttt export onnx -o {d} --overwrite")
    wanted = role_graphs(manifest, role)
    for graph in wanted:
        entry = manifest["graphs"].get(graph)
        path = d / (entry or {}).get("file", f"{graph}.onnx")
        if entry is None or not path.is_file():
            raise InputError(f"the export {d} lacks {path.name}; the export is incomplete: re-export with "
                             f"nttt export onnx -o {d} --overwrite")
        if check_files and file_sha256(path) != entry["sha256"]:
            raise InputError(f"{path} does not match its manifest (sha256 differs): the export is corrupt or was "
                             f"altered; re-export with nttt export onnx -o {d} --overwrite")
    return manifest


def role_graphs(manifest: dict, role: str) -> list[str]:
    """The graph names an export of ``role`` consists of."""
    return ["image_encoder", *DECODERS] if role == "proposer" else ["patch_encoder"]


def check_weights(manifest: dict, role: str, model: torch.nn.Module, directory) -> None:
    """Refuse an export made from other weights than ``model``'s (sha256 of the state dict)."""
    want, have = manifest[role]["weights_sha256"], weights_sha256(model)
    if want != have:
        raise InputError(f"the export {directory} was made from other {role} weights (sha256 {want[:12]}..., these "
                         f"are {have[:12]}...); export these: nttt export onnx -o DIR, or leave out --export-dir to "
                         "export into the cache on first use")


def cached_export(role: str, wrapper, settings: dict, runtime: str) -> Path:
    """The cache directory holding ``wrapper``'s export for ``settings`` (exported now if absent).

    The key is the sha256 of the weights, the settings (``encoder_size`` for the encoder), the export format
    and the opset. A cached directory that fails :func:`read_manifest` is made again.
    """
    sha = weights_sha256(wrapper.model)
    key = hashlib.sha256(json.dumps({"role": role, "weights": sha, "settings": settings, "format": FORMAT_VERSION,
                                     "opset": OPSET}, sort_keys=True).encode()).hexdigest()[:24]
    d = cache_root() / f"{role}-{key}"
    if d.is_dir():
        try:
            read_manifest(d, role)
            return d
        except InputError as exc:
            log.warning("the cached export %s is unusable (%s); exporting again", d, exc)
    log.info("exporting the %s (%s) to ONNX once, into the cache %s", role, getattr(wrapper, "name", None)
             or wrapper.family, d)
    part = d.with_name(f"{d.name}.part-{os.getpid()}")
    kwargs = {"proposer": wrapper} if role == "proposer" else {"encoder": wrapper, **settings}
    export_onnx(part, verify_runtime=runtime, overwrite=True, **kwargs)
    try:
        if d.is_dir():  # an unusable earlier copy
            shutil.rmtree(d)
        os.replace(part, d)
    except OSError:  # another process (e.g. another torchrun rank) finished the same export first
        shutil.rmtree(part, ignore_errors=True)
        read_manifest(d, role)
    return d
