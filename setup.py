"""How the checkout's folders become installed packages (everything else is in pyproject.toml).

An application's environment gets two import names, neither of which applications commonly have:

- ``instantmesh_rpc`` (from ``host/``): the API, the pool, the CLI (``python -m instantmesh_rpc``);
- ``rpcworker`` (from ``rpcworker/``): the wire both sides speak, and the worker's server.

The model code (``instantmesh/``) is not importable there: it ships inside the host as
``instantmesh_rpc/worker_code/instantmesh``, and the host stages it, under its own name, on the worker's path
alone. So an application's own ``instantmesh`` folder (Any6D vendors upstream's code under that name) and
``host`` module keep working beside the installed host.
"""

from setuptools import find_namespace_packages, setup

HOST, WIRE_AND_WORKER, MODELS = "instantmesh_rpc", "rpcworker", "instantmesh_rpc.worker_code.instantmesh"
SOURCES = {HOST: "host", WIRE_AND_WORKER: "rpcworker", MODELS: "instantmesh"}


def packages(name: str, folder: str) -> list[str]:
    """``name`` and its subfolders (data folders too, so setuptools knows they are meant), found in ``folder``."""
    return [name, *(f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"]))]


setup(
    packages=[package for name, folder in SOURCES.items() for package in packages(name, folder)],
    package_dir=SOURCES,
    package_data={f"{HOST}.report_assets": ["*"], f"{MODELS}.configs": ["*.yaml", "*.json"]},
)
