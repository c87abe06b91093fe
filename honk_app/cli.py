"""`honk serve | worker | migrate | runs | demo | sandbox`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import structlog

from honk_app.logs import configure_logging
from honk_app.models import Run
from honk_app.redact import Redactor
from honk_app.settings import Settings, SettingsError, load_settings

log = structlog.get_logger()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="honk", description="Issue in, pull request out.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="the web app and an in-process worker")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="the web app alone: runs are left to `honk worker` processes",
    )
    worker = commands.add_parser("worker", help="a worker process alone, sharing the database")
    worker.add_argument(
        "--lease-seconds",
        type=float,
        help="how long a run whose worker fell silent waits before another worker takes it "
        "(default: 60 on SQLite, 30 on PostgreSQL)",
    )
    commands.add_parser("migrate", help="create or update the database's schema, then exit")
    runs = commands.add_parser("runs", help="the newest runs, as a table or JSON lines")
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    runs.add_argument("--limit", type=int, default=100, help="how many runs (newest first)")
    demo = commands.add_parser("demo", help="an offline run against a simulated GitHub")
    demo.add_argument("--json", action="store_true", help="end with one line of JSON")
    demo.add_argument(
        "--live-model",
        action="store_true",
        help="use the real Claude (needs ANTHROPIC_API_KEY) instead of the script",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary files")
    demo.add_argument("--verbose", action="store_true",
                      help="show the log lines of Honk and the simulators among the narration "
                      "(otherwise they go to a file the demo names)")
    demo.add_argument(
        "--faults",
        type=Path,
        help='a JSON file of fault rules, {"github": [...], "claude": [...]} '
        "(see honk_sim/faults.py), to watch Honk ride them out",
    )
    sandbox = commands.add_parser("sandbox", help="run one command as the agent's bash tool would")
    sandbox.add_argument("--workspace", required=True, type=Path)
    sandbox.add_argument(
        "--network",
        action="store_true",
        help="allow network (as a repository's setup may, if the operator allows)",
    )
    sandbox.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command in ("serve", "worker", "demo"):
        os.umask(0o077)  # the database, transcripts and keys: readable by Honk alone
    if args.command == "demo":
        from honk_sim.demo import run_demo

        return run_demo(json_line=args.json, live_model=args.live_model, keep=args.keep,
                        faults_file=args.faults, verbose=args.verbose)
    try:
        settings = load_settings(_environment())
    except SettingsError as error:
        print(f"honk: {error}", file=sys.stderr)
        return 2
    # One redactor for the logs and the app: secrets the setup page adds reach both.
    redactor = Redactor(settings.secrets)
    configure_logging(level=settings.log_level, fmt=settings.log_format, redactor=redactor)
    if args.command in ("serve", "worker"):
        _private_data_dir(settings.data_dir)
        _report_sandbox(settings)
    if args.command == "serve":
        return _serve(settings, redactor, with_worker=not args.no_worker)
    if args.command == "runs":
        return asyncio.run(_runs(settings, json_lines=args.json, limit=args.limit))
    if args.command == "worker":
        return asyncio.run(_worker(settings, redactor, lease_seconds=args.lease_seconds))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    return asyncio.run(_sandbox(settings, args.workspace, args.argv, network=args.network))


def _private_data_dir(data_dir: Path) -> None:
    """The data directory 0700 and what is in it Honk's alone (0600 files, 0700 directories),
    including what an older Honk made with a laxer umask. Slots and mirrors are the
    exception: they belong to the sandbox's group (see honk_app/sandbox/user.py)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for entry in data_dir.iterdir():
        if entry.name in ("mirrors", "worktrees") or entry.is_symlink():
            continue
        paths = [entry, *entry.rglob("*")] if entry.is_dir() else [entry]
        for path in paths:
            info = path.lstat()
            wanted = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
            if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & ~wanted:
                path.chmod(stat.S_IMODE(info.st_mode) & wanted)


def _report_sandbox(settings: Settings) -> None:
    """One log line at start: which sandbox limits this host cannot enforce."""
    if settings.unsafe_no_sandbox:
        return
    from honk_app.sandbox.bubblewrap import report_enforcement
    from honk_app.sandbox.user import sandbox_user

    report_enforcement(sandbox_user(settings.sandbox_uid, settings.sandbox_gid))


def _environment() -> dict[str, str]:
    """The process environment over `.env` (written by the setup page) in the working dir."""
    from honk_app.settings import read_dotenv

    return {**read_dotenv(Path(".env")), **os.environ}


def _serve(settings: Settings, redactor: Redactor, *, with_worker: bool) -> int:
    import uvicorn

    from honk_app.web.app import create_app

    uvicorn.run(
        create_app(
            settings,
            redactor=redactor,
            with_worker=with_worker,
            dotenv_path=Path(".env").resolve(),
        ),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=True,
    )
    return 0


async def _runs(settings: Settings, *, json_lines: bool, limit: int) -> int:
    import json

    from honk_app.store.db import DatabaseUnavailable
    from honk_app.web.views import run_record, table

    try:
        runs = await newest_runs(settings, limit=limit)
    except DatabaseUnavailable as error:
        print(f"honk runs: {error}", file=sys.stderr)
        return 2
    if json_lines:
        for run in runs:
            print(json.dumps(run_record(run)))
    elif runs:
        print(table(runs))
    else:
        print("No runs yet.")
    return 0



async def newest_runs(settings: Settings, *, limit: int) -> list[Run]:
    """The newest runs on SQLite or PostgreSQL, whichever DATABASE_URL names."""
    from honk_app.workers.backend import open_backend

    backend = open_backend(settings)
    await backend.start(wait=False)
    try:
        return await backend.store.of_repos(None, limit=limit)
    finally:
        await backend.close()

async def _worker(settings: Settings, redactor: Redactor, *, lease_seconds: float | None) -> int:
    from honk_app.run.pipeline import execute, keep_statuses_true
    from honk_app.run.services import build_services
    from honk_app.workers.backend import open_backend

    if not settings.has_app_credentials:
        print("honk worker: APP_ID, PRIVATE_KEY and WEBHOOK_SECRET are needed", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    backend = open_backend(settings)
    await backend.start()
    workers = backend.workers(
        lambda store: partial(execute, services=build_services(settings, store, redactor)),
        concurrency=settings.workers,
        lease_seconds=lease_seconds,
        poll_seconds=0.5,
    )
    statuses = asyncio.create_task(
        keep_statuses_true(build_services(settings, backend.store, redactor), stop)
    )
    try:
        await workers.run(stop)
    finally:
        stop.set()
        await statuses
        await backend.close()
    return 0


async def _migrate(settings: Settings) -> int:
    from honk_app.store.db import DatabaseUnavailable
    from honk_app.workers.backend import open_backend

    backend = open_backend(settings)
    try:
        applied = await backend.start(wait=False)
    except DatabaseUnavailable as error:
        print(f"honk migrate: {error}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("The schema is up to date.")
    return 0


async def _sandbox(settings: Settings, workspace: Path, argv: list[str], *, network: bool) -> int:
    from honk_app.sandbox.bubblewrap import SandboxUnavailable
    from honk_app.sandbox.factory import agent_sandbox

    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("honk sandbox: give a command after --", file=sys.stderr)
        return 2
    if not workspace.is_dir():
        print(f"honk sandbox: {workspace} is not a directory", file=sys.stderr)
        return 2
    workspace = workspace.resolve()
    try:
        sandbox = agent_sandbox(settings, workspace, _git_dirs(workspace),
                                network=network and settings.allow_network)
    except SandboxUnavailable as error:
        print(f"honk sandbox: {error}", file=sys.stderr)
        return 2
    owner = sandbox.file_owner
    if owner is not None and workspace.stat().st_uid != owner[0]:
        print(f"honk sandbox: note: commands run as uid {owner[0]}, which does not own "
              f"{workspace}; they may not write it (chown -R {owner[0]}:{owner[1]} it, or set "
              "HONK_SANDBOX_UID).", file=sys.stderr)
    status = await sandbox.run_argv(command, inherit_stdio=True)
    if sandbox.last_stop:
        print(f"honk sandbox: {sandbox.last_stop}", file=sys.stderr)
    return status


def _git_dirs(workspace: Path) -> tuple[Path, ...]:
    """A worktree's git directory and its repository's, bound read-only as in a run."""
    dot_git = workspace / ".git"
    if dot_git.is_symlink() or not dot_git.is_file():
        return ()
    git_dir = Path(dot_git.read_text().removeprefix("gitdir:").strip())
    common = git_dir / "commondir"
    if not git_dir.is_dir() or not common.is_file():
        return (git_dir,) if git_dir.is_dir() else ()
    return ((git_dir / common.read_text().strip()).resolve(), git_dir)


if __name__ == "__main__":
    sys.exit(main())
