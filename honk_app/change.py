"""Making the change in a workspace: repository config, setup, the agent, checks, commit.

Checks are the repository's own commands from `.github/honk.yml`; their failures go back
to the agent for a bounded number of rounds. A change whose checks stay red is not
"ready": the caller opens it as a draft.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from honk_app import metrics
from honk_app.agent.loop import Agent, AgentAPIError, AgentResult, Budget, TurnUsage, Usage
from honk_app.agent.prompts import checks_failed_prompt, system_prompt, task_prompt
from honk_app.agent.sandbox import Sandbox, SandboxLimits, SandboxUnavailable, check_available
from honk_app.agent.tools import AgentTools
from honk_app.config import (
    REPO_CONFIG_PATH,
    EffectiveLimits,
    RepoConfig,
    RepoConfigError,
    Settings,
    effective_limits,
    parse_repo_config,
)
from honk_app.status import CheckResult
from honk_app.workspace import Workspace

if TYPE_CHECKING:
    from honk_app.runs import Run
    from honk_app.triggers import Trigger
    from honk_app.worker import Services, StatusUpdater

log = structlog.get_logger()

INSTRUCTION_FILES = ("AGENTS.md", "CLAUDE.md")
MAX_INSTRUCTION_CHARS = 20_000
SETUP_TIMEOUT_SECONDS = 15 * 60.0
# Byte-code caches written by running the tests are not part of anyone's change.
AGENT_ENVIRONMENT = {"PYTHONDONTWRITEBYTECODE": "1", "CI": "true"}


class RunFailed(Exception):
    """The run cannot go on; the message is one sentence for the status comment."""

    def __init__(self, outcome: str, sentence: str) -> None:
        super().__init__(sentence)
        self.outcome = outcome


@dataclass
class Change:
    title: str
    summary: str
    commit_message: str
    checks: list[CheckResult]
    ready: bool
    notes: list[str] = field(default_factory=list)
    replies: dict[int, str] = field(default_factory=dict)
    sha: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        checks = [CheckResult(**check) for check in data.pop("checks")]
        replies = {int(key): value for key, value in data.pop("replies", {}).items()}
        return cls(checks=checks, replies=replies, **data)


async def make_change(
    run: Run,
    trigger: Trigger,
    status: StatusUpdater,
    services: Services,
    workspace: Workspace,
    *,
    title: str,
    body: str,
    prompt: str | None = None,
    require_change: bool = True,
) -> Change:
    """Run the agent until it reports and the checks pass (or the rounds run out); commit."""
    settings = services.settings
    config = _repo_config(workspace.path)
    limits = effective_limits(settings, config)
    sandbox = _sandbox(services, workspace, network=False)
    if config.setup:
        await _setup(config, _sandbox(services, workspace, network=limits.network), status)
    agent = _agent(run, services, sandbox, workspace, config, limits, status)
    await status.step(f"working with {limits.model}")
    if prompt is None:
        prompt = task_prompt(
            repo=run.repo,
            number=run.number,
            title=title,
            body=body,
            instruction=trigger.instruction or None,
            requested_by=trigger.sender,
        )
    result = await _converse(agent.run(prompt))
    checks = await _run_checks(config, sandbox, status)
    for _ in range(config.check_rounds):
        if result.report is None or all(check.passed for check in checks):
            break
        await status.step("checks failed; the agent is fixing them")
        result = await _converse(
            agent.follow_up(
                checks_failed_prompt(
                    [(check.command, check.exit_code, check.output) for check in checks]
                )
            )
        )
        checks = await _run_checks(config, sandbox, status)
    return await _commit(
        result, checks, trigger, services, workspace, status, require_change=require_change
    )


def _repo_config(path: Path) -> RepoConfig:
    config_file = path / REPO_CONFIG_PATH
    try:
        text = config_file.read_text() if config_file.is_file() else None
    except (OSError, UnicodeDecodeError):
        raise RunFailed("bad_config", f"{REPO_CONFIG_PATH} cannot be read as text.") from None
    try:
        return parse_repo_config(text)
    except RepoConfigError as error:
        raise RunFailed("bad_config", str(error)) from None


def _sandbox(services: Services, workspace: Workspace, *, network: bool) -> Sandbox:
    try:
        # Read-only git (status, diff, log) works inside; nothing under .git is writable.
        return agent_sandbox(services.settings, workspace.path,
                             (workspace.common_dir, workspace.git_dir), network=network)
    except SandboxUnavailable as error:
        raise RunFailed("no_sandbox", str(error)) from None


def agent_sandbox(settings: Settings, path: Path, read_only: Sequence[Path], *,
                  network: bool) -> Sandbox:
    """The sandbox every agent command, setup command and check runs in (and `honk sandbox`)."""
    if not settings.unsafe_no_sandbox:
        check_available()
    return Sandbox(path, read_only_paths=read_only, network=network, limits=SandboxLimits(),
                   env=AGENT_ENVIRONMENT, unsafe_no_sandbox=settings.unsafe_no_sandbox)


async def _setup(config: RepoConfig, sandbox: Sandbox, status: StatusUpdater) -> None:
    for command in config.setup:
        await status.step(f"setup: `{command}`")
        result = await sandbox.run(command, timeout=SETUP_TIMEOUT_SECONDS)
        if result.exit_code != 0:
            raise RunFailed(
                "setup_failed",
                f"The setup command `{command}` failed with exit "
                f"code {result.exit_code}; Honk did not start the agent.",
            )


def _agent(
    run: Run,
    services: Services,
    sandbox: Sandbox,
    workspace: Workspace,
    config: RepoConfig,
    limits: EffectiveLimits,
    status: StatusUpdater,
) -> Agent:
    if services.anthropic is None:
        raise RunFailed("no_model", "Honk has no ANTHROPIC_API_KEY; the operator must set it.")
    stats = status.comment.stats
    # A resumed run (its worker died) carries on counting from what was already spent.
    base = replace(stats)

    async def on_turn(usage: Usage, line: str) -> None:
        stats.turns = base.turns + usage.turns
        stats.input_tokens = base.input_tokens + (
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        )
        stats.output_tokens = base.output_tokens + usage.output_tokens
        stats.cost_usd = base.cost_usd + usage.cost_usd
        await services.store.update(run.id, turns=stats.turns, input_tokens=stats.input_tokens,
                                    output_tokens=stats.output_tokens, cost_usd=stats.cost_usd)
        await status.step(f"turn {stats.turns}: {services.redactor(line)}", force=False)
        _count_usage(limits.model, usage.per_turn[-1])

    transcript = services.settings.data_dir / "runs" / str(run.id) / "transcript.jsonl"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    return Agent(
        services.anthropic,
        model=limits.model,
        system=system_prompt(_instructions(workspace.path), config.instructions),
        tools=AgentTools(sandbox, workspace.path),
        budget=Budget(
            max_turns=limits.max_turns,
            max_cost_usd=limits.max_cost_usd,
            timeout_seconds=limits.timeout_seconds,
        ),
        on_turn=on_turn,
        transcript_path=transcript,
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


def _instructions(path: Path) -> str | None:
    """AGENTS.md / CLAUDE.md at the repository root, if they are plain files in it."""
    texts = []
    for name in INSTRUCTION_FILES:
        candidate = path / name
        if candidate.is_file() and not candidate.is_symlink():
            texts.append(candidate.read_text(errors="replace")[:MAX_INSTRUCTION_CHARS])
    return "\n\n".join(texts) or None


async def _converse(turns: Any) -> AgentResult:
    try:
        result: AgentResult = await turns
    except AgentAPIError as error:
        raise RunFailed("model_unavailable", str(error)) from None
    return result


async def _run_checks(
    config: RepoConfig, sandbox: Sandbox, status: StatusUpdater
) -> list[CheckResult]:
    results = []
    for command in config.checks:
        await status.step(f"check: `{command}`")
        outcome = await sandbox.run(command)
        results.append(CheckResult(command, outcome.exit_code, outcome.output))
    return results


async def _commit(
    result: AgentResult,
    checks: list[CheckResult],
    trigger: Trigger,
    services: Services,
    workspace: Workspace,
    status: StatusUpdater,
    *,
    require_change: bool,
) -> Change:
    report = result.report
    title = report.title if report else "Honk's unfinished attempt"
    message = report.commit_message if report else f"{title}\n\n{result.detail}"
    bot = await services.github.bot_login()
    sha = await workspace.commit(
        services.redactor(message),
        author_name=bot,
        author_email=f"{bot}@users.noreply.github.com",
        co_authors=[f"{trigger.sender} <{trigger.sender}@users.noreply.github.com>"],
    )
    if sha is None and require_change and workspace.start_sha == workspace.base_sha:
        reason = result.detail if report is None else "it reported without editing a file"
        raise RunFailed("no_changes", f"The agent made no change to the code: {reason}")
    if sha is not None:
        await status.step(f"committed `{sha[:7]}`")
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
