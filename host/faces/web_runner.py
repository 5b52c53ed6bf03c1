"""The web face's objects through the one warm worker that every browser session shares.

A few runner threads each take the next object and see it through: its input prepared in the host, its views, then
one mesh per format from the views the worker holds. As many objects are in flight as ``host.api.map`` keeps (enough
to fill the worker's next batch, never more than it keeps views for), so the views of objects dropped together, or
by different people, run as one diffusion batch. Each runner sends its object's requests, built by the API's
``views_params`` and ``reconstruct_params``, on the worker's client and waits on its own pending call: that is what
lets one object be cancelled alone. A cancelled or failed object leaves no file behind.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from rpcworker.wire.errors import Cancelled, HandleExpired, RpcError
from rpcworker.wire.messages import MeshFormat, ViewsGridPath, ViewsHandle, ViewsSource

from ..api.facade import InstantMeshWorker
from ..api.inputs import image_input
from ..api.options import MeshOptions, ViewOptions, reconstruct_params, views_params
from ..api.outcome import describe_error
from ..api.results import Mesh, Views
from ..images.mask_files import MASK_SUFFIX
from ..images.preparation import PreprocessError, prepare
from ..worker.errors import HostError
from .web_objects import VIEWER_FORMAT, NameBook, ObjectCancelled, WebObject

log = logging.getLogger("host.faces.web")

CLOSE_GRACE_S = 30.0
"""At shutdown, how long the runners get to see their cancelled objects out (and remove their files)."""


def pair_uploads(paths: Iterable[Path]) -> list[tuple[Path, Path | None]]:
    """Each dropped image with its mask: ``NAME_mask.png`` dropped together with ``NAME.*`` is that image's mask, as
    beside it in a folder for ``batch``; a ``_mask`` file with no image of its name is an image."""
    files = list(paths)
    stems = {path.stem for path in files}
    masks = {
        path.stem[: -len(MASK_SUFFIX)]: path
        for path in files
        if path.stem.endswith(MASK_SUFFIX) and path.stem[: -len(MASK_SUFFIX)] in stems
    }
    return [(path, masks.get(path.stem)) for path in files if path not in masks.values()]


class ObjectRunner:
    """Objects from every browser session, run through one worker by ``lanes`` threads."""

    def __init__(self, worker: InstantMeshWorker, out_dir: Path, lanes: int) -> None:
        self.worker = worker
        self.out_dir = out_dir
        self.names = NameBook(out_dir)
        self._objects: dict[int, WebObject] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._todo: queue.Queue[WebObject | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"web-object-runner-{lane}", daemon=True)
            for lane in range(max(1, lanes))
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, image: Path, mask: Path | None, views: ViewOptions, formats: Sequence[MeshFormat], preprocess: bool
    ) -> WebObject:
        """Queues one object; its meshes are GLB (the page's 3D view) and then ``formats``."""
        chosen = tuple(dict.fromkeys((VIEWER_FORMAT, *formats)))
        name, files = self.names.reserve(image.stem, chosen)
        with self._lock:
            item = WebObject(next(self._ids), name, image, mask, views, chosen, preprocess, files)
            self._objects[item.id] = item
        self._todo.put(item)
        return item

    def get(self, object_id: int) -> WebObject | None:
        with self._lock:
            return self._objects.get(object_id)

    def forget(self, object_ids: Iterable[int]) -> None:
        """Drops finished objects from memory (their files stay); active ones are kept."""
        with self._lock:
            for object_id in object_ids:
                item = self._objects.get(object_id)
                if item is not None and not item.snapshot().active:
                    del self._objects[object_id]

    def close(self, grace: float = CLOSE_GRACE_S) -> None:
        """Cancels every object not finished and waits (up to ``grace``) for the runners to see them out."""
        with self._lock:
            everything = list(self._objects.values())
        for item in everything:
            item.cancel()
        for _ in self._threads:
            self._todo.put(None)
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            run_object(self.worker, item)


def run_object(worker: InstantMeshWorker, item: WebObject) -> None:
    """Prepare, views, a mesh per format; the object ends done, cancelled or failed (with one line saying why)."""
    if not item.start():
        return
    try:
        image = prepared_input(item)
        item.update(state="views", stage="waiting for the worker")
        views = _views(worker, item, image)
        item.update(state="mesh", stage="", step=0, total=0, grid=item.files.grid)
        item.note(_views_note(views))
        made: list[tuple[str, Path]] = []
        mesh: Mesh | None = None
        for fmt in item.formats:
            mesh = _mesh(worker, item, views, fmt)
            made.append((fmt, Path(mesh.path)))
            item.update(meshes=tuple(made))
        if mesh is not None:
            item.note(f"{mesh.num_vertices} vertices, {mesh.num_faces} faces")
        if item.preprocess:
            os.replace(item.files.staged, item.files.prepared)
        if not item.complete(shown_input=item.files.prepared if item.preprocess else item.source):
            raise ObjectCancelled(item.name)
    except (ObjectCancelled, Cancelled):
        item.files.discard()
        item.finish("cancelled", shown_input=item.source)
    except (RpcError, HostError, PreprocessError, OSError) as exc:
        item.files.discard()
        why = describe_error(exc)[0].replace(str(item.source), item.source.name)
        item.finish("failed", error=why, shown_input=item.source)
    except Exception as exc:  # a bug here must not leave the card running for ever nor take the runner's lane
        log.exception("object %s failed", item.name)
        item.files.discard()
        item.finish("failed", error=f"internal error ({type(exc).__name__}: {exc}); the server's log has the details")


def prepared_input(item: WebObject) -> Path:
    """The image the worker reads. Prepared in the host (cut out, centred, scaled, as ``batch`` does), saved under
    the object's hidden staged name and shown at once; without preparation, the upload itself. The page shows the
    prepared input, so the face prepares (with ``host.images.preparation``, as the API's ``prepare=`` does) and its
    worker is made with ``prepare=False``."""
    if not item.preprocess:
        if item.mask is not None:
            item.note(f"{item.mask.name} ignored (preparation is off)")
        item.update(shown_input=item.source)
        return item.source
    prepared = prepare(item.source, item.mask)
    item.files.staged.parent.mkdir(parents=True, exist_ok=True)
    prepared.image.save(item.files.staged)
    item.update(shown_input=item.files.staged)
    item.note(f"outline from the {prepared.mask_source}")
    return item.files.staged


def _views(worker: InstantMeshWorker, item: WebObject, image: Path) -> Views:
    params = views_params(image_input(image), str(item.files.grid), item.views)
    return worker.views_from_result(
        item.send(lambda: worker.client.request("generate_views", params, item.on_progress))
    )


def _mesh(worker: InstantMeshWorker, item: WebObject, views: Views, fmt: MeshFormat) -> Mesh:
    """One format's mesh from the views the worker holds; from the saved grid when it no longer holds them (evicted,
    or the worker was restarted)."""
    options = MeshOptions(format=fmt)
    item.update(stage=f"{fmt.upper()} mesh")
    source: ViewsSource = ViewsHandle(views.handle)
    if views.worker_generation != worker.generation:
        source = ViewsGridPath(str(item.files.grid))
    try:
        return _reconstruct(worker, item, source, fmt, options)
    except HandleExpired:
        return _reconstruct(worker, item, ViewsGridPath(str(item.files.grid)), fmt, options)


def _reconstruct(
    worker: InstantMeshWorker, item: WebObject, source: ViewsSource, fmt: str, options: MeshOptions
) -> Mesh:
    params = reconstruct_params(source, str(item.files.meshes[fmt]), options)
    return Mesh.from_result(item.send(lambda: worker.client.request("reconstruct", params, item.on_progress)))


def _views_note(views: Views) -> str:
    seconds = views.timings.get("total_s")
    batch = int(views.timings.get("batch_size", 1))
    return (
        f"views: seed {views.seed}, {views.num_inference_steps} steps"
        + (f", {seconds:.1f} s" if seconds is not None else "")
        + (f", batched with {batch - 1} other object(s)" if batch > 1 else "")
    )
