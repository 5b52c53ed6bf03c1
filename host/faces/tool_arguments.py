"""The tools' arguments as msgspec Structs typed with the wire's constraints.

The tools' input schemas are these Structs' JSON Schemas, and their arguments are checked by converting into them,
so a range (steps, seed) or a choice (mesh formats) is declared once, in ``rpcworker.wire.messages``, and the
worker, the API, the CLI and the agent's schema say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

import msgspec
from msgspec import Meta, Struct

from rpcworker.wire.messages import DEFAULT_SEED, DEFAULT_STEPS, MeshFormat, Seed, Steps

ImageArgument = Annotated[
    str,
    Meta(
        min_length=1,
        description="The object's photo: a PNG/JPEG file path (absolute, or relative to the server's working "
        "directory), or the image itself as base64 PNG/JPEG (a data:image/...;base64, URI too).",
    ),
]
MeshPath = Annotated[
    str,
    Meta(
        min_length=1,
        description="Where the mesh is written (.obj, .glb or .ply; folders are made). An existing file is "
        "refused, never overwritten. A textured OBJ also writes NAME.mtl and NAME.png beside it.",
    ),
]
GridPath = Annotated[
    Optional[str],
    Meta(description="Also keep the 3x2 views grid as this PNG file (an existing file is refused)."),
]
ViewsArgument = Annotated[
    str,
    Meta(min_length=1, description="A handle returned by generate_views, or the path of a 3x2 views grid image."),
]
FormatChoice = Annotated[
    Optional[MeshFormat], Meta(description="The mesh format; by default the output_path's extension.")
]
TextureMap = Annotated[
    bool, Meta(description="A UV texture map instead of vertex colours (needs xatlas in the worker's env).")
]
Prepare = Annotated[
    bool,
    Meta(
        description="Cut the object out (mask from the alpha channel, rembg or a white backdrop), centre and "
        "scale it in the host first, as the batch command does; false sends the image as it is."
    ),
]


class ImageToMeshArguments(Struct, kw_only=True, forbid_unknown_fields=True):
    """A photo of one object to a 3D mesh file (OBJ, GLB or PLY): six views by Zero123++, then the InstantMesh
    reconstruction, on the warm worker. The result links the mesh file and sums it up."""

    image: ImageArgument
    output_path: MeshPath
    steps: Steps = DEFAULT_STEPS
    seed: Seed = DEFAULT_SEED
    format: FormatChoice = None
    texture_map: TextureMap = False
    prepare: Prepare = True


class GenerateViewsArguments(Struct, kw_only=True, forbid_unknown_fields=True):
    """A photo of one object to its six views (a 3x2 grid image, returned), kept in the worker under a handle:
    pass the handle to reconstruct for the mesh."""

    image: ImageArgument
    output_path: GridPath = None
    steps: Steps = DEFAULT_STEPS
    seed: Seed = DEFAULT_SEED
    prepare: Prepare = True


class ReconstructArguments(Struct, kw_only=True, forbid_unknown_fields=True):
    """Six views (a generate_views handle, or a saved 3x2 grid image) to a 3D mesh file."""

    views: ViewsArgument
    output_path: MeshPath
    format: FormatChoice = None
    texture_map: TextureMap = False


class StatusArguments(Struct, kw_only=True, forbid_unknown_fields=True):
    """The worker's state: device, model label, loaded models, memory, the request running and those queued."""


ToolArguments = Union[ImageToMeshArguments, GenerateViewsArguments, ReconstructArguments, StatusArguments]


class ToolInputError(ValueError):
    """A tool argument that cannot work; the message is the one line the agent reads."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool: its name and the Struct of its arguments (which documents it)."""

    name: str
    arguments: type[Struct]

    @property
    def description(self) -> str:
        return " ".join((self.arguments.__doc__ or "").split())

    def input_schema(self) -> dict[str, Any]:
        """The arguments' JSON Schema, an object schema with no references (the Struct's own component)."""
        _, components = msgspec.json.schema_components([self.arguments])
        schema: dict[str, Any] = components[self.arguments.__name__]
        return schema

    def decode(self, arguments: dict[str, Any] | None) -> Any:
        """The arguments as the tool's Struct; a bad one raises ToolInputError naming the field (``$.steps``)."""
        try:
            return msgspec.convert(arguments or {}, self.arguments)
        except msgspec.ValidationError as exc:
            raise ToolInputError(f"invalid arguments for {self.name}: {exc}") from None


TOOLS = (
    ToolSpec("image_to_mesh", ImageToMeshArguments),
    ToolSpec("generate_views", GenerateViewsArguments),
    ToolSpec("reconstruct", ReconstructArguments),
    ToolSpec("status", StatusArguments),
)
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}
