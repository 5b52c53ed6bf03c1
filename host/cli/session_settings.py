"""The session's setting commands (``steps``, ``seed``, ``format``, ``out``, ``sheet``, ``preprocess``).

Each changes the session's `Settings` for the objects typed next and answers one line; a bad value changes
nothing and the line says what is accepted. Ranges are the wire's declared ones, so the session refuses what
the worker would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rpcworker.wire.messages import MESH_FORMATS, SEED_RANGE, STEPS_RANGE

from ..api.options import mesh_options_of, view_options_of
from .display import shown
from .objects import Settings
from .out_files import remove_killed_hosts_files


def _view_number(field: str, name: str, bounds: tuple[int, int]) -> Callable[[Settings, str], str]:
    low, high = bounds

    def change(settings: Settings, value: str) -> str:
        try:
            number = int(value)
        except ValueError:
            return f"usage: {name} N (a whole number from {low})"
        if not low <= number <= high:
            return f"{name} must be between {low} and {high}"
        settings.views = view_options_of(settings.views, **{field: number})
        return f"{name} = {number}"

    return change


def _on_off(attribute: str, name: str) -> Callable[[Settings, str], str]:
    def change(settings: Settings, value: str) -> str:
        if value.lower() not in ("on", "off"):
            return f"usage: {name} on|off"
        setattr(settings, attribute, value.lower() == "on")
        return f"{name} {value.lower()}"

    return change


def _format(settings: Settings, value: str) -> str:
    if value.lower() not in MESH_FORMATS:
        return f"usage: format {'|'.join(MESH_FORMATS)}"
    settings.mesh = mesh_options_of(settings.mesh, format=value.lower())
    return f"format = {settings.format}"


def _out(settings: Settings, value: str) -> str:
    if not value:
        return f"output folder: {shown(settings.out_dir)}"
    target = Path(os.path.expanduser(value)).resolve()
    if os.path.exists(target) and not os.path.isdir(target):
        return f"{target} exists and is not a folder"
    try:
        os.fspath(target).encode("utf-8")
    except UnicodeEncodeError:
        return f"{target} is not a valid UTF-8 name, which the worker's replies could not carry"
    settings.out_dir = target
    remove_killed_hosts_files(target)  # as at start (check_output_dir)
    return f"output folder = {shown(target)}"


SETTING_COMMANDS: dict[str, Callable[[Settings, str], str]] = {
    "steps": _view_number("num_inference_steps", "steps", STEPS_RANGE),
    "seed": _view_number("seed", "seed", SEED_RANGE),
    "format": _format,
    "out": _out,
    "sheet": _on_off("contact_sheet", "sheet"),
    "preprocess": _on_off("preprocess", "preprocess"),
}
"""Command word -> the change it makes; the answer is the line the session shows."""
