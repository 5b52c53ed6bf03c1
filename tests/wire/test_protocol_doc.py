"""protocol.md and the code say the same thing: the error table, the methods, notifications and limits."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from rpcworker.images import INLINE_FORMATS, MAX_INPUT_BYTES
from rpcworker.jobs import MIN_UNFINISHED
from rpcworker.options import DEFAULT_MAX_HANDLES, HANDLES_PER_BATCH
from rpcworker.outputs import STALE_PARTIAL_S
from rpcworker.queued_inputs import DEFAULT_MAX_QUEUED_INLINE_MIB
from rpcworker.replies import ERROR_TEXT_LIMIT
from rpcworker.server import EXIT_GRACE_S, PARENT_POLL_S
from rpcworker.wire.errors import WIRE_ERRORS
from rpcworker.wire.messages import (
    COMPILE_STATES,
    MAX_BATCH_LIMIT,
    MAX_LINE_BYTES,
    METHODS,
    NOTIFICATIONS_FROM_WORKER,
    NOTIFICATIONS_TO_WORKER,
    PROTOCOL_VERSION,
    VIEWS_BUILDING,
    VIEWS_COMPILING,
    VIEWS_FROM_PACKAGES,
    VIEWS_SERVING_EAGER,
    VIEWS_WRITING_BUNDLE,
    WEIGHTS_MISSING_LINE,
    CompileStatus,
    Weights,
)
from tests.conftest import ROOT

DOC = (ROOT / "protocol.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## \d+\. {title}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert match, f"protocol.md has no section {title!r}"
    return match.group(1)


def test_the_error_table_lists_exactly_the_wire_errors() -> None:
    rows = re.findall(r"^\| (-\d+) \| `(\w+)` \|", _section("Errors"), re.M)
    assert rows, "no rows found in the error table"
    assert {int(code): name for code, name in rows} == {code: cls.name for code, cls in WIRE_ERRORS.items()}
    assert len(rows) == len(WIRE_ERRORS), "a code is listed twice"


def test_the_methods_section_lists_exactly_the_methods() -> None:
    headings = re.findall(r"^### (\w+)$", _section("Methods"), re.M)
    assert sorted(headings) == sorted(METHODS)


def test_the_quick_methods_are_the_ones_the_reader_answers() -> None:
    quick = re.search(r"answers the\s+quick methods \(([^)]*)\)", _section("Lifecycle"))
    assert quick, "the lifecycle section no longer names the quick methods"
    named = set(re.findall(r"`(\w+)`", quick.group(1)))
    assert named == {name for name, spec in METHODS.items() if not spec.runs_on_executor}


def test_the_notification_table_lists_exactly_the_notifications() -> None:
    rows = re.findall(r"^\| (host → worker|worker → host) \| `(\w+)` \|", _section("Notifications"), re.M)
    assert {name for side, name in rows if side == "host → worker"} == set(NOTIFICATIONS_TO_WORKER)
    assert {name for side, name in rows if side == "worker → host"} == set(NOTIFICATIONS_FROM_WORKER)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"# The instantmesh-rpc wire protocol, version {PROTOCOL_VERSION}", None),
        (f"64 MiB ({MAX_LINE_BYTES:,} bytes)", MAX_LINE_BYTES == 64 * 1024 * 1024),
        ("at most 512 MiB", MAX_INPUT_BYTES == 512 * 1024 * 1024),
        (f"cut to {ERROR_TEXT_LIMIT:,}", None),
        (f"has not changed for {STALE_PARTIAL_S:g} s", None),
        (f"waits up to {EXIT_GRACE_S:g} s", None),
        (f"polls the parent pid every {PARENT_POLL_S:g} s", None),
        (f"data (`png`, `grid_png`) only {' or '.join(INLINE_FORMATS)}", None),
        (f"`--max-batch N` (1–{MAX_BATCH_LIMIT})", None),
        (f"`{WEIGHTS_MISSING_LINE}official weights not found: ...`", None),
        (f"`--max-handles` defaults to {DEFAULT_MAX_HANDLES}, or to {HANDLES_PER_BATCH} N", None),
        (f"`--max-queued-inline-mib N` (default {DEFAULT_MAX_QUEUED_INLINE_MIB};", None),
        (f"At most 2 N requests (N = `--max-batch`, at least {MIN_UNFINISHED})", None),
        (
            "`weights` (since 1.5: "
            + ", ".join(f"`{w}`" for w in get_args(Weights)[:-1])
            + f" or `{get_args(Weights)[-1]}`;",
            None,
        ),
    ],
)
def test_limits_in_the_text_match_the_code(text: str, value: bool | None) -> None:
    assert text in " ".join(DOC.split()), f"protocol.md should say {text!r}"
    assert value is not False


@pytest.mark.parametrize(
    "message", [VIEWS_FROM_PACKAGES, VIEWS_COMPILING, VIEWS_WRITING_BUNDLE, VIEWS_SERVING_EAGER, VIEWS_BUILDING]
)
def test_the_views_load_messages_are_the_documented_ones(message: str) -> None:
    assert f"`{message}" in DOC


def test_the_compile_section_names_every_state_and_field() -> None:
    section = " ".join(_section(r"Compiled views built behind \(since 1\.6\)").split())
    for state in COMPILE_STATES:
        assert f"`{state}`" in section, f"section 13 does not name the state {state!r}"
    for name in CompileStatus.__struct_fields__:
        assert f"`{name}`" in section, f"section 13 does not name the field {name!r}"
    status = " ".join(_section("Methods").split())
    fields = ", ".join(CompileStatus.__struct_fields__)
    assert f"`{{{fields}}}`" in status


def test_the_build_lock_and_the_killed_build_line_are_the_codes() -> None:
    pytest.importorskip("torch", reason="the backend's modules need torch (the host's own env has none)")
    from rpcworker.backends.compile_behind import ended_how
    from rpcworker.backends.views_compile import BUILD_LOCK_NAME
    from rpcworker.backends.views_switch import CHECK_TOLERANCE

    section = " ".join(_section(r"Compiled views built behind \(since 1\.6\)").split())
    assert f"`{BUILD_LOCK_NAME}`" in section
    assert f"the build process {ended_how(-9)} before it finished" in section
    assert f"at most {CHECK_TOLERANCE} apart" in section
