"""``prepare`` from the command line: an option that cannot build compiled views ends it at the worker's start with
the worker's reason in one line (the build itself is tested in tests/worker/backends/test_compile_behind.py)."""

from __future__ import annotations

import pytest

from host.cli.main import build_parser, main
from tests.conftest import MODELS_PYTHON

pytestmark = [pytest.mark.models]


def test_prepare_is_a_command_with_the_workers_options() -> None:
    args = build_parser().parse_args(["prepare", "--max-batch", "4", "--device", "cuda:1"])
    assert (args.command, args.max_batch, args.device) == ("prepare", 4, "cuda:1")


def test_prepare_without_compile_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], tiny_cache: object) -> None:
    code = main(
        [
            "prepare",
            "--python",
            str(MODELS_PYTHON),
            "--device",
            "cpu",
            "--preset",
            "tiny",
            "--optimize",
            "channels_last",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: the worker could not start:") and "needs the optimization 'compile'" in err[0]
