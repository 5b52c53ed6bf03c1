"""Copies from the CPU to the networks' device that never make the CPU wait for the GPU.

A copy from pageable memory waits for everything queued on the stream before it, so one such copy in the middle
of a call (a noise draw, a constant) stalls the CPU until the GPU has caught up, and the GPU then idles while the
CPU queues the next work. Through pinned memory the copy is queued like a kernel.
"""

from __future__ import annotations

import torch


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`: from the CPU to a GPU through pinned memory without blocking, else a plain copy.

    torch's pinned-memory pool keeps the staging buffer until the copy has run, so the caller may drop `tensor`.
    """
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
