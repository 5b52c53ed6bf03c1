"""``batch --report``: a static ``index.html`` beside the outputs, one card per object, that opens offline.

Each card shows the input, the views grid, an interactive 3D view of the mesh, timings, status and the
model label. The 3D view is Google's ``<model-viewer>`` (three.js inside), vendored from the npm
registry when the project is set up (``scripts/setup.sh`` unpacks ``@google/model-viewer``'s UMD bundle
into ``host/report_assets/``); nothing is loaded from the network. Browsers refuse ``fetch`` of
``file://`` URLs, so each mesh travels as a small script (``report/NAME.glb.js``) holding the GLB in
base64, which the page turns into a blob URL. Meshes that are not GLB are converted with trimesh.

Every link is percent-encoded (a name may hold ``#``, ``?``, ``:``, spaces), and every file is written as the
host writes its own files in ``--out`` (`host.cli.out_files`): whole, then renamed, never through a symlink. A
file that cannot be written (a full disk) leaves nothing partial behind and ends the report with one line naming
it (`ReportNotWritten`).

The page replaces an ``index.html`` in ``--out`` only when that is a report of ours (an earlier ``--report``: its
head holds `PAGE_MARK`), as the meshes of earlier runs are kept; anything else there (a page of the person's, a
symlink, a folder) is replaced only with ``--overwrite``, and is refused at start, before any model work.
"""

from __future__ import annotations

import base64
import html
import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .display import printable, shown, url_path
from .objects import ObjectResult
from .out_files import replace_file

ASSETS = Path(__file__).resolve().parents[1] / "report_assets"  # vendored by scripts/setup.sh
VIEWER_SCRIPT = "model-viewer-umd.min.js"
REPORT_DIR = "report"
PAGE_NAME = "index.html"
MESH_SCRIPT_SUFFIX = ".glb.js"
PAGE_MARK = "<title>instantmesh-rpc report</title>"
"""In the head of every page this module writes: an ``index.html`` holding it is an earlier report, ours to replace."""
MARK_WINDOW = 1024
"""Bytes of an existing page read to find `PAGE_MARK`."""


class ReportUnavailable(Exception):
    """The report cannot be written here (the viewer is not vendored, or trimesh is missing for conversion)."""


class ReportNotWritten(Exception):
    """A file of the report could not be written (or the page may not be replaced); the message is one line
    naming it. Nothing partial is left."""


def check_report_possible(out_dir: Path | None = None, overwrite: bool = False) -> None:
    """Refused at start, before any model loads, when the page could not be made (also when ``out_dir``'s
    ``report`` folder is a symlink: the host never writes through one), or may not replace what is at
    ``index.html`` (`page_problem`)."""
    problem = page_problem(out_dir, overwrite) if out_dir is not None else None
    if problem is not None:
        raise ReportUnavailable(problem)
    assets = out_dir / REPORT_DIR if out_dir is not None else None
    if assets is not None and (os.path.islink(assets) or (os.path.lexists(assets) and not os.path.isdir(assets))):
        kind = "a symlink" if os.path.islink(assets) else "not a folder"
        raise ReportUnavailable(f"--report: {shown(assets)} is {kind}; the host never writes through one (remove it)")
    if not (ASSETS / VIEWER_SCRIPT).is_file():
        raise ReportUnavailable(
            f"--report needs {ASSETS / VIEWER_SCRIPT}; run scripts/setup.sh (it vendors @google/model-viewer from npm)"
        )
    import importlib.util

    if importlib.util.find_spec("trimesh") is None:
        raise ReportUnavailable(
            "--report needs trimesh in the host to convert meshes to GLB: pip install 'instantmesh-rpc[images]'"
        )


def page_problem(out_dir: Path, overwrite: bool) -> str | None:
    """Why the page may not be written to ``out_dir``: something is at ``index.html`` that is not an earlier
    report of ours, and ``overwrite`` is off. None when the page may be written."""
    page = out_dir / PAGE_NAME
    if overwrite or not os.path.lexists(page) or _is_our_page(page):
        return None
    return f"--report: {shown(page)} exists and is not a report of instantmesh-rpc; pass --overwrite to replace it"


def _is_our_page(page: Path) -> bool:
    """A regular file (not a symlink, never opened through one; a FIFO never blocks) whose head holds `PAGE_MARK`."""
    try:
        fd = os.open(page, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and PAGE_MARK.encode() in os.read(fd, MARK_WINDOW)
    except OSError:
        return False
    finally:
        os.close(fd)


def _put(out_dir: Path, name: str, data: bytes, sub: str | None = None) -> None:
    """`replace_file`, with a failure as one line naming the file."""
    try:
        replace_file(out_dir, name, data, sub=sub)
    except OSError as exc:
        path = out_dir / sub / name if sub else out_dir / name
        raise ReportNotWritten(f"the report was not written: {shown(path)}: {exc.strerror or exc}") from None


def _glb_bytes(mesh_path: Path) -> bytes:
    if mesh_path.suffix.lower() == ".glb":
        return mesh_path.read_bytes()
    import trimesh

    loaded: Any = trimesh.load(mesh_path, force="mesh", process=False)  # force="mesh": a Trimesh
    return bytes(loaded.export(file_type="glb"))


def report_files(out_dir: Path, names: Sequence[str]) -> list[tuple[Path, str]]:
    """Every file the report may write, with what it is (checked against the run's inputs before any work)."""
    assets = out_dir / REPORT_DIR
    return [
        (out_dir / PAGE_NAME, "the report's page"),
        (assets / VIEWER_SCRIPT, "the report's viewer"),
        *((assets / f"{name}{MESH_SCRIPT_SUFFIX}", f"the report's copy of the mesh of {name}") for name in names),
    ]


def _relative(path: Path | None, base: Path) -> str | None:
    """The link from the page to ``path`` (percent-encoded), or None when there is no file."""
    if path is None or not os.path.exists(path):
        return None
    return url_path(os.path.relpath(path, base))


def _card(result: ObjectResult, out_dir: Path, mesh_key: str | None, note: str | None = None) -> str:
    """One object's card; ``mesh_key`` (its position: a name may hold characters an attribute loses) finds its mesh."""
    name = html.escape(printable(result.name))
    cells = []
    prepared = out_dir / f"{result.name}_input.png"
    for title, path in (
        ("input", prepared if os.path.exists(prepared) else result.source),
        ("views", result.grid_path),
    ):
        rel = _relative(Path(path) if path else None, out_dir)
        cells.append(
            f'<figure><img alt="{name} {title}" src="{html.escape(rel)}"><figcaption>{title}</figcaption></figure>'
            if rel
            else f"<figure class=missing><figcaption>no {title}</figcaption></figure>"
        )
    if mesh_key is not None:
        cells.append(
            f'<figure><model-viewer data-mesh="{mesh_key}" camera-controls auto-rotate shadow-intensity="0" exposure="1.1" alt="{name} mesh"></model-viewer><figcaption>mesh (drag to turn)</figcaption></figure>'
        )
    timing = " · ".join(
        f"{label} {value:.1f} s"
        for label, value in (("views", result.views_s), ("mesh", result.mesh_s))
        if value is not None
    )
    counts = f"{result.vertices} vertices, {result.faces} faces" if result.vertices is not None else ""
    error = "".join(f"<p class=error>{html.escape(printable(text))}</p>" for text in (result.error, note) if text)
    return (
        f'<section class="card {html.escape(result.status)}"><h2>{name} <span class=status>{html.escape(result.status)}</span></h2>'
        f"<div class=row>{''.join(cells)}</div><p>{html.escape(timing)} {html.escape(counts)}</p>{error}</section>"
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">{mark}
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}}
.label{{padding:.5em 1em;background:#fff3cd;border:1px solid #e0c36c;display:inline-block}}
.card{{background:#fff;border:1px solid #ddd;margin:1em 0;padding:.5em 1em}}
.row{{display:flex;gap:1em;flex-wrap:wrap}} figure{{margin:0}} img,model-viewer{{width:256px;height:256px;object-fit:contain;background:#fff;border:1px solid #eee}}
.status{{font-size:70%;padding:.1em .5em;border-radius:.5em;background:#ddd}} .ok .status{{background:#c8e6c9}} .failed .status{{background:#ffcdd2}}
.error{{color:#b00}}
</style>
<script src="{viewer}"></script>
{mesh_scripts}
</head><body>
<h1>instantmesh-rpc: {count} object(s)</h1>
<p class=label>model: {label}</p>
{cards}
<script>
for (const viewer of document.querySelectorAll("model-viewer[data-mesh]")) {{
  const data = (window.INSTANTMESH_MESHES || {{}})[viewer.dataset.mesh];
  if (!data) continue;
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  viewer.src = URL.createObjectURL(new Blob([bytes], {{type: "model/gltf-binary"}}));
}}
</script>
</body></html>
"""


def write_report(
    out_dir: Path,
    results: Sequence[ObjectResult],
    model_label: str,
    overwrite: bool = False,
    on_problem: Callable[[str], None] | None = None,
) -> Path:
    """Writes ``index.html`` (and ``report/``) in ``out_dir``; returns the page's path. `ReportNotWritten` when
    a file cannot be written, or when ``index.html`` became something the page may not replace meanwhile. A mesh it
    cannot read (a skipped object's, from an earlier run) is shown as a note on its card and told to ``on_problem``."""
    check_report_possible()
    try:
        viewer = (ASSETS / VIEWER_SCRIPT).read_bytes()
    except OSError as exc:
        raise ReportNotWritten(f"the report was not written: {shown(ASSETS / VIEWER_SCRIPT)}: {exc.strerror}") from None
    _put(out_dir, VIEWER_SCRIPT, viewer, sub=REPORT_DIR)
    scripts, cards = [], []
    for position, result in enumerate(results):
        key: str | None = None
        mesh = result.mesh_path
        if result.status in ("ok", "skipped") and mesh is not None and Path(mesh).is_file():
            try:
                encoded = base64.b64encode(_glb_bytes(Path(mesh))).decode("ascii")
            except Exception as exc:  # noqa: BLE001 - whatever the mesh reader raises is this card's note, not the report's end
                why = (str(exc).splitlines() or [""])[0]
                note = f"{mesh}: not shown in the report, it could not be read ({type(exc).__name__}: {why})"
                if on_problem is not None:
                    on_problem(note)
                cards.append(_card(result, out_dir, None, note))
                continue
            file_name = f"{result.name}{MESH_SCRIPT_SUFFIX}"
            text = f"(window.INSTANTMESH_MESHES = window.INSTANTMESH_MESHES || {{}})[{json.dumps(str(position))}] = {json.dumps(encoded)};\n"
            _put(out_dir, file_name, text.encode("utf-8"), sub=REPORT_DIR)
            key = str(position)
            scripts.append(f'<script src="{html.escape(url_path(f"{REPORT_DIR}/{file_name}"))}"></script>')
        cards.append(_card(result, out_dir, key))
    page = PAGE.format(
        mark=PAGE_MARK,
        viewer=f"{REPORT_DIR}/{VIEWER_SCRIPT}",
        mesh_scripts="\n".join(scripts),
        count=len(results),
        label=html.escape(model_label or "unknown"),
        cards="\n".join(cards),
    )
    problem = page_problem(out_dir, overwrite)  # again: the run took a while, and anyone may write in --out
    if problem is not None:
        raise ReportNotWritten(problem)
    _put(out_dir, PAGE_NAME, page.encode("utf-8"))
    return out_dir / PAGE_NAME
