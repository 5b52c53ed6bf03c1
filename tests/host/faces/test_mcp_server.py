"""``python -m host mcp`` as an agent meets it: the MCP SDK's own client over a real stdio subprocess (the host's
Python), with the mock worker under Python 3.10 behind it. Every test checks for orphan processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rpcworker.wire.messages import MESH_FORMATS, SEED_RANGE, STEPS_RANGE
from tests.conftest import HOST_PYTHON, ROOT
from tests.faults.conftest import no_orphans_and_a_deadline  # noqa: F401 - autouse: every test checks for orphans

anyio = pytest.importorskip("anyio")
pytest.importorskip("mcp")
from mcp.client.session import ClientSession  # noqa: E402 - after the skip where the SDK is missing
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

pytestmark = [pytest.mark.pipe, pytest.mark.cli]

CALL_LIMIT_S = 30
"""No call of these tests takes longer: a hang fails the test instead of stalling the run."""


@asynccontextmanager
async def mcp_session(worker_python: Path, mock: str = "", *extra: str) -> AsyncIterator[ClientSession]:
    """The server as an MCP client's configuration starts it, connected and initialized."""
    args = ["-m", "host", "mcp", "--python", str(worker_python), "--mock", mock or "view_size=64", *extra]
    server = StdioServerParameters(command=str(HOST_PYTHON), args=args, cwd=ROOT, env=dict(os.environ))
    with open(os.devnull, "w") as quiet:
        async with stdio_client(server, errlog=quiet) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def run(test: Callable[[], Awaitable[None]]) -> None:
    anyio.run(test)


class Progress:
    """A progress_callback that records every notification and signals the first one."""

    def __init__(self) -> None:
        self.values: list[tuple[float, float | None, str | None]] = []
        self.started = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.values.append((progress, total, message))
        self.started.set()


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def test_the_tools_are_listed_with_the_wires_constraints(worker_python: Path) -> None:
    async def test() -> None:
        async with mcp_session(worker_python) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"image_to_mesh", "generate_views", "reconstruct", "status"}
        schema = tools["image_to_mesh"].input_schema
        assert schema["type"] == "object" and schema["required"] == ["image", "output_path"]
        steps, seed = schema["properties"]["steps"], schema["properties"]["seed"]
        assert (steps["minimum"], steps["maximum"]) == STEPS_RANGE
        assert (seed["minimum"], seed["maximum"]) == SEED_RANGE
        assert schema["properties"]["format"]["anyOf"][0]["enum"] == sorted(MESH_FORMATS)
        assert tools["reconstruct"].input_schema["properties"]["format"] == schema["properties"]["format"]

    run(test)


def test_image_to_mesh_writes_the_mesh_links_it_and_reports_progress(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    async def test() -> None:
        output = tmp_path / "out" / "mug.glb"
        progress = Progress()
        async with mcp_session(worker_python, "view_size=64,step_delay=0.02") as session:
            with anyio.fail_after(CALL_LIMIT_S):
                result = await session.call_tool(
                    "image_to_mesh",
                    {"image": str(object_png), "output_path": str(output), "steps": 20},
                    progress_callback=progress,
                )
        assert not result.is_error, text_of(result)
        link = result.content[0]
        assert link.type == "resource_link" and link.uri == output.as_uri() and link.mime_type == "model/gltf-binary"
        assert output.is_file() and link.size == output.stat().st_size
        summary = text_of(result)
        assert summary.startswith("mug.glb: ") and " vertices, " in summary and "model: mock" in summary
        assert result.structured_content["faces"] > 0 and result.structured_content["path"] == str(output)
        values = [value for value, _, _ in progress.values]
        assert values == sorted(set(values)), f"progress must only grow: {values}"
        assert values[-1] == 2.0 and {total for _, total, _ in progress.values} == {2.0}
        assert len(values) < 20, "rate-limited: fewer notifications than diffusion steps"

    run(test)


def test_a_cancelled_call_writes_nothing_and_the_server_goes_on(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    """The cancel reaches the worker: the next call is answered long before the cancelled one's 20 s of steps."""

    async def test() -> None:
        cancelled_output, next_output = tmp_path / "out" / "cancelled.obj", tmp_path / "out" / "next.obj"
        progress = Progress()
        async with mcp_session(worker_python, "view_size=64,step_delay=0.05") as session:
            async with anyio.create_task_group() as group:
                call = anyio.CancelScope()

                async def cancelled_call() -> None:
                    with call:
                        await session.call_tool(
                            "image_to_mesh",
                            {"image": str(object_png), "output_path": str(cancelled_output), "steps": 400},
                            progress_callback=progress,
                        )

                group.start_soon(cancelled_call)
                with anyio.fail_after(CALL_LIMIT_S):
                    await progress.started.wait()
                call.cancel()  # the SDK's client sends notifications/cancelled for the request
            with anyio.fail_after(10):
                result = await session.call_tool(
                    "image_to_mesh", {"image": str(object_png), "output_path": str(next_output), "steps": 2}
                )
        assert not result.is_error, text_of(result)
        assert next_output.is_file() and not cancelled_output.exists()
        assert sorted(p.name for p in cancelled_output.parent.iterdir()) == ["next.obj"]

    run(test)


def test_bad_input_is_a_one_line_tool_error_and_the_server_goes_on(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    output = str(tmp_path / "m.obj")
    cases = [
        ({"image": str(tmp_path / "missing.png")}, "image: no such file: "),
        ({"image": "definitely not an image"}, "is neither an existing file nor base64 PNG/JPEG data"),
        ({"image": base64.b64encode(b"GIF89a" + bytes(100)).decode()}, "base64 data is not a PNG or JPEG"),
        ({"image": str(corrupt)}, "not a readable image"),  # the host's preparation reads it
        ({"image": str(corrupt), "prepare": False}, "input_unreadable"),  # the worker does
        ({"image": str(object_png), "steps": 0}, "Expected `int` >= 1 - at `$.steps`"),
        ({"image": str(object_png), "format": "stl"}, "at `$.format`"),
        ({"image": str(object_png), "output_path": str(object_png)}, "exists; give a new name"),
    ]

    async def test() -> None:
        async with mcp_session(worker_python) as session:
            for arguments, expected in cases:
                with anyio.fail_after(CALL_LIMIT_S):
                    result = await session.call_tool("image_to_mesh", {"output_path": output, **arguments})
                message = text_of(result)
                assert result.is_error and expected in message and "\n" not in message, (arguments, message)
            result = await session.call_tool("image_to_mesh", {"image": str(object_png), "output_path": output})
        assert not result.is_error and Path(output).is_file(), text_of(result)

    run(test)


def test_a_worker_crash_mid_call_is_a_tool_error_and_the_next_call_works(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    async def test() -> None:
        async with mcp_session(worker_python, "view_size=64,step_delay=0.05") as session:
            first_pid = (await session.call_tool("status", {})).structured_content["pid"]

            async def kill_the_worker(progress: float, total: float | None, message: str | None) -> None:
                os.kill(first_pid, signal.SIGKILL)

            with anyio.fail_after(CALL_LIMIT_S):
                crashed = await session.call_tool(
                    "image_to_mesh",
                    {"image": str(object_png), "output_path": str(tmp_path / "lost.obj"), "steps": 400},
                    progress_callback=kill_the_worker,
                )
                message = text_of(crashed)
                assert crashed.is_error and f"the worker (pid {first_pid}) exited" in message and "\n" not in message
                result = await session.call_tool(
                    "image_to_mesh", {"image": str(object_png), "output_path": str(tmp_path / "next.obj"), "steps": 2}
                )
            assert not result.is_error, text_of(result)
            assert (await session.call_tool("status", {})).structured_content["pid"] != first_pid
        assert not (tmp_path / "lost.obj").exists() and (tmp_path / "next.obj").is_file()

    run(test)


def test_concurrent_calls_run_as_one_worker_batch(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    """Two calls made while the worker is busy are queued together and run as one diffusion batch (a call with
    other steps keeps the worker busy meanwhile: only requests with the same steps share a batch)."""

    async def test() -> None:
        busy = Progress()
        made: dict[str, Any] = {}
        async with mcp_session(worker_python, "view_size=64,step_delay=0.05", "--max-batch", "2") as session:

            async def views(name: str, steps: int, progress: Progress | None = None) -> None:
                made[name] = await session.call_tool(
                    "generate_views", {"image": str(object_png), "steps": steps}, progress_callback=progress
                )

            with anyio.fail_after(CALL_LIMIT_S):
                async with anyio.create_task_group() as group:
                    group.start_soon(views, "busy", 40, busy)
                    await busy.started.wait()
                    group.start_soon(views, "first", 5)
                    group.start_soon(views, "second", 5)
                handles = {name: result.structured_content["handle"] for name, result in made.items()}
                mesh = await session.call_tool(
                    "reconstruct", {"views": handles["second"], "output_path": str(tmp_path / "second.ply")}
                )
        assert not any(result.is_error for result in made.values()), [text_of(r) for r in made.values()]
        sizes = {name: result.structured_content["timings"]["batch_size"] for name, result in made.items()}
        assert sizes == {"busy": 1.0, "first": 2.0, "second": 2.0}
        grid = made["first"].content[1]
        assert grid.type == "image" and base64.b64decode(grid.data).startswith(b"\x89PNG")
        assert not mesh.is_error and (tmp_path / "second.ply").is_file(), text_of(mesh)

    run(test)


def test_stdout_carries_only_mcp_messages(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    """A worker that writes to its stdout and fd 1 (mock noisy), with --verbose echoing its stderr: the server's
    stdout is JSON-RPC lines alone, and the noise reaches the server's stderr."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "image_to_mesh", "arguments": {"image": str(object_png), "output_path": str(tmp_path / "m.obj"), "steps": 2}}},
    ]  # fmt: skip
    server = subprocess.Popen(
        [str(HOST_PYTHON), "-m", "host", "mcp", "--python", str(worker_python), "--mock", "noisy", "--verbose"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    server.stdin.flush()
    lines = []
    while len([line for line in lines if line.get("id") == 2]) == 0:
        line = server.stdout.readline()
        assert line, "the server closed its stdout before answering"
        lines.append(json.loads(line))  # a line that is not JSON fails here
    stdout, stderr = server.communicate(timeout=CALL_LIMIT_S)  # closes stdin: the server ends
    assert server.returncode == 0, stderr.decode()
    assert all(line["jsonrpc"] == "2.0" for line in lines) and not stdout.strip()
    assert not lines[-1]["result"].get("isError"), lines[-1]
    assert b"mock print: generate_views done" in stderr and b"mock fd1 write" in stderr


def test_a_pool_serves_the_same_tools(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    async def test() -> None:
        async with mcp_session(worker_python, "view_size=64", "--workers", "2") as session:
            status = (await session.call_tool("status", {})).structured_content
            with anyio.fail_after(CALL_LIMIT_S):
                result = await session.call_tool(
                    "image_to_mesh", {"image": str(object_png), "output_path": str(tmp_path / "m.ply"), "steps": 2}
                )
        assert [worker["index"] for worker in status["workers"]] == [0, 1]
        assert not result.is_error and result.content[0].mime_type == "model/x-ply", text_of(result)

    run(test)


def test_a_worker_that_cannot_start_is_one_line_before_any_answer(tmp_path: Path) -> None:
    argv = [str(HOST_PYTHON), "-m", "host", "mcp", "--python", str(tmp_path / "no-python")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("error: the worker could not start: ") and done.stderr.count("\n") == 1


def test_without_the_sdk_the_command_fails_at_start_in_one_line() -> None:
    code = "import sys; sys.modules['mcp'] = None; from host.cli.main import main; sys.exit(main(['mcp']))"
    done = subprocess.run([str(HOST_PYTHON), "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.count("\n") == 1 and "pip install 'instantmesh-rpc[mcp]'" in done.stderr, done.stderr
