"""Small helpers shared by the benchmarks: statistics, tables, result files, synthetic inputs."""

from __future__ import annotations

import csv
import json
import platform
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-markdown table (readable in a terminal too)."""
    text_rows = [[_fmt(v) for v in row] for row in rows]
    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in text_rows]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 10000:
            return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import torch

        info["torch"] = str(torch.__version__)
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_results(out_dir: Path, name: str, results: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps({"machine": machine(), **results}, indent=1, default=str))
    if rows:
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def synthetic_object(path: Path, index: int, size: int = 320) -> Path:
    """An RGBA object (a shaded blob of a colour that depends on ``index``) on a transparent background."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size - 0.5
    rng = np.random.default_rng(index)
    a, b = 0.28 + 0.1 * rng.random(), 0.2 + 0.15 * rng.random()
    inside = (xx / a) ** 2 + (yy / b) ** 2 < 1.0
    shade = np.clip(1.0 - 1.2 * (xx + yy + 0.4) ** 2, 0.3, 1.0)
    colour = rng.integers(40, 220, size=3)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = (shade[..., None] * colour).astype(np.uint8)
    rgba[..., 3] = inside * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba).save(path)
    return path


def dump_stacks_every(seconds: float) -> threading.Event:
    """Every other thread's Python stack on stderr every `seconds`, until the returned event is set: where a slow
    phase goes. A daemon thread reads `sys._current_frames` under the GIL (faulthandler's watchdog, which does not,
    crashed a start inside torch.export)."""
    stop = threading.Event()

    def dump() -> None:
        while not stop.wait(seconds):
            for ident, frame in sys._current_frames().items():
                if ident != threading.get_ident():
                    print(
                        f"--- stack of thread {ident}\n" + "".join(traceback.format_stack(frame)),
                        file=sys.stderr,
                        flush=True,
                    )

    threading.Thread(target=dump, name="stack-dumps", daemon=True).start()
    return stop
