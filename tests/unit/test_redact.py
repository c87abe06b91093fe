"""Secrets never reach logs or comments: registered values and well-known token shapes."""

from __future__ import annotations

import io
import json

import structlog

from honk_app.redact import REDACTED, Redactor, redact_patterns, redacting_processor

TOKEN = "ghs_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\n"
       "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
       "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
       "-----END RSA PRIVATE KEY-----\n")


def test_registered_secrets_are_replaced_everywhere() -> None:
    redactor = Redactor(["webhook-secret-123", "", "short"])
    text = "a webhook-secret-123 b webhook-secret-123 short"
    assert redactor(text) == f"a {REDACTED} b {REDACTED} short"


def test_added_secrets_count_from_then_on() -> None:
    redactor = Redactor([])
    assert redactor("token abcdefgh12345678") == "token abcdefgh12345678"
    redactor.add("abcdefgh12345678")
    redactor.add("1234567")  # too short to redact safely: ignored
    assert redactor("token abcdefgh12345678 1234567") == f"token {REDACTED} 1234567"


def test_a_secret_containing_another_is_replaced_whole() -> None:
    redactor = Redactor(["abcdefgh", "abcdefgh-and-more"])
    assert redactor("x abcdefgh-and-more y") == f"x {REDACTED} y"


def test_each_line_of_a_registered_key_is_a_secret() -> None:
    redactor = Redactor([PEM])
    leaked = "head -2 key.pem:\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    assert redactor(leaked) == f"head -2 key.pem:\n{REDACTED}\n"
    assert redactor(PEM).strip() == REDACTED


def test_github_and_anthropic_token_shapes() -> None:
    samples = [
        TOKEN,
        "ghp_" + "x" * 36,
        "gho_" + "Y" * 36,
        "ghu_" + "7" * 36,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS",
        "sk-ant-api03-" + "Zz9_-" * 18,
        "sk-ant-oat01-abcdefghijklmnopqrstuvwxyz",
        "v1." + "0123456789abcdef" * 2 + "01234567",
    ]
    for sample in samples:
        assert redact_patterns(f"value={sample}; next") == f"value={REDACTED}; next", sample


def test_pem_blocks_whole_or_cut_off() -> None:
    assert redact_patterns(f"key:\n{PEM}after") == f"key:\n{REDACTED}\nafter"
    cut = PEM.split("-----END")[0]
    assert redact_patterns("start " + cut) == "start " + REDACTED
    escaped = json.dumps({"key": PEM})  # as in a JSON log line: \n escaped
    assert "MIIE" not in redact_patterns(escaped)
    ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----"
    assert redact_patterns(ec) == REDACTED


def test_credentials_in_urls_and_headers() -> None:
    url = f"fatal: unable to access 'https://x-access-token:{TOKEN}@github.com/o/r.git/'"
    assert redact_patterns(url) == (
        f"fatal: unable to access 'https://x-access-token:{REDACTED}@github.com/o/r.git/'")
    assert redact_patterns("git clone https://bob:hunter2hunter2@example.com/r") == (
        f"git clone https://bob:{REDACTED}@example.com/r")
    assert redact_patterns("Authorization: Bearer abc.def.ghi") == (
        f"Authorization: Bearer {REDACTED}")
    assert redact_patterns("> authorization: token 0123456789") == (
        f"> authorization: token {REDACTED}")
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjM0NSJ9.c2lnbmF0dXJl"
    assert redact_patterns(f"jwt {jwt}") == f"jwt {REDACTED}"


def test_ordinary_text_is_left_alone() -> None:
    text = ("git@github.com:owner/repo.git https://github.com/owner/repo ghs_short "
            "sk-ant- the ghost_user_name -----BEGIN PUBLIC KEY----- v1.2.3 email a@b.c")
    assert redact_patterns(text) == text
    assert Redactor([])(text) == text


def test_processor_redacts_every_string_of_an_event() -> None:
    redactor = Redactor(["app-webhook-secret"])
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[redacting_processor(redactor), structlog.processors.JSONRenderer()])
    logger.info(f"pushed with {TOKEN}", remote=f"https://x-access-token:{TOKEN}@github.com/o/r",
                nested={"list": ["app-webhook-secret", 3, None], "ok": True},
                error=RuntimeError("bad secret app-webhook-secret"), count=2)
    line = out.getvalue()
    assert TOKEN not in line and "app-webhook-secret" not in line
    event = json.loads(line)
    assert event == {
        "event": f"pushed with {REDACTED}",
        "remote": f"https://x-access-token:{REDACTED}@github.com/o/r",
        "nested": {"list": [REDACTED, 3, None], "ok": True},
        "error": f"bad secret {REDACTED}",
        "count": 2,
    }


SECRET = "whsec-4f9a2c7e1b8d3a6f"


def _leaks(text: str) -> list[str]:
    """The forms of SECRET (and of its long parts) still readable in `text`."""
    import base64

    squeezed = "".join(text.split())
    raw = SECRET.encode()
    forms = [SECRET, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode().rstrip("=")]
    return [form for form in forms if form[:12] in squeezed or form[-12:] in squeezed]


def test_encoded_forms_of_a_registered_secret_are_replaced() -> None:
    import base64

    redactor = Redactor([SECRET])
    raw = SECRET.encode()
    for prefix in ("", "a", "ab", "abc", "token="):  # each base64 alignment
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(prefix.encode() + raw + b"!").decode()
            out = redactor(f"value: {encoded} end")
            assert REDACTED in out and out.endswith(" end"), (prefix, out)
            # Left: at most the characters that also encode the prefix or the "!".
            allowed = len(base64.b64encode(prefix.encode())) + 4
            assert len(out) - len(f"value: {REDACTED} end") <= allowed, (prefix, out)
    for text in (raw.hex(), raw.hex().upper(), f"0x{raw.hex()},"):
        out = redactor(f"hex {text}")
        assert REDACTED in out and not _leaks(out), out


def test_a_secret_split_across_lines_or_spaces_is_replaced() -> None:
    import base64
    import textwrap

    redactor = Redactor([SECRET])
    folded = "\n".join(textwrap.wrap(SECRET, 5))  # fold -w 5
    out = redactor(f"Fix the bug\n\n{folded}\n\nCo-authored-by: x")
    assert out == f"Fix the bug\n\n{REDACTED}\n\nCo-authored-by: x"
    spaced = " ".join(SECRET)
    assert redactor(f"<{spaced}>") == f"<{REDACTED}>"
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(SECRET.encode() * 4).decode(), 8))
    assert not _leaks(redactor(wrapped))
    # Ordinary text keeps its spacing.
    assert redactor("a  b\n\nc\td") == "a  b\n\nc\td"


def test_the_stateless_installation_token_shape_is_replaced() -> None:
    jwt = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJnaXRodWIiLCJpbnN0YWxsYXRpb24iOjQy"
           "fQ.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tbG9vay1yZWFs_-x")
    token = f"ghs_123456_{jwt}"
    out = redact_patterns(f"git push https://example.com with {token} done")
    assert token not in out and "eyJ" not in out and out.endswith(" done")
    assert redact_patterns(f"Authorization: token {token}") == f"Authorization: token {REDACTED}"
    assert REDACTED in redact_patterns(f"x-access-token:{token}@github.com")


def test_log_lines_hide_encoded_and_split_forms_too() -> None:
    import base64

    redactor = Redactor([SECRET])
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[redacting_processor(redactor), structlog.processors.JSONRenderer()])
    logger.info("check output", output=f"env: {base64.b64encode(SECRET.encode()).decode()}\n"
                f"hex: {SECRET.encode().hex()}\nsplit: {SECRET[:9]}\n{SECRET[9:]}")
    event = json.loads(out.getvalue())
    assert event["output"] == f"env: {REDACTED}\nhex: {REDACTED}\nsplit: {REDACTED}"
