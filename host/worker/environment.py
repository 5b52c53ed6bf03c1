"""Where the worker's environment is, and how its code reaches it without the host's environment.

Isolation rule: the worker's interpreter sees its own site-packages and, at most, one directory that
holds only the worker's packages (``rpcworker`` and ``instantmesh``) -- never the host's site-packages,
never the host's ``PYTHONPATH``, never the application's working directory (it starts in that directory,
or in an empty one of the cache). Two ways, chosen by ``worker_code``:

- ``"host"`` (default): the host links its own copies of the two packages into a staging directory under
  the cache (``worker-code/<key>/rpcworker -> ...``) and puts that directory alone on the worker's
  ``PYTHONPATH``. "Its own" means found from where this host package lies, never through ``sys.path``: in a
  checkout, ``rpcworker/`` and ``instantmesh/`` beside ``host/``; installed, the ``rpcworker`` package the host
  speaks the wire with and ``instantmesh_rpc/worker_code/instantmesh`` (setup.py says why). The worker then runs
  exactly the host's protocol version; its environment needs only the third-party packages
  (``instantmesh-rpc setup-worker`` installs them). The cache must be private
  (``rpcworker.wire.cache.private_folder``), and a staged directory holding anything but those two links (say a
  planted ``sitecustomize.py``, which the worker's interpreter would run) is made again.
- ``"installed"``: nothing is added; the worker environment's own path provides both packages.
- any other string: a directory that holds the worker's packages (refused if it is a site-packages).

The worker environment is found, first match wins: an explicit argument, ``INSTANTMESH_RPC_PYTHON``, the
config file (``INSTANTMESH_RPC_CONFIG``, else ``~/.config/instantmesh-rpc/config.toml``; never one found in the
working directory, which anyone who can write there could fill with a command), then ``./.venvs/models`` in the
working directory (the checkout layout ``scripts/setup.sh`` makes). Never from where the host is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rpcworker.wire.cache import CacheNotPrivate, cache_root, check_private, private_folder

from .errors import WorkerStartError
from .owners import owned_folder

WORKER_PACKAGES = ("rpcworker", "instantmesh")
STAGING_PREFIX = ".stage-"
"""A staging folder's name: this, its host's owner tag and a random part (`host.worker.owners.owned_folder`)."""
BUNDLED_MODELS = Path("worker_code") / "instantmesh"
"""Where an installed host keeps the model code, inside its own package (setup.py puts it there)."""
NEUTRAL_START_DIRECTORY = "worker-start"
"""An empty folder of the cache where a worker starts when it has no code directory of its own."""
ENV_PYTHON = "INSTANTMESH_RPC_PYTHON"
ENV_CONFIG = "INSTANTMESH_RPC_CONFIG"
ENV_WORKER_CODE = "INSTANTMESH_RPC_WORKER_CODE"
CHECKOUT_MODELS_VENV = Path(".venvs") / "models"
WORKER_CODE_HOST, WORKER_CODE_INSTALLED = "host", "installed"
STRIPPED_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "__PYVENV_LAUNCHER__",
)
"""Variables through which the host's environment would leak into the worker's interpreter."""


class EnvironmentProblem(WorkerStartError):
    """The worker environment cannot be found or used; the message says what to do, in one line."""


def config_paths() -> list[Path]:
    """The config files looked at, in order: the one named by INSTANTMESH_RPC_CONFIG, then the user's."""
    paths = []
    if os.environ.get(ENV_CONFIG):
        paths.append(Path(os.environ[ENV_CONFIG]).expanduser())
    home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    paths.append(home / "instantmesh-rpc" / "config.toml")
    return paths


_LINE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(#.*)?$')


def read_config(path: Path) -> dict[str, str]:
    """``key = "value"`` lines (a TOML subset: strings only, comments, blank lines)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EnvironmentProblem(f"{path}: not UTF-8 text (byte {exc.start}); write it as UTF-8") from None
    except OSError as exc:
        raise EnvironmentProblem(f"{path}: cannot read it: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise EnvironmentProblem(f'{path}:{number}: expected key = "value", got {line.strip()!r}')
        values[match.group(1)] = match.group(2).replace('\\"', '"').replace("\\\\", "\\")
    return values


def write_config(path: Path, values: dict[str, str]) -> None:
    """Writes (atomically) the config file that later hosts read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# instantmesh-rpc: the worker environment (written by `instantmesh-rpc setup-worker --save`)\n"
    text += "".join(
        f'{key} = "{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"\n'
        for key, value in values.items()
    )
    fd, temporary = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


@dataclass(frozen=True)
class WorkerEnvironmentChoice:
    """The worker environment's spec (python path, venv dir, ``conda:ENV`` or command) and where it came from."""

    spec: str
    source: str
    worker_code: str | None = None


def find_worker_environment(explicit: str | None = None) -> WorkerEnvironmentChoice:
    """The first of: explicit, INSTANTMESH_RPC_PYTHON, a config file, ./.venvs/models. Raises when none."""
    if explicit:
        return WorkerEnvironmentChoice(explicit, "argument")
    if os.environ.get(ENV_PYTHON):
        return WorkerEnvironmentChoice(os.environ[ENV_PYTHON], ENV_PYTHON)
    for path in config_paths():
        if path.is_file():
            values = read_config(path)
            if "python" in values:
                return WorkerEnvironmentChoice(values["python"], str(path), values.get("worker_code"))
    local = Path.cwd() / CHECKOUT_MODELS_VENV
    if (local / "bin" / "python").exists():
        return WorkerEnvironmentChoice(str(local), "./.venvs/models")
    raise EnvironmentProblem(
        f"no worker environment: name one (--python ENV on the command line, python= in the API), set {ENV_PYTHON}, "
        f'write python = "..." in {config_paths()[-1]}, run from a folder holding {CHECKOUT_MODELS_VENV} '
        "(as scripts/setup.sh makes in a checkout), or make one with `instantmesh-rpc setup-worker DIR --save`"
    )


def own_worker_packages() -> dict[str, Path]:
    """This host's own copies of the worker's packages, found from where the host lies (never via ``sys.path``,
    where an application's own ``instantmesh`` folder may come first)."""
    import rpcworker  # already imported: the host speaks the wire through rpcworker.wire

    worker = Path(rpcworker.__file__).resolve().parent
    bundled = Path(__file__).resolve().parents[1] / BUNDLED_MODELS
    models = bundled if bundled.is_dir() else worker.parent / "instantmesh"
    if not (models / "__init__.py").is_file():
        raise EnvironmentProblem(
            f"the host's installation lacks the instantmesh package ({models}); reinstall instantmesh-rpc"
        )
    return {"rpcworker": worker, "instantmesh": models}


def is_site_packages(directory: Path) -> bool:
    return directory.name in ("site-packages", "dist-packages") or any(
        (directory / entry).exists() for entry in ("numpy", "torch", "msgspec", "PIL")
    )


def staged_worker_code() -> Path:
    """A directory holding only links to the host's ``rpcworker`` and ``instantmesh``; made once per location."""
    sources = own_worker_packages()
    key = hashlib.sha256("\0".join(str(sources[n]) for n in WORKER_PACKAGES).encode()).hexdigest()[:16]
    try:
        target = private_folder(cache_root() / "worker-code") / key
    except CacheNotPrivate as exc:
        raise EnvironmentProblem(str(exc)) from None
    if _holds_only_links(target, sources):
        return target
    staging = Path(owned_folder(STAGING_PREFIX, target.parent))
    try:
        for name, source in sources.items():
            (staging / name).symlink_to(source, target_is_directory=True)
        try:
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)  # stale links (the host moved); a concurrent stager is fine too
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _holds_only_links(folder: Path, sources: dict[str, Path]) -> bool:
    """`folder` is ours alone and holds exactly one link per package, each to its source: nothing else that the
    worker's interpreter would find on its path."""
    try:
        check_private(folder)
        return sorted(os.listdir(folder)) == sorted(sources) and all(
            (folder / name).is_symlink() and os.readlink(folder / name) == str(source)
            for name, source in sources.items()
        )
    except (OSError, CacheNotPrivate):
        return False


def worker_code_directory(mode: str | None) -> Path | None:
    """The directory to put on the worker's PYTHONPATH for ``mode`` (None: add nothing)."""
    mode = mode or os.environ.get(ENV_WORKER_CODE) or WORKER_CODE_HOST
    if mode == WORKER_CODE_INSTALLED:
        return None
    if mode == WORKER_CODE_HOST:
        return staged_worker_code()
    directory = Path(mode).expanduser().resolve()
    if not all((directory / name / "__init__.py").is_file() for name in WORKER_PACKAGES):
        raise EnvironmentProblem(f"worker code directory {directory} must hold the rpcworker and instantmesh packages")
    if is_site_packages(directory):
        raise EnvironmentProblem(
            f"worker code directory {directory} is a site-packages; give a directory holding only the worker's packages"
        )
    return directory


def worker_start_directory(worker_code: str | None) -> Path:
    """Where the worker starts: ``python -m`` puts that folder first on its path, so never the application's."""
    code = worker_code_directory(worker_code)
    if code is not None:
        return code
    try:
        return private_folder(cache_root() / NEUTRAL_START_DIRECTORY)
    except CacheNotPrivate as exc:
        raise EnvironmentProblem(str(exc)) from None


def worker_process_environment(extra: dict[str, str], worker_code: str | None) -> dict[str, str]:
    """The worker's environment variables: the host's, minus what would leak its Python, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in STRIPPED_VARIABLES}
    code = worker_code_directory(worker_code)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
