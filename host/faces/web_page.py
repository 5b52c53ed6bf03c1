"""The page: which model answers (its label in a banner), a drop zone and the views' options, then a card per object.

Each browser session keeps the ids of its own objects (``gr.State``); the objects and the worker are the server's,
shared by every session. The cards are a fixed set of slots, filled in order: every 3D view is a WebGL context and
browsers keep about 16, so a page shows at most ``CARDS`` objects, and 'Clear finished' makes room. A timer refreshes
the cards from the objects' snapshots. The handlers only queue, cancel and read objects, so they never wait on the
worker and gradio runs them at once for every session.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from rpcworker.wire.errors import InvalidParams
from rpcworker.wire.messages import DEFAULT_GUIDANCE, DEFAULT_SEED, DEFAULT_STEPS, MESH_FORMATS, MeshFormat

from ..api.options import view_options_of
from .web_cards import Card, CardValues, card_values
from .web_objects import VIEWER_FORMAT
from .web_runner import ObjectRunner, pair_uploads

CARDS = 8
REFRESH_S = 0.5
EXTRA_FORMATS: tuple[MeshFormat, ...] = tuple(fmt for fmt in MESH_FORMATS if fmt != VIEWER_FORMAT)
FIELD_LABELS = {"num_inference_steps": "diffusion steps", "seed": "seed", "guidance_scale": "guidance scale"}
PAGE_CSS = """
#model-label .official { padding: 8px 12px; border-radius: 6px; background: #eef6ee; }
#model-label .not-official { padding: 10px 14px; border-radius: 6px; background: #fde8e8; border: 2px solid #c81e1e;
  color: #7f1d1d; font-weight: 600; }
.object-name { font-weight: 700; font-size: 1.1em; }
.object-state { padding: 1px 8px; border-radius: 10px; background: #e5e7eb; }
.state-done { background: #d1fae5; } .state-failed { background: #fee2e2; } .state-cancelled { background: #fef3c7; }
.object-error { color: #b91c1c; font-weight: 600; }
.object-notes { color: #4b5563; font-size: 0.9em; }
#message .error { color: #b91c1c; font-weight: 600; }
"""


@dataclass(frozen=True)
class Banner:
    """Which model answers, shown at the top of the page so the tiny preset is never mistaken for the real models."""

    model_label: str
    weights: str | None
    """official, tiny or mock (None from an older worker)."""
    detail: str
    """The worker: backend, device, pid, how many objects it batches."""

    def html(self) -> str:
        label = html.escape(self.model_label)
        if self.weights == "official":
            return f'<div class="official">model: <b>{label}</b><br><small>{html.escape(self.detail)}</small></div>'
        warning = {
            "tiny": "RANDOM WEIGHTS (the tiny preset): the views and meshes are noise, not the official models'",
            "mock": "MOCK BACKEND: fake views and meshes for testing, no model at all",
        }.get(self.weights or "", "weights not reported by this worker: check the label")
        return (
            f'<div class="not-official" data-weights="{html.escape(self.weights or "unknown")}">'
            f"⚠ {warning}<br>model: {label}<br><small>{html.escape(self.detail)}</small></div>"
        )


def build_page(runner: ObjectRunner, banner: Banner) -> gr.Blocks:
    page = gr.Blocks(title="instantmesh-rpc", analytics_enabled=False)
    with page:
        gr.HTML(banner.html(), elem_id="model-label")
        with gr.Row():
            uploads = gr.File(
                label="images (drop several; NAME_mask.png dropped with NAME.png is its mask)",
                file_count="multiple",
                file_types=["image"],
                elem_id="uploads",
                scale=3,
            )
            with gr.Column(scale=2):
                with gr.Row():
                    steps = gr.Number(
                        DEFAULT_STEPS, label=FIELD_LABELS["num_inference_steps"], precision=0, elem_id="steps"
                    )
                    seed = gr.Number(DEFAULT_SEED, label=FIELD_LABELS["seed"], precision=0, elem_id="seed")
                    guidance = gr.Number(DEFAULT_GUIDANCE, label=FIELD_LABELS["guidance_scale"], elem_id="guidance")
                preprocess = gr.Checkbox(True, label="prepare the input (cut out, centre, scale)", elem_id="preprocess")
                formats = gr.CheckboxGroup(
                    list(EXTRA_FORMATS), value=list(EXTRA_FORMATS), label="meshes besides GLB", elem_id="formats"
                )
                make = gr.Button("Make meshes", variant="primary", elem_id="make")
        with gr.Row():
            message = gr.Markdown("", elem_id="message")
            clear = gr.Button("Clear finished", size="sm", scale=0, min_width=140, elem_id="clear")
        ids = gr.State([])
        shown = gr.State({})
        cards = [Card.make(slot) for slot in range(CARDS)]
        timer = gr.Timer(REFRESH_S)

        make.click(
            _submitter(runner),
            [uploads, steps, seed, guidance, preprocess, formats, ids],
            [ids, message, uploads],
            concurrency_limit=None,
        )
        for slot, card in enumerate(cards):
            card.cancel.click(_canceller(runner, slot), [ids], [message], concurrency_limit=None)
        clear.click(_clearer(runner), [ids], [ids, message], concurrency_limit=None)
        outputs = [component for card in cards for component in card.components()]
        timer.tick(
            _refresher(runner, cards), [ids, shown], [shown, *outputs], show_progress="hidden", concurrency_limit=None
        )
    return page


def _submitter(runner: ObjectRunner) -> Callable[..., tuple[Any, ...]]:
    def submit(
        files: Sequence[str] | None,
        steps: float | None,
        seed: float | None,
        guidance: float | None,
        preprocess: bool,
        formats: Sequence[str],
        ids: list[int],
    ) -> tuple[Any, ...]:
        """Queues every dropped image; a bad setting or too many objects start nothing and keep the drop."""
        if not files:
            return ids, _error("drop one or more images first"), gr.skip()
        try:
            options = view_options_of(
                seed=_required(seed, "seed"),
                num_inference_steps=_required(steps, "num_inference_steps"),
                guidance_scale=_required(guidance, "guidance_scale"),
            )
        except (InvalidParams, ValueError) as exc:
            return ids, _error(f"nothing started: {in_page_terms(exc)}"), gr.skip()
        chosen = [fmt for fmt in EXTRA_FORMATS if fmt in formats]
        pairs = pair_uploads(Path(file) for file in files)
        if len(ids) + len(pairs) > CARDS:
            room = CARDS - len(ids)
            return (
                ids,
                _error(
                    f"nothing started: this page shows {CARDS} objects at once and has room for {room} more; "
                    "'Clear finished' makes room"
                ),
                gr.skip(),
            )
        made = [runner.submit(image, mask, options, chosen, preprocess) for image, mask in pairs]
        return [*ids, *(item.id for item in made)], f"queued {', '.join(item.name for item in made)}", None

    return submit


def _canceller(runner: ObjectRunner, slot: int) -> Callable[[list[int]], str]:
    def cancel(ids: list[int]) -> str:
        item = runner.get(ids[slot]) if slot < len(ids) else None
        if item is None:
            return _error("no object in that place any more")
        if item.cancel():
            return f"cancelled {item.name}: its request was stopped in the worker, and none of its files is kept"
        return f"{item.name} had already finished ({item.snapshot().state})"

    return cancel


def _clearer(runner: ObjectRunner) -> Callable[[list[int]], tuple[list[int], str]]:
    def clear(ids: list[int]) -> tuple[list[int], str]:
        views = [(object_id, runner.get(object_id)) for object_id in ids]
        kept = [object_id for object_id, item in views if item is not None and item.snapshot().active]
        runner.forget(object_id for object_id in ids if object_id not in kept)
        gone = len(ids) - len(kept)
        return kept, f"cleared {gone} finished object(s); their files stay in {runner.out_dir}"

    return clear


def _refresher(runner: ObjectRunner, cards: list[Card]) -> Callable[..., list[Any]]:
    def refresh(ids: list[int], shown: dict[int, CardValues]) -> list[Any]:
        updates: list[Any] = []
        for slot, card in enumerate(cards):
            item = runner.get(ids[slot]) if slot < len(ids) else None
            now = card_values(item.snapshot() if item is not None else None)
            updates += card.updates(now, shown.get(slot))
            shown[slot] = now
        return [shown, *updates]

    return refresh


def _required(value: float | None, field: str) -> Any:
    if value is None:
        raise ValueError(f"{FIELD_LABELS[field]} is empty")
    return value


def in_page_terms(exc: Exception) -> str:
    """A refused option in the page's words: the field's label instead of its wire name, no JSON path."""
    detail = str(exc.data.get("detail", exc)) if isinstance(exc, InvalidParams) and exc.data else str(exc)
    found = re.match(r"(?P<why>.*) - at `\$\.(?P<field>\w+)`$", detail)
    if found is None:
        return detail
    why = (
        found["why"]
        .replace("Expected `int`", "expected a whole number")
        .replace("Expected `float`", "expected a number")
    )
    return f"{FIELD_LABELS.get(found['field'], found['field'])}: {why}"


def _error(text: str) -> str:
    return f'<span class="error">{html.escape(text)}</span>'
