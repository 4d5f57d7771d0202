"""What clients wrote is shown as typed, less what could forge or hide text."""

from __future__ import annotations

import io
from uuid import uuid4

from rich.console import Console

from application.timeline import TimelineEntry
from interfaces.cli.audit import timeline_table
from interfaces.printable import printable
from tests.unit.helpers import T0


def test_control_and_format_characters_are_dropped_and_the_rest_kept() -> None:
    assert printable("Mozilla/5.0 (X11; Linux) ünïcødé [b]") == (
        "Mozilla/5.0 (X11; Linux) ünïcødé [b]"
    )
    assert printable("a\x00b\x1bc\x85d\u202ee\u200bf\x7fg") == "abcdefg"


def test_a_stored_hostile_entry_prints_as_plain_text() -> None:
    # Given: an entry stored before agents were cleaned at the edge
    hostile = "[link=https://evil.example]x[/link] [/nope] \x85row \u202eevil \x1b[2J"
    entry = TimelineEntry(T0, "login_failed", uuid4(), "203.0.113.9", hostile, "")
    out = io.StringIO()

    # When: it is printed to a terminal that understands colours and links
    Console(file=out, width=300, force_terminal=True).print(timeline_table([entry]))

    # Then: the markup is literal text, and no control character reaches it
    shown = out.getvalue()
    assert "[link=https://evil.example]x[/link] [/nope] row evil [2J" in shown
    assert "\x1b]8;" not in shown  # no hyperlink
    assert not {"\x85", "\u202e"} & set(shown)
