"""`honk runs`: the runs in a terminal table, or one JSON object per run for scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from honk_app.models import Run, RunKind
from honk_app.settings import Settings
from honk_app.web.runs_pages import duration_text, run_seconds, when
from honk_app.workers.backend import open_backend

COLUMNS = ("run", "state", "outcome", "repository", "#", "kind", "asked by", "turns", "cost",
           "duration", "pr", "created")
RIGHT_ALIGNED = {"run", "#", "turns", "cost", "duration", "pr"}


async def newest_runs(settings: Settings, *, limit: int) -> list[Run]:
    """The newest runs on SQLite or PostgreSQL, whichever DATABASE_URL names."""
    backend = open_backend(settings)
    await backend.start(wait=False)
    try:
        return await backend.store.of_repos(None, limit=limit)
    finally:
        await backend.close()


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
