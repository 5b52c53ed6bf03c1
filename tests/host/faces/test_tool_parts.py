"""The MCP face's parts in-process: argument schemas and checks, the image argument, the progress relay (a fake
clock), the arrival gate, and the thread runner's cancellation."""

from __future__ import annotations

import base64
import json
import re
import threading
from pathlib import Path

import pytest

from host.faces.progress_relay import ProgressRelay
from host.faces.tool_arguments import TOOLS_BY_NAME, ImageToMeshArguments, ToolInputError
from host.faces.tool_inputs import api_image, tool_image
from rpcworker.wire.errors import Cancelled
from rpcworker.wire.messages import MESH_FORMATS, SEED_RANGE, STEPS_RANGE, ProgressParams

anyio = pytest.importorskip("anyio")
lowlevel = pytest.importorskip("anyio.lowlevel")


def test_the_schemas_carry_the_wires_constraints_and_the_checks_name_the_field() -> None:
    tool = TOOLS_BY_NAME["image_to_mesh"]
    properties = tool.input_schema()["properties"]
    assert (properties["steps"]["minimum"], properties["steps"]["maximum"]) == STEPS_RANGE
    assert (properties["seed"]["minimum"], properties["seed"]["maximum"]) == SEED_RANGE
    assert set(properties["format"]["anyOf"][0]["enum"]) == set(MESH_FORMATS)
    assert tool.decode({"image": "a.png", "output_path": "m.obj", "steps": 3}) == ImageToMeshArguments(
        image="a.png", output_path="m.obj", steps=3
    )
    with pytest.raises(ToolInputError, match=r"image_to_mesh: Expected `int` <= 1000 - at `\$.steps`"):
        tool.decode({"image": "a.png", "output_path": "m.obj", "steps": 1001})
    with pytest.raises(ToolInputError, match="unknown field `overwrite`"):
        tool.decode({"image": "a.png", "output_path": "m.obj", "overwrite": True})
    with pytest.raises(ToolInputError, match="missing required field `output_path`"):
        tool.decode({"image": "a.png"})


def test_the_image_argument_is_a_file_or_base64_png_or_jpeg(object_png: Path) -> None:
    data = object_png.read_bytes()
    assert tool_image(str(object_png)) == object_png.resolve()
    assert tool_image(base64.b64encode(data).decode()) == data
    assert tool_image("data:image/png;base64," + base64.b64encode(data).decode()) == data
    with pytest.raises(ToolInputError, match="is a folder"):
        tool_image(str(object_png.parent))
    with pytest.raises(ToolInputError, match="no such file: /nowhere/x.png"):
        tool_image("/nowhere/x.png")
    with pytest.raises(ToolInputError, match=r"base64 data is not a PNG or JPEG image \(it starts b'GIF89a"):
        tool_image(base64.b64encode(b"GIF89a" + bytes(100)).decode())


def test_prepare_is_the_hosts_preparation_and_names_the_input(object_png: Path, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    prepared = api_image(object_png, prepare=True)
    assert isinstance(prepared, bytes) and prepared.startswith(b"\x89PNG")
    assert api_image(object_png, prepare=False) == object_png
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(ToolInputError, match=f"image: {corrupt}: not a readable image"):
        api_image(corrupt, prepare=True)
    with pytest.raises(ToolInputError, match="image: the base64 image: not a readable image"):
        api_image(b"not an image", prepare=True)


def test_progress_only_grows_and_is_rate_limited_but_every_stage_end_is_sent() -> None:
    now = [0.0]
    sent: list[tuple[float, float, str]] = []
    relay = ProgressRelay(["diffusion", "reconstruct"], lambda *note: sent.append(note), clock=lambda: now[0])

    def worker_says(stage: str, step: int, total: int, message: str = "") -> None:
        relay(ProgressParams(id=1, stage=stage, step=step, total=total, message=message))

    worker_says("load", 1, 1)  # not a stage of this call
    for step in range(1, 11):  # 10 ms apart: only the first, every 100 ms, and the stage's end
        now[0] += 0.01
        worker_says("diffusion", step, 10)
    worker_says("reconstruct", 0, 3)  # no growth: not sent
    worker_says("reconstruct", 3, 3, "done")
    worker_says("diffusion", 10, 10)  # a late repeat: not sent
    assert [value for value, _, _ in sent] == [0.1, 1.0, 2.0]
    assert sent[-1] == (2.0, 2.0, "mesh 3/3: done") and sent[0][2] == "views 1/10"


def test_the_gate_holds_a_ready_call_until_the_others_are_prepared() -> None:
    from host.faces.gathering import ArrivalGate

    async def test() -> None:
        gate = ArrivalGate(limit_s=30)
        gate.batching = True
        order: list[str] = []
        slow_may_finish = anyio.Event()

        async def call(name: str, ready: anyio.Event | None) -> None:
            async with gate.preparing():
                await lowlevel.checkpoint()  # preparation always goes to a thread and back
                if ready is not None:
                    await ready.wait()
                order.append(f"{name} prepared")
            order.append(f"{name} sent")

        async with anyio.create_task_group() as group:
            group.start_soon(call, "fast", None)
            group.start_soon(call, "slow", slow_may_finish)
            await anyio.wait_all_tasks_blocked()
            assert order == ["fast prepared"], "the fast call waits for the slow one"
            slow_may_finish.set()
        assert order == ["fast prepared", "slow prepared", "slow sent", "fast sent"]

    anyio.run(test)


def test_the_gate_lets_calls_through_when_the_worker_does_not_batch() -> None:
    from host.faces.gathering import ArrivalGate

    async def test() -> None:
        gate = ArrivalGate(limit_s=30)
        never = anyio.Event()
        sent = anyio.Event()

        async def held() -> None:
            async with gate.preparing():
                await never.wait()

        async def ready() -> None:
            async with gate.preparing():
                pass
            sent.set()

        async with anyio.create_task_group() as group:
            group.start_soon(held)
            group.start_soon(ready)
            with anyio.fail_after(5):
                await sent.wait()
            group.cancel_scope.cancel()

    anyio.run(test)


def test_cancelling_the_task_cancels_the_call_and_waits_for_its_thread() -> None:
    from host.faces.threads import run_cancellable

    async def test() -> None:
        started, finished = threading.Event(), threading.Event()

        def blocking_call(cancellation) -> str:
            started.set()
            while not cancellation.cancelled:  # as the worker does: stops once it hears the cancel
                threading.Event().wait(0.01)
            finished.set()
            raise Cancelled("stopped")

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(run_cancellable, blocking_call)
                await anyio.to_thread.run_sync(started.wait)
                scope.cancel()
        assert finished.is_set(), "the task ended only after the thread had"
        assert await run_cancellable(lambda cancellation: "done") == "done"

    anyio.run(test)


def test_the_readme_client_configuration_is_a_command_line_the_cli_takes() -> None:
    from host.cli.main import build_parser
    from tests.conftest import ROOT

    snippet = re.search(r"```json\n(\{\n  \"mcpServers\".*?)```", (ROOT / "README.md").read_text(), re.S)
    assert snippet is not None, "the README's MCP client configuration"
    server = json.loads(snippet.group(1))["mcpServers"]["instantmesh"]
    assert Path(server["command"]).name == "instantmesh-rpc"  # the console script of pyproject.toml
    args = build_parser().parse_args(server["args"])
    assert args.command == "mcp" and args.python and args.preset == "official" and args.workers == 1
