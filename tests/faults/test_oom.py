"""Out of memory in a model step: the request gets out_of_memory, the worker survives, the next succeeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpcworker.wire.errors import OutOfMemory
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ReconstructParams, ViewsHandle

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("method", ["generate_views", "reconstruct", "load"])
def test_out_of_memory_once_then_the_same_request_succeeds(
    mock_client, object_png: Path, tmp_path: Path, method: str
) -> None:
    """mock oom_once=METHOD: that call raises OutOfMemory (code -32030, data names the method), the same
    worker process stays up, and repeating the call succeeds."""
    client = mock_client(f"oom_once={method}")
    pid = client.process.pid
    views_params = GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1)
    views = client.generate_views(views_params) if method == "reconstruct" else None

    def call() -> object:
        if method == "generate_views":
            return client.generate_views(views_params)
        if method == "load":
            return client.load()
        assert views is not None
        return client.reconstruct(ReconstructParams(ViewsHandle(views.handle), str(tmp_path / "m.obj"), overwrite=True))

    with pytest.raises(OutOfMemory) as info:
        call()
    assert info.value.code == -32030 and info.value.data["method"] == method
    assert not (tmp_path / "m.obj").exists()
    assert call() is not None
    assert client.process.pid == pid and client.status().busy is None
