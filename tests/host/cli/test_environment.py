"""Finding the worker environment, the config file, doctor, setup-worker and the one-line refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from host.cli.doctor import known_bad_combinations
from host.worker import environment
from host.worker.process import WorkerCommand, WorkerProcess
from tests.conftest import HOST_PYTHON, ROOT, WORKER_PYTHON

pytestmark = pytest.mark.cli


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (environment.ENV_PYTHON, environment.ENV_CONFIG, environment.ENV_WORKER_CODE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_order_argument_variable_config_checkout(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        environment.EnvironmentProblem,
        match=r"no worker environment: name one \(--python ENV on the command line, python= in the API\).*\.venvs/models",
    ):
        environment.find_worker_environment()
    (clean_env / ".venvs" / "models" / "bin").mkdir(parents=True)
    (clean_env / ".venvs" / "models" / "bin" / "python").touch()
    assert environment.find_worker_environment().source == "./.venvs/models"
    config = clean_env / "config" / "instantmesh-rpc" / "config.toml"
    environment.write_config(config, {"python": 'conda:instant mesh "x"', "worker_code": "installed"})
    choice = environment.find_worker_environment()
    assert (choice.spec, choice.source, choice.worker_code) == ('conda:instant mesh "x"', str(config), "installed")
    monkeypatch.setenv(environment.ENV_PYTHON, "/opt/py")
    assert environment.find_worker_environment().spec == "/opt/py"
    assert environment.find_worker_environment("/explicit").source == "argument"


def test_bad_config_line_is_named(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = clean_env / "instantmesh-rpc.toml"
    bad.write_text("python = /no/quotes\n")
    monkeypatch.setenv(environment.ENV_CONFIG, str(bad))
    with pytest.raises(environment.EnvironmentProblem, match=r"instantmesh-rpc.toml:1: expected key"):
        environment.find_worker_environment()
    bad.write_bytes(b'python = "caf\xe9"\n')
    with pytest.raises(environment.EnvironmentProblem, match=r"instantmesh-rpc.toml: not UTF-8 text \(byte 13\)"):
        environment.find_worker_environment()


def test_a_config_file_in_the_working_directory_is_not_read(clean_env: Path) -> None:
    """Anyone who can write to the folder a program runs in could otherwise name the command it starts."""
    (clean_env / "instantmesh-rpc.toml").write_text('python = "/tmp/planted"\n')
    with pytest.raises(environment.EnvironmentProblem, match="no worker environment"):
        environment.find_worker_environment()


def test_an_unreadable_worker_command_names_where_it_came_from(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(environment.ENV_PYTHON, 'conda run -n "im')
    with pytest.raises(environment.EnvironmentProblem) as caught:
        WorkerCommand.default()
    assert str(caught.value) == (
        "INSTANTMESH_RPC_PYTHON: the worker command 'conda run -n \"im' cannot be read: no closing quotation"
    )
    monkeypatch.setenv(environment.ENV_PYTHON, str(clean_env / "missing" / "python"))
    with pytest.raises(FileNotFoundError, match=r"python \(from INSTANTMESH_RPC_PYTHON\) does not exist$"):
        WorkerProcess(WorkerCommand.default())


def test_a_site_packages_is_never_the_worker_code(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "site-packages"
    for name in ("rpcworker", "instantmesh"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").touch()
    with pytest.raises(environment.EnvironmentProblem, match="is a site-packages"):
        environment.worker_code_directory(str(site))
    with pytest.raises(environment.EnvironmentProblem, match="must hold the rpcworker"):
        environment.worker_code_directory(str(tmp_path))
    assert environment.worker_code_directory("installed") is None


def test_worker_environment_drops_the_hosts_python_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/host/site-packages")
    monkeypatch.setenv("VIRTUAL_ENV", "/host")
    env = environment.worker_process_environment({}, "installed")
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env and env["PYTHONNOUSERSITE"] == "1"
    staged = Path(environment.worker_process_environment({}, "host")["PYTHONPATH"])
    assert sorted(p.name for p in staged.iterdir()) == ["instantmesh", "rpcworker"]
    assert (staged / "rpcworker").resolve() == (ROOT / "rpcworker").resolve()


def test_a_planted_sitecustomize_in_the_staged_code_is_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staged folder is on the worker's path: one holding anything but the two links is made again."""
    monkeypatch.setenv("INSTANTMESH_RPC_CACHE", str(tmp_path / "cache"))
    staged = environment.staged_worker_code()
    marker = tmp_path / "ran"
    (staged / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = environment.worker_process_environment({}, "host")
    assert env["PYTHONPATH"] == str(staged)
    assert sorted(p.name for p in staged.iterdir()) == ["instantmesh", "rpcworker"]
    done = subprocess.run([str(WORKER_PYTHON), "-c", "import rpcworker"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    (staged / "rpcworker").unlink()  # a link that points elsewhere is made again too
    (staged / "rpcworker").symlink_to(tmp_path, target_is_directory=True)
    assert environment.staged_worker_code() == staged
    assert (staged / "rpcworker").resolve() == (ROOT / "rpcworker").resolve()


def test_a_cache_others_can_write_is_refused_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "cache"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("INSTANTMESH_RPC_CACHE", str(shared))
    with pytest.raises(environment.EnvironmentProblem) as refused:
        environment.worker_process_environment({}, "host")
    assert "\n" not in str(refused.value) and f"cache folder {shared} is writable by its group or others" in str(
        refused.value
    )
    assert list(shared.iterdir()) == []


def test_known_bad_combinations() -> None:
    bad = known_bad_combinations(
        {"huggingface_hub": "0.26.0", "diffusers": "0.20.2", "numpy": "1.26.4", "torch": "2.1.0"}
    )
    assert [c.name for c in bad] == ["huggingface_hub"] and "huggingface_hub<0.26" in bad[0].detail
    assert [c.name for c in known_bad_combinations({"numpy": "2.0.1", "torch": "2.1.0+cu121"})] == ["numpy"]
    assert (
        known_bad_combinations(
            {"huggingface_hub": "0.17.3", "diffusers": "0.20.2", "numpy": "1.26.4", "torch": "2.1.0"}
        )
        == []
    )


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [str(HOST_PYTHON), "-m", "host", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300
    )


def test_doctor_on_the_mock_worker_env(tmp_path: Path) -> None:
    out = _cli("doctor", "--python", str(WORKER_PYTHON.parent.parent), cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ok  python" in out.stdout and "3.10" in out.stdout
    assert "FAIL  model packages  missing torch" in out.stdout


def test_doctor_reads_its_report_whatever_else_the_interpreter_prints(tmp_path: Path) -> None:
    chatty = tmp_path / "chatty-python"
    chatty.write_text(f'#!/bin/sh\necho "activating..."\n"{WORKER_PYTHON}" "$@"\ns=$?\necho "goodbye"\nexit $s\n')
    chatty.chmod(0o755)
    out = _cli("doctor", "--python", str(chatty), cwd=tmp_path)
    assert "ok  python" in out.stdout and "3.10" in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_setup_worker_makes_saves_and_checks(tmp_path: Path) -> None:
    target = tmp_path / "env"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = _cli(
        "setup-worker", str(target), "--python", str(WORKER_PYTHON), "--no-models", "--save", cwd=tmp_path, env=env
    )
    assert "ok  worker code" in out.stdout, out.stdout + out.stderr
    assert "ok  model packages  not installed, as asked (--no-models)" in out.stdout, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "config" / "instantmesh-rpc" / "config.toml").read_text().count(str(target)) == 1
    again = _cli("doctor", cwd=tmp_path, env=env)
    assert f"(from {tmp_path / 'config' / 'instantmesh-rpc' / 'config.toml'})" in again.stdout, (
        again.stdout + again.stderr
    )


def test_setup_worker_quotes_the_whole_error_of_a_pyenv_shim(tmp_path: Path) -> None:
    """pyenv's shim says what is wrong first and gives advice last: the one line carries all of it."""
    shim = tmp_path / "python3.10"
    shim.write_text(
        '#!/bin/sh\necho "pyenv: python3.10: command not found" >&2\necho >&2\n'
        'echo "The \\`python3.10\' command exists in these Python versions:" >&2\necho "  3.10.13" >&2\n'
        "echo >&2\necho \"Note: See 'pyenv help global' for tips.\" >&2\nexit 127\n"
    )
    shim.chmod(0o755)
    out = _cli("setup-worker", str(tmp_path / "env"), "--python", str(shim), "--no-models", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert (
        "pyenv: python3.10: command not found | The `python3.10' command exists in these Python versions: | 3.10.13 | Note:"
        in out.stderr
    )


@pytest.mark.parametrize("out_arg", ["afile", "afile/below"])
def test_out_that_is_a_file_is_one_line_exit_2(tmp_path: Path, out_arg: str) -> None:
    (tmp_path / "afile").write_text("x")
    image = ROOT / "examples" / "inputs" / "ball.png"
    out = _cli(
        "batch", str(image), "--out", out_arg, "--python", str(WORKER_PYTHON), "--mock", "step_delay=0", cwd=tmp_path
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: --out {out_arg} "), out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_no_worker_environment_is_one_line(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), environment.ENV_PYTHON: ""}
    out = _cli("batch", str(ROOT / "examples" / "inputs"), "--out", "o", cwd=tmp_path, env=env)
    assert out.returncode == 2 and out.stderr.startswith("error: no worker environment"), out.stderr
    assert "Traceback" not in out.stderr


def test_any6d_preparation_through_the_cli(tmp_path: Path) -> None:
    import numpy as np

    from host.images.preparation import prepare

    image = ROOT / "examples" / "inputs" / "box.png"
    out = _cli(
        "batch",
        str(image),
        "--out",
        "o",
        "--foreground-ratio",
        "0.8",
        "--flip",
        "--white-background",
        "--python",
        str(WORKER_PYTHON),
        "--mock",
        "step_delay=0",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from PIL import Image

    written = np.asarray(Image.open(tmp_path / "o" / "box_input.png"))
    expected = np.asarray(
        prepare(image, ROOT / "examples" / "inputs" / "box_mask.png", ratio=0.8, flip=True, background="white").image
    )
    assert written.shape == (320, 320, 3) and np.array_equal(written, expected)
    plain = np.asarray(prepare(image, ROOT / "examples" / "inputs" / "box_mask.png").image)
    assert plain.shape[2] == 4, "the default stays upstream's transparent 85 % crop"


def test_every_output_of_an_object_has_the_same_permissions(tmp_path: Path) -> None:
    image = ROOT / "examples" / "inputs" / "ball.png"
    out = _cli(
        "batch",
        str(image),
        "--out",
        "o",
        "--contact-sheet",
        "--python",
        str(WORKER_PYTHON),
        "--mock",
        "step_delay=0",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()}
    assert set(modes) == {"ball.obj", "ball_views.png", "ball_input.png", "ball_sheet.png"}
    assert len(set(modes.values())) == 1, modes


FAKE_CONDA = """#!/bin/sh
# Stands in for conda: only `conda run --no-capture-output -n NAME python ARGS...`, for one env name.
[ "$1" = run ] && [ "$2" = --no-capture-output ] && [ "$3" = -n ] || {{ echo "fake conda: unexpected $*" >&2; exit 64; }}
[ "$4" = {name} ] || {{ echo "EnvironmentLocationNotFound: Not a conda environment: $4" >&2; exit 1; }}
[ "$5" = python ] || exit 64
shift 5
exec {python} "$@"
"""


@pytest.mark.slow
def test_setup_worker_conda_adds_the_missing_packages_to_an_existing_env(tmp_path: Path) -> None:
    """``setup-worker --conda ENV`` through ``conda run`` (a stand-in conda on PATH over a plain venv, as no
    conda is installed here): the packages upstream's env lacks get installed there, then doctor checks it."""
    env_dir = tmp_path / "upstream"
    subprocess.run([str(WORKER_PYTHON), "-m", "venv", str(env_dir)], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(FAKE_CONDA.format(name="upstream", python=env_dir / "bin" / "python"))
    conda.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = _cli("setup-worker", "--conda", "upstream", "--save", cwd=tmp_path, env=env)
    assert "ok  worker code" in out.stdout, out.stdout + out.stderr
    installed = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import msgspec, omegaconf, einops; print('ok')"],
        capture_output=True,
        text=True,
    )
    assert installed.stdout.strip() == "ok", installed.stderr
    assert "conda:upstream" in (tmp_path / "config" / "instantmesh-rpc" / "config.toml").read_text()
    missing = _cli("setup-worker", "--conda", "nosuchenv", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("error: pip install failed in conda:nosuchenv"), missing.stderr
    assert "Traceback" not in missing.stderr
