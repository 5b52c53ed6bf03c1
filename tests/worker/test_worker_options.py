"""The worker's flags become one WorkerOptions: defaults, ranges from the declared types, one-line errors."""

from __future__ import annotations

import pytest

from rpcworker.options import DEFAULT_BATCH_WAIT_MS, WorkerOptions, parse_worker_options
from rpcworker.wire.messages import MAX_BATCH_LIMIT


def test_no_flags_give_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSTANTMESH_RPC_BACKEND", raising=False)
    assert parse_worker_options([]) == WorkerOptions()
    assert WorkerOptions().batch_wait_ms == DEFAULT_BATCH_WAIT_MS and WorkerOptions().optimizations() is None


def test_flags_arrive_typed(tmp_path) -> None:
    options = parse_worker_options(
        [
            "--backend",
            "mock",
            "--preset",
            "tiny",
            "--view-size",
            "64",
            "--max-batch",
            str(MAX_BATCH_LIMIT),
            "--batch-wait-ms",
            "0",
            "--mesh-lane",
            "on",
            "--optimize",
            "none,channels_last",
            "--output-root",
            str(tmp_path),
        ]
    )
    assert (options.backend, options.preset, options.view_size, options.max_batch) == (
        "mock",
        "tiny",
        64,
        MAX_BATCH_LIMIT,
    )
    assert (options.batch_wait_ms, options.mesh_lane, options.output_root) == (0.0, "on", str(tmp_path))
    assert options.optimizations() == ("channels_last",)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-handles", "0"], "--max-handles: must be at least 1, got 0"),
        (["--max-handles", "many"], "--max-handles: expected a whole number, got 'many'"),
        (["--max-batch", str(MAX_BATCH_LIMIT + 1)], f"--max-batch: must be at most {MAX_BATCH_LIMIT}"),
        (["--batch-wait-ms", "-1"], "--batch-wait-ms: must be 0..1000 ms, got -1"),
        (["--preset", "huge"], "--preset: invalid choice: 'huge'"),
    ],
)
def test_a_bad_flag_exits_with_one_line(flags: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_worker_options(flags)
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("rpcworker: bad arguments:") and words in err
    )


def test_a_backend_named_in_the_environment_must_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INSTANTMESH_RPC_BACKEND", "nosuch")
    with pytest.raises(SystemExit):
        parse_worker_options([])
    assert "$.backend" in capsys.readouterr().err
