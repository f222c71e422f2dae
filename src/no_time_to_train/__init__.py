"""no-time-to-train: training-free, reference-based instance segmentation.

    from no_time_to_train import ReferenceSegmenter
    seg = ReferenceSegmenter(sam2="sam2_hiera_large.pt", encoder="dinov2_vitl14_pretrain.pth")
    seg.add_reference("dog.jpg", dog_mask, category="dog")
    dets = seg.predict("park.jpg")

Names are imported lazily so that ``import no_time_to_train`` (and ``nttt --help``) stays fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "ReferenceSegmenter": "predictor",
    "Detections": "types",
    "MethodConfig": "config",
    "ReferenceMemory": "memory",
    "NtttError": "errors",
    "InputError": "errors",
    "CheckpointError": "errors",
    "MemoryMismatchError": "errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
