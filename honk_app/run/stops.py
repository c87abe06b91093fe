"""`/honk stop`, checked before it stops anything.

The request path makes no GitHub call, so it only records a stop request. The worker that
runs the issue's or pull request's run watches for requests while the run goes on (and at
its start, for one that came while it waited): a request from the person who asked for the
run, or from someone with write access, flags the run (and cancels those queued before the
request), and the run's heartbeat stops it; anyone else's request changes nothing and is
refused once per person (`refusals.refuse_once`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from githubkit.exception import GitHubException

from honk_app.github.client import GitHubError, RepoGitHub
from honk_app.models import Run
from honk_app.run.refusals import refuse_once
from honk_app.store.runs import RunStore, StopRequest

log = structlog.get_logger()

POLL_SECONDS = 2.0
REFUSAL = (
    "Only the person who asked for this run, or someone with write access to this "
    "repository, can stop it; the run goes on."
)


async def check_stop_requests(run: Run, requester: str, gh: RepoGitHub, store: RunStore) -> bool:
    """Decide the stop requests waiting for this run; True when one stopped it."""
    for request in await store.pending_stops(run.lock_key, since=run.created_at):
        if await _may_stop(request, requester, gh):
            touched = await store.apply_stop(request)
            log.info("stop accepted", run_id=run.id, sender=request.sender, runs=touched)
            return True
        await store.refuse_stop(request)
        log.info("stop refused", run_id=run.id, sender=request.sender)
        await refuse_once(gh, store, lock_key=run.lock_key, number=run.number,
                          login=request.sender, comment_id=request.comment_id,
                          sentence=REFUSAL)
    return False


async def _may_stop(request: StopRequest, requester: str, gh: RepoGitHub) -> bool:
    return request.sender == requester or await gh.can_write(request.sender)


async def watch_stop_requests(run: Run, requester: str, gh: RepoGitHub, store: RunStore) -> None:
    """Check for stop requests every few seconds until one stops the run (or the run ends
    and cancels this task). A failed check is tried again at the next poll."""
    while True:
        try:
            if await check_stop_requests(run, requester, gh, store):
                return
        except (GitHubError, GitHubException) as error:
            log.warning("stop requests not checked", run_id=run.id, error=str(error))
        except Exception as error:  # a database hiccup must not end the watch, nor the run
            log.warning("stop requests not checked", run_id=run.id, error=repr(error))
        await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def stop_requests_watched(
    run: Run, requester: str, gh: RepoGitHub, store: RunStore
) -> AsyncIterator[None]:
    task = asyncio.create_task(watch_stop_requests(run, requester, gh, store),
                               name=f"stops-{run.id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
