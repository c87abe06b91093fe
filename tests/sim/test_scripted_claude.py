"""The scripted Claude: a real server on loopback, spoken to by the real anthropic SDK."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from honk_sim.claude import (
    SCRIPTS_DIR,
    PromptCache,
    ScriptedClaude,
    ScriptError,
    load_script,
    long_run_script,
)

MODEL = "claude-sonnet-5-5"
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ScriptedClaude] = []

    def start(script: list[dict[str, Any]], **options: Any) -> tuple[ScriptedClaude, str]:
        claude = ScriptedClaude(script, **options)
        servers.append(claude)
        return claude, claude.start()

    yield start
    for claude in servers:
        claude.stop()


def create(url: str, *, api_key: str = "test-key", retries: int = 0, **request: Any) -> Any:
    async def call() -> Any:
        client = anthropic.AsyncAnthropic(base_url=url, api_key=api_key, max_retries=retries)
        async with client:
            return await client.messages.create(**request)

    return asyncio.run(call())


def ask(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def tokens(block: dict[str, Any]) -> int:
    """The simulator's token count for one block: its canonical JSON's length over 4."""
    bare = {key: value for key, value in block.items() if key != "cache_control"}
    return max(1, math.ceil(len(json.dumps(bare, sort_keys=True, separators=(",", ":"))) / 4))


def test_sdk_parses_a_text_answer_in_the_messages_api_shape(serve: Any) -> None:
    claude, url = serve([{"text": "Hello from the script."}])

    message = create(url, **ask())

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello from the script."
    assert message.usage.output_tokens > 0
    assert message.usage.input_tokens > 0
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert claude.requests[0]["messages"][0]["content"] == "hello"


def test_tool_calls_get_fresh_ids_and_stop_for_tool_use(serve: Any) -> None:
    _, url = serve(
        [
            {
                "blocks": [
                    {"text": "Looking."},
                    {"tool": "bash", "input": {"command": "ls"}},
                    {"tool": "bash", "input": {"command": "pwd"}},
                ]
            }
        ]
    )

    message = create(url, **ask())

    assert message.stop_reason == "tool_use"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert [call.input for call in calls] == [{"command": "ls"}, {"command": "pwd"}]
    assert all(call.name == "bash" and call.id.startswith("toolu_") for call in calls)
    assert calls[0].id != calls[1].id


def test_a_request_without_a_key_is_refused_with_401(serve: Any) -> None:
    claude, url = serve([{"text": "never sent"}])

    response = httpx.post(
        f"{url}/v1/messages", json=ask(), headers={"anthropic-version": "2023-06-01"}
    )

    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert claude.turns_left == 1


def test_a_wrong_key_is_refused_when_the_server_expects_one(serve: Any) -> None:
    _, url = serve([{"text": "never sent"}], api_key="right-key")

    with pytest.raises(anthropic.AuthenticationError):
        create(url, api_key="wrong-key", **ask())
    assert create(url, api_key="right-key", **ask()).content[0].text == "never sent"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "roles must alternate",
        ),
        ([{"role": "assistant", "content": "a"}], "first message"),
        ([{"role": "user", "content": [{"type": "text", "text": "  "}]}], "non-whitespace"),
        (
            [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}],
                },
                {"role": "user", "content": "I did not answer the tool call"},
            ],
            "without `tool_result` blocks",
        ),
        (
            [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "x"}],
                },
            ],
            "unexpected `tool_use_id`",
        ),
        (
            [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "first"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"},
                    ],
                },
            ],
            "must come first",
        ),
    ],
)
def test_malformed_conversations_are_refused_with_the_apis_400(
    serve: Any, messages: list[dict[str, Any]], expected: str
) -> None:
    claude, url = serve([{"text": "answer"}])

    with pytest.raises(anthropic.BadRequestError) as refused:
        create(url, **{**ask(), "messages": messages})

    assert expected in refused.value.body["error"]["message"]  # type: ignore[index]
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert claude.turns_left == 1, "a refused request must not use up a script turn"


def test_more_than_four_cache_breakpoints_are_refused(serve: Any) -> None:
    _, url = serve([{"text": "answer"}])
    blocks = [{"type": "text", "text": f"part {n}", "cache_control": EPHEMERAL} for n in range(5)]

    with pytest.raises(anthropic.BadRequestError) as refused:
        create(url, **{**ask(), "messages": [{"role": "user", "content": blocks}]})

    assert "A maximum of 4 blocks with cache_control" in str(refused.value)
    assert create(url, **{**ask(), "messages": [{"role": "user", "content": blocks[:4]}]})


def test_an_injected_overload_answers_529_then_the_script_goes_on(serve: Any) -> None:
    claude, url = serve([{"error": 529, "times": 2}, {"text": "recovered"}])

    with pytest.raises(anthropic.InternalServerError) as first:
        create(url, **ask())
    assert first.value.status_code == 529
    assert first.value.response.headers["retry-after-ms"] == "20"
    # The SDK retries a 529 by itself, as the retry-after header asks.
    assert create(url, retries=2, **ask()).content[0].text == "recovered"
    assert len(claude.requests) == 3


def test_the_end_of_the_script_is_a_report_saying_so(serve: Any) -> None:
    _, url = serve([])

    message = create(url, **ask())

    assert message.content[0].type == "tool_use"
    assert message.content[0].name == "report"
    assert "no more turns" in message.content[0].input["summary"]


def test_cache_accounting_on_a_hand_built_request_pair(serve: Any) -> None:
    claude, url = serve([{"text": "one"}, {"text": "two"}, {"text": "three"}])
    system = [{"type": "text", "text": "You are careful. " * 400, "cache_control": EPHEMERAL}]
    task = {"type": "text", "text": "Fix the bug. " * 50}
    first = {
        **ask(),
        "system": system,
        "messages": [{"role": "user", "content": [{**task, "cache_control": EPHEMERAL}]}],
    }
    reply = {"type": "text", "text": "one"}
    more = {"type": "text", "text": "And the docs. " * 30}
    second = {
        **first,
        "messages": [
            {"role": "user", "content": [task]},
            {"role": "assistant", "content": [reply]},
            {"role": "user", "content": [{**more, "cache_control": EPHEMERAL}]},
        ],
    }
    prefix = tokens(system[0]) + tokens(task)

    one = create(url, **first).usage
    two = create(url, **second).usage

    assert (one.cache_read_input_tokens, one.cache_creation_input_tokens) == (0, prefix)
    assert one.input_tokens == 0
    # The second request reads the first's prefix (found by looking back from its
    # breakpoint) and writes only what it added.
    assert two.cache_read_input_tokens == prefix
    assert two.cache_creation_input_tokens == tokens(reply) + tokens(more)
    assert two.input_tokens == 0

    changed_system = [{**system[0], "text": "You are careless. " * 400}]
    three = create(url, **{**second, "system": changed_system}).usage
    assert three.cache_read_input_tokens == 0, "a changed system prompt invalidates the cache"
    assert len(claude.requests) == 3


def test_text_after_the_last_breakpoint_is_plain_input_and_short_prefixes_are_not_cached() -> None:
    cache = PromptCache(min_cacheable_tokens=1024)
    short = {**ask(), "system": [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]}
    usage = cache.account(short)
    assert usage.cache_creation_input_tokens == 0
    assert usage.input_tokens == tokens({"type": "text", "text": "Be brief."}) + tokens(
        {"type": "text", "text": "hello"}
    )

    long_system = {"type": "text", "text": "x" * 8000, "cache_control": EPHEMERAL}
    request = {**ask("a question"), "system": [long_system]}
    first = cache.account(request)
    second = cache.account({**request, "messages": [{"role": "user", "content": "other"}]})
    assert first.cache_creation_input_tokens == tokens(long_system)
    assert second.cache_read_input_tokens == tokens(long_system)
    assert second.input_tokens == tokens({"type": "text", "text": "other"})
    other_model = cache.account({**request, "model": "claude-haiku-5-5"})
    assert other_model.cache_read_input_tokens == 0, "caches are per model"


def test_lookback_stops_after_twenty_blocks_then_tries_the_breakpoint_before() -> None:
    cache = PromptCache(min_cacheable_tokens=1)
    system = {"type": "text", "text": "system " * 100, "cache_control": EPHEMERAL}
    base = [{"type": "text", "text": "task " * 100, "cache_control": EPHEMERAL}]
    cache.account({**ask(), "system": [system], "messages": [{"role": "user", "content": base}]})

    near = [*base, *({"type": "text", "text": f"n{n}"} for n in range(18))]
    near[-1] = {**near[-1], "cache_control": EPHEMERAL}
    found = cache.account({**ask(), "messages": [{"role": "user", "content": near}]})
    assert found.cache_read_input_tokens == 0, "without the system block the prefix differs"

    near_request = {**ask(), "system": [system], "messages": [{"role": "user", "content": near}]}
    read_near = cache.account(near_request).cache_read_input_tokens
    assert read_near == tokens(system) + tokens(base[0])

    far = [{**block} for block in base] + [{"type": "text", "text": f"f{n}"} for n in range(25)]
    far[0].pop("cache_control")
    far[-1] = {**far[-1], "cache_control": EPHEMERAL}
    far_request = {**ask(), "system": [system], "messages": [{"role": "user", "content": far}]}
    assert cache.account(far_request).cache_read_input_tokens == tokens(system)


def test_a_thinking_block_is_refused_once_the_conversation_before_it_changed(serve: Any) -> None:
    _, url = serve(
        [
            {"tool": "bash", "input": {"command": "ls"}},
            {
                "blocks": [
                    {"thinking": "Now look closer."},
                    {"tool": "bash", "input": {"command": "cat a"}},
                ]
            },
            {"text": "done"},
            {"text": "never"},
        ]
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]

    def turn(results: list[str]) -> None:
        message = create(url, **{**ask(), "messages": messages})
        content = [block.to_dict(mode="json") for block in message.content]
        messages.append({"role": "assistant", "content": content})
        calls = [block for block in content if block["type"] == "tool_use"]
        answers = [
            {"type": "tool_result", "tool_use_id": call["id"], "content": text}
            for call, text in zip(calls, results, strict=True)
        ]
        messages.append({"role": "user", "content": answers})

    turn(["a\nb"])
    turn(["contents of a"])
    assert messages[3]["content"][0]["type"] == "thinking"
    assert create(url, **{**ask(), "messages": messages}).content[0].text == "done"

    messages[2]["content"][0]["content"] = "[output trimmed: 3 chars]"
    with pytest.raises(anthropic.BadRequestError) as refused:
        create(url, **{**ask(), "messages": messages})
    assert "bound to a different conversation" in str(refused.value)

    messages[3]["content"] = [
        block for block in messages[3]["content"] if block["type"] != "thinking"
    ]
    assert create(url, **{**ask(), "messages": messages}).content[0].text == "never"


def test_scripts_are_checked_when_loaded(tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"tool": "bash"}]))
    with pytest.raises(ScriptError):
        load_script(bad)
    with pytest.raises(ScriptError):
        ScriptedClaude([{"text": "a", "tool": "bash", "input": {}}])


def test_the_demo_script_views_fixes_tests_and_reports() -> None:
    script = load_script(SCRIPTS_DIR / "fix_sum.json")

    steps = [step for turn in script for step in turn.get("blocks", [turn]) if "tool" in step]
    assert [step["input"].get("command") for step in steps[:3]] == [
        "view",
        "str_replace",
        "python3 -m unittest -q",
    ]
    assert steps[1]["input"]["old_str"] == "return a - b"
    assert steps[1]["input"]["new_str"] == "return a + b"
    report = steps[-1]["input"]
    assert steps[-1]["tool"] == "report"
    assert report["title"] == "Fix add() to return the sum"
    assert len(report["summary"].splitlines()) == 2
    assert report["commit_message"].startswith("Fix add() to return the sum\n\n")


def test_the_long_run_script_has_one_turn_per_request() -> None:
    script = long_run_script(30, output_chars=8000)

    assert len(script) == 30
    assert script[-1]["tool"] == "report"
    assert "head -c 8000" in script[0]["input"]["command"]
