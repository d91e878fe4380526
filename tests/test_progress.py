"""Progress lines of long work (prescore.progress): golden lines on a stepped clock."""

from __future__ import annotations

import io
import os
import sys

import pytest

from prescore.progress import Progress, duration
from tests.helpers import ROOT, on_terminal


def test_lines_say_done_of_total_rate_and_time_left_at_most_every_period() -> None:
    now = [100.0]
    said: list[str] = []
    p = Progress("reco v1", 1_000_000, said.append, every_s=5.0, clock=lambda: now[0])
    now[0] += 2.0
    p.add(50_000)  # under the period: nothing said
    now[0] += 3.0
    p.add(50_000)
    now[0] += 5.0
    p.add(400_000)
    assert said == [
        "  reco v1: 100,000 of 1,000,000 rows (10%), 20,000 rows/s, about 45s left",
        "  reco v1: 500,000 of 1,000,000 rows (50%), 50,000 rows/s, about 10s left",
    ]
    unknown = Progress("scan", 0, said.append, unit="files", every_s=0.0, clock=lambda: now[0])
    now[0] += 4.0
    unknown.add(8)
    assert said[-1] == "  scan: 8 files, 2 files/s"


def test_durations_read_as_a_person_reads_them() -> None:
    assert [duration(s) for s in (0.4, 45, 185, 7_620, 90_061)] == [
        "0s",
        "45s",
        "3m 05s",
        "2h 07m",
        "25h 01m",
    ]


@pytest.mark.skipif(bool(os.environ.get("TQDM_DISABLE")), reason="TQDM_DISABLE is set")
def test_given_a_terminal_it_draws_one_bar_there_and_says_no_lines() -> None:
    said: list[str] = []
    screen = io.StringIO()
    with Progress("reco v1", 2_000, said.append, every_s=0.0, bar=screen) as p:
        for _ in range(4):
            p.add(500)
    drawn = screen.getvalue()
    assert said == []  # the bar stands for the lines
    assert "\r" in drawn  # redrawn in place
    last = drawn.rstrip("\n").split("\r")[-1]
    assert last.startswith("  reco v1: 100%") and "2.00k/2.00k" in last and " rows/s" in last


@pytest.mark.skipif(bool(os.environ.get("TQDM_DISABLE")), reason="TQDM_DISABLE is set")
def test_a_commands_line_said_while_its_bar_is_drawn_lifts_the_bar_first() -> None:
    """The operator CLI's ``say`` beside its bar, both on a terminal (a pty): a line said
    mid-bar (as a lease's warning is, from its own thread) starts on a cleared line and is
    followed by the bar drawn again, never glued to the bar's text."""
    script = (
        "import argparse\n"
        "from prescore.cli.output import bar, say\n"
        "from prescore.progress import Progress\n"
        "args = argparse.Namespace(output='table')\n"
        "tell = say(args)\n"
        "with Progress('reco v1', 100, tell, every_s=0.0, bar=bar(args)) as p:\n"
        "    p.add(50)\n"
        "    tell('reco v1: lease not renewed; retrying')\n"
        "    p.add(50)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    rc, screen, _ = on_terminal([sys.executable, "-c", script], env, stdout_too=True)
    assert rc == 0, screen
    before, line, after = screen.partition("reco v1: lease not renewed; retrying")
    assert line and "%|" in before and "100%" in after, screen  # a bar, then the line
    assert before.endswith("\r"), repr(before[-40:])  # the bar lifted off the line first
    assert after.startswith(("\r\n", "\n")), repr(after[:40])
