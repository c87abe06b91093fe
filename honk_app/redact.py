"""Keep secrets out of everything Honk writes: logs, comments, transcripts.

Two layers: a Redactor replaces the exact secrets Honk holds (App key, webhook secret,
API key, each installation token as it is minted), and `redact_patterns` catches the
well-known token shapes even when nobody registered them (a token the agent found in a
repository, a credential in a git URL).

A registered secret is also found encoded (hex, base64 and base64url at each of the three
alignments a longer text can give it) and split by whitespace (`fold`, `base64`'s 76-column
lines, a line break in a commit message): the search runs over the text with its
whitespace left out, and what it finds is replaced in the text as written.
"""

from __future__ import annotations

import base64
import bisect
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys: the whole block, or from BEGIN to the end of the base64 if cut off.
    (re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
                r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\:,-]*)",
                re.DOTALL), REDACTED),
    # GitHub: personal, OAuth, user-to-server, installation and refresh tokens; fine-grained
    # PATs; the old `v1.` installation tokens of GitHub Enterprise Server.
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), REDACTED),
    # The stateless installation tokens (2026): ghs_<app id>_<JWT>, about 520 characters.
    (re.compile(r"\bgh[pousr]_[0-9]+_[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){1,2}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{30,}"), REDACTED),
    (re.compile(r"\bv1\.[0-9a-f]{40}\b"), REDACTED),
    # Anthropic API keys and OAuth tokens.
    (re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}"), REDACTED),
    # A JWT (the App's own, signed with its key).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), REDACTED),
    # Credentials in URLs: https://x-access-token:TOKEN@github.com/..., or any user:password@.
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+@"), rf"\g<1>{REDACTED}@"),
    (re.compile(r"(?i)(x-access-token:)[^\s/@]+@"), rf"\g<1>{REDACTED}@"),
    # HTTP authorization headers, e.g. from `git -c http.extraHeader=...` or curl -v.
    (re.compile(r"(?i)(\bauthorization:\s*(?:bearer|token|basic)\s+)[^\s'\"]+"),
     rf"\g<1>{REDACTED}"),
]


def redact_patterns(text: str) -> str:
    """Replace well-known secret shapes (tokens, keys, URL credentials) with [redacted]."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redactor:
    """Replaces every occurrence of the registered secrets, and the well-known shapes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Register a secret; values shorter than 8 characters are ignored (too common)."""
        candidates = {secret.strip()}
        # A PEM key may leak line by line (head, grep): register its base64 lines too.
        if "\n" in secret:
            candidates |= {line.strip() for line in secret.splitlines()
                           if not line.startswith("-----")}
        candidates = {value for value in candidates if len(value) >= MIN_SECRET_CHARS}
        forms = {_WHITESPACE.sub("", form) for value in candidates for form in _encodings(value)}
        fresh = {form for form in forms if len(form) >= MIN_SECRET_CHARS} - self._secrets
        if not fresh:
            return
        with self._lock:
            self._secrets |= fresh
            # Longest first, so a secret containing another is replaced whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None and len(text) >= MIN_SECRET_CHARS:
            text = _replace_ignoring_whitespace(pattern, text)
        return redact_patterns(text)


_WHITESPACE = re.compile(r"\s+")
_WORDS = re.compile(r"\S+")


def _encodings(secret: str) -> set[str]:
    """The secret as written, in hex, and in base64/base64url: for base64, the part of the
    encoding that depends on the secret alone, at each of the three byte alignments (what
    comes before it in a longer text shifts its bytes across base64's 3-byte groups)."""
    raw = secret.encode()
    forms = {secret, raw.hex(), raw.hex().upper()}
    for skip in range(3):
        part = raw[skip:]
        core = base64.b64encode(part[: len(part) // 3 * 3]).decode()
        forms |= {core, core.replace("+", "-").replace("/", "_")}
    forms.add(base64.b64encode(raw).decode())  # whole, with its padding
    return forms


def _replace_ignoring_whitespace(pattern: re.Pattern[str], text: str) -> str:
    """Replace what `pattern` finds in `text` read without its whitespace; a match that
    spans lines or spaces is replaced from its first character to its last."""
    if not _WHITESPACE.search(text):
        return pattern.sub(REDACTED, text)
    hits = [(hit.start(), hit.end()) for hit in pattern.finditer(_WHITESPACE.sub("", text))]
    if not hits:
        return text
    # Where each word starts, in the text and in the text without whitespace.
    in_text, in_joined, length = [], [], 0
    for word in _WORDS.finditer(text):
        in_text.append(word.start())
        in_joined.append(length)
        length += word.end() - word.start()

    def position(joined_index: int) -> int:
        word = bisect.bisect_right(in_joined, joined_index) - 1
        return in_text[word] + joined_index - in_joined[word]

    out, done = [], 0
    for start, end in hits:
        out += [text[done:position(start)], REDACTED]
        done = position(end - 1) + 1
    out.append(text[done:])
    return "".join(out)


def redacting_processor(redactor: Redactor) -> Processor:
    """A structlog processor that redacts every string in the event dict (nested too)."""

    def redact_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            event_dict[key] = _redact_value(redactor, value)
        return event_dict

    return redact_event


def _redact_value(redactor: Redactor, value: Any) -> Any:
    if isinstance(value, str):
        return redactor(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {key: _redact_value(redactor, item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_redact_value(redactor, item) for item in value)
    # Anything else (an exception, a Path, a URL object) is rendered with str() later on:
    # redact that rendering, and keep the object itself when there was nothing to hide.
    rendered = str(value)
    redacted = redactor(rendered)
    return value if redacted == rendered else redacted
