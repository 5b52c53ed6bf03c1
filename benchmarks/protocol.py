"""Protocol costs between the host and a worker over the pipes (the mock backend, so no model time).

- ping round trip: median and p99 over many sequential pings;
- small-message throughput: pings in flight from several threads;
- moving a 960x640 six-view grid to ``reconstruct``: as a path the worker reads, as inline base64 PNG,
  and as a views handle already in the worker's memory.

Runs on the CPU: ``.venvs/models/bin/python -m benchmarks.protocol [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from host.worker.client import WorkerClient
from host.worker.process import WorkerCommand
from rpcworker.wire.messages import (
    GenerateViewsParams,
    ImagePath,
    ReconstructParams,
    ViewsGridPath,
    ViewsGridPng,
    ViewsHandle,
)

from .common import summarize, synthetic_object, table, write_results


def ping_latency(client: WorkerClient, count: int) -> list[float]:
    for _ in range(200):
        client.ping()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - start)
    return times


def ping_throughput(client: WorkerClient, threads: int, per_thread: int) -> float:
    def run() -> None:
        for _ in range(per_thread):
            client.ping()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * per_thread / (time.perf_counter() - start)


def grid_transfer(client: WorkerClient, workdir: Path, repeats: int) -> dict[str, list[float]]:
    image = synthetic_object(workdir / "object.png", 0)
    grid_path = workdir / "grid.png"
    views = client.generate_views(
        GenerateViewsParams(ImagePath(str(image)), num_inference_steps=1, output_path=str(grid_path), overwrite=True)
    )
    grid_bytes = grid_path.read_bytes()
    sources = {
        "handle": lambda: ViewsHandle(views.handle),
        "path": lambda: ViewsGridPath(str(grid_path)),
        "inline base64 PNG": lambda: ViewsGridPng(grid_bytes),
    }
    results: dict[str, list[float]] = {}
    for name, source in sources.items():
        times = []
        for i in range(repeats + 2):
            start = time.perf_counter()
            client.reconstruct(ReconstructParams(source(), str(workdir / "mesh.ply"), overwrite=True))
            if i >= 2:
                times.append(time.perf_counter() - start)
        results[name] = times
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--worker-python", default=str(Path(".venvs/worker/bin/python")), help="the mock worker's interpreter"
    )
    parser.add_argument("--pings", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/protocol"))
    args = parser.parse_args(argv)
    worker_python = args.worker_python if Path(args.worker_python).exists() else sys.executable

    with (
        tempfile.TemporaryDirectory() as tmp,
        WorkerClient(WorkerCommand.python(worker_python), ["--backend", "mock"]) as client,
    ):
        info = client.info
        latency = ping_latency(client, args.pings)
        throughput = {n: ping_throughput(client, n, max(200, args.pings // n)) for n in (1, 4, 8)}
        transfer = grid_transfer(client, Path(tmp), args.repeats)
        grid_png_bytes = (Path(tmp) / "grid.png").stat().st_size

    ping = summarize(latency)
    report = table(
        f"Ping round trip (host Python {sys.version.split()[0]} ↔ worker Python {info.python}, {len(latency)} pings)",
        ["median µs", "p99 µs", "mean µs", "min µs"],
        [[ping["median"] * 1e6, ping["p99"] * 1e6, ping["mean"] * 1e6, ping["min"] * 1e6]],
    )
    report += "\n" + table(
        "Small-message throughput (pings answered per second)",
        ["threads", "messages/s"],
        [[n, round(v)] for n, v in throughput.items()],
    )
    rows = []
    for name, times in transfer.items():
        s = summarize(times)
        rows.append({"views as": name, "median_ms": s["median"] * 1e3, "p99_ms": s["p99"] * 1e3})
    report += "\n" + table(
        f"reconstruct on the mock with a 960x640 grid ({grid_png_bytes / 1e6:.2f} MB as PNG): the cost of moving the views",
        ["views as", "median ms", "p99 ms"],
        [[r["views as"], r["median_ms"], r["p99_ms"]] for r in rows],
    )
    print(report)
    write_results(
        args.out,
        "protocol",
        {
            "ping_s": ping,
            "throughput_per_s": throughput,
            "grid_transfer_s": {k: summarize(v) for k, v in transfer.items()},
            "worker_python": info.python,
        },
        rows,
    )
    (args.out / "protocol.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
