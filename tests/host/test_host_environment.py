"""The host must import with msgspec alone: checked in the host env, which has no torch."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import HOST_PYTHON


def test_host_env_has_no_torch_and_host_imports() -> None:
    if not HOST_PYTHON.exists():
        pytest.fail(f"{HOST_PYTHON} missing: run scripts/setup.sh")
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('torch') is None, 'torch must not be installed in the host env'\n"
        "import host, host.api.facade, host.worker.client, host.worker.session, host.worker.process\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'numpy', 'PIL', 'diffusers', 'transformers', 'trimesh', 'rembg', 'onnxruntime'})\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    out = subprocess.run([str(HOST_PYTHON), "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
