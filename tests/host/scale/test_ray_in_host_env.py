"""The suite runs in the models env, which has no ray; the host env (where the ray extra is installed) runs
test_ray.py then, so the Ray tests run on every CI run instead of being skipped."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON, ROOT

pytestmark = pytest.mark.pool

RAY_TESTS = Path(__file__).with_name("test_ray.py")


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is not None, reason="ray is importable here: test_ray.py runs directly"
)
def test_ray_tests_pass_in_the_host_environment() -> None:
    """test_ray.py under the host env's Python passes, with nothing skipped."""
    if not HOST_PYTHON.exists():
        pytest.fail(f"{HOST_PYTHON} missing: run scripts/setup.sh")
    command = [str(HOST_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(RAY_TESTS)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=140)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "skipped" not in done.stdout, done.stdout[-2000:]
