"""A scripted Claude: a real HTTP server on loopback that answers `POST /v1/messages`.

It answers in the Messages API's shape, so the anthropic SDK parses it, from a script of
turns, each one JSON object:

    {"text": "..."}                                   a text block; stop_reason "end_turn"
    {"tool": "bash", "input": {"command": "ls"}}      a tool_use block (id made by the server)
    {"thinking": "..."}                               a signed thinking block
    {"blocks": [{"thinking": ""}, {"text": ".."}, {"tool": ..}]}   several blocks in one answer
    {"error": 529}  or  {"error": 500, "times": 3}    that HTTP status, once (or n times)
    {"sleep": 2.5}                                    wait, then answer with the next turn
                                                      ("sleep" may also sit in any turn above)

A turn may set "stop_reason" (e.g. "max_tokens", "refusal") to override the derived one. When
the script runs out, the answer is a `report` tool call saying so.

Faults that do not belong to the script (an overload lasting some seconds, a dropped
connection, a held request) are set as rules, the same as the GitHub simulator's (see
`honk_sim.faults`): `ScriptedClaude(faults=[...])`, `add_faults`, or over HTTP at
`/_sim/faults`. E.g. `{"status": 529, "for_seconds": 8}` answers every request for 8 s
with `overloaded_error`.

Requests are validated the way the API does for the mistakes an agent loop makes (roles
that do not alternate, a tool_use left without its tool_result, more than 4 cache_control
breakpoints, a thinking block whose conversation prefix changed) and refused with an
Anthropic-shaped 400, so loop bugs show up in tests. Prompt caching is simulated after
Anthropic's documented rules; see `PromptCache`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import socket
import struct
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from honk_sim.faults import ADMIN_PATH, FaultRule, FaultRuleError, Faults

log = structlog.get_logger()

Turn = dict[str, Any]

SCRIPTS_DIR = Path(__file__).parent / "scripts"
MAX_CACHE_BREAKPOINTS = 4
# Anthropic-defined tools carry a built-in schema the API bills as input (per its tool docs).
BUILT_IN_TOOL_TOKENS = {
    "bash_20250124": 245,
    "text_editor_20250124": 700,
    "text_editor_20250429": 700,
    "text_editor_20250728": 700,
}
CACHE_LOOKBACK_BLOCKS = 20
_ANSWER_KEYS = ("text", "tool", "thinking", "blocks")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class ScriptError(ValueError):
    """A script turn is not one of the shapes this module knows."""


class InvalidRequest(Exception):
    """The request would be refused by the Messages API; the message is the API's kind."""


def load_script(path: Path) -> list[Turn]:
    """Read a script (a JSON list of turns) and check every turn's shape."""
    turns = json.loads(Path(path).read_text())
    if not isinstance(turns, list):
        raise ScriptError(f"{path}: a script is a JSON list of turns")
    for turn in turns:
        _check_turn(turn)
    return turns


def long_run_script(turns: int, *, output_chars: int = 8000, thinking: bool = False) -> list[Turn]:
    """`turns - 1` bash calls that each print `output_chars` characters, then a report.

    With `thinking`, each call comes after a signed thinking block, as newer models answer.
    """
    script: list[Turn] = []
    for n in range(1, turns):
        command = f"yes 'step {n} output' | head -c {output_chars}"
        call: Turn = {"tool": "bash", "input": {"command": command}}
        script.append({"blocks": [{"thinking": f"Step {n}."}, call]} if thinking else call)
    script.append(
        {
            "tool": "report",
            "input": {
                "title": f"Long run of {turns} turns",
                "summary": "Ran many commands with large outputs.",
                "commit_message": "Long scripted run",
            },
        }
    )
    return script


def _check_turn(turn: Any) -> None:
    if not isinstance(turn, dict):
        raise ScriptError(f"a turn is a JSON object, got {turn!r}")
    if "error" in turn:
        if not isinstance(turn["error"], int) or turn["error"] < 400:
            raise ScriptError(f"'error' is an HTTP status of 400 or more, got {turn['error']!r}")
        return
    answers = [key for key in _ANSWER_KEYS if key in turn]
    if not answers and set(turn) == {"sleep"}:
        return
    if len(answers) != 1:
        raise ScriptError(f"a turn has exactly one of {', '.join(_ANSWER_KEYS)}: {turn!r}")
    if "blocks" in turn:
        for block in turn["blocks"]:
            _check_turn(block)
    if "tool" in turn and "input" not in turn:
        # Not only an object: a script may send a malformed input, as a model sometimes does.
        raise ScriptError(f"a tool turn needs an 'input': {turn!r}")


# --- prompt as the cache sees it ----------------------------------------------------------


@dataclass(frozen=True)
class PromptBlock:
    """One block of a request, in cache order: tools, then system, then messages."""

    identity: str
    tokens: int
    breakpoint: bool
    where: str


def prompt_blocks(body: Mapping[str, Any]) -> list[PromptBlock]:
    """The request's blocks in the order the cache hashes them, without cache_control."""
    blocks: list[PromptBlock] = []

    def add(section: str, role: str, block: Mapping[str, Any], where: str) -> None:
        bare = {key: value for key, value in block.items() if key != "cache_control"}
        text = _canonical(bare)
        built_in = BUILT_IN_TOOL_TOKENS.get(str(bare.get("type")), 0) if section == "tools" else 0
        blocks.append(
            PromptBlock(
                identity=_canonical([section, role, bare]),
                tokens=max(1, math.ceil(len(text) / 4)) + built_in,
                breakpoint="cache_control" in block and block["cache_control"] is not None,
                where=where,
            )
        )

    for index, tool in enumerate(body.get("tools") or []):
        add("tools", "", tool, f"tools.{index}")
    system = body.get("system")
    if isinstance(system, str):
        add("system", "", {"type": "text", "text": system}, "system")
    elif isinstance(system, list):
        for index, block in enumerate(system):
            add("system", "", block, f"system.{index}")
    for m, message in enumerate(body.get("messages") or []):
        for b, block in enumerate(_content(message)):
            add("messages", message["role"], block, f"messages.{m}.content.{b}")
    return blocks


def prefix_hashes(blocks: Sequence[PromptBlock]) -> list[str]:
    """hashes[i] identifies the prompt up to and including blocks[i]."""
    hashes: list[str] = []
    running = hashlib.sha256()
    for block in blocks:
        running.update(block.identity.encode())
        running.update(b"\x00")
        hashes.append(running.copy().hexdigest())
    return hashes


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _content(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content or [])


# --- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class PromptCache:
    """Anthropic's prompt cache, as documented (no TTL: entries live as long as the server).

    A prefix ending at a block with cache_control is written when the request is answered.
    A request reads the longest written prefix found by looking back from each breakpoint,
    the last one first, over at most 20 blocks; failing that it tries the breakpoint before.
    Everything from the end of the read prefix to the last breakpoint long enough to be cached
    is a cache write; what follows the last breakpoint is plain input. A prefix shorter than
    `min_cacheable_tokens` is not cached. Entries are per model.
    """

    def __init__(self, min_cacheable_tokens: int = 1024) -> None:
        self.min_cacheable_tokens = min_cacheable_tokens
        self._entries: set[tuple[str, str]] = set()

    def account(self, body: Mapping[str, Any]) -> CacheUsage:
        model = str(body.get("model"))
        blocks = prompt_blocks(body)
        hashes = prefix_hashes(blocks)
        through = list(itertools.accumulate(block.tokens for block in blocks))
        breakpoints = [index for index, block in enumerate(blocks) if block.breakpoint]

        read_end = self._longest_hit(model, hashes, breakpoints)
        write_end = read_end
        for index in breakpoints:
            if index > read_end and through[index] >= self.min_cacheable_tokens:
                self._entries.add((model, hashes[index]))
                write_end = index
        total = through[-1] if through else 0
        read = through[read_end] if read_end >= 0 else 0
        written = (through[write_end] if write_end >= 0 else 0) - read
        return CacheUsage(
            input_tokens=total - read - written,
            cache_creation_input_tokens=written,
            cache_read_input_tokens=read,
        )

    def _longest_hit(self, model: str, hashes: Sequence[str], breakpoints: Sequence[int]) -> int:
        for breakpoint in reversed(breakpoints):
            for index in range(breakpoint, max(breakpoint - CACHE_LOOKBACK_BLOCKS, -1), -1):
                if (model, hashes[index]) in self._entries:
                    return index
        return -1


# --- request validation ----------------------------------------------------------------------


def validate_request(body: Any, *, signing_key: bytes) -> None:
    """Raise InvalidRequest with the API's kind of message for what the API would refuse."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body is not a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Field required and must be a positive integer")
    if body.get("stream"):
        raise InvalidRequest("stream: the scripted Claude answers without streaming only")
    _validate_tools(body.get("tools") or [])
    _validate_system(body.get("system"))
    _validate_messages(body.get("messages"))
    breakpoints = sum(block.breakpoint for block in prompt_blocks(body))
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        raise InvalidRequest(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )
    _validate_thinking_signatures(body, signing_key)


def _validate_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise InvalidRequest("tools: Input should be a valid list")
    names = [tool.get("name") for tool in tools if isinstance(tool, dict)]
    if len(names) != len(tools) or not all(isinstance(name, str) and name for name in names):
        raise InvalidRequest("tools: every tool needs a name")
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: Tool names must be unique.")
    for index, tool in enumerate(tools):
        if tool.get("type") in (None, "custom"):
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise InvalidRequest(f"tools.{index}.custom.input_schema: Field required")


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list) or not all(
        isinstance(block, dict) and block.get("type") == "text" for block in system
    ):
        raise InvalidRequest("system: Input should be a string or a list of text blocks")
    for index, block in enumerate(system):
        if not str(block.get("text", "")).strip():
            raise InvalidRequest(f"system.{index}: text content blocks must be non-empty")


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    seen_tool_ids: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, str | list) or not content:
            raise InvalidRequest(f"messages.{index}: all messages must have non-empty content")
        if index == 0 and message["role"] != "user":
            raise InvalidRequest('messages: first message must use the "user" role')
        if index > 0 and messages[index - 1]["role"] == message["role"]:
            raise InvalidRequest(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{message["role"]}" roles in a row'
            )
        for b, block in enumerate(_content(message)):
            if not isinstance(block, dict) or "type" not in block:
                raise InvalidRequest(f"messages.{index}.content.{b}: a block needs a type")
            if block["type"] == "text" and not str(block.get("text", "")).strip():
                raise InvalidRequest(
                    f"messages.{index}.content.{b}: text content blocks must contain "
                    "non-whitespace text"
                )
            if block["type"] == "tool_use":
                if block.get("id") in seen_tool_ids:
                    raise InvalidRequest(
                        f"messages.{index}.content.{b}: `tool_use` ids must be unique"
                    )
                seen_tool_ids.add(block.get("id"))
        _validate_tool_pairing(messages, index)


def _validate_tool_pairing(messages: list[dict[str, Any]], index: int) -> None:
    message = messages[index]
    blocks = _content(message)
    if message["role"] == "assistant":
        asked = [block.get("id") for block in blocks if block.get("type") == "tool_use"]
        if not asked:
            return
        following = messages[index + 1] if index + 1 < len(messages) else None
        answered = {
            block.get("tool_use_id")
            for block in (_content(following) if following else [])
            if isinstance(block, dict) and block.get("type") == "tool_result"
        }
        missing = [tool_id for tool_id in asked if tool_id not in answered]
        if missing:
            raise InvalidRequest(
                f"messages.{index + 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        return
    previous = messages[index - 1] if index > 0 else None
    asked_before = {
        block.get("id")
        for block in (_content(previous) if previous else [])
        if block.get("type") == "tool_use"
    }
    other_seen = False
    for b, block in enumerate(blocks):
        if block.get("type") != "tool_result":
            other_seen = True
            continue
        if other_seen:
            raise InvalidRequest(
                f"messages.{index}.content.{b}: `tool_result` blocks must come first in the "
                "user message, before any other content"
            )
        if block.get("tool_use_id") not in asked_before:
            raise InvalidRequest(
                f"messages.{index}.content.{b}: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )


def thinking_signature(signing_key: bytes, model: str, prefix_hash: str) -> str:
    """A thinking block's signature binds it to the model and to everything before it."""
    return hmac.new(signing_key, f"{model}\x00{prefix_hash}".encode(), "sha256").hexdigest()


def _validate_thinking_signatures(body: Mapping[str, Any], signing_key: bytes) -> None:
    blocks = prompt_blocks(body)
    hashes = prefix_hashes(blocks)
    positions = {block.where: index for index, block in enumerate(blocks)}
    for m, message in enumerate(body["messages"]):
        for b, block in enumerate(_content(message)):
            if block["type"] not in ("thinking", "redacted_thinking"):
                continue
            index = positions[f"messages.{m}.content.{b}"]
            before = hashes[index - 1] if index > 0 else ""
            expected = thinking_signature(signing_key, body["model"], before)
            if not hmac.compare_digest(str(block.get("signature", "")), expected):
                raise InvalidRequest(
                    f"messages.{m}.content.{b}: Invalid `signature` in `thinking` block. The "
                    "block is bound to a different conversation. Remove the block, or set "
                    '`thinking.block_binding.prefix_mismatch_behavior` to "drop_block".'
                )


# --- the server -------------------------------------------------------------------------------


class ScriptedClaude:
    """A real HTTP server on 127.0.0.1 answering the Messages API from a script."""

    def __init__(
        self,
        script: list[Turn] | Path | None = None,
        *,
        min_cacheable_tokens: int = 1024,
        retry_after_ms: int | None = 20,
        api_key: str | None = None,
        faults: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        turns = load_script(script) if isinstance(script, Path) else list(script or [])
        for turn in turns:
            _check_turn(turn)
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.cache = PromptCache(min_cacheable_tokens)
        # The real API asks for seconds; the scripted one keeps tests fast. None: no header.
        self.retry_after_ms = retry_after_ms
        self._api_key = api_key  # when set, any other key is refused with a 401
        self.faults = Faults()
        self.faults.add(faults)
        self._turns = turns
        self._next_turn = 0
        self._errors_left: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._signing_key = uuid.uuid4().bytes
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve on a free port in a background thread; return the base URL for the SDK."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-claude"
        )
        self._thread.daemon = True
        self._thread.start()
        host, port = server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedClaude:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_faults(self, rules: Sequence[Mapping[str, Any]]) -> None:
        """Fault rules (see `honk_sim.faults`); also settable over HTTP at /_sim/faults."""
        self.faults.add(rules)

    @property
    def turns_left(self) -> int:
        return len(self._turns) - self._next_turn

    def answer(self, body: Any, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for one request (called on the server's threads)."""
        with self._lock:
            self.requests.append(body if isinstance(body, dict) else {"invalid": body})
        key = _credentials(headers)
        if not key:
            return 401, _error_body(401, "x-api-key header is required")
        if self._api_key is not None and not hmac.compare_digest(key, self._api_key):
            return 401, _error_body(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return 400, _error_body(400, "anthropic-version: header is required")
        try:
            validate_request(body, signing_key=self._signing_key)
        except InvalidRequest as error:
            log.info("scripted_claude.invalid_request", error=str(error))
            return 400, _error_body(400, str(error))
        turn = self._take_turn()
        if "error" in turn:
            status = int(turn["error"])
            message = turn.get("message") or f"Scripted error {status}"
            return status, _error_body(status, message)
        with self._lock:
            response = self._message(body, turn)
            self.responses.append(response)
        return 200, response

    def _take_turn(self) -> Turn:
        while True:
            with self._lock:
                if self._next_turn >= len(self._turns):
                    return _SCRIPT_ENDED
                turn = self._turns[self._next_turn]
                if "error" in turn:
                    if self._errors_left is None:
                        self._errors_left = int(turn.get("times", 1))
                    self._errors_left -= 1
                    if self._errors_left <= 0:
                        self._errors_left = None
                        self._next_turn += 1
                    return turn
                self._next_turn += 1
            if "sleep" in turn:
                self._stopping.wait(float(turn["sleep"]))
            if set(turn) != {"sleep"}:
                return turn

    def _message(self, body: dict[str, Any], turn: Turn) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for step in turn.get("blocks", [turn]):
            content.append(self._block(body, step, content))
        stop_reason = turn.get("stop_reason") or (
            "tool_use" if any(block["type"] == "tool_use" for block in content) else "end_turn"
        )
        usage = self.cache.account(body)
        output_tokens = max(1, math.ceil(len(_canonical(content)) / 4))
        return {
            "id": f"msg_scripted_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": usage.cache_creation_input_tokens,
                    "ephemeral_1h_input_tokens": 0,
                },
                "service_tier": "standard",
            },
        }

    def _block(
        self, body: dict[str, Any], step: Turn, earlier: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if "text" in step:
            return {"type": "text", "text": step["text"]}
        if "tool" in step:
            return {
                "type": "tool_use",
                "id": f"toolu_scripted_{next(self._ids):04d}_{uuid.uuid4().hex[:8]}",
                "name": step["tool"],
                "input": step["input"],
            }
        answered = {
            **body,
            "messages": [*body["messages"], {"role": "assistant", "content": earlier}],
        }
        hashes = prefix_hashes(prompt_blocks(answered))
        before = hashes[-1] if hashes else ""
        return {
            "type": "thinking",
            "thinking": step["thinking"],
            "signature": thinking_signature(self._signing_key, body["model"], before),
        }


_SCRIPT_ENDED: Turn = {
    "tool": "report",
    "input": {
        "title": "Scripted run ended",
        "summary": "The scripted Claude has no more turns in its script.",
        "commit_message": "Scripted run ended",
    },
}


def _credentials(headers: Mapping[str, str]) -> str:
    # anthropic-sdk-python 2.x sends the API key as `Authorization: Bearer`; older clients
    # and curl examples use `x-api-key`. Either will do.
    bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
    return headers.get("x-api-key") or bearer


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": f"req_scripted_{uuid.uuid4().hex[:16]}",
    }


def _handler_for(claude: ScriptedClaude) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            path = self.path.split("?")[0]
            if path == ADMIN_PATH:
                self._admin(raw)
                return
            if path != "/v1/messages":
                self._send(404, _error_body(404, f"Not found: {self.path}"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error_body(400, "The request body is not valid JSON."))
                return
            headers = {key.lower(): value for key, value in self.headers.items()}
            fault = claude.faults.take("POST", path)
            if fault is not None and fault.action != "slow":
                self._fault(fault, body, headers)
                return
            if fault is not None:
                claude._stopping.wait(fault.seconds)
            status, answer = claude.answer(body, headers)
            self._send(status, answer)

        def do_GET(self) -> None:
            if self.path.split("?")[0] == ADMIN_PATH:
                self._admin(None)
            else:
                self._send(404, _error_body(404, f"Not found: {self.path}"))

        def do_DELETE(self) -> None:
            if self.path.split("?")[0] == ADMIN_PATH:
                claude.faults.clear()
                self._admin(None)
            else:
                self._send(404, _error_body(404, f"Not found: {self.path}"))

        def _admin(self, raw: bytes | None) -> None:
            if raw is not None:
                try:
                    rules = json.loads(raw)
                    claude.faults.add(rules if isinstance(rules, list) else [rules])
                except (ValueError, FaultRuleError) as error:
                    self._send_json(400, {"message": str(error)})
                    return
            self._send_json(200, [rule.to_json() for rule in claude.faults.rules()])

        def _fault(self, fault: FaultRule, body: Any, headers: Mapping[str, str]) -> None:
            if fault.action == "hold":
                claude._stopping.wait(fault.seconds)
            elif fault.action == "lose-after-acting":
                claude.answer(body, headers)  # the turn is spent; its answer never arrives
            if fault.action == "status" or (fault.status and fault.action != "hold"):
                status = fault.status or 529
                message = fault.message or f"Injected fault {status}"
                self._send(status, _error_body(status, message), retry_after=fault.retry_after)
                return
            self._reset()

        def _reset(self) -> None:
            # SO_LINGER 0: close with a TCP reset, as a dropped connection looks.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _send_json(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send(
            self, status: int, body: dict[str, Any], *, retry_after: int | None = None
        ) -> None:
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.send_header("request-id", body.get("request_id") or body.get("id", ""))
                if retry_after is not None:
                    self.send_header("retry-after", str(retry_after))
                elif status >= 429 and claude.retry_after_ms is not None:
                    self.send_header("retry-after-ms", str(claude.retry_after_ms))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a cancelled run): nothing to answer.
                pass

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("scripted_claude.http", line=format % args)

    return Handler


def iter_tool_results(body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every tool_result block a request carries, oldest first (for assertions)."""
    for message in body.get("messages", []):
        for block in _content(message):
            if block.get("type") == "tool_result":
                yield block
