"""The fault matrix's report: a rich table on the terminal, the same rows as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .evidence import Tally

JSON_PATH = Path(".backfill") / "chaos.json"


@dataclass(frozen=True)
class Result:
    """One row's outcome: its numbers (None if it could not run), what broke, a note."""

    key: str
    fault: str
    tally: Tally | None
    problems: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    note: str = ""
    error: str | None = None  # the row could not run to its end (its own failure)

    @property
    def ok(self) -> bool:
        return self.tally is not None and not self.problems and self.error is None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        return "ok" if self.ok else "FAIL"

    @property
    def why(self) -> str:
        """What broke, in one line (empty for a row that held)."""
        if self.error is not None:
            return self.error.splitlines()[0][:200]
        return "; ".join(self.problems)


def _cells(result: Result) -> list[str]:
    tally = result.tally
    if tally is None:
        return [result.fault, "-", "-", "-", "-", "-", "-", result.verdict]
    seconds = "deadline passed" if tally.seconds is None else f"{tally.seconds:.1f}s"
    numbers = (tally.tis, tally.redeliveries, tally.twice, tally.lost, tally.stale)
    return [result.fault, *map(str, numbers), seconds, result.verdict]


def table(results: list[Result], title: str) -> Table:
    grid = Table(title=title, show_lines=False)
    grid.add_column("fault", overflow="fold")
    for name in ("TIs", "redeliveries seen", "tries started twice", "TIs lost"):
        grid.add_column(name, justify="right")
    grid.add_column("stale writes refused", justify="right")
    grid.add_column("time to final state", justify="right")
    grid.add_column("verdict", overflow="fold")
    for result in results:
        style = None if result.ok else "bold red"
        grid.add_row(*_cells(result), style=style)
    return grid


def show(results: list[Result], title: str, console: Console) -> None:
    console.print(table(results, title))
    for result in results:
        if not result.ok:
            console.print(f"[bold red]{result.fault}: {result.verdict}: {result.why}[/bold red]")
    for result in results:
        if result.note:
            console.print(f"{result.fault}: {result.note}", style="dim")


def write_json(results: list[Result], path: Path, *, size: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "key": r.key,
            "fault": r.fault,
            **(asdict(r.tally) if r.tally else {}),
            "ok": r.ok,
            "verdict": r.verdict,
            "why": r.why,
            "problems": r.problems,
            "evidence": r.checks,
            "note": r.note,
            "error": r.error,
        }
        for r in results
    ]
    document = {"size": size, "ok": all(r.ok for r in results), "rows": rows}
    path.write_text(json.dumps(document, indent=2) + "\n")
