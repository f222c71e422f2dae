"""no-time-to-train: training-free, reference-based instance segmentation."""

__version__ = "0.1.0"
