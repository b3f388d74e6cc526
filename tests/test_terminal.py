"""What a run shows on the terminal: progress while it builds, and a short end (reasons are in the report)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from conformance import progress


@dataclass
class FakeTerminal:
    isatty: bool
    lines: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)

    def write_line(self, line: str) -> None:
        self.lines.append(line)

    def rewrite(self, line: str, erase: bool = False) -> None:
        self.rewrites.append(line)


def build(terminal: FakeTerminal, total: int, every: float = 10.0) -> None:
    with (
        progress.reporting(progress.TerminalProgress(terminal, every=every)),
        progress.task("export (x)", total, "2 cached") as task,
    ):
        for i in range(total):
            task.step(f"case-{i}")


def test_a_tty_rewrites_one_line_with_what_i_of_n_and_elapsed() -> None:
    terminal = FakeTerminal(isatty=True)
    build(terminal, 3)
    assert terminal.lines[0] == "export (x): 3 to build (2 cached)"
    assert [r.split()[2] for r in terminal.rewrites[:3]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert terminal.rewrites[1].endswith("case-1") and " s  " in terminal.rewrites[1]
    assert terminal.rewrites[-1].startswith("export (x): 3 of 3 built in")


def test_a_log_gets_a_line_every_so_often_and_the_total() -> None:
    quiet, chatty = FakeTerminal(isatty=False), FakeTerminal(isatty=False)
    build(quiet, 50, every=3600)
    build(chatty, 3, every=0)
    assert len(quiet.lines) == 2 and quiet.lines[-1].startswith("export (x): 50 of 50 built in")
    assert len(chatty.lines) == 4  # start, two steps (the last step is the total line), total
    assert not quiet.rewrites and not chatty.rewrites


def test_without_a_reporter_a_task_prints_nothing() -> None:
    with progress.task("export (x)", 3) as task:
        task.step("a")
    assert task.task.done == 1


@pytest.mark.e2e
def test_a_run_shows_its_progress_and_ends_short(suite) -> None:
    args = ("--tier", "pairwise", "--backend-module", "building_backends:backends", "--backends", "building")
    run = suite(*args)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "build (building): " in run.stdout and " built in " in run.stdout
    assert "SKIPPED" not in run.stdout and "refused on purpose" not in run.stdout  # reasons: in the report
    assert "reasons for xfailed and skipped checks: in the report" in run.stdout
    assert len(run.stdout.splitlines()) < 30  # one screen
    full = suite(*args, "-ra")
    assert "SKIPPED" in full.stdout and "refused on purpose" in full.stdout  # -ra still gives everything
