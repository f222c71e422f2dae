"""The proposer and patch-encoder interfaces backed by an ONNX export run under ONNX Runtime or OpenVINO.

:class:`ExportedProposer` and :class:`ExportedPatchEncoder` take and return torch tensors exactly like the
PyTorch wrappers (:class:`~.proposer.Proposer`, :class:`~.encoder.PatchEncoder`), so the predictor, the reference
path and the app run unchanged. The networks run in float32 on the CPU (ONNX Runtime uses CUDA when asked for a
CUDA device and its CUDA provider is installed); inputs and outputs are CPU tensors. The graphs are described in
:mod:`.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .encoder import PatchEncoder
from .encoder import input_size as encoder_input_size
from .export import check_weights, read_manifest, role_graphs
from .proposer import Proposer
from .sam import SamV1Embedding
from .sam2 import SamImageEmbedding

EMBEDDINGS = {cls.__name__: cls for cls in (SamImageEmbedding, SamV1Embedding)}

Graph = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def open_graph(path: Path, runtime: str, device: torch.device | str = "cpu") -> Graph:
    """An ONNX file ready to run under ``runtime``: a function of named numpy inputs -> outputs in graph order.

    OpenVINO is told to compute in fp32 (its CPU plugin would otherwise use bf16 where the CPU has it) and keeps
    its compiled graphs in ``<cache>/openvino`` (the export cache's folder), so that later processes load them
    instead of compiling again.
    """
    from ..runtime import require
    from .export import cache_root

    module = require(runtime)
    if runtime == "onnxruntime":
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in module.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = module.InferenceSession(str(path), providers=providers)
        return lambda feeds: session.run(None, feeds)
    core = module.Core()
    core.set_property({"CACHE_DIR": str(cache_root().parent / "openvino")})
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(feeds):
        result = request.infer(feeds)
        return [np.array(result[o]) for o in outputs]

    return run


class _Graphs:
    """The graphs of one role of an export directory, opened (compiled by the runtime) at once."""

    def __init__(self, directory: Path, manifest: dict, runtime: str, device: torch.device, role: str):
        self.manifest = manifest
        self._open = {g: open_graph(directory / manifest["graphs"][g]["file"], runtime, device)
                      for g in role_graphs(manifest, role)}

    def run(self, graph: str, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in feeds.items()}
        return [torch.from_numpy(a) for a in self._open[graph](arrays)]


class ExportedProposer(Proposer):
    """A proposer whose networks are an export's graphs (see :class:`~.proposer.Proposer` for the interface)."""

    def __init__(self, directory: Path, manifest: dict, runtime: str, device: torch.device | str = "cpu"):
        section = manifest["proposer"]
        self.section, self.runtime, self.directory = section, runtime, Path(directory)
        self.name = f"{section['name']} ({runtime})"
        self.image_size = int(section["image_size"])
        self._embedding = EMBEDDINGS[section["embedding"]]
        memory = section.get("no_memory_embedding")
        self._no_memory = torch.tensor(memory, dtype=torch.float32).view(1, -1, 1, 1) if memory else None
        self._graphs = _Graphs(self.directory, manifest, runtime, torch.device(device), "proposer")
        self.model = None  # no PyTorch model: the export is the model

    device = property(lambda self: torch.device("cpu"), doc="Where inputs and outputs live (the CPU).")
    dtype = property(lambda self: torch.float32, doc="The exported graphs compute in float32.")
    decoder_width = property(lambda self: int(self.section["decoder_width"]))

    def describe(self) -> dict:
        return {**self.section["describe"], "runtime": self.runtime, "export": str(self.directory)}

    def encode(self, image: torch.Tensor, add_no_memory_embedding: bool = False):
        """See :meth:`Proposer.encode`; ``add_no_memory_embedding`` adds the exported no-memory vector (SAM2)."""
        outputs = self._graphs.run("image_encoder", {"image": image.float()})
        names = [o["name"] for o in self._graphs.manifest["graphs"]["image_encoder"]["outputs"]]
        tensors = dict(zip(names, outputs))
        if add_no_memory_embedding and self._no_memory is not None:
            tensors["image_embedding"] = tensors["image_embedding"] + self._no_memory
        return self._embedding.from_tensors(tensors)

    def decode(self, emb, points=None, labels=None, boxes=None, multimask: bool = True):
        """See :meth:`Proposer.decode`. Exported: points (multimask or single-mask) or boxes (single-mask)."""
        if boxes is not None:
            if points is not None or multimask:
                raise InputError("the exported proposer decodes boxes alone, single-mask (no points with boxes, no "
                                 "multimask box output); use --runtime torch for that")
            graph, feeds = "decoder_boxes", {"boxes": boxes.float()}
        else:
            graph = "decoder_points" if multimask else "decoder_points_single"
            feeds = {"points": points.float(), "labels": labels.long()}
        masks, iou = self._graphs.run(graph, {**emb.tensors(), **feeds})
        return masks, iou


class ExportedPatchEncoder(PatchEncoder):
    """A patch encoder whose ViT is an export's graph; same identity (fingerprint) as the PyTorch encoder."""

    def __init__(self, directory: Path, manifest: dict, runtime: str, device: torch.device | str = "cpu"):
        section = manifest["encoder"]
        self.section, self.runtime, self.directory = section, runtime, Path(directory)
        self.family = section["family"]
        self.patch_size, self.dim, self.num_prefix = section["patch_size"], section["dim"], section["num_prefix"]
        self.mean, self.std = tuple(section["mean"]), tuple(section["std"])
        self.exported_size = int(section["input_size"])
        self._graphs = _Graphs(self.directory, manifest, runtime, torch.device(device), "encoder")
        self.model = None

    device = property(lambda self: torch.device("cpu"), doc="Where inputs and outputs live (the CPU).")
    dtype = property(lambda self: torch.float32, doc="The exported graph computes in float32.")

    def compile(self, **kwargs) -> None:
        """Nothing to compile: the runtime optimises the graph."""

    def input_size(self, setting: int | str) -> int:
        """The input side for ``setting``; only the exported side is available (else an InputError)."""
        size = encoder_input_size(setting, self.patch_size, self.family)
        if size != self.exported_size:
            raise InputError(f"the export {self.directory} takes {self.exported_size}² encoder inputs but the "
                             f"encoder_size setting asks for {size}²; use --encoder-size {self.exported_size}, or "
                             f"export at {size} (nttt export onnx --encoder-size {setting})")
        return size

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [0, 1] -> ``(B, (S/p)**2, D)`` float32 patch tokens (see :class:`PatchEncoder`)."""
        if images.shape[-1] != self.exported_size or images.shape[-2] != self.exported_size:
            raise InputError(f"the exported encoder takes {self.exported_size}² images, got {tuple(images.shape)}")
        return self._graphs.run("patch_encoder", {"images": images.float()})[0]

    def fingerprint(self) -> str:
        return self.section["describe"]["fingerprint"]

    def describe(self) -> dict:
        return dict(self.section["describe"])


def load_exported(role: str, directory, runtime: str, device="cpu", model: torch.nn.Module | None = None):
    """The runtime-backed wrapper of ``role`` (``"proposer"``/``"encoder"``) from an export directory.

    ``model``: the PyTorch model the export must have been made from (refused if its weights differ).
    """
    manifest = read_manifest(directory, role)
    if model is not None:
        check_weights(manifest, role, model, directory)
    cls = ExportedProposer if role == "proposer" else ExportedPatchEncoder
    return cls(Path(directory), manifest, runtime, device)
