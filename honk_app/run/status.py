"""What Honk writes on GitHub, rendered for a phone screen.

The first line of every comment says the outcome; details sit in collapsed `<details>`;
no wide tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from honk_app.models import CheckResult

MARKER = "<!-- honk:status -->"
MAX_STEPS_SHOWN = 40


@dataclass
class Stats:
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    started_at: float = field(default_factory=time.time)

    @property
    def seconds(self) -> float:
        return time.time() - self.started_at

    def line(self) -> str:
        tokens = self.input_tokens + self.output_tokens
        return (
            f"{self.turns} turns · {_tokens(tokens)} tokens · ${self.cost_usd:.2f} · "
            f"{_duration(self.seconds)}"
        )


@dataclass
class StatusComment:
    """The one comment Honk keeps editing while a run goes on."""

    run_id: int
    stats: Stats
    run_url: str | None = None
    steps: list[tuple[float, str]] = field(default_factory=list)
    current: str = "starting"

    def step(self, text: str) -> None:
        self.current = text
        self.steps.append((time.time(), text))

    def working(self) -> str:
        return self._render(f"👀 **Honk is working on this**: {self.current}",
                            " · comment <code>/honk stop</code> to cancel")

    def done(self, headline: str) -> str:
        return self._render(f"🚀 {headline}")

    def stopped(self, headline: str) -> str:
        return self._render(f"✋ {headline}")

    def failed(self, sentence: str) -> str:
        return self._render(f"😕 **Honk stopped**: {sentence}")

    def _render(self, headline: str, footer: str = "") -> str:
        start = self.stats.started_at
        lines = "\n".join(f"- `+{_duration(at - start)}` {text}"
                          for at, text in self.steps[-MAX_STEPS_SHOWN:])
        run = f"[run {self.run_id}]({self.run_url})" if self.run_url else f"run {self.run_id}"
        return (
            f"{headline}\n\n{self.stats.line()}\n\n"
            f"<details><summary>Steps</summary>\n\n{lines}\n\n</details>\n\n"
            f"<sub>{run}{footer}</sub>\n{MARKER}\n{run_marker(self.run_id)}"
        )


def run_marker(run_id: int) -> str:
    """Hidden in the run's status comment: how a retry finds the comment it may have made."""
    return f"<!-- honk:run:{run_id} -->"


def reply_marker(run_id: int, comment_id: int) -> str:
    """Hidden in each review reply: how a retry finds the reply it may have made."""
    return f"<!-- honk:reply:{run_id}:{comment_id} -->"


def pr_body(
    *,
    issue: int | None,
    summary: str,
    checks: list[CheckResult],
    stats: Stats,
    requested_by: str,
    notes: list[str],
) -> str:
    """The pull request's description: what changed and why, checks, cost."""
    parts = []
    if issue is not None:
        parts.append(f"Fixes #{issue}")
    parts.append(summary.strip())
    if notes:
        parts.append("\n".join(f"> [!NOTE]\n> {note}" for note in notes))
    parts.append(checks_section(checks))
    parts.append(f"Requested by @{requested_by} · {stats.line()}")
    return "\n\n".join(part for part in parts if part)


def checks_section(checks: list[CheckResult]) -> str:
    if not checks:
        return "**Checks:** none configured (add `checks:` to `.github/honk.yml`)."
    passed = sum(check.passed for check in checks)
    verdict = "✅ all passed" if passed == len(checks) else f"❌ {len(checks) - passed} failed"
    details = "\n\n".join(
        f"`{check.command}` → exit {check.exit_code}\n\n```\n{_tail(check.output)}\n```"
        for check in checks
    )
    return (
        f"**Checks:** {verdict}\n\n<details><summary>Check output</summary>\n\n"
        f"{details}\n\n</details>"
    )


def _tail(text: str, limit: int = 3000) -> str:
    text = text.replace("```", "ʼʼʼ")
    return text if len(text) <= limit else "…\n" + text[-limit:]


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m {seconds:02d}s"


def _tokens(count: int) -> str:
    return f"{count / 1000:.1f}k" if count >= 1000 else str(count)
