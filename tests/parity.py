"""The parity data's random weights, regenerated from their manifest (``../shared/data/parity/README.md``).

Recipe: one CPU ``torch.Generator`` seeded with the manifest's seed walks the SAM2 entries, then the DINOv2
entries, in order; an entry with ``std == 0`` is ``mean`` everywhere (no draw), any other is
``randn(shape) * std + mean`` in float32, then cast to its dtype. The tensors are saved in Meta's layouts:
``{"model": state_dict}`` for SAM2 and a plain state dict for DINOv2.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SAM2_FILE = "sam2_hiera_tiny_random.pt"
DINOV2_FILE = "dinov2_vits14_random.pth"


def _tensors(entries: list[dict], gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for e in entries:
        dtype = getattr(torch, e["dtype"])
        if e["std"] == 0:
            t = torch.full(e["shape"], e["mean"], dtype=torch.float32)
        else:
            t = torch.randn(e["shape"], generator=gen, dtype=torch.float32) * e["std"] + e["mean"]
        out[e["key"]] = t.to(dtype)
    return out


def generate_weights(manifest_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the two checkpoints into ``out_dir``; returns ``(sam2_path, dinov2_path)``."""
    manifest = json.loads(Path(manifest_path).read_text())
    gen = torch.Generator().manual_seed(int(manifest["seed"]))
    sam2 = _tensors(manifest["sam2"], gen)  # SAM2 first: the order of the draws is part of the recipe
    dinov2 = _tensors(manifest["dinov2"], gen)
    out_dir.mkdir(parents=True, exist_ok=True)
    sam2_path, dinov2_path = out_dir / SAM2_FILE, out_dir / DINOV2_FILE
    torch.save({"model": sam2}, sam2_path)  # torch.save's bytes depend on the file name: keep these names
    torch.save(dinov2, dinov2_path)
    return sam2_path, dinov2_path




def expected_sha256(parity_dir: Path) -> dict[str, str]:
    """``{file name: sha256}`` from ``weights.sha256`` (sha256sum's format)."""
    lines = (parity_dir / "weights.sha256").read_text().split("\n")
    return {name.strip(): digest for digest, name in (ln.split(maxsplit=1) for ln in lines if ln.strip())}
