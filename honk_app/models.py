"""The shared nouns: what a delivery asks for, a run and its states, the change it made.

Every package may import this module; it imports nothing of Honk. The enums are
str-valued: what the database stores, the metrics label and the JSON of `honk runs` say
are the same strings as before they were enums.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

# Honk's own branches: it pushes only to these, and takes no configuration from them.
BRANCH_PREFIX = "honk/"


class RunKind(StrEnum):
    TASK = "task"  # an issue labelled, or `/honk` on an issue: a new pull request
    FOLLOWUP = "followup"  # a review or `/honk` on a pull request: commits on its branch
    LABELS = "labels"  # an installation: create the trigger label in its repositories


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (RunState.QUEUED, RunState.RUNNING)
FINAL_STATES = (RunState.DONE, RunState.FAILED, RunState.CANCELLED)


class Outcome(StrEnum):
    """How a run ended, as `runs.outcome` and `honk_runs_total{outcome}` say it."""

    SUCCESS = "success"
    REFUSED = "refused"  # the sender lacks write access
    STOPPED = "stopped"  # `/honk stop`
    CRASHED = "crashed"  # its workers died too many times
    INTERNAL_ERROR = "internal_error"
    GITHUB_ERROR = "github_error"
    GITHUB_UNAVAILABLE = "github_unavailable"  # handed back too many times
    EMPTY_REPOSITORY = "empty_repository"
    BAD_CONFIG = "bad_config"
    AGENT_BASE = "agent_base"  # a pull request based on one of Honk's branches
    NO_SANDBOX = "no_sandbox"
    TIMED_OUT = "timed_out"
    SETUP_FAILED = "setup_failed"
    NO_MODEL = "no_model"
    MODEL_UNAVAILABLE = "model_unavailable"
    NO_CHANGES = "no_changes"
    BRANCH_TAKEN = "branch_taken"
    FORK = "fork"
    BRANCH_DELETED = "branch_deleted"
    PUSH_REJECTED = "push_rejected"
    WORKFLOWS = "workflows"  # the change touches only workflow files


@dataclass(frozen=True)
class Trigger:
    kind: RunKind | Literal["stop"]  # "stop": `/honk stop`, which is not a run
    repo: str
    number: int
    installation_id: int
    sender: str
    instruction: str = ""
    comment_id: int | None = None
    review_id: int | None = None
    clone_url: str | None = None
    repos: tuple[str, ...] = field(default=())
    # A task's issue as the delivery carried it: as the person who labelled it or
    # commented saw it, not as anyone may have edited it since. None in triggers stored
    # before Honk kept them (the worker then reads the issue from GitHub).
    issue_title: str | None = None
    issue_body: str | None = None

    @property
    def lock_key(self) -> str:
        if self.kind == RunKind.LABELS:
            return f"installation:{self.installation_id}"
        return f"{self.repo}#{self.number}"

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy costs more than the rest of the request path.
        return {**vars(self), "repos": list(self.repos)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trigger:
        kind = data["kind"] if data["kind"] == "stop" else RunKind(data["kind"])
        return cls(**{**data, "kind": kind, "repos": tuple(data.get("repos", ()))})


@dataclass
class Run:
    id: int
    delivery_id: str
    kind: str
    repo: str
    number: int
    lock_key: str
    installation_id: int
    sender: str
    trigger: str
    state: str
    outcome: str | None
    detail: str | None
    attempts: int
    cancel_requested: int
    worker_id: str | None
    created_at: float
    not_before: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None
    status_comment_id: int | None
    branch: str | None
    pushed_sha: str | None
    pr_number: int | None
    report: str | None
    turns: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    status_owed: int = 0
    final_status: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Run:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @property
    def trigger_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.trigger)
        return data


@dataclass(frozen=True)
class CheckResult:
    command: str
    exit_code: int
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


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
    # Set when the run's deadline cut the work short: what ran out, for the headline.
    out_of_time: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        checks = [CheckResult(**check) for check in data.pop("checks")]
        replies = {int(key): value for key, value in data.pop("replies", {}).items()}
        return cls(checks=checks, replies=replies, **data)


def transcript_path(data_dir: Path, run_id: int) -> Path:
    """Where a run's agent transcript is: written by the run, read by its page."""
    return data_dir / "runs" / str(run_id) / "transcript.jsonl"
