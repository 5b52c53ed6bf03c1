"""``python -m host mcp``: the tools served to an agent over MCP on stdio, one warm worker (or a pool) behind them.

Built on the official SDK's low-level ``Server`` rather than its ``MCPServer`` (formerly FastMCP): MCPServer derives
each tool's input schema from a Python signature through pydantic, where ours are the msgspec Structs of
``tool_arguments`` typed with the wire's constraints, and it would run our blocking API calls on its own terms;
the low-level server takes the schemas as they are and leaves threads, progress and cancellation to us.

The SDK's stdio transport claims the descriptors while it serves (fd 1 points at stderr, the MCP stream goes out
through a private duplicate), so nothing a library prints reaches the agent; logs go to stderr. The worker comes
started (``host.cli.main.run_mcp``); its models load in the background once the server runs, so the agent's
handshake never waits for them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from anyio.from_thread import BlockingPortal
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from rpcworker.wire.errors import RpcError

from ..api.facade import InstantMeshWorker
from ..api.results import Mesh
from ..worker.errors import HostError
from ..worker.owners import owned_folder
from .gathering import ArrivalGate
from .progress_relay import ProgressRelay, SendProgress
from .threads import run_cancellable
from .tool_arguments import TOOLS, TOOLS_BY_NAME, ToolInputError
from .tool_inputs import api_image, tool_image
from .tools import Target, Tools, ViewsMade

log = logging.getLogger("host.faces.mcp")

SERVER_NAME = "instantmesh-rpc"
MEDIA_TYPES = {
    ".obj": "model/obj",
    ".mtl": "model/mtl",
    ".glb": "model/gltf-binary",
    ".ply": "model/x-ply",  # PLY has no registered type: an x- name in the model/ tree that OBJ and glTF use
    ".png": "image/png",
}
TOOL_STAGES = {"image_to_mesh": ("diffusion", "reconstruct"), "generate_views": ("diffusion",)}
TOOL_STAGES_DEFAULT = ("reconstruct",)
INSTRUCTIONS = (
    "Turns a photo of one object into a 3D mesh (InstantMesh: six views by Zero123++, then a reconstruction). "
    "image_to_mesh does both steps; generate_views then reconstruct lets you look at the views first. Paths are "
    "on the server's machine, relative ones under {cwd}. Outputs are never overwritten. Calls may run at once: "
    "the worker batches them."
)
"""What the agent is told at initialize (the working directory filled in)."""


SCRATCH_PREFIX = "instantmesh-mcp-"


def serve(target: Target, *, verbose: bool = False) -> int:
    """Serves until the client closes stdin (exit code 0) or Ctrl-C (130); the worker is shut down either way."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    scratch = owned_folder(SCRATCH_PREFIX)  # named after this host: the next removes it if this one is killed
    try:
        anyio.run(_serve, target, Path(scratch))
    except KeyboardInterrupt:
        return 130
    finally:
        target.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


async def _serve(target: Target, scratch: Path) -> None:
    async with BlockingPortal() as portal, stdio_server() as (read_stream, write_stream):
        face = McpFace(Tools(target, scratch), portal, ArrivalGate())
        server: Server[Any] = Server(
            SERVER_NAME,
            version=_package_version(),
            instructions=INSTRUCTIONS.format(cwd=os.getcwd()),
            on_list_tools=face.list_tools,
            on_call_tool=face.call_tool,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(face.warm_up)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            group.cancel_scope.cancel()


class McpFace:
    """The handlers: each tool call decoded, run on a thread through the API, and answered in MCP's terms."""

    def __init__(self, tools: Tools, portal: BlockingPortal, gate: ArrivalGate) -> None:
        self.tools = tools
        self.portal = portal
        self.gate = gate
        self.listed = types.ListToolsResult(
            tools=[
                types.Tool(name=tool.name, description=tool.description, input_schema=tool.input_schema())
                for tool in TOOLS
            ]
        )

    async def warm_up(self) -> None:
        """Loads the worker's models (starting it again if it died); a failure is logged, and each tool call
        tries again."""
        try:
            batching = await anyio.to_thread.run_sync(_start_and_load, self.tools.target, abandon_on_cancel=True)
        except (HostError, RpcError, OSError) as exc:
            log.error("the worker could not load its models: %s (each tool call tries again)", _one_line(exc))
            return
        self.gate.batching = batching

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return self.listed

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = TOOLS_BY_NAME.get(params.name)
        if tool is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        try:
            return await self._call(tool.name, tool.decode(params.arguments), self._progress_sender(ctx))
        except (ToolInputError, RpcError, HostError, OSError) as exc:
            return _tool_error(_one_line(exc))
        except Exception as exc:  # a bug of ours: the agent gets one line, stderr the traceback, the server goes on
            log.exception("%s failed", tool.name)
            return _tool_error(f"internal error in {tool.name}: {type(exc).__name__}: {_one_line(exc)}")

    async def _call(self, name: str, arguments: Any, send: SendProgress) -> types.CallToolResult:
        if name == "status":
            status = await anyio.to_thread.run_sync(self.tools.status)
            return types.CallToolResult(
                content=[types.TextContent(text=json.dumps(status, indent=1))], structured_content=status
            )
        relay = ProgressRelay(TOOL_STAGES.get(name, TOOL_STAGES_DEFAULT), send)
        began = time.monotonic()
        if name == "reconstruct":
            mesh = await run_cancellable(lambda cancel: self.tools.reconstruct(arguments, relay, cancel))
            return _mesh_result(mesh, time.monotonic() - began)
        async with self.gate.preparing():
            image = await anyio.to_thread.run_sync(lambda: api_image(tool_image(arguments.image), arguments.prepare))
        if name == "generate_views":
            made = await run_cancellable(lambda cancel: self.tools.generate_views(arguments, image, relay, cancel))
            return _views_result(made, time.monotonic() - began)
        mesh = await run_cancellable(lambda cancel: self.tools.image_to_mesh(arguments, image, relay, cancel))
        return _mesh_result(mesh, time.monotonic() - began)

    def _progress_sender(self, ctx: ServerRequestContext[Any]) -> SendProgress:
        """Sends one progress notification for this request from a worker thread, through the event loop (a no-op
        when the request carried no progress token)."""

        def send(progress: float, total: float, message: str) -> None:
            try:
                self.portal.call(ctx.session.report_progress, progress, total, message)
            except (RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                log.debug("progress not sent (the server is stopping): %s", exc)

        return send


def _start_and_load(target: Target) -> bool:
    """Warms the worker(s); True when the worker batches (runs several objects' views at once)."""
    target.start()
    target.load()
    if isinstance(target, InstantMeshWorker):
        info, status = target.info, target.status()
        log.info("worker ready: pid %d on %s, %s", info.pid, info.device, info.model_label)
        return status.max_batch > 1
    log.info("%d workers ready: %s", target.size, target.model_label)
    return False


def _mesh_result(mesh: Mesh, seconds: float) -> types.CallToolResult:
    files = [Path(mesh.path), *(Path(extra) for extra in mesh.extra_paths)]
    links: list[types.ContentBlock] = [
        types.ResourceLink(
            name=path.name,
            uri=path.as_uri(),
            mime_type=MEDIA_TYPES.get(path.suffix.lower()),
            size=path.stat().st_size,
        )
        for path in files
    ]
    timings = ", ".join(f"{key[:-2]} {value:.2f} s" for key, value in mesh.timings.items() if key.endswith("_s"))
    summary = (
        f"{files[0].name}: {mesh.num_vertices} vertices, {mesh.num_faces} faces ({mesh.format}) in {seconds:.1f} s "
        f"({timings}); model: {mesh.model_label}"
    )
    structured = {
        "path": mesh.path,
        "format": mesh.format,
        "vertices": mesh.num_vertices,
        "faces": mesh.num_faces,
        "extra_paths": mesh.extra_paths,
        "seconds": round(seconds, 3),
        "timings": mesh.timings,
        "model_label": mesh.model_label,
    }
    return types.CallToolResult(content=[*links, types.TextContent(text=summary)], structured_content=structured)


def _views_result(made: ViewsMade, seconds: float) -> types.CallToolResult:
    views = made.views
    kept = f"; grid kept at {views.grid_path}" if views.grid_path else ""
    summary = (
        f"views handle {views.handle}: six {views.view_size} px views, seed {views.seed}, "
        f"{views.num_inference_steps} steps, in {seconds:.1f} s{kept}; model: {views.model_label}. "
        "Pass the handle to reconstruct for the mesh."
    )
    structured = {
        "handle": views.handle,
        "grid_path": views.grid_path,
        "view_size": views.view_size,
        "seed": views.seed,
        "steps": views.num_inference_steps,
        "seconds": round(seconds, 3),
        "timings": views.timings,
        "model_label": views.model_label,
    }
    grid = types.ImageContent(data=base64.b64encode(made.grid_png).decode("ascii"), mime_type="image/png")
    return types.CallToolResult(content=[types.TextContent(text=summary), grid], structured_content=structured)


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _one_line(exc: BaseException) -> str:
    """An error's first line: the worker's crash reports add its stderr below, which the agent does not need."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _package_version() -> str:
    try:
        return version(SERVER_NAME)
    except PackageNotFoundError:
        return ""
