"""Two small inline SVG charts for the runs page: runs per day by outcome, cost per day.

Plain SVG with a `<title>` on every bar (the browser shows it on hover); no script.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape

from honk_app.models import ACTIVE_STATES, Outcome, Run, RunState

# Outcome groups in stacking order (bottom first), with their colours.
GROUPS: dict[str, str] = {
    "success": "#2da44e",
    "failed": "#cf222e",
    "other": "#bf8700",
    "stopped": "#8c959f",
    "in flight": "#0969da",
}
WIDTH, HEIGHT = 640, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22


@dataclass
class Day:
    day: date
    counts: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def group_of(run: Run) -> str:
    if run.state in ACTIVE_STATES:
        return "in flight"
    if run.state == RunState.CANCELLED:
        return "stopped"
    if run.state == RunState.FAILED:
        return "failed"
    return "success" if run.outcome == Outcome.SUCCESS else "other"


def per_day(runs: Iterable[Run], *, days: int, today: date) -> list[Day]:
    """One entry per calendar day (UTC) of the last `days`, oldest first, by creation time."""
    first = today - timedelta(days=days - 1)
    table = [Day(first + timedelta(days=offset)) for offset in range(days)]
    for run in runs:
        created = datetime.fromtimestamp(run.created_at, UTC).date()
        if not first <= created <= today:
            continue
        entry = table[(created - first).days]
        group = group_of(run)
        entry.counts[group] = entry.counts.get(group, 0) + 1
        entry.cost_usd += run.cost_usd
    return table


def runs_chart(days: list[Day]) -> str:
    top = max((day.total for day in days), default=0)
    scale = _scale(top)
    bars = []
    for index, day in enumerate(days):
        x, width = _slot(index, len(days))
        y = HEIGHT - BOTTOM
        for group, colour in GROUPS.items():
            count = day.counts.get(group, 0)
            if not count:
                continue
            height = count * scale
            y -= height
            bars.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{day.day.isoformat()}: {count} {group}</title></rect>'
            )
    legend = " ".join(
        f'<tspan fill="{colour}">■</tspan> {escape(group)}' for group, colour in GROUPS.items()
    )
    return _svg(
        "Runs per day by outcome",
        bars,
        axis=f"{top} runs" if top else "no runs",
        legend=legend,
        days=days,
    )


def cost_chart(days: list[Day]) -> str:
    top = max((day.cost_usd for day in days), default=0.0)
    scale = (HEIGHT - TOP - BOTTOM) / top if top else 0.0
    bars = []
    for index, day in enumerate(days):
        if not day.cost_usd:
            continue
        x, width = _slot(index, len(days))
        height = day.cost_usd * scale
        bars.append(
            f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - height:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}" fill="#8250df"><title>{day.day.isoformat()}: '
            f"${day.cost_usd:.2f}</title></rect>"
        )
    return _svg("Model cost per day", bars, axis=f"${top:.2f}", legend="", days=days)


def _scale(top: int) -> float:
    return (HEIGHT - TOP - BOTTOM) / top if top else 0.0


def _slot(index: int, count: int) -> tuple[float, float]:
    step = (WIDTH - LEFT - RIGHT) / max(count, 1)
    return LEFT + index * step + step * 0.15, step * 0.7


def _svg(title: str, bars: list[str], *, axis: str, legend: str, days: list[Day]) -> str:
    baseline = HEIGHT - BOTTOM
    first = days[0].day.isoformat() if days else ""
    last = days[-1].day.isoformat() if days else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" class="chart">'
        f"<title>{escape(title)}</title>"
        f'<line x1="{LEFT}" y1="{baseline}" x2="{WIDTH - RIGHT}" y2="{baseline}" '
        f'stroke="#d0d7de"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10">{escape(axis)}'
        f"</text>"
        f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="10">{first}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" font-size="10">{last}'
        f"</text>"
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="10">'
        f"{legend}</text>"
        + "".join(bars)
        + "</svg>"
    )
