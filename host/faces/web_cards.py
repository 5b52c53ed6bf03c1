"""One object's card on the page: its name and progress, the prepared input, the six views, the 3D view of its mesh,
the downloads and its Cancel button, as gradio components filled from the object's snapshot.

The page refreshes every card from a timer and sends a component only what changed since the last refresh: a mesh
sent again would reload the 3D view, and an image sent again would flicker.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .web_objects import VIEWER_FORMAT, ObjectView

CardValues = tuple[Any, ...]
"""What a card shows, field by field in the order of ``Card.components``; compared between refreshes."""

IMAGE_HEIGHT = 240
VIEWER_HEIGHT = 320
WHITE = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Card:
    """The components of one slot; hidden while no object fills it."""

    box: gr.Column
    header: gr.HTML
    shown_input: gr.Image
    views: gr.Image
    mesh: gr.Model3D
    downloads: gr.File
    cancel: gr.Button

    @classmethod
    def make(cls, slot: int) -> Card:
        """Lays the card out inside the Blocks being built."""
        with gr.Column(visible=False, elem_classes=["object-card"], elem_id=f"card-{slot}") as box:
            header = gr.HTML("", elem_classes=["object-header"])
            with gr.Row():
                shown_input = gr.Image(
                    None, label="prepared input", type="filepath", interactive=False, height=IMAGE_HEIGHT, scale=1
                )
                views = gr.Image(
                    None, label="six views", type="filepath", interactive=False, height=IMAGE_HEIGHT, scale=1
                )
                mesh = gr.Model3D(
                    None,
                    label=f"3D view ({VIEWER_FORMAT.upper()}; drag to turn)",
                    clear_color=WHITE,
                    height=VIEWER_HEIGHT,
                    interactive=False,
                    scale=2,
                    elem_classes=["object-mesh"],
                )
            with gr.Row():
                downloads = gr.File(
                    None, label="downloads", file_count="multiple", interactive=False, visible=False, scale=4
                )
                cancel = gr.Button("Cancel", variant="stop", size="sm", scale=1, elem_classes=["object-cancel"])
        return cls(box, header, shown_input, views, mesh, downloads, cancel)

    def components(self) -> list[Any]:
        return [self.box, self.header, self.shown_input, self.views, self.mesh, self.downloads, self.cancel]

    def updates(self, now: CardValues, before: CardValues | None) -> list[Any]:
        """An update for each component whose value changed since ``before``; gr.skip() for the others."""
        makers: tuple[Callable[[Any], Any], ...] = (
            lambda visible: gr.Column(visible=visible),
            lambda text: text,
            lambda path: path,
            lambda path: path,
            lambda path: path,
            lambda paths: gr.File(list(paths) or None, visible=bool(paths)),
            lambda active: gr.Button(visible=active),
        )
        return [
            make(value) if before is None or value != before[index] else gr.skip()
            for index, (make, value) in enumerate(zip(makers, now))  # both from card_values, one per component
        ]


def card_values(view: ObjectView | None) -> CardValues:
    """What the card shows of ``view`` (None: an empty slot), one value per component."""
    if view is None:
        return (False, "", None, None, None, (), False)
    meshes = dict(view.meshes)
    viewer = meshes.get(VIEWER_FORMAT)
    return (
        True,
        header_html(view),
        str(view.shown_input) if view.shown_input else None,
        str(view.grid) if view.grid else None,
        str(viewer) if viewer else None,
        tuple(str(path) for path in meshes.values()),
        view.active,
    )


def header_html(view: ObjectView) -> str:
    """The object's name, state, the stage running with its progress bar, notes and error; data-* for tests."""
    name = html.escape(view.name)
    parts = [
        f'<div class="object-status" data-id="{view.id}" data-name="{name}" data-state="{view.state}">',
        f'<span class="object-name">{name}</span> <span class="object-state state-{view.state}">{view.state}</span>',
    ]
    if view.stage:
        counted = f" {view.step}/{view.total}" if view.total else ""
        parts.append(f' <span class="object-stage">{html.escape(view.stage)}{counted}</span>')
    if view.active and view.total:
        parts.append(f' <progress value="{view.step}" max="{view.total}"></progress>')
    if view.notes:
        parts.append(f'<div class="object-notes">{" · ".join(html.escape(note) for note in view.notes)}</div>')
    if view.error:
        parts.append(f'<div class="object-error">{html.escape(view.error)}</div>')
    return "".join(parts) + "</div>"
