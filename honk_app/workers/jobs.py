"""Runs on PostgreSQL, with procrastinate as the job engine.

Queueing. A run's row and its procrastinate job are written in one transaction: the job is
deferred on the request's own connection, so a delivery answered 202 always has a job, and
a delivery refused with 503 has neither. The job's `lock` is the run's `lock_key`: no two
runs of one issue/PR execute at once, and they start oldest first; a job handed back or
retried keeps its id, so it stays first in line.

No `queueing_lock`: it admits one *waiting* job per key and refuses the next with
AlreadyEnqueued, so a second `/honk` on a pull request sent while the first waits would be
dropped, and both must run, in order (the `lock` gives the order). Duplicate deliveries are
refused earlier, by the deliveries table's primary key, in the same transaction.

Dead workers. Each procrastinate worker renews a heartbeat; each run renews its own lease
(`runs.heartbeat_at`), which also carries `/honk stop`. Every worker process sweeps (in a
task of its own, not as a periodic job that would wait for a free slot): a job whose
worker's heartbeat is older than the lease (procrastinate's `get_stalled_jobs`) *and* whose
run's lease ran out is retried (procrastinate's `retry_job`), and another worker resumes
the run. The run's lease is the one renewed by the code executing the run, and it resumes
as soon as the database answers, where procrastinate's heartbeat lapses for every worker at
once during an outage. A sweeper that just lost the database waits a whole lease before it
recovers anything, so that the workers that lost it too have renewed their leases by then.
A worker that was only frozen past its lease finds its run taken and leaves it alone.

Shutdown. SIGTERM (or the app's lifespan ending) cancels procrastinate's worker: it stops
fetching, gives running jobs `SHUTDOWN_GRACE_SECONDS` to end, then aborts them; a run
aborted that way is handed back to the queue (its job retried at once) and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import procrastinate
import structlog
from procrastinate import exceptions as procrastinate_errors
from procrastinate.job_context import AbortReason, JobContext
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from honk_app import metrics
from honk_app.models import Outcome, RunState
from honk_app.store.db import (
    DatabaseUnavailable,
    Sql,
)
from honk_app.store.postgres import PostgresDatabase, PostgresSql, is_unreachable
from honk_app.store.runs import Enqueue, RunStore
from honk_app.workers.pool import Execute, pause

log = structlog.get_logger()

RUN_TASK = "honk.run"
QUEUE = "runs"
SHUTDOWN_GRACE_SECONDS = 5.0
RESTART_SECONDS = 1.0
ABORT_POLL_SECONDS = 60.0  # procrastinate's own abort requests; Honk stops runs by lease
# How long a worker's query waits for a connection: longer than a database restart takes.
POOL_TIMEOUT = 60.0


class HandBack(Exception):
    """The run goes back to the queue, to be taken again at `retry_at`."""

    def __init__(self, retry_at: float) -> None:
        super().__init__(f"handed back until {retry_at:.0f}")
        self.retry_at = datetime.fromtimestamp(retry_at, tz=UTC)


class _HandBackRetry(BaseRetryStrategy):
    """Retry a job only when its run was handed back; any other error ends the job."""

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate.jobs.Job
    ) -> RetryDecision | None:
        if isinstance(exception, HandBack):
            return RetryDecision(retry_at=exception.retry_at)
        return None


class _PatientConnector(procrastinate.PsycopgConnector):
    """procrastinate's connector, riding out a database restart.

    Its worker stops listening for new jobs for good when the listening connection cannot
    be opened, and stops renewing its heartbeat when one query fails; here both wait.
    """

    async def listen_notify(self, on_notification: Any, channels: Iterable[str]) -> None:
        while True:
            try:
                await super().listen_notify(on_notification=on_notification, channels=channels)
            except procrastinate_errors.ConnectorException as error:
                if not is_unreachable(error):
                    raise
                await asyncio.sleep(RESTART_SECONDS)

    async def execute_query_async(self, query: Any, **arguments: Any) -> None:
        # Heartbeats, and finishing or retrying a job: each may run again harmlessly.
        while True:
            try:
                return await super().execute_query_async(query, **arguments)
            except procrastinate_errors.ConnectorException as error:
                if not is_unreachable(error):
                    raise
                await asyncio.sleep(RESTART_SECONDS)


def job_app(connector: procrastinate.PsycopgConnector | None = None) -> procrastinate.App:
    """A procrastinate app; unopened, it can still defer on a connection it is given."""
    return procrastinate.App(connector=connector or procrastinate.PsycopgConnector())


def enqueuer(app: procrastinate.App) -> Enqueue:
    """The run store's hook: defer the run's job inside the transaction storing the run."""

    async def enqueue(sql: Sql, run_id: int, lock_key: str) -> None:
        assert isinstance(sql, PostgresSql)
        deferrer = app.configure_task(
            RUN_TASK, queue=QUEUE, lock=lock_key, connection=sql.connection
        )
        await deferrer.defer_async(run_id=run_id)

    return enqueue


class JobWorkers:
    """A procrastinate worker running Honk's runs, restarted if the database drops it."""

    def __init__(
        self,
        db: PostgresDatabase,
        store: RunStore,
        execute: Execute,
        *,
        worker_id: str,
        concurrency: int,
        lease_seconds: float,
    ) -> None:
        self.db = db
        self.store = store
        self.execute = execute
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = min(2.0, lease_seconds / 5)
        self.app = job_app(_PatientConnector())
        self.app.task(name=RUN_TASK, queue=QUEUE, pass_context=True, retry=_HandBackRetry())(
            self._run_job
        )
        self._options: dict[str, Any] = {
            "queues": [QUEUE],
            "name": "honk",
            "concurrency": concurrency,
            "fetch_job_polling_interval": self.heartbeat_seconds,
            "abort_job_polling_interval": ABORT_POLL_SECONDS,
            "shutdown_graceful_timeout": SHUTDOWN_GRACE_SECONDS,
            "listen_notify": True,
            "delete_jobs": "successful",
            "install_signal_handlers": False,
            "update_heartbeat_interval": self.heartbeat_seconds,
            "stalled_worker_timeout": lease_seconds,
        }
        self._answering_since = time.monotonic()
        self._down_since: float | None = None  # procrastinate's worker ended, not restarted

    def wake(self) -> None:
        """Nothing to do: PostgreSQL notifies the workers of a new job."""

    def trouble(self, stalled_after: float) -> str | None:
        """A sentence if procrastinate's worker has been down `stalled_after` seconds."""
        if self._down_since is None:
            return None
        down_for = time.monotonic() - self._down_since
        if down_for < stalled_after:
            return None
        return f"the job worker has been down for {down_for:.0f} s"

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", worker_id=self.worker_id, engine="procrastinate",
                 concurrency=self._options["concurrency"], lease_seconds=self.lease_seconds)
        await self.db.start()
        try:
            async with self.app.open_async(self.db.pool):
                sweeper = asyncio.create_task(self._sweep_until(stop), name="sweeper")
                try:
                    while not stop.is_set():
                        await self._work_until(stop)
                finally:
                    sweeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sweeper
        finally:
            await self.db.close()

    async def _work_until(self, stop: asyncio.Event) -> None:
        worker = asyncio.create_task(self.app.run_worker_async(**self._options), name="jobs")
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            {worker, stopping}, timeout=5 * RESTART_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            self._down_since = None  # up for a while: not merely failing over and over
            await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not worker.done():
            worker.cancel()  # procrastinate's graceful shutdown, then the abort of what is left
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            return
        error = worker.exception()
        self._down_since = self._down_since or time.monotonic()
        metrics.BACKGROUND_ERRORS.labels(task="job worker").inc()
        log.warning("job worker stopped; starting it again", error=str(error) if error else None)
        await pause(stop, RESTART_SECONDS)

    async def _run_job(self, context: JobContext, run_id: int) -> None:
        try:
            run = await self.store.start(run_id, self.worker_id)
        except DatabaseUnavailable as error:  # past the worker's patience: try it later
            log.warning("run not started", run_id=run_id, error=str(error))
            raise HandBack(time.time() + RESTART_SECONDS) from None
        if run is None:
            log.info("run already ended", run_id=run_id)
            return
        log.info("run claimed", run_id=run.id, repo=run.repo, number=run.number,
                 attempt=run.attempts, worker_id=self.worker_id)
        execution = asyncio.create_task(self.execute(run), name=f"run-{run.id}")
        beats = asyncio.create_task(self._beat(run.id, execution), name=f"lease-{run.id}")
        try:
            await execution
        except asyncio.CancelledError:
            if context.abort_reason() == AbortReason.SHUTDOWN:
                await self._hand_back(run.id)
            current = asyncio.current_task()
            if current is not None and not current.cancelling():
                # Not cancelled from outside: the lease was lost to another worker.
                await self._leave_to_new_owner(run.id, context.job)
            raise
        except Exception:
            log.exception("run raised", run_id=run.id)
            try:
                await self.store.finish(run.id, RunState.FAILED, Outcome.INTERNAL_ERROR,
                                        "Honk hit an internal error; see the operator's log.")
            except DatabaseUnavailable as error:  # the job is retried, and the run resumed
                log.warning("run's end not recorded", run_id=run.id, error=str(error))
                raise HandBack(time.time() + RESTART_SECONDS) from None
            return
        finally:
            beats.cancel()
        fresh = await self.store.get(run.id)
        if fresh is not None and fresh.state == RunState.QUEUED:
            raise HandBack(fresh.not_before)  # the run asked to be retried later

    async def _hand_back(self, run_id: int) -> None:
        """Give the run back to the queue and end the job with HandBack (so, a retry)."""
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # the shutdown's cancellation ends here, as a retry
        if await self.store.hand_back(run_id, self.worker_id):
            log.info("run handed back", run_id=run_id, worker_id=self.worker_id)
        raise HandBack(time.time()) from None

    async def _leave_to_new_owner(self, run_id: int, job: procrastinate.jobs.Job) -> None:
        """This worker fell silent for a lease (frozen, not dead) and the run went to another.

        Its job is another worker's now, or waits for one: finishing it here would end the
        run's job under its new owner. So wait until no one runs it, then end with a retry
        that changes nothing (procrastinate retries only a job that is running, and says so).
        """
        log.warning("run taken over by another worker", run_id=run_id, job_id=job.id)
        assert job.id is not None
        while True:
            try:
                status = await self.app.job_manager.get_job_status_async(job.id)
            except procrastinate_errors.NoResult:
                break  # finished and deleted
            if status != procrastinate.jobs.Status.DOING:
                break
            await asyncio.sleep(self.heartbeat_seconds)
        raise HandBack(time.time()) from None

    async def _beat(self, run_id: int, execution: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                stop_it = await self.store.heartbeat(run_id, self.worker_id)
            except Exception as error:
                metrics.BACKGROUND_ERRORS.labels(task="renewing leases").inc()
                log.warning("lease not renewed", run_id=run_id, error=str(error))
                continue
            if stop_it:
                log.info("stopping run", run_id=run_id)
                execution.cancel()
                return

    async def _sweep_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pause(stop, self.heartbeat_seconds)
            if stop.is_set():
                return
            try:
                await self._sweep()
            except Exception as error:
                self._answering_since = time.monotonic()
                metrics.BACKGROUND_ERRORS.labels(task="recovering runs").inc()
                if not is_unreachable(error):
                    log.exception("sweep failed")

    async def _sweep(self) -> None:
        """Retry the jobs of runs whose worker died (see the module's docstring)."""
        asked = time.monotonic()
        stalled = await self.app.job_manager.get_stalled_jobs(
            task_name=RUN_TASK, seconds_since_heartbeat=self.lease_seconds
        )
        if time.monotonic() - asked > self.heartbeat_seconds:
            self._answering_since = time.monotonic()  # the database was away
        if time.monotonic() - self._answering_since < self.lease_seconds:
            return
        recovered = 0
        for job in stalled:
            run_id = int(job.task_kwargs["run_id"])  # type: ignore[arg-type]
            if not await self.store.release_if_stale(run_id, self.lease_seconds):
                continue
            try:
                await self.app.job_manager.retry_job(job)
            except procrastinate_errors.ConnectorException as error:
                if is_unreachable(error):
                    raise
                continue  # another sweeper retried it first
            recovered += 1
            log.info("run recovered from a dead worker", run_id=run_id, job_id=job.id)
        if recovered:
            log.info("runs recovered from dead workers", count=recovered)
