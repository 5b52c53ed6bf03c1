"""Compiled bytecode for the worker's imports, kept in our cache folder when its environment keeps none.

Container images often set ``PYTHONDONTWRITEBYTECODE=1`` and install packages without their ``.pyc`` files
(``pip --no-compile``): every process then compiles torch's Python source again before it can run, which can
double the torch import (see docs/benchmarks.md, 'The torch import'). The worker is a process started again and
again, so when torch's bytecode is neither beside its source nor going to be written there, the worker's own
imports read and write bytecode under the cache folder instead (``sys.pycache_prefix``, which Python consults at
every import), and so do the Python processes it starts (a new package's load check, Inductor's compile
workers: ``PYTHONPYCACHEPREFIX`` in its environment). ``INSTANTMESH_RPC_PYCACHE=off`` leaves it as the
environment says, a folder there is used instead of ``<cache>/pycache``, and a prefix already set is kept.
Python runs whatever bytecode it finds there, so the folder must be private (`rpcworker.wire.cache.private_folder`:
this user's, writable by no one else); one that is not is refused with one line, and the imports compile as before.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

from rpcworker.wire.cache import CacheNotPrivate, private_folder
from rpcworker.wire.cache import cache_root as default_cache_root

log = logging.getLogger("instantmesh.bytecode_cache")

PYCACHE_ENV = "INSTANTMESH_RPC_PYCACHE"
"""``off``, or the folder for the bytecode (default: ``pycache`` in the cache folder)."""
PYCACHE_FOLDER = "pycache"
PROBE_PACKAGE = "torch"
"""The import that costs the most without bytecode: whether its bytecode is there decides."""


def use_bytecode_cache(cache_root: Path | None = None, probe: str = PROBE_PACKAGE) -> Path | None:
    """Point this process's imports at a bytecode folder of our cache (`cache_root`, default the worker's cache
    folder) when `probe`'s bytecode is missing and Python would not write it beside the source; returns the
    folder, or None when the environment is left as it is. Call it before the heavy imports (the worker's entry
    does)."""
    setting = os.environ.get(PYCACHE_ENV, "")
    if setting == "off" or sys.pycache_prefix:
        return None
    spec = importlib.util.find_spec(probe)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None  # not installed, or not from source
    if Path(importlib.util.cache_from_source(spec.origin)).exists():
        return None  # the environment ships its bytecode
    source_folder = Path(spec.origin).parent
    if not sys.dont_write_bytecode and os.access(source_folder, os.W_OK):
        return None  # Python writes it beside the source at the first import
    folder = Path(setting) if setting else (cache_root or default_cache_root()) / PYCACHE_FOLDER
    try:
        private_folder(folder)
    except (OSError, CacheNotPrivate) as exc:
        log.warning("no bytecode cache at %s (%s): %s is compiled at every start", folder, exc, probe)
        return None
    sys.pycache_prefix = str(folder)
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)  # for the Python processes the worker starts
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    log.info("%s has no bytecode here: imports keep theirs in %s", probe, folder)
    return folder
