"""Runs the fault suite (tests/faults) and renders docs/reliability.md from the run's JUnit XML.

Every outcome and duration in the document comes from the run, never from hand edits: each case's "what
it checks" is its docstring (recorded by tests/faults/conftest.py), fuzz counts and load figures are
properties the tests record. Exit status is pytest's, so CI fails when a case fails.

    .venvs/models/bin/python scripts/reliability_report.py            # run, then write docs/reliability.md
    .venvs/models/bin/python scripts/reliability_report.py --junit r.xml --no-run   # render an earlier run
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
COMMAND = ".venvs/models/bin/python scripts/reliability_report.py"

FIXES = [
    (
        "Worker crashed on invalid UTF-8 inside `params`",
        "msgspec does not check UTF-8 inside `Raw` fields, so the later params decode raised UnicodeDecodeError in "
        "the reader thread and the worker died. `transport.MessageStream.receive` now validates UTF-8 for any "
        "non-ASCII line (`parse_error`, as protocol.md always said); `dispatch._decode_params`, the cancel decoder "
        "and the host session also map DecodeError/UnicodeDecodeError to protocol errors.",
        "test_bad_requests::…[invalid-utf8-in-params], test_worker_garbage::…[invalid_utf8]",
    ),
    (
        "Worker (and host reader) crashed on deeply nested JSON",
        "msgspec raises RecursionError past its depth limit; `receive` let it escape and killed the serve loop "
        "(the host's reader thread too). Now a `parse_error` bad frame.",
        "test_bad_requests::…[deep-nesting], test_worker_garbage::…[deep_nesting]",
    ),
    (
        "A FIFO as input hung the executor forever",
        "`open()` of a FIFO blocks until a writer appears; all later model requests queued behind it. "
        "`images._read_bytes` opens non-blocking, refuses non-regular files (FIFO, /dev/zero) and files over "
        "512 MiB (`input_unreadable`), instead of reading them whole.",
        "test_bad_requests::test_bad_input_files_get_their_codes_and_the_worker_keeps_serving",
    ),
    (
        "Error replies echoed unbounded request strings",
        "A 40 MB method name or path came back twice in the error (80 MB), over the 64 MiB frame limit, so the "
        "host discarded it and the request was never answered. `WorkerSession._reply_error` cuts echoed strings to "
        "4,096 characters.",
        "test_bad_requests::test_oversized_frame_and_huge_echoed_strings",
    ),
    (
        "Oversized requests were sent and then waited on forever",
        "A request over 64 MiB (an enormous inline image) was written, discarded by the worker with id null, and "
        "the caller waited without end. `MessageStream.send` raises `FrameTooLarge` before writing; the session "
        'turns it into `MessageTooLarge` ("not sent"); a worker reply that would be too large becomes a '
        "`message_too_large` error on its id.",
        "test_bad_requests::test_enormous_inline_image_through_the_client_is_refused_before_sending",
    ),
    (
        "A hung worker was never replaced",
        "After a timeout the cancel was sent, but a step that never checks for cancel kept the executor busy "
        "for ever and every later model call queued behind it. `WorkerClient` now watches each timed-out call: "
        "if the worker has not answered it within `cancel_grace` (default 30 s) it is killed (calls in flight "
        "fail with WorkerCrashed saying why) and the next call starts a new worker. The timed-out call stays "
        "registered, so the late `cancelled` answer is no longer counted as an unknown response.",
        "test_hang_and_timeout::test_hung_worker_times_out_is_restarted_and_later_requests_succeed",
    ),
    (
        "`status` could report a finished job as busy",
        "The executor sent the reply before clearing `busy` and counting the request, so a host asking for "
        "status right after a result saw `busy` (the old pipe test failed about 1 run in 4). The bookkeeping now "
        "happens before the reply is sent.",
        "test_hang_and_timeout::test_timeout_cancels_and_the_worker_keeps_serving",
    ),
    (
        "A call right after a crash failed despite auto_restart",
        "Between the worker's death and the session reader seeing EOF, `start()` still returned the dead session; "
        'and `Popen.poll()` answers "running" while the reader thread waits on the same child, so the check was racy. '
        "`WorkerProcess.alive` now asks the kernel with `waitid(WNOWAIT)` (no reaping, no lock), and a request that "
        "could not even be written is sent once more to a new worker (delivered requests are never re-sent). The test "
        "waits for the kernel's exit report, not the /proc zombie state, which a multi-threaded process shows while "
        "its threads and pipes are still going away.",
        "test_worker_death::test_sigkill_between_requests_then_auto_restart",
    ),
    (
        "overwrite=false could still clobber a file",
        "The existence check ran before the work; a file created meanwhile was replaced by `os.replace`. Without "
        "overwrite the finished output is now hard-linked into place (fails with EEXIST → `output_refused`), "
        "falling back to check-then-rename only on filesystems without hard links.",
        "test_output_safety::test_file_appearing_during_the_write_is_not_clobbered",
    ),
    (
        "Paths with a NUL byte raised internal_error",
        "`os.path.realpath` raises ValueError on NUL; found by the fuzz's no-internal_error rule. Such paths are "
        "now `invalid_params`.",
        "test_bad_requests::…[nul-in-path], test_fuzz",
    ),
    (
        "A reply that could not be encoded was dropped in silence",
        "msgspec raises UnicodeEncodeError (a ValueError) for a string with lone surrogates, which is how a "
        'non-UTF-8 file name reaches Python; the worker took it for "the host is gone" and sent nothing, so the '
        "caller waited for ever. Output paths resolving to such names are now `output_refused`, and any reply that "
        "cannot be encoded becomes an `internal_error` on its id (`rpcworker/replies.py`).",
        "test_attacks::test_an_output_path_that_resolves_to_a_non_utf8_name_gets_an_error_reply",
    ),
    (
        "A worker that stopped reading blocked callers for ever",
        "The host wrote requests on the caller's thread under a lock; a SIGSTOPped worker with a full pipe blocked "
        "that call past its timeout and every cancel behind it. Frames now go out through a writer thread "
        "(`host/worker/writer.py`, non-blocking descriptor); a call waits for its write only up to its timeout.",
        "test_attacks::test_a_worker_that_stopped_reading_never_blocks_a_call_past_its_timeout",
    ),
    (
        "The stderr drain could die or grow without bound",
        "A raising `on_stderr` callback ended the drain thread (then a full stderr pipe blocks the worker), and one "
        "endless line was kept whole. The callback is now contained and reported once; lines are cut to 2,000 "
        "characters and quoted tails to 8,000.",
        "test_attacks::test_one_endless_stderr_line_is_kept_bounded_and_errors_quoting_it_stay_small",
    ),
    (
        "Quick methods accepted an id already in flight; shutting_down was unreachable",
        "The in-flight check ran for model methods only; now for every method. After the shutdown reply the "
        "worker keeps reading for its exit grace and answers `shutting_down`.",
        "test_attacks::test_an_id_in_flight_is_refused_for_every_method, test_attacks::test_a_request_after_the_shutdown_reply_gets_shutting_down",
    ),
    (
        "Output and input holes",
        "`overwrite=true` replaced FIFOs and device links; names near NAME_MAX failed because the temporary name was "
        "longer; symlink loops got a vague message; inline data could be EPS (Ghostscript); /proc files (size 0) "
        "bypassed the size cap. All closed, each with its case.",
        "test_attacks (outputs and inputs cases)",
    ),
    (
        "A run could destroy its own inputs, and take its outputs for inputs",
        "`batch photos --out photos` replaced a photo named like an output (`mug_input.png` beside `mug.png`), "
        "`--texture-map --overwrite` replaced the photo `mug.png` with the texture, and the next run took every "
        "output for a new object. An output that is, or leads to (symlink, hard link), an input of the same run is "
        "now refused before any work in one line (`host.cli.checks.check_planned_outputs`; `object_targets` for "
        "`map` and Ray: `OutputIsAnInput`), and a folder's files named like an earlier run's outputs beside its "
        "mesh are left out, with a note. A pool worker that died after writing a mesh but before answering made "
        "its object fail with `exists`: the redo now replaces what its lost first attempt wrote (never a file "
        "that was there before), as Ray's did.",
        "test_own_outputs",
    ),
    (
        "Names the file system accepts were refused, or crashed the host",
        "A legal long name crashed a whole batch with a traceback (its `NAME_mask.png`, `NAME_views.png` and the "
        "host's staged names were over the limit), crashed `--report` and killed the session it was pasted into; "
        "`#`, `?`, `:`, spaces and tabs broke the report's links; escape sequences in names reached the terminal "
        "raw. Object names are now cut at a character to fit (`host.api.naming`), names that are not UTF-8 travel, "
        "temporary names always fit, the report's links are percent-encoded and every name is printed escaped "
        "(`host.cli.display`); `map(names=[...])` takes plain file names only, so nothing lands outside `out_dir`.",
        "test_names",
    ),
    (
        "The output root held at check time only; symlinks planted in `--out` were written through",
        "A folder swapped for a symlink between the worker's check and its write sent the file outside "
        "`--output-root`. The worker now opens each output's folder from the root with `O_NOFOLLOW` and writes, "
        "renames and links relative to it (`rpcworker/output_dirs.py`); a folder that became a symlink leading "
        "outside is `output_refused`. The host makes its own files in `--out` (staged inputs, the report) new "
        "under unpredictable names and renames them relative to the folder (`host/cli/out_files.py`), and refuses "
        "a planted symlink where the worker would write.",
        "test_symlinks",
    ),
    (
        "Start errors did not name a missing package",
        "`WorkerStartError` now says which package the worker environment lacks when its stderr shows "
        "`No module named 'X'`.",
        "test_worker_death::test_missing_package_is_named_in_the_start_error",
    ),
]

LEFT_ALONE = [
    "A worker killed mid-write (or whose host died mid-write: it exits 1 s after EOF) leaves its hidden `.NAME.partial-PID-RAND.EXT` file until the next write of the "
    "same target removes it (writer's pid gone, unchanged for 10 s); debris of a target never written again stays. "
    "The output path itself is never truncated.",
    "The worker follows a symlink at an output's own name (to a place inside `--output-root` when one is set), as "
    "protocol.md says: the batch refuses one planted where its worker would write, before any work, but one planted "
    "after that check is written through; the API's `map` leaves that to whoever owns `out_dir`.",
    "A pool or Ray worker killed while moving a textured OBJ's files into place leaves the temporary files of "
    "its companions until a later write of the same names finds them stale (10 s); the redo itself does not wait.",
    "`cancel_grace` kills a worker whose step legitimately runs longer than the grace after a timeout (e.g. the "
    "official LRM on CPU); it applies only when the caller set a timeout, and `cancel_grace=None` turns it off.",
    "Unreadable input files could not be made with chmod 000 (the tests run as root); a FIFO, /dev/zero, "
    "/proc/self/mem (read fails with EIO) and a path through a regular file stand in for them.",
]


@dataclass
class Case:
    module: str
    name: str
    outcome: str
    seconds: float
    message: str = ""
    properties: dict[str, str] = field(default_factory=dict)


def run_suite(junit: Path, extra: list[str]) -> int:
    python = ROOT / ".venvs" / "models" / "bin" / "python"
    interpreter = str(python) if python.exists() else sys.executable
    argv = [
        interpreter,
        "-m",
        "pytest",
        "tests/faults",
        "-q",
        "-o",
        "junit_family=xunit1",
        f"--junitxml={junit}",
        *extra,
    ]
    print("+", " ".join(argv), flush=True)
    return subprocess.call(argv, cwd=ROOT)


def read_cases(junit: Path) -> tuple[list[Case], float]:
    suite = ET.parse(junit).getroot()
    if suite.tag == "testsuites":
        suite = suite[0]
    cases = []
    for node in suite.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = node.find(tag)
            if child is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                message = (child.get("message") or "").splitlines()[0][:200] if child.get("message") else ""
                break
        props = {p.get("name", ""): p.get("value", "") for p in node.iter("property")}
        module = node.get("classname", "").rsplit(".", 1)[-1]
        cases.append(Case(module, node.get("name", ""), outcome, float(node.get("time", 0)), message, props))
    return cases, float(suite.get("time", 0))


def module_doc(module: str) -> str:
    path = ROOT / "tests" / "faults" / f"{module}.py"
    if not path.exists():
        return ""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(cases: list[Case], total_seconds: float, exit_code: int | None) -> str:
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.outcome] = counts.get(case.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    lines = [
        "# Reliability: the fault suite",
        "",
        "Generated by `scripts/reliability_report.py` from a run of `pytest tests/faults` (JUnit XML); do not edit",
        "by hand. Regenerate with:",
        "",
        "```bash",
        COMMAND,
        "```",
        "",
        f"- Run: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} on {platform.node() or 'unknown host'}, "
        f"{os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        f"- Result: **{summary}** in {total_seconds:.1f} s" + (f" (pytest exit code {exit_code})" if exit_code else ""),
        "- Every case also checks that no process it started outlives it (tests/faults/conftest.py tags each",
        "  child through its environment and looks for the tag in /proc after the test) and has a hard deadline.",
        "",
    ]
    fuzz = [c for c in cases if "fuzz_messages" in c.properties]
    if fuzz:
        lines += [
            "## Fuzzing",
            "",
            "| target | messages | seconds | messages/s | outcome |",
            "|---|---:|---:|---:|---|",
        ]
        total_messages = 0
        for case in fuzz:
            n, s = int(case.properties["fuzz_messages"]), float(case.properties["fuzz_seconds"])
            total_messages += n
            lines.append(f"| `{case.name}` | {n:,} | {s:.1f} | {n / s:,.0f} | {case.outcome} |")
        lines += [
            "",
            f"Total: **{total_messages:,} messages** in {sum(float(c.properties['fuzz_seconds']) for c in fuzz):.1f} s.",
        ]
        codes = next((c.properties.get("fuzz_codes") for c in fuzz if c.properties.get("fuzz_codes")), None)
        if codes:
            lines += ["", f"Replies by code (in-process run): `{codes}`."]
        lines.append("")
    load = [c for c in cases if {"requests", "rounds"} & set(c.properties)]
    if load:
        lines += ["## Load and soak", ""]
        for case in load:
            figures = ", ".join(f"{k} = {v}" for k, v in case.properties.items() if k != "checks")
            lines.append(f"- `{case.name}`: {figures} ({case.outcome})")
        lines.append("")
    lines += ["## Cases", ""]
    for module in dict.fromkeys(c.module for c in cases):
        lines += [f"### {module}", ""]
        intro = module_doc(module)
        if intro:
            lines += [intro, ""]
        lines += ["| case | what it checks | outcome | seconds |", "|---|---|---|---:|"]
        previous = ""
        for case in (c for c in cases if c.module == module):
            outcome = case.outcome if not case.message else f"{case.outcome}: {case.message}"
            base = case.name.split("[", 1)[0]
            checks = case.properties.get("checks", "") if base != previous else "same check, this parameter"
            if case.properties.get("expect"):
                checks += f" — expects {case.properties['expect']}"
            previous = base
            lines.append(f"| `{cell(case.name)}` | {cell(checks)} | {cell(outcome)} | {case.seconds:.2f} |")
        lines.append("")
    lines += [
        "## What was fixed",
        "",
        "Bugs the suite found, and where they were fixed (the cases that cover each are named).",
        "",
    ]
    for title, text, covered in FIXES:
        lines.append(f"- **{title}.** {text} *Covered by:* {covered}.")
    lines += ["", "## Left alone", ""]
    lines += [f"- {item}" for item in LEFT_ALONE]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--junit", type=Path, help="JUnit XML to write (or read with --no-run)")
    parser.add_argument(
        "--no-run", action="store_true", help="render an existing --junit file without running the suite"
    )
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    exit_code: int | None = None
    with tempfile.TemporaryDirectory() as scratch:
        junit = args.junit or Path(scratch) / "faults.xml"
        if not args.no_run:
            exit_code = run_suite(junit, args.pytest_args)
        if not junit.exists():
            print(f"no JUnit XML at {junit}", file=sys.stderr)
            return exit_code or 2
        cases, seconds = read_cases(junit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(cases, seconds, exit_code))
    print(f"wrote {args.out} ({len(cases)} cases)")
    return exit_code or 0


if __name__ == "__main__":
    sys.exit(main())
