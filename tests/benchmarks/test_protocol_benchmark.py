"""The protocol benchmark end to end on the mock worker: pings, pings from threads and the grid's three ways in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipe


def test_protocol_benchmark_writes_every_measurement(worker_python: Path, tmp_path: Path) -> None:
    from benchmarks import protocol

    assert (
        protocol.main(
            ["--worker-python", str(worker_python), "--pings", "40", "--repeats", "2", "--out", str(tmp_path)]
        )
        == 0
    )
    saved = json.loads((tmp_path / "protocol.json").read_text())
    assert saved["ping_s"]["n"] == 40 and 0 < saved["ping_s"]["median"] <= saved["ping_s"]["max"]
    assert set(saved["throughput_per_s"]) == {"1", "4", "8"} and all(v > 0 for v in saved["throughput_per_s"].values())
    assert set(saved["grid_transfer_s"]) == {"handle", "path", "inline base64 PNG"}
    assert all(s["n"] == 2 and s["min"] > 0 for s in saved["grid_transfer_s"].values())
    rows = (tmp_path / "protocol.csv").read_text().splitlines()
    assert rows[0] == "views as,median_ms,p99_ms" and len(rows) == 4
    assert "Ping round trip" in (tmp_path / "protocol.md").read_text()
