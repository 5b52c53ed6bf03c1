"""``instantmesh-rpc doctor``: what the worker environment has, and whether the worker can work there.

A probe runs in the worker's interpreter with exactly the environment a worker gets (the isolation rule
of host.worker.environment) and answers in JSON; the host turns that into checks. Nothing is downloaded and no
model is loaded; torch is imported once to ask about CUDA.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from ..worker.process import WorkerCommand

PROBE_TIMEOUT_S = 180.0
PACKAGES = (
    "msgspec",
    "torch",
    "diffusers",
    "transformers",
    "huggingface_hub",
    "accelerate",
    "safetensors",
    "numpy",
    "pillow",
    "trimesh",
    "xatlas",
    "einops",
    "omegaconf",
)
MODEL_PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "einops",
    "omegaconf",
    "numpy",
    "pillow",
    "trimesh",
)
UPSTREAM_PYTHON = (3, 10)
MISSING_WEIGHTS_EFFECT = "(the API, the pool and Ray refuse to start; batch and session use the tiny preset)"

REPORT_MARK = "instantmesh-rpc-doctor "
"""Starts the probe's report line: whatever else the interpreter prints (a sitecustomize, an atexit hook) is not it."""
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, sys
report = {"python": sys.version.split()[0], "executable": sys.executable, "prefix": sys.prefix, "versions": {}, "origins": {}}
for name in sys.argv[1].split(","):
    try:
        report["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        report["versions"][name] = None
for name in ("rpcworker", "instantmesh"):
    spec = importlib.util.find_spec(name)
    report["origins"][name] = spec.origin if spec else None
try:
    import rpcworker.wire.messages
    report["worker_import"] = None
except Exception as exc:
    report["worker_import"] = f"{type(exc).__name__}: {exc}"
if report["versions"].get("torch"):
    try:
        import torch
        report["cuda"] = torch.version.cuda
        report["cuda_available"] = bool(torch.cuda.is_available())
        report["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if report["cuda_available"] else []
    except Exception as exc:
        report["torch_import"] = f"{type(exc).__name__}: {exc}"
if report["versions"].get("diffusers"):
    try:
        import diffusers  # noqa: F401
        report["diffusers_import"] = None
    except Exception as exc:
        report["diffusers_import"] = f"{type(exc).__name__}: {exc}"[:300]
try:
    from instantmesh.weights import search_weights
    searches = search_weights(os.environ.get("DOCTOR_ZERO123PLUS") or None, os.environ.get("DOCTOR_UNET") or None, os.environ.get("DOCTOR_LRM") or None, root=os.environ.get("DOCTOR_WEIGHTS_ROOT") or None)
    report["weights"] = {"found": all(s.path for s in searches), "files": [{"name": s.name, "what": s.what, "download": s.download, "path": str(s.path) if s.path else None, "places": [{"source": p.source, "path": str(p.path) if p.path else None, "found": p.found} for p in s.places]} for s in searches]}
except Exception as exc:
    report["weights"] = {"found": False, "error": f"{type(exc).__name__}: {exc}"}
print("instantmesh-rpc-doctor " + json.dumps(report), flush=True)
"""


@dataclass(frozen=True)
class Check:
    level: str
    """``ok``, ``warn`` or ``FAIL``."""
    name: str
    detail: str
    places: tuple[str, ...] = ()
    """Every place looked at, in order, each with its verdict (the weights' checks)."""


def version_tuple(text: str | None) -> tuple[int, ...]:
    """``"0.20.2"`` -> (0, 20, 2); pre-release and local tails are ignored."""
    if not text:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def probe(command: WorkerCommand, weights: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs the probe in the worker environment; raises RuntimeError with one line when it cannot run."""
    env = command.environment()
    env["DOCTOR_WEIGHTS_ROOT"] = os.getcwd()  # the folders a worker the host starts here searches
    for key, value in (weights or {}).items():
        if value:
            env[f"DOCTOR_{key.upper()}"] = os.path.abspath(os.path.expanduser(value))
    argv = [*command.interpreter(), "-c", PROBE, ",".join(PACKAGES)]
    try:
        out = subprocess.run(
            argv,
            env=env,
            cwd=command.start_directory(),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise RuntimeError(f"worker interpreter {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the worker interpreter did not answer within {PROBE_TIMEOUT_S:g} s") from None
    marked = [line[len(REPORT_MARK) :] for line in out.stdout.splitlines() if line.startswith(REPORT_MARK)]
    if out.returncode != 0 or not marked:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the worker interpreter failed (exit code {out.returncode}): {tail}")
    report: dict[str, Any] = json.loads(marked[-1])
    return report


def checks(report: dict[str, Any], *, models_expected: bool = True) -> list[Check]:
    """The verdicts, most basic first."""
    versions: dict[str, str | None] = report["versions"]
    found: list[Check] = []
    python = version_tuple(report["python"])
    level = "ok" if python[:2] == UPSTREAM_PYTHON else "warn"
    found.append(
        Check(
            level,
            "python",
            f"{report['python']} at {report['executable']}"
            + ("" if level == "ok" else " (upstream InstantMesh uses 3.10)"),
        )
    )
    if report.get("worker_import"):
        found.append(Check("FAIL", "worker code", f"cannot import rpcworker: {report['worker_import']}"))
    else:
        found.append(Check("ok", "worker code", str(report["origins"]["rpcworker"])))
    missing_models = [name for name in MODEL_PACKAGES if not versions.get(name)]
    if missing_models and not models_expected:
        found.append(Check("ok", "model packages", "not installed, as asked (--no-models): the mock backend only"))
    elif missing_models:
        found.append(
            Check("FAIL", "model packages", "missing " + ", ".join(missing_models) + " (only the mock backend can run)")
        )
    else:
        found.append(
            Check(
                "ok",
                "model packages",
                ", ".join(
                    f"{n} {versions[n]}"
                    for n in ("torch", "diffusers", "transformers", "huggingface_hub")
                    if versions.get(n)
                ),
            )
        )
    if report.get("torch_import"):
        found.append(Check("FAIL", "torch", report["torch_import"]))
    elif versions.get("torch"):
        if report.get("cuda_available"):
            found.append(Check("ok", "CUDA", f"{report.get('cuda')}: " + ", ".join(report.get("devices", []))))
        else:
            found.append(
                Check(
                    "warn",
                    "CUDA",
                    f"not available (torch built for CUDA {report.get('cuda')}); the models run on the CPU, very slowly",
                )
            )
    found.extend(known_bad_combinations(versions))
    if report.get("diffusers_import"):
        found.append(Check("FAIL", "diffusers import", report["diffusers_import"]))
    found.append(
        Check(
            "ok" if versions.get("xatlas") else "warn",
            "texture maps",
            "xatlas " + (versions.get("xatlas") or "missing: texture_map is refused"),
        )
    )
    found.extend(weight_checks(report.get("weights", {})))
    return found


def weight_checks(weights: dict[str, Any]) -> list[Check]:
    """One check per official weight file, with every place looked at in order."""
    if "error" in weights:
        return [Check("warn", "weights", f"cannot search: {weights['error']}")]
    found = []
    for entry in weights.get("files", []):
        places = tuple(
            f"{place['source']}: {place['path'] or 'not set'}  {'found' if place['found'] else 'missing'}"
            for place in entry["places"]
        )
        if entry["path"]:
            found.append(Check("ok", "weights", f"{entry['name']}: {entry['path']}", places))
        else:
            detail = f"{entry['name']}: {entry['what']} not found; get it: {entry['download']} {MISSING_WEIGHTS_EFFECT}"
            found.append(Check("warn", "weights", detail, places))
    return found


def known_bad_combinations(versions: dict[str, str | None]) -> list[Check]:
    """Version sets known to fail, each named with the fix."""
    bad = []
    hub, diffusers = version_tuple(versions.get("huggingface_hub")), version_tuple(versions.get("diffusers"))
    if hub and diffusers and hub >= (0, 26) and diffusers < (0, 26):
        bad.append(
            Check(
                "FAIL",
                "huggingface_hub",
                f"{versions['huggingface_hub']} removed cached_download, which diffusers {versions['diffusers']} imports: pip install 'huggingface_hub<0.26'",
            )
        )
    numpy, torch = version_tuple(versions.get("numpy")), version_tuple(versions.get("torch"))
    if numpy and torch and numpy >= (2,) and torch < (2, 3):
        bad.append(
            Check(
                "FAIL",
                "numpy",
                f"numpy {versions['numpy']} is not supported by torch {versions['torch']}: pip install 'numpy<2'",
            )
        )
    return bad


def format_checks(found: list[Check]) -> str:
    width = max(len(c.name) for c in found)
    lines = []
    for c in found:
        lines.append(f"{c.level:>4}  {c.name.ljust(width)}  {c.detail}")
        lines += [f"{'':>4}  {'':{width}}    {number}. {place}" for number, place in enumerate(c.places, start=1)]
    return "\n".join(lines)


def run_doctor(
    command: WorkerCommand,
    source: str,
    *,
    as_json: bool = False,
    weights: dict[str, str] | None = None,
    models_expected: bool = True,
) -> int:
    """Prints the report; 0 when nothing failed, 1 otherwise (``models_expected=False``: a mock-only env)."""
    try:
        report = probe(command, weights)
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 1
    found = checks(report, models_expected=models_expected)
    if as_json:
        print(json.dumps({"report": report, "checks": [c.__dict__ for c in found]}, indent=2))
    else:
        print(f"worker environment: {' '.join(command.prefix)} (from {source})")
        print(format_checks(found))
    return 1 if any(c.level == "FAIL" for c in found) else 0
