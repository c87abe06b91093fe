"""The Claude agent loop: mini-swe-agent-small over the Messages API.

`Agent.run` sends the task and loops: query Claude, run the tools it called, send back the
results. Two exception families steer the loop. Non-terminating problems (malformed tool
input, a tool that failed, an answer with no tool call, an answer cut at the output limit)
are told to Claude and the loop goes on. Terminating ones (the report, a budget run out,
Claude giving up) end the run with an outcome. Budgets are checked in `_check_budget` only.
The transcript gets one JSON line per turn, written whatever happened in that turn.

Prompt caching: breakpoints on the last tool, on the system prompt, on the newest message
(moving), and on a stable point (the task, later the end of the trimmed region), so each
request reads what the previous one wrote. Context trimming: once a request's prompt grows
past `ContextLimits.trim_above_tokens`, every tool result older than the newest few is
replaced by a placeholder, all at once, so the cache is rewritten rarely; the request after
a trim reads up to the old stable point and writes the new one. Newer models refuse a
thinking block whose preceding conversation changed, so a trim drops those after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import anthropic
import structlog
from anthropic.types import Message

from honk_app.agent import prompts
from honk_app.agent.pricing import cost_usd
from honk_app.agent.types import ToolOutput, ToolRunner

log = structlog.get_logger()

# Transient API errors (429, 5xx, 529, connection drops) are retried by the SDK, with
# backoff or as the API's retry-after header asks; what persists after that is an outage.
# An overload (529) or a rate limit (429) that outlasts those retries is waited out, with
# a status line, for as long as the agent's time budget allows.
API_MAX_RETRIES = 4
PATIENT_STATUSES = (429, 529)
OVERLOAD_FIRST_WAIT_SECONDS = 1.0
OVERLOAD_MAX_WAIT_SECONDS = 30.0
EPHEMERAL = {"type": "ephemeral"}
THINKING_BLOCKS = ("thinking", "redacted_thinking")
EDITOR_COMMANDS = ("view", "create", "str_replace", "insert")
TRIMMED = "[output trimmed: {chars} chars]"

TOOLS: list[dict[str, Any]] = [
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    {
        "name": "report",
        "description": prompts.REPORT_TOOL_DESCRIPTION,
        "input_schema": {
            "type": "object",
            "properties": {
                "title": {
                    "type": "string",
                    "description": "Pull request title, imperative, under 72 characters.",
                },
                "summary": {
                    "type": "string",
                    "description": "Markdown for the reviewer: what changed, why, how verified.",
                },
                "commit_message": {
                    "type": "string",
                    "description": "Subject under 72 characters, blank line, body.",
                },
                "replies": {
                    "type": "array",
                    "description": "For a review follow-up: what you did about each comment.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "comment_id": {"type": "integer"},
                            "reply": {"type": "string"},
                        },
                        "required": ["comment_id", "reply"],
                    },
                },
            },
            "required": ["title", "summary", "commit_message"],
        },
    },
]

# Thinking blocks of these older models are not bound to the conversation before them, so
# trimming may leave them in place. Newer models (Fable 5.1, Opus 5.5, Sonnet 5.5, Haiku 5.5
# and, we assume, later ones) refuse a thinking block whose prefix changed.
_UNBOUND_THINKING_PREFIXES = ("claude-3", "claude-opus-4", "claude-sonnet-4", "claude-haiku-4")
_UNBOUND_THINKING_MODELS = (
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-mythos-preview",
)


@dataclass(frozen=True)
class Budget:
    max_turns: int = 40
    max_cost_usd: float = 5.0
    timeout_seconds: float = 30 * 60
    max_output_tokens: int = 8192


@dataclass(frozen=True)
class ContextLimits:
    """When and how much of the conversation is trimmed."""

    # Once a request's prompt (input + cache reads + cache writes) passes this, trim.
    trim_above_tokens: int = 80_000
    # The newest tool results are never trimmed.
    keep_recent_results: int = 6
    # A longer tool output is cut in the middle before Claude sees it.
    max_tool_result_chars: int = 40_000


@dataclass(frozen=True)
class TurnUsage:
    """What one request reported, and what it cost."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_usd: float

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


@dataclass
class Usage:
    """Accumulated over the run (and its follow-ups)."""

    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    per_turn: list[TurnUsage] = field(default_factory=list)

    def add(self, turn: TurnUsage) -> None:
        self.turns += 1
        self.input_tokens += turn.input_tokens
        self.output_tokens += turn.output_tokens
        self.cache_creation_input_tokens += turn.cache_creation_input_tokens
        self.cache_read_input_tokens += turn.cache_read_input_tokens
        self.cost_usd += turn.cost_usd
        self.per_turn.append(turn)

    def cache_read_share(self, after_turn: int = 1) -> float:
        """The share of prompt tokens read from the cache, over the turns after `after_turn`."""
        later = self.per_turn[after_turn:]
        prompt = sum(turn.prompt_tokens for turn in later)
        return sum(turn.cache_read_input_tokens for turn in later) / prompt if prompt else 0.0


@dataclass(frozen=True)
class Report:
    title: str
    summary: str
    commit_message: str
    replies: dict[int, str] = field(default_factory=dict)


Outcome = Literal["reported", "budget_exhausted", "gave_up"]


@dataclass
class AgentResult:
    report: Report | None
    usage: Usage
    outcome: Outcome
    detail: str


class AgentAPIError(Exception):
    """The Anthropic API kept failing; the message is one sentence a maintainer can act on."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _NonTerminating(Exception):
    """Told to Claude as a tool result or a user message; the loop goes on."""


class _ToolInputError(_NonTerminating):
    pass


class _Terminating(Exception):
    def __init__(self, outcome: Outcome, detail: str, report: Report | None = None) -> None:
        super().__init__(detail)
        self.outcome: Outcome = outcome
        self.detail = detail
        self.report = report


OnTurn = Callable[[Usage, str], Awaitable[None]]
OnWait = Callable[[str], Awaitable[None]]


class Agent:
    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        model: str,
        system: str,
        tools: ToolRunner,
        budget: Budget,
        on_turn: OnTurn | None = None,
        transcript_path: Path | None = None,
        context: ContextLimits = ContextLimits(),
        on_wait: OnWait | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock` (seconds, for the time budget): the event loop's, whose timers end a
        step that overruns the budget; a test may give its own."""
        self.usage = Usage()
        self._on_wait = on_wait
        self._clock = clock or _loop_time
        self._client = client.with_options(max_retries=API_MAX_RETRIES)
        self._model = model
        self._system = system
        self._tools = tools
        self._budget = budget
        self._on_turn = on_turn
        self._transcript_path = transcript_path
        self._context = context
        self._log = log.bind(model=model)
        self._messages: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []  # the next user message, being gathered
        self._trimmed: set[tuple[int, int]] = set()
        # Where the conversation stops changing: the task, later the end of the trimmed region.
        self._stable_point: tuple[int, int] = (0, 0)
        self._previous_stable_point: tuple[int, int] | None = None  # set for one request
        self._turns_without_tools = 0
        self._seconds_used = 0.0
        self._call_started: float | None = None
        self._force_trim = False

    async def run(self, prompt: str) -> AgentResult:
        """Start the conversation with the task prompt and run until it ends."""
        if self._messages or self._pending:
            raise RuntimeError("run() starts a conversation; use follow_up() to continue it")
        self._pending.append(_text(prompt))
        return await self._drive()

    async def follow_up(self, message: str) -> AgentResult:
        """Continue the same conversation (failing checks, a review) with the budget left."""
        if not self._messages:
            raise RuntimeError("follow_up() continues a conversation that run() started")
        self._pending.append(_text(message))
        self._turns_without_tools = 0
        return await self._drive()

    # --- the loop --------------------------------------------------------------------------

    async def _drive(self) -> AgentResult:
        self._call_started = self._clock()
        try:
            await self._loop()
        except _Terminating as end:
            result = AgentResult(end.report, self.usage, end.outcome, end.detail)
        except BaseException as error:
            # Not handled here (the caller decides), but the transcript says how it ended.
            self._save({"kind": "end", "outcome": _ending(error), "detail": _error_line(error)})
            raise
        finally:
            self._seconds_used += self._clock() - self._call_started
            self._call_started = None
        self._save({"kind": "end", "outcome": result.outcome, "detail": result.detail})
        self._log.info(
            "agent.finished",
            outcome=result.outcome,
            detail=result.detail,
            turns=self.usage.turns,
            cost_usd=round(self.usage.cost_usd, 4),
        )
        return result

    async def _loop(self) -> NoReturn:
        while True:
            self._check_budget()
            deadline = asyncio.timeout(self._seconds_left())
            try:
                async with deadline:
                    await self._step()
            except TimeoutError:
                if not deadline.expired():
                    raise  # not the budget's deadline
                # The budget's timer fired: that decides, whatever a clock read just after
                # says (the loop's timers may fire a hair early, by its own clock or another).
                raise self._time_ran_out() from None

    def _check_budget(self) -> None:
        budget = self._budget
        if self.usage.turns >= budget.max_turns:
            raise _Terminating(
                "budget_exhausted",
                f"The turn budget ran out: {self.usage.turns} of {budget.max_turns} turns used.",
            )
        if self.usage.cost_usd >= budget.max_cost_usd:
            raise _Terminating(
                "budget_exhausted",
                f"The cost budget ran out: ${self.usage.cost_usd:.2f} of "
                f"${budget.max_cost_usd:.2f} spent.",
            )
        if self._seconds_left() <= 0:
            raise self._time_ran_out()

    def _time_ran_out(self) -> _Terminating:
        return _Terminating(
            "budget_exhausted",
            "The time budget ran out: "
            f"{_duration(self._budget.timeout_seconds)} of agent time used.",
        )

    def _seconds_left(self) -> float:
        running = self._clock() - self._call_started if self._call_started is not None else 0.0
        return self._budget.timeout_seconds - self._seconds_used - running

    async def _step(self) -> None:
        self._answer_unanswered_tool_calls()
        self._trim_if_needed()
        sent = list(self._pending)
        message = await self._query()
        self._messages.append({"role": "user", "content": sent})
        content = [block.to_dict(mode="json", warnings=False) for block in message.content]
        self._messages.append({"role": "assistant", "content": content})
        self._pending = []
        turn = self._account(message)

        record: dict[str, Any] = {"kind": "turn", "turn": self.usage.turns}
        if self.usage.turns == 1:
            record.update(model=self._model, system=self._system)
        record.update(user=sent, assistant=content, stop_reason=message.stop_reason)
        record["usage"] = asdict(turn)
        action = "answered"
        ended: _Terminating | None = None
        try:
            action = await self._act(content, message.stop_reason)
        except _Terminating as end:
            action, ended = "reported" if end.report else "stopped", end
        finally:
            record.update(tool_results=self._pending, action=action)
            self._save(record)
        self._log.info(
            "agent.turn",
            turn=self.usage.turns,
            action=action,
            prompt_tokens=turn.prompt_tokens,
            cache_read=turn.cache_read_input_tokens,
            cost_usd=round(self.usage.cost_usd, 4),
        )
        if self._on_turn is not None:
            await self._on_turn(self.usage, action)
        if ended is not None:
            raise ended

    async def _query(self) -> Message:
        # After a trim, the request must read the old stable point and write the new one; the
        # tools' breakpoint gives way for that one request (the system prompt's covers them).
        points = [self._stable_point]
        tools = _with_cache_control_on_last(TOOLS)
        if self._previous_stable_point is not None:
            points.append(self._previous_stable_point)
            tools = TOOLS
            self._previous_stable_point = None
        wait = OVERLOAD_FIRST_WAIT_SECONDS
        while True:
            try:
                return await self._client.messages.create(
                    model=self._model,
                    max_tokens=self._budget.max_output_tokens,
                    system=[{"type": "text", "text": self._system, "cache_control": EPHEMERAL}],
                    tools=tools,  # type: ignore[arg-type]
                    messages=self._request_messages(points),  # type: ignore[arg-type]
                )
            except anthropic.APIStatusError as error:
                if error.status_code not in PATIENT_STATUSES:
                    raise AgentAPIError(
                        _explain_status(error, self._model), status=error.status_code
                    ) from error
                # Overloaded: wait (the step's deadline, the time budget, bounds it).
                busy = "overloaded" if error.status_code == 529 else "rate-limiting Honk"
                self._log.warning("agent.api_waiting", status=error.status_code, seconds=wait)
                if self._on_wait is not None and wait == OVERLOAD_FIRST_WAIT_SECONDS:
                    await self._on_wait(f"Anthropic is {busy}; waiting")
                await asyncio.sleep(min(wait, max(self._seconds_left(), 0.0)))
                wait = min(wait * 2, OVERLOAD_MAX_WAIT_SECONDS)
            except anthropic.APIConnectionError as error:
                raise AgentAPIError(_explain_connection(error, self._client.base_url)) from error

    def _account(self, message: Message) -> TurnUsage:
        usage = message.usage
        counts = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
            "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        }
        turn = TurnUsage(**counts, cost_usd=cost_usd(self._model, **counts))
        self.usage.add(turn)
        return turn

    # --- acting on Claude's answer ---------------------------------------------------------

    async def _act(self, content: list[dict[str, Any]], stop_reason: str | None) -> str:
        """Run the tool calls of one answer; return a short line of what was done."""
        calls = [block for block in content if block["type"] == "tool_use"]
        if stop_reason == "refusal":
            self._answer_all(calls, prompts.TOOL_CALL_NOT_RUN)
            raise _Terminating("gave_up", "Claude declined the task (its answer was a refusal).")
        if stop_reason in ("max_tokens", "model_context_window_exceeded"):
            self._force_trim = stop_reason == "model_context_window_exceeded"
            self._tell(calls, prompts.OUTPUT_CUT_NUDGE)
            return "was cut off"
        if not calls:
            self._turns_without_tools += 1
            said = " ".join(block["text"] for block in content if block["type"] == "text")
            if self._turns_without_tools >= 2:
                raise _Terminating(
                    "gave_up",
                    "Claude stopped twice without calling a tool or reporting"
                    + (f"; it said: {_shorten(said, 200)}" if said else "."),
                )
            self._pending.append(_text(prompts.NO_TOOL_CALL_NUDGE))
            return "wrote a note"
        self._turns_without_tools = 0
        actions = []
        for call in calls:
            if not isinstance(call.get("input"), dict):
                # A string (or a list) where the tool's object belongs: Claude can fix that.
                name = _shorten(str(call["name"]), 40)
                self._pending.append(_tool_result(
                    call["id"], prompts.MALFORMED_TOOL_INPUT.format(name=name), is_error=True
                ))
                actions.append(f"sent {name} malformed input")
                continue
            if call["name"] == "report":
                self._take_report(call, alone=len(calls) == 1)
                actions.append("tried to report")
                continue
            result = await self._run_tool(call)
            self._pending.append(result)
            actions.append(_describe(call, failed=bool(result.get("is_error"))))
        return _shorten("; ".join(actions), 200)

    def _take_report(self, call: dict[str, Any], *, alone: bool) -> None:
        """Accept a report call (terminating) or tell Claude what is wrong with it."""
        try:
            if not alone:
                raise _ToolInputError(prompts.REPORT_NOT_ALONE)
            report = _parse_report(call["input"])
        except _ToolInputError as problem:
            self._pending.append(_tool_result(call["id"], str(problem), is_error=True))
            return
        self._pending.append(_tool_result(call["id"], prompts.REPORT_ACCEPTED))
        raise _Terminating("reported", f"Claude reported: {report.title}", report)

    async def _run_tool(self, call: dict[str, Any]) -> dict[str, Any]:
        try:
            _check_tool_input(call["name"], call["input"])
            output = await self._tools.run_tool(call["name"], call["input"])
        except _ToolInputError as problem:
            output = ToolOutput(str(problem), is_error=True)
        except Exception as error:
            # A tool that crashed is a tool error like any other: Claude hears of it.
            self._log.warning("agent.tool_crashed", tool=call["name"], exc_info=True)
            output = ToolOutput(f"The tool failed: {type(error).__name__}: {error}", is_error=True)
        text = _cut_middle(output.text, self._context.max_tool_result_chars)
        return _tool_result(call["id"], text or "(no output)", is_error=output.is_error)

    def _tell(self, calls: list[dict[str, Any]], message: str) -> None:
        if calls:
            self._answer_all(calls, message)
        else:
            self._pending.append(_text(message))

    def _answer_all(self, calls: list[dict[str, Any]], message: str) -> None:
        for call in calls:
            self._pending.append(_tool_result(call["id"], message, is_error=True))

    def _answer_unanswered_tool_calls(self) -> None:
        """A step interrupted mid-tools leaves calls without results; the API needs them all."""
        if not self._messages or self._messages[-1]["role"] != "assistant":
            return
        answered = {block.get("tool_use_id") for block in self._pending}
        unanswered = [
            block
            for block in self._messages[-1]["content"]
            if block["type"] == "tool_use" and block["id"] not in answered
        ]
        results = [
            _tool_result(c["id"], prompts.TOOL_CALL_NOT_RUN, is_error=True) for c in unanswered
        ]
        self._pending[:0] = results

    # --- the request: cache breakpoints and trimming ---------------------------------------

    def _request_messages(self, stable_points: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """The conversation as sent: committed messages, the pending one, with breakpoints
        on the stable points and on the newest block (the one that moves)."""
        messages = [{"role": m["role"], "content": list(m["content"])} for m in self._messages]
        messages.append({"role": "user", "content": list(self._pending)})
        newest = (len(messages) - 1, len(messages[-1]["content"]) - 1)
        for m, b in {newest, *stable_points}:
            messages[m]["content"][b] = {**messages[m]["content"][b], "cache_control": EPHEMERAL}
        return messages

    def _trim_if_needed(self) -> None:
        last = self.usage.per_turn[-1] if self.usage.per_turn else None
        too_long = last is not None and last.prompt_tokens > self._context.trim_above_tokens
        if not (too_long or self._force_trim):
            return
        self._force_trim = False
        results = [
            (m, b)
            for m, message in enumerate(self._messages)
            if message["role"] == "user"
            for b, block in enumerate(message["content"])
            if block["type"] == "tool_result"
        ]
        pending_results = sum(1 for block in self._pending if block["type"] == "tool_result")
        keep = max(0, self._context.keep_recent_results - pending_results)
        older = results[: max(0, len(results) - keep)]
        to_trim = [location for location in older if location not in self._trimmed]
        if not to_trim:
            return
        chars = 0
        for m, b in to_trim:
            block = self._messages[m]["content"][b]
            text = _result_text(block)
            chars += len(text)
            trimmed = {**block, "content": TRIMMED.format(chars=len(text))}
            self._messages[m]["content"][b] = trimmed
            self._trimmed.add((m, b))
        if _thinking_binds_to_prefix(self._model):
            self._drop_thinking_after(to_trim[0][0])
        # The trimmed region no longer changes: the next trim will read it from the cache.
        self._previous_stable_point, self._stable_point = self._stable_point, to_trim[-1]
        self._log.info("agent.trimmed", results=len(to_trim), chars=chars, turn=self.usage.turns)

    def _drop_thinking_after(self, first_changed: int) -> None:
        """Thinking blocks after a changed message are refused by newer models: drop them all."""
        for message in self._messages[first_changed:]:
            if message["role"] != "assistant":
                continue
            kept = [block for block in message["content"] if block["type"] not in THINKING_BLOCKS]
            message["content"] = kept or [_text("(thinking omitted)")]

    # --- the transcript ---------------------------------------------------------------------

    def _save(self, record: Mapping[str, Any]) -> None:
        if self._transcript_path is None:
            return
        self._transcript_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), **record}, ensure_ascii=False, default=str)
        with self._transcript_path.open("a", encoding="utf-8") as transcript:
            transcript.write(line + "\n")


# --- helpers ------------------------------------------------------------------------------


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _tool_result(tool_use_id: str, text: str, *, is_error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if is_error:
        result["is_error"] = True
    return result


def _result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _ending(error: BaseException) -> str:
    if isinstance(error, AgentAPIError):
        return "api_error"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "crashed"


def _error_line(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "The run was cancelled."
    return str(error) or type(error).__name__


def _with_cache_control_on_last(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*tools[:-1], {**tools[-1], "cache_control": EPHEMERAL}]


def _thinking_binds_to_prefix(model: str) -> bool:
    return not (model.startswith(_UNBOUND_THINKING_PREFIXES) or model in _UNBOUND_THINKING_MODELS)


def _check_tool_input(name: str, tool_input: Mapping[str, Any]) -> None:
    if name == "bash":
        if tool_input.get("restart") is True:
            return
        if not isinstance(tool_input.get("command"), str) or not tool_input["command"].strip():
            raise _ToolInputError("bash needs a non-empty `command` string (or `restart`: true).")
        return
    if name == "str_replace_based_edit_tool":
        command = tool_input.get("command")
        if command not in EDITOR_COMMANDS:
            raise _ToolInputError(
                f"str_replace_based_edit_tool needs `command`, one of {', '.join(EDITOR_COMMANDS)}."
            )
        if not isinstance(tool_input.get("path"), str) or not tool_input["path"]:
            raise _ToolInputError(f"`{command}` needs a `path` string.")
        required = {"create": "file_text", "str_replace": "old_str"}
        if command in required and not isinstance(tool_input.get(required[command]), str):
            raise _ToolInputError(f"`{command}` needs a `{required[command]}` string.")
        if command == "insert":
            text = tool_input.get("insert_text", tool_input.get("new_str"))
            if not isinstance(text, str) or not isinstance(tool_input.get("insert_line"), int):
                raise _ToolInputError("`insert` needs an `insert_line` number and `new_str`.")
        return
    raise _ToolInputError(
        f"There is no tool named {name!r}: use bash, str_replace_based_edit_tool or report."
    )


def _parse_report(tool_input: Mapping[str, Any]) -> Report:
    fields = {}
    for key in ("title", "summary", "commit_message"):
        value = tool_input.get(key)
        if not isinstance(value, str) or not value.strip():
            raise _ToolInputError(f"`report` needs a non-empty `{key}` string.")
        fields[key] = value.strip()
    title = fields["title"]
    if "\n" in title or len(title) > prompts.TITLE_MAX_CHARS:
        raise _ToolInputError(
            f"The `title` must be one line under 72 characters; it has {len(title)}."
        )
    replies: dict[int, str] = {}
    for entry in tool_input.get("replies") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("comment_id"), int):
            raise _ToolInputError("Each of `replies` needs an integer `comment_id` and a `reply`.")
        if not isinstance(entry.get("reply"), str) or not entry["reply"].strip():
            raise _ToolInputError(f"The reply to comment {entry['comment_id']} is empty.")
        replies[entry["comment_id"]] = entry["reply"].strip()
    return Report(replies=replies, **fields)


def _describe(call: Mapping[str, Any], *, failed: bool) -> str:
    tool_input = call["input"]
    if call["name"] == "bash":
        command = str(tool_input.get("command") or "restart").strip().splitlines() or [""]
        what = f"ran `{_shorten(command[0], 60)}`"
    else:
        path = str(tool_input.get("path", "?")).removeprefix(prompts.WORKSPACE + "/")
        verb = {"view": "viewed", "create": "created"}.get(str(tool_input.get("command")), "edited")
        what = f"{verb} {path}"
    return f"{what} (failed)" if failed else what


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:g} seconds"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head, tail = limit // 2, limit - limit // 2
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


def _explain_status(error: anthropic.APIStatusError, model: str) -> str:
    status = error.status_code
    if status == 401:
        return "Anthropic refused the API key (401): set a valid ANTHROPIC_API_KEY for Honk."
    if status == 403:
        return (
            "The Anthropic API key may not do this (403): check the key's workspace "
            f"and its access to {model}."
        )
    if status == 404:
        return f"Anthropic does not know the model {model!r} (404): check the `model` setting."
    if status == 429:
        return (
            f"Anthropic kept rate-limiting Honk after {API_MAX_RETRIES} retries (429): wait, "
            "or raise the organisation's rate limits."
        )
    if status == 413:
        return "The request was too large for the Anthropic API (413): lower the context limits."
    if status >= 500:
        return (
            f"The Anthropic API kept failing after {API_MAX_RETRIES} retries (HTTP {status}): "
            "try again later; status.anthropic.com shows outages."
        )
    return f"Anthropic refused the request (HTTP {status}): {_shorten(_api_message(error), 300)}"


def _api_message(error: anthropic.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return str(error.message)


def _explain_connection(error: anthropic.APIConnectionError, base_url: Any) -> str:
    where = f"{base_url.scheme}://{base_url.host}" + (f":{base_url.port}" if base_url.port else "")
    problem = "timed out" if isinstance(error, anthropic.APITimeoutError) else "could not connect"
    return (
        f"Honk {problem} to the Anthropic API at {where} after {API_MAX_RETRIES} retries: "
        "check the network and the ANTHROPIC_BASE_URL setting."
    )
