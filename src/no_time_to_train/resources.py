"""Sizing work to the machine: how many prompts the mask decoder can take at once."""

from __future__ import annotations

import os

import torch

# Peak memory of SAM2's mask decoder per prompt (decoder width 256, 64x64 embedding, fp32), measured with
# ``benchmarks/bench.py --probe-decoder`` on CPU (see benchmarks/RESULTS.md): the shared-image decoder
# (``Sam2Segmenter._decode_shared_image``) peaks at about 31 MiB per prompt (mostly the upscaling to 256x256
# of each prompt's image embedding). transformers' own decoder, which also copies the image embedding, its
# positional encoding and the high-resolution maps per prompt, needs about 43 MiB (11 GiB per 256 prompts).
_BYTES_PER_PROMPT_FP32_256 = 31 * 2**20

# Decoder batch caps. On a 2-core CPU, time per prompt was best at 64 prompts per call (92, 60, 55, 61, 80 ms
# at 16, 32, 64, 128, 256) while memory grows linearly; on a GPU a larger batch keeps the device busy.
CPU_BATCH_CAP = 64
CUDA_BATCH_CAP = 1024


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


def decoder_bytes_per_prompt(proposer, dtype: torch.dtype | None = None) -> float:
    """Estimated peak bytes per prompt of the proposer's mask decoder, scaled by its width and the element size.

    ``proposer``: a :class:`~no_time_to_train.models.proposer.Proposer`. ``dtype``: the precision the decoder
    computes in (autocast); defaults to the model's. The figure is SAM2's shared-image decoder's; SAM and
    SAM-HQ run transformers' own decoder, which copies the image per prompt (for SAM2 that copying decoder
    measured about 1.4x; SAM's was not measured), still inside free memory at the default ``fraction`` 0.5.
    """
    width = proposer.decoder_width
    elem = torch.finfo(dtype or proposer.dtype).bits // 8
    return _BYTES_PER_PROMPT_FP32_256 * (width / 256) * (elem / 4)


def auto_point_batch_size(
    proposer, device: torch.device, fraction: float = 0.5, cap: int | None = None, dtype: torch.dtype | None = None
) -> int:
    """Largest decoder batch using at most ``fraction`` of free memory, between 1 and ``cap``.

    ``cap`` defaults to :data:`CUDA_BATCH_CAP` on CUDA and :data:`CPU_BATCH_CAP` elsewhere. The batch size
    never changes the results, only speed and peak memory.
    """
    device = torch.device(device)
    if cap is None:
        cap = CUDA_BATCH_CAP if device.type == "cuda" else CPU_BATCH_CAP
    per_prompt = decoder_bytes_per_prompt(proposer, dtype)
    return max(1, min(cap, int(available_memory(device) * fraction // per_prompt)))
