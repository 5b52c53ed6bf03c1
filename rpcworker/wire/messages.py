"""The wire types: every method's params and result and every notification's, as msgspec Structs (the JSON-RPC
envelopes around them are in `envelopes`).

This module and protocol.md say the same thing (tests/wire/test_protocol_doc.py checks it); change both
together. It imports nothing but msgspec and `envelopes`, so the host (which has no torch) and the worker share it.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

import msgspec
from msgspec import Meta, Struct

from .envelopes import RequestId

PROTOCOL_VERSION = "1.6"
"""major.minor: a different major on either side is a version mismatch; minor additions are compatible."""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest frame either side accepts, newline excluded. Longer lines are discarded, never parsed."""

# ---------------------------------------------------------------------------------------------------
# Constraints and defaults, declared once: the decoder enforces them (errors carry the `$.params...` path)
# and the host's API, CLI and session can reuse the same declarations instead of re-checking by hand.

STEPS_RANGE = (1, 1000)
GUIDANCE_RANGE = (0.0, 100.0)
SEED_RANGE = (0, 2**63 - 1)
DEFAULT_SEED = 42
DEFAULT_STEPS = 75
DEFAULT_GUIDANCE = 4.0
DEFAULT_VIEW_SIZE = 320
VIEWS_FROM_PACKAGES = "views: starting from the compiled packages"
VIEWS_COMPILING = "views: compiling the denoising step"
VIEWS_WRITING_BUNDLE = "views: writing the packaged start for the next one"
VIEWS_SERVING_EAGER = "views: serving eagerly while the compiled packages are built behind"
VIEWS_BUILDING = "views: building the compiled packages"
"""The ``load`` progress messages of how the views start on CUDA with ``compile`` (protocol.md, load)."""
"""Side of one generated view of the official models, in pixels (the grid is 2 x 3 of them)."""
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Largest input image (width x height) either side accepts: the worker for images it reads, the host for
images it prepares, so an image is refused the same way with and without host preprocessing."""
MAX_INPUT_BYTES = 512 * 1024 * 1024
"""Largest input file read (a 64 Mpixel image compresses well below this)."""
INPUT_FILE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
"""What an input file may be. EPS/PS/PDF and others that make Pillow start external programs are refused."""

Seed = Annotated[int, Meta(ge=SEED_RANGE[0], le=SEED_RANGE[1], description="random seed of the diffusion")]
Steps = Annotated[int, Meta(ge=STEPS_RANGE[0], le=STEPS_RANGE[1], description="diffusion steps")]
Guidance = Annotated[
    float, Meta(ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1], description="classifier-free guidance scale")
]
MAX_BATCH_LIMIT = 64
"""The most generate_views requests one diffusion batch may hold (the worker's ``--max-batch``)."""
MaxBatch = Annotated[int, Meta(ge=1, le=MAX_BATCH_LIMIT, description="objects per diffusion batch")]
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"
Device = Annotated[str, Meta(pattern=DEVICE_PATTERN, description="cpu, cuda or cuda:N")]
"""A torch device the worker runs on (its ``--device``; a pool worker's ``devices``)."""
MeshLane = Literal["auto", "on", "off"]
"""The worker's ``--mesh-lane`` (section 11 of protocol.md): auto turns it on where the backend says it pays."""
MESH_LANE_CHOICES: tuple[str, ...] = get_args(MeshLane)
Preset = Literal["auto", "official", "tiny"]
"""The worker's ``--preset``: the official weights, the tiny preset's random ones, or the official if found (auto)."""
PRESET_CHOICES: tuple[str, ...] = get_args(Preset)
WEIGHTS_MISSING_LINE = "rpcworker: weights missing: "
"""How the stderr line starts with which a worker that cannot find the official weights ends at start (exit
code 2); the rest of the line names every place searched and how to get the files."""

# ---------------------------------------------------------------------------------------------------
# Shared shapes


class ImagePath(Struct, tag="path", tag_field="type", forbid_unknown_fields=True):
    """An image file the worker reads; an absolute path in the worker's filesystem."""

    path: str


class ImagePng(Struct, tag="png", tag_field="type", forbid_unknown_fields=True):
    """Encoded image bytes (PNG or JPEG) sent inline, base64 in JSON."""

    data: bytes


ImageInput = Union[ImagePath, ImagePng]


class ViewsHandle(Struct, tag="handle", tag_field="type", forbid_unknown_fields=True):
    """Views kept in the worker's memory by an earlier generate_views."""

    handle: str


class ViewsGridPath(Struct, tag="grid_path", tag_field="type", forbid_unknown_fields=True):
    """A 3-row x 2-column grid image of the six views (upstream layout, 960x640 for full size)."""

    path: str


class ViewsGridPng(Struct, tag="grid_png", tag_field="type", forbid_unknown_fields=True):
    data: bytes


ViewsSource = Union[ViewsHandle, ViewsGridPath, ViewsGridPng]

ModelName = Literal["views", "mesh"]
MODEL_NAMES: tuple[ModelName, ...] = get_args(ModelName)
MeshFormat = Literal["obj", "glb", "ply"]
MESH_FORMATS: tuple[MeshFormat, ...] = get_args(MeshFormat)
Orientation = Literal["instantmesh", "raw"]
Weights = Literal["official", "tiny", "mock"]
"""Which weights make the results: the official models, the tiny preset's random ones, or none (the mock backend)."""


class MemoryInfo(Struct):
    device: str
    allocated_bytes: int
    reserved_bytes: int
    peak_bytes: int
    total_bytes: int


# ---------------------------------------------------------------------------------------------------
# Methods: params and results


class InitializeParams(Struct, forbid_unknown_fields=True):
    protocol_version: str
    client: str = "unknown"


class InitializeResult(Struct):
    protocol_version: str
    worker_version: str
    python: str
    pid: int
    backend: str
    model_label: str
    device: str
    torch: str | None
    cuda: str | None
    capabilities: list[str]
    max_line_bytes: int
    max_handles: int
    weights: Weights | None = None
    """Which weights make the results (since 1.5; None from an older worker)."""
    max_queued_inline_bytes: int | None = None
    """The bound on the inline image bytes queued requests may hold (since 1.6; None from an older worker)."""


class EmptyParams(Struct, forbid_unknown_fields=True):
    pass


class PingResult(Struct):
    pong: bool = True


class LoadParams(Struct, forbid_unknown_fields=True):
    models: list[ModelName] = msgspec.field(default_factory=lambda: list(MODEL_NAMES))


class LoadResult(Struct):
    load_seconds: dict[str, float]
    """Seconds spent loading each model now; a model that was already loaded is absent."""
    loaded: list[str]
    device: str


class UnloadParams(Struct, forbid_unknown_fields=True):
    models: list[ModelName] = msgspec.field(default_factory=lambda: list(MODEL_NAMES))


class UnloadResult(Struct):
    unloaded: list[str]
    loaded: list[str]
    memory: MemoryInfo | None


CompileState = Literal["off", "waiting", "building", "checking", "ready", "failed"]
"""Where the compiled views stand (protocol.md, status): off (not compiled: other options, or no packages here),
waiting (for the machine's one build, another process's or about to start), building (this worker's build
process compiles), checking (loading the packages and checking them against eager, between requests), ready
(requests run compiled), failed (requests stay eager; ``message`` says why)."""
COMPILE_STATES: tuple[str, ...] = get_args(CompileState)


class CompileStatus(Struct):
    """The compiled views of a worker (since 1.6): status's ``compile`` and the ``compile`` notification."""

    state: CompileState
    done: int = 0
    """Packages ready (built, or found built) for the stage being built."""
    total: int = 0
    """Packages the stage being built needs (0 when unknown)."""
    seconds: float = 0.0
    """Since the build began (waiting included); at ready or failed, what it took."""
    batch_sizes: list[int] = msgspec.field(default_factory=list)
    """The batch sizes (objects) requests run compiled at now; [] while they run eagerly."""
    built: int = 0
    """Packages this worker's build compiled; 0 when it found them all built (by another process or start)."""
    message: str = ""
    """One line: what is happening, or why it failed."""


class StatusResult(Struct):
    backend: str
    model_label: str
    device: str
    loaded: list[str]
    memory: MemoryInfo | None
    requests_served: int
    uptime_s: float
    handles: int
    max_handles: int
    busy: str | None
    queued: int
    pid: int
    batch: list[RequestId] = msgspec.field(default_factory=list)
    """The ids of the requests running now together (since 1.3)."""
    max_batch: MaxBatch = 1
    """The worker's --max-batch (since 1.3)."""
    mesh_lane: bool = False
    """Whether reconstruct runs on a lane of its own, beside the diffusion (``--mesh-lane``; since 1.4)."""
    reconstructing: list[RequestId] = msgspec.field(default_factory=list)
    """The ids running on the mesh lane now (since 1.4)."""
    weights: Weights | None = None
    """Which weights make the results (since 1.5; None from an older worker)."""
    queued_inline_bytes: int = 0
    """The inline image bytes held by queued (not yet running) requests now (since 1.6)."""
    compile: CompileStatus | None = None
    """The compiled views (since 1.6; None from an older worker)."""


class GenerateViewsParams(Struct, forbid_unknown_fields=True):
    image: ImageInput
    seed: Seed = DEFAULT_SEED
    num_inference_steps: Steps = DEFAULT_STEPS
    guidance_scale: Guidance = DEFAULT_GUIDANCE
    output_path: str | None = None
    overwrite: bool = False


class ViewsResult(Struct):
    handle: str
    grid_path: str | None
    grid_width: int
    grid_height: int
    view_size: int
    seed: int
    num_inference_steps: int
    model_label: str
    timings: dict[str, float]
    weights: Weights | None = None
    """Which weights make the results (since 1.5; None from an older worker)."""


class ReconstructParams(Struct, forbid_unknown_fields=True):
    views: ViewsSource
    output_path: str
    format: MeshFormat | None = None
    """None: taken from the output path's extension."""
    texture_map: bool = False
    orientation: Orientation = "instantmesh"
    overwrite: bool = False


class MeshResult(Struct):
    mesh_path: str
    format: str
    num_vertices: int
    num_faces: int
    bounds: list[list[float]]
    model_label: str
    timings: dict[str, float]
    extra_paths: list[str] = msgspec.field(default_factory=list)
    """Files written with the mesh (a textured OBJ's .mtl and .png); added in 1.1."""
    weights: Weights | None = None
    """Which weights make the results (since 1.5; None from an older worker)."""


class ShutdownResult(Struct):
    requests_served: int


# ---------------------------------------------------------------------------------------------------
# Notifications


class CancelParams(Struct, forbid_unknown_fields=True):
    id: RequestId


class ProgressParams(Struct):
    id: RequestId
    stage: str
    step: int
    total: int
    message: str = ""


class LogParams(Struct):
    level: str
    message: str
    logger: str = ""


class MethodSpec(Struct, frozen=True):
    params: type
    result: type
    runs_on_executor: bool
    """True for model work (sequential, cancellable); False for methods answered at once by the reader."""


METHODS: dict[str, MethodSpec] = {
    "initialize": MethodSpec(InitializeParams, InitializeResult, False),
    "ping": MethodSpec(EmptyParams, PingResult, False),
    "status": MethodSpec(EmptyParams, StatusResult, False),
    "shutdown": MethodSpec(EmptyParams, ShutdownResult, False),
    "load": MethodSpec(LoadParams, LoadResult, True),
    "unload": MethodSpec(UnloadParams, UnloadResult, True),
    "generate_views": MethodSpec(GenerateViewsParams, ViewsResult, True),
    "reconstruct": MethodSpec(ReconstructParams, MeshResult, True),
}

NOTIFICATIONS_TO_WORKER: dict[str, type] = {"cancel": CancelParams}
NOTIFICATIONS_FROM_WORKER: dict[str, type] = {"progress": ProgressParams, "log": LogParams, "compile": CompileStatus}


def major(version: str) -> str:
    return version.split(".", 1)[0]
