"""Installed into an application laid out like Any6D's root, the host shadows nothing and the worker runs our code.

Any6D (taeyeopl/Any6D) runs from its root with Python 3.9; it vendors upstream InstantMesh as a namespace
folder ``instantmesh/`` (no ``__init__.py``; its scripts import ``instantmesh.src.utils.infer_util``) beside
``sam2/``. Here a fresh 3.9 venv gets the host, once with ``pip install`` and once with ``pip install -e``; a
script in an Any6D-shaped folder imports the application's own modules, then the host, and runs a mock worker
(Python 3.10) end to end. The worker must start outside that folder, with only our staged code on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.install.venvs import make_venv, pyenv_python, python310

pytestmark = [pytest.mark.install, pytest.mark.slow]

APPLICATION_FILES = {
    "instantmesh/src/utils/infer_util.py": "def remove_background(image):\n    return 'any6d infer_util'\n",
    "sam2/__init__.py": "NAME = 'any6d sam2'\n",
    "host.py": "NAME = 'any6d host'\n",
}

DEMO = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from instantmesh.src.utils.infer_util import remove_background
    import host, sam2
    import instantmesh_rpc
    from instantmesh_rpc import InstantMeshWorker
    from instantmesh_rpc.worker.process import WorkerCommand

    application = [remove_background(None), sam2.NAME, host.NAME]
    command = WorkerCommand.venv(sys.argv[1])
    probe = "import json, instantmesh, rpcworker; print(json.dumps([instantmesh.__file__, rpcworker.__file__]))"
    seen = subprocess.run([*command.interpreter(), "-c", probe], env=command.environment(),
                          cwd=command.start_directory(), capture_output=True, text=True)
    # Any6D's env has pillow: inputs are prepared as the API does by default.
    with InstantMeshWorker(sys.argv[1], backend="mock", startup_timeout=60) as worker:
        pid = worker.client.start().pid
        worker_cwd = os.readlink(f"/proc/{pid}/cwd")
        variables = dict(v.split("=", 1) for v in open(f"/proc/{pid}/environ").read().split("\\0") if "=" in v)
        views = worker.generate_views(sys.argv[2], num_inference_steps=2, save_grid="6_views_ball.png")
        mesh = worker.reconstruct(views, "mesh_ball.obj")
    print(json.dumps({
        "application": application,
        "host_package": instantmesh_rpc.__file__,
        "worker_modules": json.loads(seen.stdout) if seen.returncode == 0 else seen.stderr,
        "worker_cwd": worker_cwd,
        "worker_path": variables.get("PYTHONPATH"),
        "faces": mesh.num_faces,
    }))
    """
)


@pytest.fixture(scope="module")
def python39() -> str:
    found = pyenv_python("3.9")
    if found is None:
        pytest.skip("no Python 3.9 interpreter from pyenv (Any6D's Python)")
    return found


@pytest.fixture(scope="module")
def worker310(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(python310(), tmp_path_factory.mktemp("worker") / "venv", "msgspec", "pillow", "numpy").parents[1]


def _application(root: Path) -> Path:
    for name, text in APPLICATION_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "run_demo.py").write_text(DEMO)
    return root


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_the_host_shadows_nothing_of_an_any6d_shaped_application(
    python39: str, worker310: Path, tmp_path: Path, editable: bool
) -> None:
    host = make_venv(python39, tmp_path / "any6d-env", "pillow", "numpy")  # as Any6D's env has them
    subprocess.run([str(host), "-m", "pip", "install", "-q", *(["-e"] if editable else []), str(ROOT)], check=True)
    app = _application(tmp_path / "Any6D")
    names = subprocess.run(
        [
            str(host),
            "-c",
            "import importlib.util as u; print([u.find_spec(n) is None for n in ('host', 'instantmesh')])",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert names.stdout.strip() == "[True, True]", "the install added a top-level host or instantmesh"

    image = ROOT / "examples" / "inputs" / "ball.png"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    out = subprocess.run(
        [str(host), "run_demo.py", str(worker310), str(image)],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["application"] == ["any6d infer_util", "any6d sam2", "any6d host"]
    own = Path(report["host_package"]).resolve().parent
    assert own == (ROOT / "host").resolve() if editable else "site-packages" in own.parts, own
    models, worker_package = (Path(p) for p in report["worker_modules"])
    assert models.parent.parent == worker_package.parent.parent == Path(report["worker_path"])
    expected_models = ROOT / "instantmesh" if editable else own / "worker_code" / "instantmesh"
    assert models.resolve().parent == expected_models.resolve(), models.resolve()
    assert Path(report["worker_cwd"]).resolve() != app.resolve() and not (Path(report["worker_cwd"]) / "sam2").exists()
    assert report["faces"] > 0
    assert (app / "mesh_ball.obj").is_file() and (app / "6_views_ball.png").is_file()
