"""The sandbox every agent command, setup command and check runs in, and `honk sandbox`.

Built from the server's settings alone, so `honk sandbox` imports the sandbox and the
settings, not the agent or the anthropic SDK.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from honk_app.sandbox.bubblewrap import Sandbox, SandboxLimits, check_available
from honk_app.sandbox.user import sandbox_user
from honk_app.settings import Settings

# Byte-code caches written by running the tests are not part of anyone's change.
AGENT_ENVIRONMENT = {"PYTHONDONTWRITEBYTECODE": "1", "CI": "true"}


def agent_sandbox(settings: Settings, path: Path, read_only: Sequence[Path], *,
                  network: bool) -> Sandbox:
    """The sandbox every agent command, setup command and check runs in (and `honk sandbox`)."""
    user = sandbox_user(settings.sandbox_uid, settings.sandbox_gid)
    if not settings.unsafe_no_sandbox:
        check_available(user)
    limits = SandboxLimits(memory_bytes=settings.sandbox_memory_mb * 2**20,
                           disk_bytes=settings.sandbox_disk_mb * 2**20,
                           disk_files=settings.sandbox_files,
                           **({"cpus": settings.sandbox_cpus} if settings.sandbox_cpus else {}))
    return Sandbox(path, read_only_paths=read_only, network=network, limits=limits,
                   env=AGENT_ENVIRONMENT, unsafe_no_sandbox=settings.unsafe_no_sandbox, user=user)
