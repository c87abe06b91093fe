"""Settings: the server's from the environment, a repository's from `.github/honk.yml`.

Both are read once into typed, frozen objects and passed down; nothing below this module
reads `os.environ`. `.env` (read under the environment at start, written by the setup page)
is read and written here too.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dotenv import dotenv_values

DEFAULT_MODEL = "claude-sonnet-5-5"
# A repository's `model:` may name these unless the operator sets HONK_MODELS: the current
# Claude models agent/pricing.py knows (a test keeps the two in step).
CURRENT_MODELS = ("claude-fable-5-2", "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,99}$")
DEFAULT_LABEL = "honk"
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(Exception):
    """A server setting is missing or malformed; the message names it in one line."""


class RepoConfigError(Exception):
    """`.github/honk.yml` is not valid; the message names the key in one sentence."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    port: int = 3000
    host: str = "0.0.0.0"
    github_api_url: str = "https://api.github.com"
    app_id: int | None = None
    private_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    public_url: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    label: str = DEFAULT_LABEL
    model: str = DEFAULT_MODEL
    # The models a repository may ask for; the default model is always among them.
    models: tuple[str, ...] = (DEFAULT_MODEL, *CURRENT_MODELS)
    workers: int = 2
    max_turns_cap: int = 100
    max_cost_usd_cap: float = 20.0
    timeout_minutes_cap: int = 60
    check_rounds_cap: int = 5
    allow_network: bool = False
    unsafe_no_sandbox: bool = False
    sandbox_uid: int = 65534
    sandbox_gid: int | None = None  # None: the uid's primary group
    sandbox_memory_mb: int = 4096
    sandbox_cpus: float | None = None  # None: half the host's cores, at least one
    sandbox_disk_mb: int = 10240
    sandbox_files: int = 500_000
    # A run handed back after a GitHub, git or model fault waits this long (times its
    # attempt) before it is tried again; an undelivered final status is re-sent as often.
    retry_seconds: float = 60.0
    # Deadlines on outside calls, and when /healthz calls a waiting queue stalled.
    github_timeout_seconds: float = 30.0
    git_timeout_seconds: float = 600.0
    queue_stall_seconds: float = 120.0

    @property
    def has_app_credentials(self) -> bool:
        return self.app_id is not None and bool(self.private_key) and bool(self.webhook_secret)

    @property
    def secrets(self) -> list[str]:
        """Every secret value Honk holds, for redaction wherever it writes text."""
        values = (self.private_key, self.webhook_secret, self.client_secret, self.anthropic_api_key)
        return [value for value in values if value]

    @property
    def sqlite_path(self) -> Path | None:
        if not self.database_url.startswith("sqlite:///"):
            return None
        raw = self.database_url.removeprefix("sqlite:///")
        path = Path(raw)
        return path if path.is_absolute() else self.data_dir / path


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the server's settings; raise SettingsError naming the first bad one."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("HONK_DATA_DIR") or ".honk").expanduser().resolve()
    database_url = env.get("DATABASE_URL") or "sqlite:///honk.db"
    if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise SettingsError(
            "DATABASE_URL must start with sqlite:/// or postgresql://, "
            f"got {database_url.split(':', 1)[0]!r}"
        )
    log_format = env.get("LOG_FORMAT", "json").lower()
    if log_format not in ("json", "console"):
        raise SettingsError(f"LOG_FORMAT must be json or console, got {log_format!r}")
    log_level = env.get("LOG_LEVEL", "info").lower()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    model = env.get("HONK_MODEL") or DEFAULT_MODEL
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        port=_int(env, "PORT", 3000, minimum=1, maximum=65535),
        host=env.get("HOST", "0.0.0.0"),
        github_api_url=_url(env, "GITHUB_API_URL", "https://api.github.com"),
        app_id=_optional_int(env, "APP_ID"),
        private_key=_private_key(env),
        webhook_secret=env.get("WEBHOOK_SECRET") or None,
        client_id=env.get("GITHUB_CLIENT_ID") or None,
        client_secret=env.get("GITHUB_CLIENT_SECRET") or None,
        anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
        anthropic_base_url=_optional_url(env, "ANTHROPIC_BASE_URL"),
        public_url=_optional_url(env, "PUBLIC_URL") or _optional_url(env, "WEBHOOK_PROXY_URL"),
        log_level=log_level,
        log_format=log_format,
        label=env.get("HONK_LABEL") or DEFAULT_LABEL,
        model=model,
        models=_models(env, model),
        workers=_int(env, "HONK_WORKERS", 2, minimum=1, maximum=64),
        max_turns_cap=_int(env, "HONK_MAX_TURNS_CAP", 100, minimum=1, maximum=10_000),
        max_cost_usd_cap=_float(env, "HONK_MAX_COST_USD_CAP", 20.0),
        timeout_minutes_cap=_int(env, "HONK_TIMEOUT_MINUTES_CAP", 60, minimum=1, maximum=24 * 60),
        check_rounds_cap=_int(env, "HONK_CHECK_ROUNDS_CAP", MAX_CHECK_ROUNDS, minimum=0,
                              maximum=MAX_CHECK_ROUNDS),
        allow_network=_bool(env, "HONK_ALLOW_NETWORK"),
        unsafe_no_sandbox=_bool(env, "HONK_UNSAFE_NO_SANDBOX"),
        sandbox_uid=_int(env, "HONK_SANDBOX_UID", 65534, minimum=1, maximum=2**32 - 2),
        sandbox_gid=_optional_id(env, "HONK_SANDBOX_GID"),
        sandbox_memory_mb=_int(env, "HONK_SANDBOX_MEMORY_MB", 4096, minimum=64,
                               maximum=1024 * 1024),
        sandbox_cpus=_float(env, "HONK_SANDBOX_CPUS", 0.0) or None,
        sandbox_disk_mb=_int(env, "HONK_SANDBOX_DISK_MB", 10240, minimum=16,
                             maximum=1024 * 1024 * 1024),
        sandbox_files=_int(env, "HONK_SANDBOX_FILES", 500_000, minimum=100,
                           maximum=2**31),
        retry_seconds=_int(env, "HONK_RETRY_SECONDS", 60, minimum=1, maximum=3600),
        github_timeout_seconds=_float(env, "HONK_GITHUB_TIMEOUT_SECONDS", 30.0),
        git_timeout_seconds=_float(env, "HONK_GIT_TIMEOUT_SECONDS", 600.0),
        queue_stall_seconds=_float(env, "HONK_QUEUE_STALL_SECONDS", 120.0),
    )


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _models(env: Mapping[str, str], default_model: str) -> tuple[str, ...]:
    raw = env.get("HONK_MODELS")
    listed = [m.strip() for m in raw.split(",") if m.strip()] if raw else list(CURRENT_MODELS)
    if not all(_MODEL_ID.match(model) for model in listed):
        raise SettingsError("HONK_MODELS must be model ids separated by commas, e.g. "
                            f"{','.join(CURRENT_MODELS[:2])}")
    return tuple(dict.fromkeys([default_model, *listed]))


def _optional_id(env: Mapping[str, str], name: str) -> int | None:
    return _int(env, name, 0, minimum=1, maximum=2**32 - 2) if env.get(name) else None


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    return _int(env, name, 0, minimum=1, maximum=2**63) if env.get(name) else None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be above zero, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    return _optional_url(env, name) or default


def _optional_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _private_key(env: Mapping[str, str]) -> str | None:
    pem = env.get("PRIVATE_KEY")
    source = "PRIVATE_KEY"
    if not pem and env.get("PRIVATE_KEY_PATH"):
        path = Path(env["PRIVATE_KEY_PATH"]).expanduser()
        source = "PRIVATE_KEY_PATH"
        try:
            pem = path.read_text()
        except OSError as error:
            raise SettingsError(f"PRIVATE_KEY_PATH cannot be read: {error.strerror}") from None
    if not pem:
        return None
    # .env files and CI secrets often carry the PEM with literal "\n" in one line.
    pem = pem.replace("\\n", "\n").strip() + "\n"
    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise SettingsError(f"{source} is not a PEM private key") from None
    return pem


# --- .github/honk.yml --------------------------------------------------------------


@dataclass(frozen=True)
class RepoConfig:
    model: str | None = None
    setup: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    check_rounds: int = 2
    max_turns: int = 40
    max_cost_usd: float = 5.0
    timeout_minutes: int = 30
    instructions: str | None = None
    network: bool = False


REPO_CONFIG_PATH = ".github/honk.yml"
MAX_COMMANDS = 10  # of `setup`, and of `checks`
MAX_CHECK_ROUNDS = 5
_REPO_KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "setup": (list, str),
    "checks": (list, str),
    "check_rounds": (int,),
    "max_turns": (int,),
    "max_cost_usd": (int, float),
    "timeout_minutes": (int, float),
    "instructions": (str,),
    "network": (bool,),
}
# Shown in an error only if it looks like a key: the file may hold anything.
_SHOWABLE_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def parse_repo_config(text: str | None) -> RepoConfig:
    """Validate `.github/honk.yml`; a typo or a wrong type raises RepoConfigError.

    Error sentences name the key and what it must be, never the value found: the text may
    not be what its author meant to show (nor, through a link, the repository's at all).
    """
    if text is None or not text.strip():
        return RepoConfig()
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RepoConfigError(f"{REPO_CONFIG_PATH} is not valid YAML{where}.") from None
    if raw is None:
        return RepoConfig()
    if not isinstance(raw, dict):
        raise RepoConfigError(f"{REPO_CONFIG_PATH} must be a mapping of keys to values.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "label":
            # The request path decides without reading the repository, so the label is the
            # server's (HONK_LABEL), not a repository's.
            raise RepoConfigError(f"{REPO_CONFIG_PATH}: `label` cannot be set per repository; "
                                  "the operator sets it for the server with HONK_LABEL.")
        if key not in _REPO_KEYS:
            known = ", ".join(_REPO_KEYS)
            named = f" `{key}`" if isinstance(key, str) and _SHOWABLE_KEY.match(key) else ""
            raise RepoConfigError(f"{REPO_CONFIG_PATH}: unknown key{named} "
                                  f"(known keys: {known}).")
        values[key] = _checked(key, value)
    return RepoConfig(**values)


def _checked(key: str, value: Any) -> Any:
    expected = _REPO_KEYS[key]
    where = f"{REPO_CONFIG_PATH}: `{key}`"
    # bool is an int in Python; `max_turns: yes` is a typo, not 1.
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        names = " or ".join("a list" if t is list else _TYPE_NAMES[t] for t in expected)
        raise RepoConfigError(f"{where} must be {names}.")
    if key in ("setup", "checks"):
        commands = [value] if isinstance(value, str) else value
        if not all(isinstance(command, str) and command.strip() for command in commands):
            raise RepoConfigError(f"{where} must be a list of commands.")
        if len(commands) > MAX_COMMANDS:
            raise RepoConfigError(f"{where} must list at most {MAX_COMMANDS} commands.")
        return tuple(commands)
    if isinstance(value, float) and not math.isfinite(value):
        raise RepoConfigError(f"{where} must be a finite number.")
    if key == "check_rounds" and not 0 <= value <= MAX_CHECK_ROUNDS:
        raise RepoConfigError(f"{where} must be a whole number from 0 to {MAX_CHECK_ROUNDS}.")
    if key in ("max_turns", "max_cost_usd", "timeout_minutes") and value <= 0:
        raise RepoConfigError(f"{where} must be above zero.")
    return value


_TYPE_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


@dataclass(frozen=True)
class EffectiveLimits:
    """The repository's wishes, held under the operator's caps."""

    model: str
    max_turns: int
    max_cost_usd: float
    timeout_seconds: float  # the whole run: setup, the agent, checks and their rounds
    check_rounds: int
    network: bool


def effective_limits(settings: Settings, repo: RepoConfig) -> EffectiveLimits:
    """Raises RepoConfigError for a model the operator does not allow."""
    if repo.model is not None and repo.model not in settings.models:
        raise RepoConfigError(f"{REPO_CONFIG_PATH}: `model` must be one of the models this "
                              f"server allows: {', '.join(settings.models)}.")
    return EffectiveLimits(
        model=repo.model or settings.model,
        max_turns=min(repo.max_turns, settings.max_turns_cap),
        max_cost_usd=min(repo.max_cost_usd, settings.max_cost_usd_cap),
        timeout_seconds=60.0 * min(repo.timeout_minutes, settings.timeout_minutes_cap),
        check_rounds=min(repo.check_rounds, settings.check_rounds_cap),
        network=repo.network and settings.allow_network,
    )


# --- .env ------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """`NAME=value` lines as python-dotenv reads them (quotes, escapes, comments), with no
    `${VAR}` expansion; a name without a value is left out."""
    if not path.is_file():
        return {}
    return {name: value for name, value in dotenv_values(path, interpolate=False).items()
            if value is not None}


def write_dotenv(path: Path, values: Mapping[str, str]) -> None:
    """Set `values` in the file, keeping its other lines; the file ends up mode 0600.

    Written to a private temporary file and renamed over the old one, so the secrets are
    never readable by others, not even for a moment, and a crash leaves the old file whole.
    """
    lines = path.read_text().splitlines() if path.is_file() else []
    pending = dict(values)
    kept = []
    for line in lines:
        name = line.strip().removeprefix("export ").partition("=")[0].strip()
        if name not in values:
            kept.append(line)
        elif name in pending:  # its first line takes the new value; a later one would win
            kept.append(f"{name}={_quoted(pending.pop(name))}")
    kept += [f"{name}={_quoted(value)}" for name, value in pending.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".env.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write("\n".join(kept) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _quoted(value: str) -> str:
    """Bare when plain; otherwise in single quotes, which python-dotenv reads back as
    written once `\\` and `'` are escaped (a value that ends with a quote, or is quoted
    itself, round-trips)."""
    if _BARE_VALUE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_BARE_VALUE = re.compile(r"[A-Za-z0-9_./:@+,=-]+")
