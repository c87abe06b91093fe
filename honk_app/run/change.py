"""Making the change in a workspace: repository config, setup, the agent, checks, commit.

Checks are the repository's own commands from `.github/honk.yml`; their failures go back
to the agent for a bounded number of rounds. A change whose checks stay red is not
"ready": the caller opens it as a draft.

What steers the run (`.github/honk.yml`, its setup commands, AGENTS.md / CLAUDE.md) is
read from the base commit's git objects, never from the working tree: the run's own
branch holds what an earlier agent wrote, and the tree may hold links to host files.

One deadline covers setup, the agent, the checks and their rounds (`timeout_minutes`,
under the operator's cap). Each command's timeout is its own cap or the time left,
whichever is less. Past the deadline nothing new starts: setup cut short fails the run;
the agent or checks cut short leave the work so far to be committed, as a draft.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from anthropic import AsyncAnthropic

from honk_app import metrics
from honk_app.agent.loop import Agent, AgentAPIError, AgentResult, Budget, TurnUsage, Usage
from honk_app.agent.prompts import checks_failed_prompt, system_prompt, task_prompt
from honk_app.models import BRANCH_PREFIX, Change, CheckResult, Outcome
from honk_app.sandbox.bubblewrap import TIMEOUT_EXIT_CODE, Sandbox, SandboxUnavailable
from honk_app.sandbox.factory import agent_sandbox
from honk_app.sandbox.tools import AgentTools
from honk_app.settings import (
    REPO_CONFIG_PATH,
    EffectiveLimits,
    RepoConfig,
    RepoConfigError,
    Settings,
    effective_limits,
    parse_repo_config,
)
from honk_app.workspace.checkout import NotAFile, Workspace

log = structlog.get_logger()

INSTRUCTION_FILES = ("AGENTS.md", "CLAUDE.md")
STEERING_FILES = (REPO_CONFIG_PATH, *INSTRUCTION_FILES)
MAX_INSTRUCTION_CHARS = 20_000
MAX_CONFIG_BYTES = 64 * 1024
SETUP_TIMEOUT_SECONDS = 15 * 60.0
CHECK_TIMEOUT_SECONDS = 5 * 60.0
AGENT_WORK = "the agent's work"


class RunFailed(Exception):
    """The run cannot go on; the message is one sentence for the status comment."""

    def __init__(self, outcome: Outcome, sentence: str) -> None:
        super().__init__(sentence)
        self.outcome = outcome


class Deadline:
    """The one time budget of a run: setup, the agent, checks and their rounds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._ends_at - time.monotonic())

    @property
    def passed(self) -> bool:
        return self.left() <= 0

    def cap(self, seconds: float) -> float:
        """A command's timeout: its own cap, or the time left if that is less."""
        return min(seconds, self.left())

    def ran_out(self, during: str) -> str:
        return f"the run's time budget of {_duration(self.seconds)} ran out during {during}"


class Progress(Protocol):
    """What making a change tells the run as it goes: each step, and each turn's spend
    (`line`: what the agent did, redacted). The run decides where that goes."""

    async def step(self, text: str, *, force: bool = True) -> None: ...

    async def turn(self, usage: Usage, line: str) -> None: ...


@dataclass(frozen=True)
class ChangeRequest:
    """What to change, for whom, and as whom to commit: values, not GitHub or the store."""

    repo: str
    number: int
    title: str
    body: str
    requested_by: str  # a login: the commit's co-author
    instruction: str | None
    author_name: str  # the App's bot, who commits
    author_email: str
    transcript: Path  # where the agent's transcript is written, after every step
    prompt: str | None = None  # a follow-up's prompt; None: the task prompt from the rest
    require_change: bool = True


async def make_change(
    settings: Settings,
    workspace: Workspace,
    model: AsyncAnthropic | None,
    progress: Progress,
    request: ChangeRequest,
    *,
    redact: Callable[[str], str],
) -> Change:
    """Run the agent until it reports and the checks pass (or the rounds or the time run
    out); commit. Touches neither GitHub nor the store: the caller pushes and records."""
    config = await _repo_config(workspace)
    try:
        limits = effective_limits(settings, config)
    except RepoConfigError as error:
        raise RunFailed(Outcome.BAD_CONFIG, str(error)) from None
    deadline = Deadline(limits.timeout_seconds)
    sandbox = _sandbox(settings, workspace, network=False)
    if config.setup:
        await _setup(config, _sandbox(settings, workspace, network=limits.network), progress,
                     deadline)
    instructions = await _instructions(workspace)
    agent = _agent(model, sandbox, config, limits, progress, instructions, deadline,
                   transcript=request.transcript, redact=redact)
    await progress.step(f"working with {limits.model}")
    prompt = request.prompt
    if prompt is None:
        prompt = task_prompt(
            repo=request.repo,
            number=request.number,
            title=request.title,
            body=request.body,
            instruction=request.instruction,
            requested_by=request.requested_by,
        )
    result = await _converse(agent, agent.run(prompt), deadline)
    checks = await _run_checks(config, sandbox, progress, deadline)
    for _ in range(limits.check_rounds):
        if result.report is None or all(check.passed for check in checks) or deadline.passed:
            break
        await progress.step("checks failed; the agent is fixing them")
        result = await _converse(
            agent,
            agent.follow_up(
                checks_failed_prompt(
                    [(check.command, check.exit_code, check.output) for check in checks]
                )
            ),
            deadline,
        )
        checks = await _run_checks(config, sandbox, progress, deadline)
    change = await _commit(result, checks, request, workspace, progress, redact=redact)
    if deadline.passed and not change.ready:
        change.out_of_time = deadline.ran_out(
            "the checks" if result.report is not None else AGENT_WORK)
        change.notes.append(f"{_capitalized(change.out_of_time)}; this is the work done by "
                            "then.")
    steering = [path for path in await workspace.changed_paths() if path in STEERING_FILES]
    if steering:
        listed = ", ".join(f"`{path}`" for path in steering)
        change.notes.append(f"This change edits {listed}, which steer Honk's runs once merged "
                            "(its setup commands, checks, model and instructions): review "
                            "them as code.")
    return change


async def _repo_config(workspace: Workspace) -> RepoConfig:
    """`.github/honk.yml` as the base branch has it (not as the agent may have left it)."""
    if workspace.base_branch.startswith(BRANCH_PREFIX):
        # A pull request stacked on one of Honk's branches: that base is agent-written.
        raise RunFailed(Outcome.AGENT_BASE, "This pull request's base is "
                        f"`{workspace.base_branch}`, a branch Honk writes, and Honk takes its "
                        "configuration only from "
                        "branches people write; retarget it and comment `/honk` again.")
    where = f"{REPO_CONFIG_PATH} on `{workspace.base_branch}`"
    try:
        data = await workspace.read_base_file(REPO_CONFIG_PATH, max_bytes=MAX_CONFIG_BYTES)
    except NotAFile as error:
        raise RunFailed(Outcome.BAD_CONFIG, f"{where} is {error.kind}; Honk reads its "
                        "configuration only from a regular file.") from None
    if data is not None and len(data) > MAX_CONFIG_BYTES:
        raise RunFailed(Outcome.BAD_CONFIG, f"{where} is over {MAX_CONFIG_BYTES // 1024} KiB.")
    try:
        text = data.decode() if data is not None else None
    except UnicodeDecodeError:
        raise RunFailed(Outcome.BAD_CONFIG, f"{where} cannot be read as UTF-8 text.") from None
    try:
        return parse_repo_config(text)
    except RepoConfigError as error:
        raise RunFailed(Outcome.BAD_CONFIG, str(error)) from None


def _sandbox(settings: Settings, workspace: Workspace, *, network: bool) -> Sandbox:
    try:
        # Read-only git (status, diff, log) works inside; nothing under .git is writable.
        return agent_sandbox(settings, workspace.path,
                             (workspace.common_dir, workspace.git_dir), network=network)
    except SandboxUnavailable as error:
        raise RunFailed(Outcome.NO_SANDBOX, str(error)) from None


async def _setup(
    config: RepoConfig, sandbox: Sandbox, progress: Progress, deadline: Deadline
) -> None:
    for command in config.setup:
        if deadline.passed:
            raise RunFailed(Outcome.TIMED_OUT,
                            _setup_ran_out(deadline, f"setup, before `{command}`"))
        await progress.step(f"setup: `{command}`")
        result = await sandbox.run(command, timeout=deadline.cap(SETUP_TIMEOUT_SECONDS))
        if result.timed_out and deadline.passed:
            raise RunFailed(Outcome.TIMED_OUT,
                            _setup_ran_out(deadline, f"the setup command `{command}`"))
        if result.exit_code != 0:
            how = (f"timed out after {_duration(SETUP_TIMEOUT_SECONDS)}" if result.timed_out
                   else f"failed with exit code {result.exit_code}")
            raise RunFailed(
                Outcome.SETUP_FAILED,
                f"The setup command `{command}` {how}; Honk did not start the agent.",
            )
    if deadline.passed:
        raise RunFailed(Outcome.TIMED_OUT, _setup_ran_out(deadline, "setup"))


def _setup_ran_out(deadline: Deadline, during: str) -> str:
    return (f"{_capitalized(deadline.ran_out(during))}; Honk did not start the agent and "
            "pushed nothing.")


def _agent(
    model: AsyncAnthropic | None,
    sandbox: Sandbox,
    config: RepoConfig,
    limits: EffectiveLimits,
    progress: Progress,
    instructions: str | None,
    deadline: Deadline,
    *,
    transcript: Path,
    redact: Callable[[str], str],
) -> Agent:
    if model is None:
        raise RunFailed(Outcome.NO_MODEL,
                        "Honk has no ANTHROPIC_API_KEY; the operator must set it.")

    async def on_turn(usage: Usage, line: str) -> None:
        await progress.turn(usage, redact(line))
        _count_usage(limits.model, usage.per_turn[-1])

    transcript.parent.mkdir(parents=True, exist_ok=True)
    return Agent(
        model,
        model=limits.model,
        system=system_prompt(instructions, config.instructions),
        tools=AgentTools(sandbox, sandbox.workspace),
        budget=Budget(
            max_turns=limits.max_turns,
            max_cost_usd=limits.max_cost_usd,
            # Whole seconds, as the agent reports them; the run's deadline is kept in
            # _converse, since the agent's budget does not count the checks between rounds.
            timeout_seconds=float(int(deadline.left())),
        ),
        on_turn=on_turn,
        transcript_path=transcript,
        on_wait=lambda line: progress.step(line),
    )


def _count_usage(model: str, turn: TurnUsage) -> None:
    """Prometheus: tokens by kind and dollars, per model, as each turn reports them."""
    for kind, count in (
        ("input", turn.input_tokens),
        ("output", turn.output_tokens),
        ("cache_read", turn.cache_read_input_tokens),
        ("cache_write", turn.cache_creation_input_tokens),
    ):
        metrics.TOKENS.labels(model=model, kind=kind).inc(count)
    metrics.COST.labels(model=model).inc(turn.cost_usd)


async def _instructions(workspace: Workspace) -> str | None:
    """AGENTS.md / CLAUDE.md at the root of the base commit, if they are regular files
    there (a link, e.g. CLAUDE.md -> AGENTS.md, is skipped: the file it names is read)."""
    texts = []
    for name in INSTRUCTION_FILES:
        try:
            data = await workspace.read_base_file(name, max_bytes=4 * MAX_INSTRUCTION_CHARS)
        except NotAFile as error:
            log.info("instructions skipped", file=name, reason=str(error))
            continue
        if data is not None:
            texts.append(data.decode(errors="replace")[:MAX_INSTRUCTION_CHARS])
    return "\n\n".join(texts) or None


async def _converse(
    agent: Agent, turns: Awaitable[AgentResult], deadline: Deadline
) -> AgentResult:
    try:
        async with asyncio.timeout(deadline.left()) as backstop:
            return await turns
    except AgentAPIError as error:
        raise RunFailed(Outcome.MODEL_UNAVAILABLE, str(error)) from None
    except TimeoutError:
        if not backstop.expired():
            raise
    return AgentResult(None, agent.usage, "budget_exhausted",
                       f"{_capitalized(deadline.ran_out(AGENT_WORK))}.")


async def _run_checks(
    config: RepoConfig, sandbox: Sandbox, progress: Progress, deadline: Deadline
) -> list[CheckResult]:
    results = []
    for command in config.checks:
        if deadline.passed:
            results.append(CheckResult(command, TIMEOUT_EXIT_CODE,
                                       "Not run: the run's time budget ran out before it."))
            continue
        await progress.step(f"check: `{command}`")
        outcome = await sandbox.run(command, timeout=deadline.cap(CHECK_TIMEOUT_SECONDS))
        results.append(CheckResult(command, outcome.exit_code, outcome.output))
    return results


def _capitalized(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:]


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"


async def _commit(
    result: AgentResult,
    checks: list[CheckResult],
    request: ChangeRequest,
    workspace: Workspace,
    progress: Progress,
    *,
    redact: Callable[[str], str],
) -> Change:
    report = result.report
    title = report.title if report else "Honk's unfinished attempt"
    message = report.commit_message if report else f"{title}\n\n{result.detail}"
    sender = request.requested_by
    sha = await workspace.commit(
        redact(message),
        author_name=request.author_name,
        author_email=request.author_email,
        co_authors=[f"{sender} <{sender}@users.noreply.github.com>"],
    )
    if sha is None and request.require_change and workspace.start_sha == workspace.base_sha:
        reason = result.detail if report is None else "it reported without editing a file"
        raise RunFailed(Outcome.NO_CHANGES, f"The agent made no change to the code: {reason}")
    if sha is not None:
        await progress.step(f"committed `{sha[:7]}`")
    ready = report is not None and all(check.passed for check in checks)
    notes = [] if report else [f"The agent did not finish: {result.detail}"]
    summary = report.summary if report else "The agent stopped before it reported."
    return Change(
        title=title,
        summary=summary,
        commit_message=message,
        checks=checks,
        ready=ready,
        notes=notes,
        replies=dict(report.replies) if report else {},
        sha=sha,
    )
