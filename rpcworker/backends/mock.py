"""A deterministic stand-in for the models: fake views and meshes derived from the input, in milliseconds.

It exists for tests and protocol benchmarks, so it can also misbehave on request: delays, failures,
simulated out-of-memory, hangs and writes to stdout / fd 1 (which must never reach the protocol stream).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..wire.errors import InternalError, InvalidParams, ModelNotLoaded, OutOfMemory
from ..wire.messages import DEFAULT_VIEW_SIZE, MODEL_NAMES, MemoryInfo
from .base import CAPABILITIES, BackendInfo, GeneratedViews, MeshData, WorkContext
from .grid import join_views, split_grid

MESH_SUFFIXES = (".obj", ".glb", ".ply")
EXIT_AFTER_WRITE = 9  # the exit code of a mock worker that ``exit_after_write_once`` ended


@dataclass
class MockOptions:
    """Parsed from ``--mock key=value,...``; set-valued options name methods (generate_views, reconstruct, load)."""

    view_size: int = DEFAULT_VIEW_SIZE
    step_delay: float = 0.0
    load_delay: float = 0.0
    reconstruct_delay: float = 0.0
    write_delay: float = 0.0
    """Seconds to wait with a finished output still at its temporary path (to kill the worker mid-write)."""
    require_load: bool = False
    fail_once: set[str] = field(default_factory=set)
    oom_once: set[str] = field(default_factory=set)
    hang_on: set[str] = field(default_factory=set)
    noisy: bool = False
    report_inputs: bool = False
    """Write ``mock model input: <model_input_digest>`` to stderr for each views input, so a test sees exactly
    what reached the model, whatever way it came."""
    texture_size: int = 64
    """Side of the generated texture map (texture_map=true)."""
    no_texture: bool = False
    """Behave like a worker without xatlas: texture_map is refused."""
    simulated_model_bytes: int = 512 * 1024 * 1024
    exit_after_write_once: str = ""
    """A marker file: the first worker to finish a mesh while it is absent makes it, puts the mesh in place and
    exits before replying (lost after its write; once for all workers sharing the option)."""

    @classmethod
    def parse(cls, text: str) -> MockOptions:
        opts = cls()
        types = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if key not in types:
                raise ValueError(f"unknown mock option {key!r}; known: {', '.join(sorted(types))}")
            kind = types[key]
            if kind.startswith("set"):
                getattr(opts, key).update(v for v in value.split("+") if v)
            elif kind == "bool":
                setattr(opts, key, value.strip().lower() in ("", "1", "true", "yes"))
            elif kind == "int":
                setattr(opts, key, int(value))
            elif kind == "str":
                setattr(opts, key, value)
            else:
                setattr(opts, key, float(value))
        return opts


class MockBackend:
    def __init__(self, options: MockOptions | None = None) -> None:
        self.options = options or MockOptions()
        self._loaded: set[str] = set()
        self._peak = 0
        if self.options.noisy:
            self._make_noise("mock backend created")

    def info(self) -> BackendInfo:
        return BackendInfo(
            name="mock",
            model_label="mock (fake views and meshes for testing; no model)",
            weights="mock",
            device="cpu",
            torch=None,
            cuda=None,
            capabilities=[*CAPABILITIES, *([] if self.options.no_texture else ["texture_map"])],
        )

    def loaded(self) -> list[str]:
        return [m for m in MODEL_NAMES if m in self._loaded]

    def load(self, models: list[str], ctx: WorkContext) -> dict[str, float]:
        self._misbehave("load")
        seconds: dict[str, float] = {}
        for i, name in enumerate(models):
            if name in self._loaded:
                continue
            start = time.perf_counter()
            ctx.progress("load", i + 1, len(models), name)
            self._sleep(self.options.load_delay, ctx)
            self._loaded.add(name)
            seconds[name] = time.perf_counter() - start
        self._peak = max(self._peak, self._allocated())
        return seconds

    def unload(self, models: list[str]) -> list[str]:
        unloaded: list[str] = [m for m in MODEL_NAMES if m in models and m in self._loaded]
        self._loaded.difference_update(unloaded)
        return unloaded

    def memory(self) -> MemoryInfo:
        allocated = self._allocated()
        return MemoryInfo(
            "cpu", allocated, allocated, max(self._peak, allocated), 8 * self.options.simulated_model_bytes
        )

    def _allocated(self) -> int:
        return len(self._loaded) * self.options.simulated_model_bytes

    def generate_views(
        self, image: Any, seed: int, num_inference_steps: int, guidance_scale: float, ctx: WorkContext
    ) -> GeneratedViews:
        (result,) = self.generate_views_batch([image], [seed], num_inference_steps, guidance_scale, [ctx])
        if isinstance(result, BaseException):
            raise result
        return result

    def generate_views_batch(
        self,
        images: list[Any],
        seeds: list[int],
        num_inference_steps: int,
        guidance_scale: float,
        ctxs: list[WorkContext],
    ) -> list[GeneratedViews | BaseException]:
        """One step of a batch costs one step_delay, as a GPU step of a small batch does."""
        outcomes: list[GeneratedViews | BaseException | None] = [None] * len(images)
        for i, ctx in enumerate(ctxs):
            try:
                self._ensure("views", ctx)
                self._misbehave("generate_views")  # fail_once / oom_once hit one object of a batch
            except Exception as exc:
                outcomes[i] = exc
        start = time.perf_counter()
        for step in range(num_inference_steps):
            alive = [i for i in range(len(ctxs)) if outcomes[i] is None and not self._dropped(ctxs[i], outcomes, i)]
            if not alive:
                break
            self._sleep_alive(self.options.step_delay, [ctxs[i] for i in alive])
            for i in alive:
                if not self._dropped(ctxs[i], outcomes, i):
                    ctxs[i].progress("diffusion", step + 1, num_inference_steps)
        diffusion_s = time.perf_counter() - start
        for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):
            if outcomes[i] is None and not self._dropped(ctxs[i], outcomes, i):
                outcomes[i] = self._views(image, seed, guidance_scale, diffusion_s)
        return [outcome for outcome in outcomes if outcome is not None]

    @staticmethod
    def _dropped(ctx: WorkContext, outcomes: list[GeneratedViews | BaseException | None], i: int) -> bool:
        """True (with the Cancelled error recorded) once object ``i`` of a batch has been cancelled."""
        try:
            ctx.check_cancelled()
        except Exception as exc:
            outcomes[i] = exc
            return True
        return False

    def _views(self, image: Any, seed: int, guidance_scale: float, diffusion_s: float) -> GeneratedViews:
        """The fake views of one object: a function of its image, seed and guidance only."""
        from PIL import Image

        if self.options.report_inputs:
            print(f"mock model input: {model_input_digest(image)}", file=sys.stderr, flush=True)
        size = self.options.view_size
        rgb = _on_white(image).resize((size, size), Image.Resampling.BILINEAR)
        base = np.asarray(rgb, dtype=np.float32)
        rng = np.random.default_rng(seed)
        views = np.empty((6, size, size, 3), dtype=np.uint8)
        for i in range(6):
            shifted = np.roll(base, shift=i * size // 6, axis=1)
            tint = np.array([1.0 - 0.08 * i, 0.9 + 0.02 * i, 0.8 + 0.03 * i], dtype=np.float32)
            noise = rng.normal(0.0, 4.0 * guidance_scale / 4.0, size=(size, size, 1)).astype(np.float32)
            views[i] = np.clip(shifted * tint + noise, 0, 255).astype(np.uint8)
        grid = Image.fromarray(join_views(views))
        if self.options.noisy:
            self._make_noise("generate_views done")
        return GeneratedViews(grid, views, size, {"diffusion_s": diffusion_s})

    def views_from_grid(self, grid: Any) -> tuple[Any, int]:
        return split_grid(grid)

    def reconstruct(self, views: Any, texture_map: bool, ctx: WorkContext) -> MeshData:
        if texture_map and self.options.no_texture:
            raise InvalidParams(
                "texture_map is not available: the mock was started with no_texture (as a worker without xatlas)",
                {"field": "texture_map", "missing": "xatlas"},
            )
        self._ensure("mesh", ctx)
        self._misbehave("reconstruct")
        start = time.perf_counter()
        ctx.progress("reconstruct", 0, 2, "planes")
        self._sleep(self.options.reconstruct_delay, ctx)
        mean = views.reshape(-1, 3).mean(axis=0)
        radius = 0.5 + float(mean.mean()) / 510.0
        rings = 12 + int(mean[0]) % 8
        vertices, faces = _uv_sphere(radius, rings=rings, segments=24)
        ctx.progress("reconstruct", 2, 2, "mesh")
        timings = {"reconstruct_s": time.perf_counter() - start}
        if texture_map:
            uvs, uv_faces = _uv_sphere_layout(rings, segments=24)
            return MeshData(vertices, faces, None, timings, _checker(self.options.texture_size, mean), uvs, uv_faces)
        colors = np.tile(np.clip(mean, 0, 255).astype(np.uint8), (len(vertices), 1))
        return MeshData(vertices, faces, colors, timings)

    def before_commit(self, tmp_path: str) -> None:
        """Given to the worker session (see __main__) to run between writing an output and moving it into place."""
        if self.options.write_delay > 0:
            time.sleep(self.options.write_delay)
        if self.options.exit_after_write_once and tmp_path.endswith(MESH_SUFFIXES):
            self._exit_after_placing(tmp_path, self.options.exit_after_write_once)

    @staticmethod
    def _exit_after_placing(tmp_path: str, marker: str) -> None:
        """Moves the mesh to its name (the temporary name less its dot and ``.partial-...``) and exits, no reply."""
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return
        folder, name = os.path.split(tmp_path)
        stem, _, rest = name[1:].partition(".partial-")
        os.replace(tmp_path, os.path.join(folder, stem + os.path.splitext(rest)[1]))
        os._exit(EXIT_AFTER_WRITE)

    def _ensure(self, model: str, ctx: WorkContext) -> None:
        if model in self._loaded:
            return
        if self.options.require_load:
            raise ModelNotLoaded(f"the {model} model is not loaded; call load first", {"model": model})
        self.load([model], ctx)

    def _misbehave(self, method: str) -> None:
        if method in self.options.hang_on:
            while True:
                time.sleep(3600)
        if method in self.options.oom_once:
            self.options.oom_once.discard(method)
            raise OutOfMemory(
                f"simulated out of memory in {method}; memory was freed",
                {"device": "cpu", "method": method, "simulated": True},
            )
        if method in self.options.fail_once:
            self.options.fail_once.discard(method)
            raise InternalError(f"simulated failure in {method}", {"method": method, "simulated": True})

    @staticmethod
    def _sleep_alive(seconds: float, ctxs: list[WorkContext]) -> None:
        """Sleeps ``seconds`` unless every one of ``ctxs`` is cancelled first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if all(_is_cancelled(ctx) for ctx in ctxs):
                return
            time.sleep(min(left, 0.02))

    def _sleep(self, seconds: float, ctx: WorkContext) -> None:
        deadline = time.monotonic() + seconds
        while True:
            ctx.check_cancelled()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.02))

    @staticmethod
    def _make_noise(text: str) -> None:
        """Writes to stdout three ways, as careless libraries do; none may reach the protocol stream."""
        print(f"mock print: {text}")
        sys.stdout.flush()
        os.write(1, f"mock fd1 write: {text}\n".encode())
        libc = ctypes.CDLL(None)
        libc.printf(f"mock C printf: {text}\n".encode())
        libc.fflush(None)


def model_input_digest(image: Any) -> str:
    """SHA-256 of a decoded input's mode, size and pixels: equal digests, the same model input to the bit."""
    header = f"{image.mode} {image.width}x{image.height}\n".encode()
    return hashlib.sha256(header + image.tobytes()).hexdigest()


def _is_cancelled(ctx: WorkContext) -> bool:
    try:
        ctx.check_cancelled()
    except Exception:
        return True
    return False


def _on_white(image: Any) -> Any:
    from PIL import Image

    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _uv_sphere(radius: float, rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0, np.pi, rings + 1)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    vertices = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], axis=-1).reshape(-1, 3) * radius
    faces = []
    for r in range(rings):
        for s in range(segments):
            a = r * segments + s
            b = r * segments + (s + 1) % segments
            c, d = a + segments, b + segments
            faces.extend([(a, c, b), (b, c, d)])
    return vertices.astype(np.float32), np.asarray(faces, dtype=np.int64)


def _uv_sphere_layout(rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular UVs for `_uv_sphere`: one more column than the sphere has, so the seam has its own
    texture coordinates (uv_faces index them face by face with the sphere's faces)."""
    u, v = np.meshgrid(np.arange(segments + 1) / segments, 1.0 - np.arange(rings + 1) / rings, indexing="xy")
    uvs = np.stack([u, v], axis=-1).reshape(-1, 2).astype(np.float32)
    uv_faces = []
    for r in range(rings):
        for s in range(segments):
            a, b = r * (segments + 1) + s, r * (segments + 1) + s + 1
            c, d = a + segments + 1, b + segments + 1
            uv_faces.extend([(a, c, b), (b, c, d)])
    return uvs, np.asarray(uv_faces, dtype=np.int64)


def _checker(size: int, mean: np.ndarray) -> Any:
    """An RGB checkerboard of the views' mean colour and its complement, 8 squares a side."""
    from PIL import Image

    cell = max(1, size // 8)
    yy, xx = np.mgrid[:size, :size]
    odd = ((yy // cell + xx // cell) % 2 == 1)[..., None]
    base = np.clip(mean, 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(odd, base, 255 - base).astype(np.uint8), "RGB")
