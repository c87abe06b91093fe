"""What Honk writes on GitHub, rendered for a phone screen.

The first line of every comment says the outcome; details sit in collapsed `<details>`;
no wide tables. `StatusUpdater` keeps the one status comment of a run true on GitHub;
`RunProgress` is what making the change reports through (steps, and each turn's spend).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import structlog

from honk_app.agent.loop import Usage
from honk_app.github.client import GitHubError, RepoGitHub
from honk_app.models import CheckResult, Run
from honk_app.store.runs import RunStore

log = structlog.get_logger()

MARKER = "<!-- honk:status -->"
MAX_STEPS_SHOWN = 40
STATUS_EDIT_INTERVAL_SECONDS = 3.0
# After a mid-run edit GitHub refused, the next ones wait this long (no hammering).
STATUS_QUIET_SECONDS = 15.0


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


class StatusUpdater:
    """Posts the status comment once, then edits it in place (at most every few seconds).

    Reporting never ends a run: an edit GitHub does not take is logged, and the next one
    carries the newest text (creating the comment, if that is what failed)."""

    def __init__(self, gh: RepoGitHub, store: RunStore, run: Run, comment: StatusComment) -> None:
        self.gh = gh
        self.store = store
        self.run = run
        self.comment = comment
        self._last_edit = 0.0
        self._quiet_until = 0.0
        self.last_error: GitHubError | None = None

    async def show(self, text: str, *, force: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._last_edit < STATUS_EDIT_INTERVAL_SECONDS:
            return
        if loop.time() < self._quiet_until:
            return  # the next edit after the pause carries the newest text
        self._last_edit = loop.time()
        if not await self.deliver(text, quick=True):
            self._quiet_until = loop.time() + STATUS_QUIET_SECONDS

    async def deliver(self, text: str, *, quick: bool = False) -> bool:
        """Put `text` in the status comment; False if GitHub did not take it."""
        try:
            await self._send(text, quick=quick)
        except GitHubError as error:
            log.warning("status comment not updated", run_id=self.run.id, error=str(error))
            self.last_error = error
            return False
        return True

    async def _send(self, text: str, *, quick: bool) -> None:
        if self.run.status_comment_id is not None:
            try:
                await self.gh.edit_comment(self.run.status_comment_id, text, quick=quick)
                return
            except GitHubError as error:
                if error.status != 404:
                    raise
                self.run.status_comment_id = None  # someone deleted it: post a new one
        # The marker lets a retry whose first answer was lost find the comment it made.
        self.run.status_comment_id = await self.gh.comment(
            self.run.number, text, marker=run_marker(self.run.id), quick=quick
        )
        await self.store.update(self.run.id, status_comment_id=self.run.status_comment_id)

    async def finish(self, text: str) -> None:
        """The final state: if GitHub does not take it now, it is owed and re-sent later."""
        if not await self.deliver(text):
            await self.store.owe_status(self.run.id, text)

    async def step(self, text: str, *, force: bool = True) -> None:
        self.comment.step(text)
        await self.show(self.comment.working(), force=force)


class RunProgress:
    """What making the change tells the run (`run.change.Progress`): each step goes to the
    status comment; each turn's spend to the comment's numbers and to the store."""

    def __init__(self, run: Run, store: RunStore, status: StatusUpdater) -> None:
        self.run = run
        self.store = store
        self.status = status
        self.stats = status.comment.stats
        # A resumed run (its worker died) carries on counting from what was already spent.
        self._base = replace(self.stats)

    async def step(self, text: str, *, force: bool = True) -> None:
        await self.status.step(text, force=force)

    async def turn(self, usage: Usage, line: str) -> None:
        stats, base = self.stats, self._base
        stats.turns = base.turns + usage.turns
        stats.input_tokens = base.input_tokens + (
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        )
        stats.output_tokens = base.output_tokens + usage.output_tokens
        stats.cost_usd = base.cost_usd + usage.cost_usd
        await self.store.update(self.run.id, turns=stats.turns, input_tokens=stats.input_tokens,
                                output_tokens=stats.output_tokens, cost_usd=stats.cost_usd)
        await self.status.step(f"turn {stats.turns}: {line}", force=False)
