"""Names on the terminal and in the report (host/cli/display.py): shown, never obeyed; linked, never misread."""

from __future__ import annotations

import os

from host.cli.display import printable, printable_lines, url_path


def test_control_characters_are_escaped_and_plain_text_is_left_alone() -> None:
    assert printable("mug 1 (é) C:\\dir") == "mug 1 (é) C:\\dir"
    assert printable("esc\x1b[2J\rx\ty\n") == "esc\\x1b[2J\\rx\\ty\\n"
    assert printable("a\\b\x07") == "a\\\\b\\x07", "a backslash is doubled once escapes are shown"
    assert printable("ab\u202ecd\x9b") == "ab\\u202ecd\\x9b"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert printable_lines("one\x1b\ntwo") == "one\\x1b\ntwo"


def test_report_links_are_percent_encoded() -> None:
    assert url_path("report/we#ird ?:b\tx.glb.js") == "report/we%23ird%20%3F%3Ab%09x.glb.js"
    assert url_path("100%.png") == "100%25.png"
    assert url_path(os.fsdecode(b"caf\xe9.png")) == "caf%E9.png"
