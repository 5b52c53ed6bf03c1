"""A stand-in for rembg's model and a photo that needs it, so rembg's own code runs end to end, offline.

The stand-in is a two-node ONNX network (a 1x1 convolution of the normalised RGB input, then a sigmoid, as
u2net ends) written as
``u2net.onnx`` into a folder that ``U2NET_HOME`` names: every rembg release reads that flat layout, so the host's
``rembg.new_session("u2net")`` loads it, on the CPU, in well under a second. Downloads are made impossible
(an unreachable proxy on 127.0.0.1), so a test that passes used the stand-in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

U2NET_SIDE = 320
"""The square rembg's u2net session feeds its model."""
RED_IS_OBJECT = (1.0, -1.0, 0.0)
"""Weights of the normalised R, G and B: red over green is the object (the photo's)."""
GREEN_IS_OBJECT = (-1.0, 1.0, 0.0)
"""The opposite model: the photo's green backdrop becomes the object."""
GAIN = 10.0
"""Sharpens the sigmoid: the photo's colours land at 0 and 1, its edges alone in between."""
UNREACHABLE_PROXY = "http://127.0.0.1:9"
"""The discard port on this machine, where nothing listens: any download fails at once."""
PHOTO_SIZE = (96, 80)
OBJECT_BOX = (30, 20, 70, 60)
"""The red object's box in ``write_photo_needing_rembg``'s photo: x0, y0, x1, y1 (exclusive)."""


def write_stand_in_model(folder: Path, weights: tuple[float, float, float] = RED_IS_OBJECT) -> Path:
    """``folder/u2net.onnx``: a mask that is the sigmoid of ``weights`` times the normalised RGB."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = helper.make_tensor("weight", TensorProto.FLOAT, [1, 3, 1, 1], [GAIN * w for w in weights])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input.1", "weight"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["mask"]),
        ],
        "u2net-stand-in",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, U2NET_SIDE, U2NET_SIDE])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, U2NET_SIDE, U2NET_SIDE])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime the extra allows reads (1.16 and later)
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "u2net.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def offline_rembg(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """rembg (skipped where it is not installed) reads its model from ``home`` and cannot download: this process's
    environment, which subprocesses inherit. Old rembg checks an existing file's checksum and would fetch the real
    model over the stand-in; MODEL_CHECKSUM_DISABLED (rembg's own switch) keeps the file that is there."""
    pytest.importorskip("rembg")
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("U2NET_HOME", str(home))
    monkeypatch.setenv("MODEL_CHECKSUM_DISABLED", "1")
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, UNREACHABLE_PROXY)
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)


def write_photo_needing_rembg(path: Path) -> Path:
    """An RGB photo with no alpha, no mask and no white border: a red box on a noisy green backdrop."""
    width, height = PHOTO_SIZE
    noise = np.random.default_rng(7).integers(0, 8, (height, width, 3))  # texture, not an object
    photo = (np.array([40, 150, 50]) + noise).astype(np.uint8)
    x0, y0, x1, y1 = OBJECT_BOX
    photo[y0:y1, x0:x1] = (210, 40, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(path)
    return path
