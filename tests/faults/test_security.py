"""Security: nothing on the wire is unpickled, weights load without arbitrary unpickling, the worker opens
no socket, and output paths are confined as protocol.md says."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from .conftest import ROOT, RawWorker, error_name
from .test_load_and_soak import fd_kinds

pytestmark = pytest.mark.faults

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def python_files(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_no_unpickling_anywhere_on_the_wire_path() -> None:
    """rpcworker/ and host/ (everything that touches the wire) import no pickle-like module and call no
    eval/exec; decoding is msgspec into typed Structs only."""
    offenders = []
    for path in python_files("rpcworker", "host"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n in UNSAFE_MODULES]
        for call in _calls(tree):
            if _name(call.func) in ("eval", "exec", "torch.load", "numpy.load", "np.load"):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} calls {_name(call.func)}")
    assert not offenders, offenders


def test_weights_are_loaded_with_weights_only_or_safetensors() -> None:
    """Every torch.load in instantmesh/ passes weights_only=True (a literal); no pickle.load(s),
    np.load(allow_pickle=True) or torch.jit.load anywhere in the model code."""
    loads, offenders = 0, []
    for path in python_files("instantmesh", "rpcworker"):
        for call in _calls(ast.parse(path.read_text(), str(path))):
            name, where = _name(call.func), f"{path.relative_to(ROOT)}:{call.lineno}"
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                loads += 1
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{where}: torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "torch.jit.load", "dill.load", "joblib.load"):
                offenders.append(f"{where}: {name}")
            elif name in ("np.load", "numpy.load"):
                value = keywords.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    offenders.append(f"{where}: {name} with allow_pickle")
    assert not offenders, offenders
    assert loads >= 1, "expected the checkpoint loaders to be found (did the layout change?)"


def test_the_worker_opens_no_socket(raw_worker, object_png: Path, tmp_path: Path) -> None:
    """While serving (initialize, load, generate_views, reconstruct, status), the worker's
    /proc/PID/fd never shows a socket; its stdin copy is a pipe and fd 0 is /dev/null."""
    worker: RawWorker = raw_worker()
    seen: set[str] = set(fd_kinds(worker.pid))
    worker.call("load")
    seen |= set(fd_kinds(worker.pid))
    handle = worker.call(
        "generate_views", {"image": {"type": "path", "path": str(object_png)}, "num_inference_steps": 3}
    )["result"]["handle"]
    seen |= set(fd_kinds(worker.pid))
    assert (
        error_name(
            worker.call(
                "reconstruct", {"views": {"type": "handle", "handle": handle}, "output_path": str(tmp_path / "m.glb")}
            )
        )
        == "ok"
    )
    seen |= set(fd_kinds(worker.pid))
    assert not [k for k in seen if k.startswith("socket:")], sorted(seen)
    assert os.readlink(f"/proc/{worker.pid}/fd/0") == "/dev/null"
    assert any(k.startswith("pipe:") for k in seen)


@pytest.fixture()
def confined(raw_worker, tmp_path: Path) -> tuple[RawWorker, Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link-out").symlink_to(outside)
    (root / "link-in").symlink_to(root / "sub", target_is_directory=True)
    (root / "file-link.obj").symlink_to(outside / "victim.obj")
    (outside / "victim.obj").write_text("victim")
    return raw_worker("--output-root", str(root)), root, outside


def test_output_paths_are_confined_to_the_output_root(confined, object_png: Path) -> None:
    """With --output-root: relative paths get invalid_params; '..' escapes, symlinked directories and a
    symlinked file pointing outside get output_refused (nothing written outside); a directory target is
    refused; paths inside the root (also through an inside symlink) are written."""
    worker, root, outside = confined
    views = worker.call(
        "generate_views", {"image": {"type": "path", "path": str(object_png)}, "num_inference_steps": 1}
    )
    handle = views["result"]["handle"]

    def reconstruct(path: str, **extra) -> str:
        return error_name(
            worker.call("reconstruct", {"views": {"type": "handle", "handle": handle}, "output_path": path, **extra})
        )

    assert reconstruct("relative/m.obj") == "invalid_params"
    assert reconstruct(str(root / ".." / "outside" / "m.obj")) == "output_refused"
    assert reconstruct(str(root / "link-out" / "m.obj")) == "output_refused"
    assert reconstruct(str(root / "file-link.obj"), overwrite=True) == "output_refused"
    assert reconstruct(str(outside / "m.obj")) == "output_refused"
    assert reconstruct("/etc/m.obj") == "output_refused"
    assert reconstruct(str(root)) == "invalid_params"  # no extension: format unknown
    assert reconstruct(str(root / "sub.obj")) == "ok"
    (root / "dir.obj").mkdir()
    assert reconstruct(str(root / "dir.obj"), overwrite=True) == "output_refused"
    assert reconstruct(str(root / "link-in" / "m.obj")) == "ok"
    assert (root / "sub" / "m.obj").exists()
    assert (
        sorted(p.name for p in outside.iterdir()) == ["victim.obj"] and (outside / "victim.obj").read_text() == "victim"
    )
    grid = worker.call(
        "generate_views",
        {
            "image": {"type": "path", "path": str(object_png)},
            "num_inference_steps": 1,
            "output_path": str(root / "link-out" / "g.png"),
        },
    )
    assert error_name(grid) == "output_refused" and not (outside / "g.png").exists()
