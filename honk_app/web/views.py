"""Runs as a person reads them: in a terminal table or as JSON lines (`honk runs`), and
the durations and times the runs pages show too."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from honk_app.models import Run, RunKind

COLUMNS = ("run", "state", "outcome", "repository", "#", "kind", "asked by", "turns", "cost",
           "duration", "pr", "created")
RIGHT_ALIGNED = {"run", "#", "turns", "cost", "duration", "pr"}


def run_record(run: Run) -> dict[str, Any]:
    """The fields a script needs, under stable names."""
    seconds = run_seconds(run)
    return {
        "id": run.id,
        "delivery_id": run.delivery_id,
        "repository": run.repo,
        "number": run.number,
        "kind": run.kind,
        "state": run.state,
        "outcome": run.outcome,
        "pr_number": run.pr_number,
        "cost_usd": round(run.cost_usd, 6),
        "seconds": None if seconds is None else round(seconds, 3),
    }


def table(runs: Sequence[Run]) -> str:
    rows = [
        (
            str(run.id),
            run.state,
            run.outcome or "",
            run.repo,
            str(run.number) if run.kind != RunKind.LABELS else "",
            run.kind,
            run.sender,
            str(run.turns),
            f"${run.cost_usd:.2f}",
            duration_text(run_seconds(run)),
            f"#{run.pr_number}" if run.pr_number else "",
            when(run.created_at),
        )
        for run in runs
    ]
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=False)]
    lines = []
    for row in (COLUMNS, *rows):
        cells = [
            cell.rjust(width) if name in RIGHT_ALIGNED else cell.ljust(width)
            for name, cell, width in zip(COLUMNS, row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run_seconds(run: Run, *, now: float | None = None) -> float | None:
    """Wall time from claim to end (to now while it runs); None if it never started."""
    if run.started_at is None:
        return None
    end = run.finished_at or (now if now is not None else time.time())
    return max(0.0, end - run.started_at)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m {seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:02.0f}m"


def when(timestamp: float, *, seconds: bool = False) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"
