"""A host installed with ``pip install .`` (not editable) keeps the worker isolated.

Fresh venvs under a temporary folder: a Python 3.11 host with the project and numpy installed, run from
another directory, drives (a) a Python 3.10 worker env with only the worker's third-party packages and
(b) a same-version worker env with msgspec alone. The worker's sys.path and module origins must show
none of the host's environment: the worker code comes from the staged directory of links, numpy (when
present) from the worker's own env, and a package the worker env lacks stays missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.install.venvs import make_venv, python310

pytestmark = [pytest.mark.install, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("isolation")
    host = make_venv(sys.executable, base / "host", "numpy")
    subprocess.run([str(host), "-m", "pip", "install", "-q", str(ROOT)], check=True, cwd=base)
    return {
        "base": base,
        "host": host,
        "worker310": make_venv(python310(), base / "worker310", "msgspec", "pillow", "numpy"),
        "worker_same": make_venv(sys.executable, base / "worker_same", "msgspec"),
    }


PROBE = textwrap.dedent(
    """
    import json, sys
    from rpcworker.wire.cache import cache_root
    from instantmesh_rpc.worker.process import WorkerCommand
    import instantmesh_rpc as host
    command = WorkerCommand.venv(sys.argv[1])
    env = command.environment()
    probe = (
        "import importlib.util, json, sys\\n"
        "import rpcworker, instantmesh, msgspec\\n"
        "spec = importlib.util.find_spec('numpy')\\n"
        "print(json.dumps({'path': sys.path, 'rpcworker': rpcworker.__file__, 'instantmesh': instantmesh.__file__,"
        " 'msgspec': msgspec.__file__, 'numpy': spec.origin if spec else None, 'prefix': sys.prefix}))\\n"
    )
    import subprocess
    out = subprocess.run([*command.interpreter(), "-c", probe], env=env, cwd=command.start_directory(), capture_output=True, text=True)
    print(json.dumps({"host": host.__file__, "env_pythonpath": env.get("PYTHONPATH"), "rc": out.returncode,
                      "stderr": out.stderr[-2000:], "worker": json.loads(out.stdout) if out.returncode == 0 else None}))
    """
)


def _probe(installed: dict[str, Path], worker: str) -> dict:
    run_dir = installed["base"] / "elsewhere"
    run_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(installed["host"]), "-c", PROBE, str(installed[worker].parent.parent)],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("worker", ["worker310", "worker_same"])
def test_worker_sees_none_of_the_host_environment(installed: dict[str, Path], worker: str) -> None:
    report = _probe(installed, worker)
    host_prefix = str(installed["base"] / "host")
    assert report["host"].startswith(host_prefix) and "site-packages" in report["host"], report[
        "host"
    ]  # really pip-installed
    assert report["rc"] == 0, report["stderr"]
    seen = report["worker"]
    assert not [p for p in seen["path"] if p.startswith(host_prefix)], seen["path"]
    assert not [p for p in seen["path"] if str(ROOT) in p], seen["path"]
    code_dir = report["env_pythonpath"]
    assert sorted(os.listdir(code_dir)) == ["instantmesh", "rpcworker"]
    for module in ("rpcworker", "instantmesh"):
        assert seen[module].startswith(code_dir + os.sep), seen[module]
        # The links point at the host's installed copy: the worker runs the host's protocol version.
        assert os.path.realpath(seen[module]).startswith(host_prefix), os.path.realpath(seen[module])
    worker_prefix = str(installed[worker].parent.parent)
    assert seen["msgspec"].startswith(worker_prefix), seen["msgspec"]
    if worker == "worker310":
        assert seen["numpy"].startswith(worker_prefix), seen["numpy"]
    else:
        assert seen["numpy"] is None, "the host's numpy leaked into a worker env that has none"


def test_installed_host_runs_a_py310_worker_end_to_end(installed: dict[str, Path]) -> None:
    script = textwrap.dedent(
        """
        import sys
        from instantmesh_rpc import InstantMeshWorker
        # This host has no pillow (the images extra): inputs go as they are.
        with InstantMeshWorker(sys.argv[1], backend="mock", startup_timeout=60, prepare=False) as worker:
            info = worker.client.start()
            views = worker.generate_views(sys.argv[2], num_inference_steps=2, save_grid="views.png")
            mesh = worker.reconstruct(views, "mesh.obj")
            print(info.python.split()[0], mesh.num_faces > 0)
        """
    )
    image = ROOT / "examples" / "inputs"
    first = sorted(p for p in image.iterdir() if p.suffix == ".png" and "_mask" not in p.name)[0]
    run_dir = installed["base"] / "e2e"
    run_dir.mkdir()
    out = subprocess.run(
        [str(installed["host"]), "-c", script, str(installed["worker310"].parent.parent), str(first)],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    version, has_faces = out.stdout.split()
    assert version.startswith("3.10") and has_faces == "True", out.stdout
    assert (run_dir / "mesh.obj").is_file()


def test_worker_env_without_msgspec_names_it(installed: dict[str, Path], tmp_path: Path) -> None:
    bare = installed["base"] / "bare310"
    if not bare.exists():
        make_venv(python310(), bare)
    script = "import sys\nfrom instantmesh_rpc import InstantMeshWorker, WorkerStartError\ntry:\n    InstantMeshWorker(sys.argv[1], backend='mock', startup_timeout=30, prepare=False).start()\nexcept WorkerStartError as e:\n    print(str(e).splitlines()[0])\n"
    out = subprocess.run(
        [str(installed["host"]), "-c", script, str(bare)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "lacks the Python package 'msgspec'" in out.stdout, out.stdout + out.stderr
    assert "_core" not in out.stdout


def test_installed_host_without_pillow_refuses_preprocessing_in_one_line(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    image = ROOT / "examples" / "inputs" / "ball.png"
    cli = installed["host"].parent / "instantmesh-rpc"
    args = [
        str(cli),
        "batch",
        str(image),
        "--out",
        "o",
        "--python",
        str(installed["worker310"].parent.parent),
        "--mock",
        "step_delay=0",
    ]
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "preprocessing need pillow" in out.stderr, out.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    done = subprocess.run([*args, "--no-preprocess"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "o" / "ball.obj").is_file()
