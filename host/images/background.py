"""rembg in the host: whether this Python has it, the command that installs it here, its model, and the cut.

Upstream InstantMesh removes a photo's background with rembg before Zero123++. Here rembg and onnxruntime are
the optional ``rembg`` extra, imported only when a photo needs them (importing rembg takes seconds: scipy,
scikit-image, numba). rembg downloads its model on first use (``u2net.onnx``, about 170 MB) into
``U2NET_HOME`` or its own folder; a host that cannot download it is told, in one line, where to put the file.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import PreprocessError

REMBG_MODEL = "u2net"
"""The rembg session the host asks for by name: upstream's (rembg's default when InstantMesh was written; later
rembg releases default to other models), so every rembg version cuts with the same network."""
REMBG_MODEL_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
"""Where rembg downloads the model from: named in the error of a host that cannot, to fetch it by hand."""
REMBG_PACKAGES = ("rembg>=2.0.50", "onnxruntime>=1.16")
"""The ``rembg`` extra's requirements, as pyproject.toml declares them (a test keeps the two the same)."""
DISTRIBUTION = "instantmesh-rpc"
REMBG_EXTRA = f"{DISTRIBUTION}[rembg]"
DETAIL_CHARS = 200
"""How much of a library's error message the one-line error quotes."""


class RembgUnavailable(PreprocessError):
    """A photo needs rembg and this Python lacks it (or onnxruntime); the message names the install command."""


def rembg_available() -> bool:
    """Whether rembg and onnxruntime are installed here (looked up, not imported: importing takes seconds)."""
    for module in ("rembg", "onnxruntime"):
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # a blocked or half-installed package is as good as absent
            return False
    return True


def install_command(python: str, *, from_an_index: bool) -> str:
    """The command that installs the ``rembg`` extra into ``python``: the extra by name where the host was
    installed from a package index, else the packages themselves (for a checkout, or an editable or local
    install, pip would take ``instantmesh-rpc[rembg]`` from an index and replace the host)."""
    packages = [REMBG_EXTRA] if from_an_index else list(REMBG_PACKAGES)
    return " ".join([shlex.quote(python), "-m", "pip", "install", *(f'"{package}"' for package in packages)])


def rembg_install_command() -> str:
    """``install_command`` for the Python running this host."""
    return install_command(sys.executable, from_an_index=_installed_from_an_index())


def missing_rembg(name: str, why: str) -> RembgUnavailable:
    """The one-line error for a photo that needs rembg here, where it is not installed."""
    return RembgUnavailable(
        f"{name}: {why}, and rembg, which removes such backgrounds, is not installed in this Python; "
        f"install it with: {rembg_install_command()} (or give NAME_mask.png beside the photo, or an RGBA image)"
    )


def rembg_cut(picture: Image.Image, name: str) -> Image.Image:
    """``picture`` as RGBA with rembg's cut-out (its model's mask as alpha), as upstream's
    ``rembg.remove(image, session=...)``; one session per model file and process (it is slow to create)."""
    rembg = _import_rembg(name)
    session = _session(rembg, name)
    try:
        cut: Image.Image = rembg.remove(picture.convert("RGB"), session=session)
    except Exception as exc:  # onnxruntime and rembg raise many kinds; each becomes this one line
        raise PreprocessError(
            f"{name}: rembg could not remove the background ({_detail(exc)}); "
            "give NAME_mask.png beside the photo, or an RGBA image"
        ) from exc
    return cut.convert("RGBA")


# ------------------------------------------------------------------------------------------ internals

_SESSIONS: dict[str, Any] = {}
"""rembg sessions by the model file they read (a changed ``U2NET_HOME`` gets its own)."""
_SESSIONS_LOCK = threading.Lock()
"""Faces prepare in threads: one creates a session (and downloads the model) while the others wait."""


def _installed_from_an_index() -> bool:
    """The running host is the installed distribution (``instantmesh_rpc``, not the checkout's ``host``) and
    pip took it from an index: no ``direct_url.json`` (PEP 610) records a folder, a file or a VCS URL."""
    if __name__.split(".")[0] != "instantmesh_rpc":
        return False
    try:
        return importlib.metadata.distribution(DISTRIBUTION).read_text("direct_url.json") is None
    except importlib.metadata.PackageNotFoundError:
        return False


def _import_rembg(name: str) -> Any:
    """rembg, or RembgUnavailable. Without onnxruntime, importing rembg prints to stdout (which may be an MCP
    stream) and calls sys.exit: both are kept from leaving this function (stdout is redirected for the first
    import only: it is the whole process's)."""
    imported = sys.modules.get("rembg")
    if imported is not None:
        return imported
    if not rembg_available():
        raise missing_rembg(name, "its background is to be removed with rembg")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import rembg
    except (ImportError, SystemExit) as exc:
        raise RembgUnavailable(
            f"{name}: rembg cannot be imported in this Python ({_detail(exc)}); "
            f"reinstall it with: {rembg_install_command()}"
        ) from None
    return rembg


def _model_file() -> Path:
    """Where rembg reads (or downloads) REMBG_MODEL's file, asked of the installed version: recent rembg (2.0.86)
    keeps a folder per model under its home and still reads the old flat ``U2NET_HOME``; older rembg (2.0.61,
    Python 3.9's) the flat ``U2NET_HOME`` (default ``~/.u2net``) alone."""
    from rembg.sessions.u2net import U2netSession

    file_name = f"{REMBG_MODEL}.onnx"
    if hasattr(U2netSession, "resolve_existing"):
        found = U2netSession.resolve_existing(file_name)
        return Path(found or os.path.join(U2netSession.model_dir(), file_name))
    return Path(U2netSession.u2net_home()) / file_name


def _session(rembg: Any, name: str) -> Any:
    model = _model_file()
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(str(model))
        if session is not None:
            return session
        present = model.is_file()
        try:
            session = rembg.new_session(REMBG_MODEL)
        except Exception as exc:  # a download (requests, pooch) or a model onnxruntime cannot read
            if present:
                raise PreprocessError(f"{name}: rembg cannot load its model {model} ({_detail(exc)})") from exc
            raise PreprocessError(
                f"{name}: rembg's model {model.name} is not in {model.parent} and could not be downloaded "
                f"({_detail(exc)}); download {REMBG_MODEL_URL} into that folder (U2NET_HOME chooses it), "
                "or give NAME_mask.png beside the photo, or an RGBA image"
            ) from exc
        _SESSIONS[str(model)] = session
        return session


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > DETAIL_CHARS:
        text = text[: DETAIL_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
