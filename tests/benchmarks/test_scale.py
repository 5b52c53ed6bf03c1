"""The scale benchmark end to end with the mock: every kind of configuration runs and is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults.conftest import no_orphans_and_a_deadline  # noqa: F401 - autouse: every test checks for orphans

pytestmark = pytest.mark.pool


def test_scale_benchmark_writes_every_configuration(worker_python: Path, tmp_path: Path) -> None:
    """Pool, two workers on one device, split and (where ray is installed) Ray: a row each in the JSON and
    the markdown table, every object done, efficiency computed against the one-worker run."""
    from benchmarks import scale

    configs = "1gpu,2w-1gpu,split-1gpu"
    try:
        import ray  # noqa: F401

        configs += ",ray-1"
    except ImportError:
        pass
    code = scale.main(
        [
            "--mock",
            "view_size=64,step_delay=0.01",
            "--device",
            "cpu",
            "--worker-python",
            str(worker_python),
            "--configs",
            configs,
            "--objects",
            "2",
            "--steps",
            "2",
            "--out",
            str(tmp_path),
            "--name",
            "smoke",
        ]
    )
    assert code == 0
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert list(saved["results"]) == configs.split(",")
    assert all(r["objects"] == 2 and r["objects_per_min"] > 0 for r in saved["results"].values())
    assert saved["efficiency"]["1gpu"] == pytest.approx(1.0)
    assert "| split-1gpu | 1 | 2 | 2 |" in (tmp_path / "smoke.md").read_text()
