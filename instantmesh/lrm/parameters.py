"""Randomly initialised parameters that cost nothing on the meta device.

The LRM is built on the meta device and its checkpoint assigned (`model.load_instantmesh_lrm`). There, a random
fill such as ``normal_`` runs a Python decomposition that imports torch._dynamo: seconds of a worker start
that otherwise needs no compiler (see docs/benchmarks.md, 'The views bundle'). Shapes alone are enough there.
"""

from __future__ import annotations

import torch
from torch import nn


def normal_parameter(*shape: int, std: float) -> nn.Parameter:
    """A parameter drawn from N(0, std²) on the current device; on the meta device, its shape only."""
    tensor = torch.empty(*shape)
    if not tensor.is_meta:
        tensor.normal_(std=std)
    return nn.Parameter(tensor)
