"""Which engine runs the networks: PyTorch eager (the faithful reference), ONNX Runtime, OpenVINO, or
``torch.compile`` (inductor).

``onnxruntime`` and ``openvino`` run an exported directory (``nttt export onnx``, :mod:`.models.export`) through
runtime-backed proposer and encoder objects (:mod:`.models.exported`); the predictor does not know the
difference. Each is an optional extra; :func:`require` turns a missing one into one clear error.
This module also holds the ``--runtime`` / ``--export-dir`` command-line options, shared by every verb.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil

from .errors import InputError

#: Every runtime, in the order the help lists them.
RUNTIMES = ("torch", "onnxruntime", "openvino", "compiled")
#: The runtimes that run an exported directory.
EXPORTED_RUNTIMES = ("onnxruntime", "openvino")
#: The runtime ``auto`` picks on a CPU and on a GPU (see benchmarks/RESULTS.md, section 7 "Runtimes": OpenVINO
#: was 2.0-2.6x faster than eager torch per image at paper settings on a 2-core CPU, with the same detections).
CPU_DEFAULT = "openvino"
GPU_DEFAULT = "torch"

#: runtime -> (module it needs, the extra that installs it)
_EXTRAS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino"),
           "export": ("onnx", "onnx")}


def resolve(runtime: str | None, device_type: str = "cpu", plain_fp32: bool = True) -> str:
    """The runtime to use: ``runtime`` itself, or for ``None``/``"auto"`` the default.

    The default is ``$NTTT_RUNTIME`` when set, else :data:`GPU_DEFAULT` on CUDA, else :data:`CPU_DEFAULT` when
    the models run plainly in fp32 (``plain_fp32``: no other dtype, autocast or compile asked for) and its
    package is installed, else ``torch``.
    """
    if runtime in (None, "auto"):
        chosen = os.environ.get("NTTT_RUNTIME", "auto")
        if chosen != "auto":
            return resolve(chosen)
        if device_type == "cuda":
            return GPU_DEFAULT
        if CPU_DEFAULT in EXPORTED_RUNTIMES and not (plain_fp32 and _installed(CPU_DEFAULT)):
            return "torch"
        return CPU_DEFAULT
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; use one of auto, {', '.join(RUNTIMES)}")
    return runtime


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):  # e.g. sys.modules[module] is None: blocked
        return False


def require(what: str):
    """Import and return the module ``what`` (a runtime name, or ``"export"`` for the ONNX exporter) needs.

    A missing package is an InputError naming the extra and its install command.
    """
    module, extra = _EXTRAS[what]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"{'the ONNX export' if what == 'export' else 'the ' + what + ' runtime'} needs the "
                         f"'{module}' package ({exc}); install it with: pip install \"no-time-to-train[{extra}]\"") from exc


def check_compiler() -> None:
    """``compiled`` on a CPU needs a C++ compiler (inductor writes and builds C++); an InputError if none."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    if not any(shutil.which(n) for n in names):
        raise InputError("--runtime compiled on a CPU needs a C++ compiler (torch.compile's inductor backend builds "
                         f"C++ code) and none was found ({', '.join(names)}): install one (e.g. apt-get install g++) "
                         "or use --runtime torch, onnxruntime or openvino")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """The ``--runtime`` and ``--export-dir`` options (one group, on every verb that runs the networks)."""
    g = p.add_argument_group("runtime")
    g.add_argument("--runtime", default="auto", choices=["auto", *RUNTIMES],
                   help="what runs the networks: torch (eager PyTorch, the faithful reference), onnxruntime or "
                   "openvino (an ONNX export: --export-dir, else exported once into a cache; extras [onnx] / "
                   "[openvino]), compiled (torch.compile, inductor). auto: "
                   f"{CPU_DEFAULT} on a CPU, {GPU_DEFAULT} on a GPU (default)")
    g.add_argument("--export-dir", default=None, metavar="DIR",
                   help="an `nttt export onnx` directory for --runtime onnxruntime/openvino (default: export the "
                   "models into the cache on first use; NTTT_CACHE_DIR sets the cache folder)")


def runtime_kwargs(args) -> dict:
    """``ReferenceSegmenter`` keyword arguments from the options of :func:`add_runtime_args`."""
    return {"runtime": getattr(args, "runtime", None) or "auto", "export_dir": getattr(args, "export_dir", None)}
