"""Sizing work to the machine: how many prompts the mask decoder can take at once."""

from __future__ import annotations

import os

import torch

# Measured peak of SAM2's mask decoder (256-wide, 64x64 embedding, fp32): about 11 GiB per 256 prompts.
_BYTES_PER_PROMPT_FP32_256 = 11 * 2**30 / 256


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA's free memory, or the OS's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_point_batch_size(sam2, device: torch.device, fraction: float = 0.5, cap: int = 1024) -> int:
    """Largest decoder batch using at most ``fraction`` of free memory, between 1 and ``cap``.

    The estimate scales the measured per-prompt peak by the decoder width and element size.
    """
    width = int(sam2.model.config.mask_decoder_config.hidden_size)
    elem = torch.finfo(sam2.dtype).bits // 8
    per_prompt = _BYTES_PER_PROMPT_FP32_256 * (width / 256) * (elem / 4)
    return max(1, min(cap, int(available_memory(device) * fraction // per_prompt)))
