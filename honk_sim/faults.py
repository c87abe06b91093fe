"""Fault rules for the simulators: what to break, for which requests, how often.

Both simulators (GitHub and the scripted Claude) take the same rules, as dicts (JSON):

    {"action": "status", "status": 502}          answer with this status (GitHub's or
                                                 Anthropic's error shape); with
                                                 "retry_after": N, a `retry-after` header
    {"action": "reset"}                          drop the connection without an answer
    {"action": "hold", "seconds": 600}           keep the request waiting that long (a
                                                 server that never answers), then drop it
    {"action": "slow", "seconds": 3}             answer normally, that much later
    {"action": "lose-after-acting"}              do what was asked, then lose the answer:
                                                 drop the connection, or answer "status"
                                                 (e.g. 502) if given

Which requests: "method" (e.g. "POST"; default any) and "path", a regular expression
searched in the request's path (default any). How many: "count" matching requests (default
1), or every matching request for "for_seconds" after the rule is set ("count": null).
A rule that has run out is dropped. Rules are set through the simulator's Python API
(`add_faults`), the harness (`offline_honk(..., faults=...)`), or over HTTP:

    POST   /_sim/faults   a JSON list of rules: added
    GET    /_sim/faults   the rules in force
    DELETE /_sim/faults   all rules removed
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("status", "reset", "hold", "slow", "lose-after-acting")
ADMIN_PATH = "/_sim/faults"


class FaultRuleError(ValueError):
    """A fault rule is not one of the shapes above."""


@dataclass
class FaultRule:
    action: str
    status: int | None = None
    method: str | None = None
    path: str = ""
    count: int | None = 1
    for_seconds: float | None = None
    seconds: float = 0.0
    retry_after: int | None = None
    message: str | None = None
    set_at: float = field(default_factory=time.monotonic)
    hits: int = 0

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> FaultRule:
        if not isinstance(data, Mapping):
            raise FaultRuleError(f"a fault rule is a JSON object, got {data!r}")
        known = {"action", "status", "method", "path", "count", "for_seconds", "seconds",
                 "retry_after", "message"}
        unknown = set(data) - known
        if unknown:
            raise FaultRuleError(f"unknown keys in a fault rule: {sorted(unknown)}")
        action = data.get("action", "status")
        if action not in ACTIONS:
            raise FaultRuleError(f"'action' is one of {', '.join(ACTIONS)}, got {action!r}")
        status = data.get("status")
        if action == "status" and status is None:
            status = 502
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise FaultRuleError(f"'status' is an HTTP error status, got {status!r}")
        count = data.get("count", None if "for_seconds" in data else 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise FaultRuleError(f"'count' is a positive number or null, got {count!r}")
        path = str(data.get("path") or "")
        try:
            re.compile(path)
        except re.error as error:
            raise FaultRuleError(f"'path' is not a regular expression: {error}") from None
        method = data.get("method")
        return cls(
            action=action,
            status=status,
            method=str(method).upper() if method else None,
            path=path,
            count=count,
            for_seconds=_number(data, "for_seconds"),
            seconds=_number(data, "seconds") or (600.0 if action == "hold" else 0.0),
            retry_after=data.get("retry_after"),
            message=data.get("message"),
        )

    def expired(self, now: float) -> bool:
        if self.count is not None and self.hits >= self.count:
            return True
        return self.for_seconds is not None and now - self.set_at > self.for_seconds

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return re.search(self.path, path) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action, "status": self.status, "method": self.method,
            "path": self.path, "count": self.count, "for_seconds": self.for_seconds,
            "seconds": self.seconds, "retry_after": self.retry_after, "hits": self.hits,
        }


class Faults:
    """The rules in force, thread-safe: the first live rule matching a request is taken."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rules: Iterable[Mapping[str, Any] | FaultRule]) -> list[FaultRule]:
        parsed = [r if isinstance(r, FaultRule) else FaultRule.parse(r) for r in rules]
        with self._lock:
            self._rules.extend(parsed)
        return parsed

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, method: str, path: str) -> FaultRule | None:
        now = time.monotonic()
        with self._lock:
            self._rules = [rule for rule in self._rules if not rule.expired(now)]
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or value < 0:
        raise FaultRuleError(f"'{key}' is a number of seconds, got {value!r}")
    return float(value)
