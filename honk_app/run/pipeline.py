"""One run, start to end: the steps of DESIGN.md's flow, in order.

authorize → acknowledge → checkout → make the change (setup, agent, checks, commit: see
change.py, which touches neither GitHub nor the store) → push → pull request → final
status. Every failure a person can cause or fix ends in the status comment as one
sentence, with 😕.

Faults (see README, "When things fail"): a GitHub outage, a failed fetch or push hands the
run back to the queue (`RetryLater`); the next attempt resumes from what the run recorded
(the commit it made, what it pushed, its PR, its status comment), the same path a run
takes after its worker was killed. The status comment never decides a run's fate: an edit
GitHub refuses is sent again with the next, and a final state GitHub refuses is kept
(`status_owed`) and re-sent by `keep_statuses_true` until GitHub takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import NoReturn

import structlog

from honk_app import metrics
from honk_app.agent.prompts import ReviewComment, review_prompt
from honk_app.github.client import (
    MAX_BODY_CHARS,
    GitHubError,
    RepoGitHub,
    bot_email,
    cap_body,
)
from honk_app.models import Change, Outcome, Run, RunKind, RunState, Trigger, transcript_path
from honk_app.run.change import ChangeRequest, RunFailed, make_change
from honk_app.run.refusals import refuse_once
from honk_app.run.services import Services
from honk_app.run.status import (
    RunProgress,
    Stats,
    StatusComment,
    StatusUpdater,
    pr_body,
    reply_marker,
)
from honk_app.run.stops import stop_requests_watched
from honk_app.workspace.checkout import (
    BaseBranchMissing,
    GitError,
    GitRemote,
    PushRejected,
    Workspace,
)

log = structlog.get_logger()

LABEL_COLOR = "7057ff"
LABEL_DESCRIPTION = "Ask Honk to open a pull request for this issue"
MAX_OUTAGE_RETRIES = 5
PUSH_ATTEMPTS = 3
PUSH_BACKOFF_SECONDS = 2.0
MAX_BRANCH_NAMES = 5


class RetryLater(Exception):
    """GitHub or the git host cannot be reached now; the run goes back to the queue."""


async def execute(run: Run, services: Services) -> None:
    """Carry out one claimed run. Raises only CancelledError (the caller decides what it means)."""
    # Every line logged during the run (agent, workspace, GitHub calls) carries these; the
    # run is its own asyncio task, so they do not leak into other runs.
    with structlog.contextvars.bound_contextvars(
        run_id=run.id, delivery_id=run.delivery_id, repo=run.repo, number=run.number
    ):
        await _execute_logged(run, services)


async def _execute_logged(run: Run, services: Services) -> None:
    bound = log.bind(
        run_id=run.id, delivery_id=run.delivery_id, repo=run.repo, number=run.number, kind=run.kind
    )
    trigger = Trigger.from_json(run.trigger_data)
    started = asyncio.get_running_loop().time()
    try:
        outcome = await _execute(run, trigger, services, bound)
    except RetryLater as error:
        if run.attempts >= MAX_OUTAGE_RETRIES:
            sentence = (
                f"{error} Honk tried {run.attempts} times and gave up; comment `/honk` to "
                "try again."
            )
            await services.store.finish(run.id, RunState.FAILED, Outcome.GITHUB_UNAVAILABLE,
                                        sentence)
            # The status comment still says "working": the sweeper tells GitHub, when it can.
            await services.store.owe_status(run.id, None)
            outcome = Outcome.GITHUB_UNAVAILABLE
        else:
            bound.warning("run handed back", reason=str(error))
            await services.store.retry_later(
                run.id, services.settings.retry_seconds * run.attempts, str(error)
            )
            return
    metrics.RUNS.labels(kind=run.kind, outcome=outcome).inc()
    metrics.RUN_SECONDS.observe(asyncio.get_running_loop().time() - started)


async def _execute(
    run: Run, trigger: Trigger, services: Services, bound: structlog.typing.FilteringBoundLogger
) -> Outcome:
    store = services.store
    try:
        gh = await services.github.for_repo(run.installation_id, run.repo)
        if trigger.kind == RunKind.LABELS:
            return await _create_labels(run, trigger, services)
        if not await gh.can_write(trigger.sender):
            await refuse_once(
                gh, store, lock_key=run.lock_key, number=run.number, login=trigger.sender,
                comment_id=trigger.comment_id,
                sentence="Honk only takes requests from people with write access to this "
                "repository.",
            )
            await store.finish(run.id, RunState.DONE, Outcome.REFUSED,
                               "The sender lacks write access.")
            bound.info("run refused", sender=trigger.sender)
            return Outcome.REFUSED
    except GitHubError as error:
        if error.transient:
            raise RetryLater(f"{error}.") from None
        sentence = f"{error}; Honk could not start."
        log.warning("run failed before it began", run_id=run.id, error=str(error))
        await store.finish(run.id, RunState.FAILED, Outcome.GITHUB_ERROR, sentence)
        return Outcome.GITHUB_ERROR
    # `/honk stop` is checked (who sent it) here, in the worker, while the run goes on.
    async with stop_requests_watched(run, trigger.sender, gh, store):
        return await _carry_out(run, trigger, gh, services, bound)


async def _carry_out(
    run: Run,
    trigger: Trigger,
    gh: RepoGitHub,
    services: Services,
    bound: structlog.typing.FilteringBoundLogger,
) -> Outcome:
    store = services.store
    stats = Stats(turns=run.turns, input_tokens=run.input_tokens,
                  output_tokens=run.output_tokens, cost_usd=run.cost_usd)
    status = StatusUpdater(gh, store, run, StatusComment(run.id, stats, _run_url(services, run)))
    try:
        await _acknowledge(gh, trigger, status)
        if trigger.kind == RunKind.TASK:
            headline = await _task(run, trigger, gh, status, services)
        else:
            headline = await _follow_up(run, trigger, gh, status, services)
    except RunFailed as failure:
        return await _fail(run, trigger, gh, status, services, failure.outcome, str(failure))
    except asyncio.CancelledError:
        fresh = await store.get(run.id)
        if fresh is None or not fresh.cancel_requested:
            raise
        # The task is being cancelled: shield the bookkeeping so it still completes.
        await asyncio.shield(_stopped(run, trigger, gh, status, services))
        return Outcome.STOPPED
    except GitHubError as error:
        if error.transient:
            await _hand_back(run, status, services, f"{error}.")
        sentence = f"{error}; comment `/honk` to try again."
        return await _fail(run, trigger, gh, status, services, Outcome.GITHUB_ERROR, sentence)
    except BaseBranchMissing:
        sentence = (
            f"`{run.repo}` has no commits on its default branch yet, so there is nothing to "
            "change; push a first commit, then ask again."
        )
        return await _fail(run, trigger, gh, status, services, Outcome.EMPTY_REPOSITORY, sentence)
    except GitError as error:
        if not _transient_git(error):
            bound.exception("run crashed")
            return await _fail(run, trigger, gh, status, services, Outcome.INTERNAL_ERROR,
                               _internal_error(run))
        await _hand_back(run, status, services, "The git host did not answer Honk's fetch or push.")
    except Exception:
        bound.exception("run crashed")
        return await _fail(run, trigger, gh, status, services, Outcome.INTERNAL_ERROR,
                           _internal_error(run))
    await status.finish(status.comment.done(headline))
    await _react(gh, trigger, "rocket")
    await store.finish(run.id, RunState.DONE, Outcome.SUCCESS, headline)
    bound.info("run done", headline=headline)
    return Outcome.SUCCESS


async def _acknowledge(gh: RepoGitHub, trigger: Trigger, status: StatusUpdater) -> None:
    await _react(gh, trigger, "eyes")
    attempt = status.run.attempts
    # A resumed run's comment starts its steps anew: say where they pick up from.
    await status.step("picked up" if attempt <= 1 else f"picked up again (attempt {attempt})")


async def _react(gh: RepoGitHub, trigger: Trigger, content: str) -> None:
    """A reaction is cosmetic: one GitHub does not take never ends or delays a run."""
    try:
        if trigger.comment_id is not None:
            await gh.react(content, comment_id=trigger.comment_id)
        else:
            await gh.react(content, issue=trigger.number)
    except GitHubError as error:
        log.warning("reaction not added", content=content, error=str(error))


async def _hand_back(
    run: Run, status: StatusUpdater, services: Services, reason: str
) -> NoReturn:
    """Say on the issue that the run waits, then raise RetryLater (the queue takes it back)."""
    if run.attempts < MAX_OUTAGE_RETRIES:
        delay = services.settings.retry_seconds * run.attempts
        await status.step(f"{reason.rstrip('.')}; Honk tries again in {delay:.0f} s")
    raise RetryLater(reason)


async def _task(
    run: Run, trigger: Trigger, gh: RepoGitHub, status: StatusUpdater, services: Services
) -> str:
    title, body = await _issue_as_asked(run, trigger, gh)
    repository = await gh.repository()
    bot = await services.github.bot_login()
    wanted = run.branch or branch_name(run.number, services.redactor(title))
    remote = GitRemote(repository.clone_url, await gh.token())
    await status.step("preparing the checkout")
    change: Change | None = None
    for branch in _branch_names(wanted):
        async with services.workspaces.checkout(
            run.repo, remote, base_branch=repository.default_branch, branch=branch
        ) as workspace:
            if not await _is_honks(gh, workspace, bot):
                log.info("branch not Honk's; trying another name", run_id=run.id, branch=branch)
                continue
            if branch != run.branch:
                run.branch = branch
                await services.store.update(run.id, branch=branch)
            change = await _change_or_resume(
                run, trigger, gh, status, services, workspace, title=title, body=body,
            )
            await _push(run, gh, status, services, workspace, change, repository.clone_url)
            break
    if change is None:
        raise RunFailed(Outcome.BRANCH_TAKEN,
                        f"The branches `{wanted}` to `{wanted}-{MAX_BRANCH_NAMES}` "
                        "all hold someone else's commits or pull requests; Honk builds only on "
                        "its own. Delete one of them and ask again.")
    # Only a pull request Honk opened is adopted: a person's PR from the branch is theirs.
    pull = await gh.find_pull(branch, author=bot)
    body = pr_body(
        issue=run.number,
        summary=change.summary,
        checks=change.checks,
        stats=status.comment.stats,
        requested_by=trigger.sender,
        notes=change.notes,
    )
    if pull is None:
        await status.step("opening the pull request")
        pull = await gh.open_pull(
            branch=branch,
            base=repository.default_branch,
            title=change.title,
            body=body,
            draft=not change.ready,
            author=bot,
        )
    else:
        await gh.edit_pull(pull.number, body=body)
    await services.store.update(run.id, pr_number=pull.number)
    await gh.request_review(pull.number, trigger.sender)
    state = "Opened" if change.ready else "Opened a draft (checks still fail):"
    if change.out_of_time:
        state = f"Opened a draft ({change.out_of_time}):"
    return f"{state} #{pull.number}: [{change.title}]({pull.html_url})"


async def _follow_up(
    run: Run, trigger: Trigger, gh: RepoGitHub, status: StatusUpdater, services: Services
) -> str:
    """A review or a `/honk` comment on a pull request: commits on its branch, replies."""
    pull = await gh.pull(run.number)
    head_repo = pull.head.repo.full_name if pull.head.repo else None
    if head_repo != run.repo:
        where = f"the fork `{head_repo}`" if head_repo else "a deleted fork"
        raise RunFailed(Outcome.FORK, f"This pull request comes from {where}; Honk only pushes to "
                        f"branches of {run.repo}, so it changed nothing.")
    threads = await _review_threads(gh, run.number, trigger.review_id)
    comments = list(threads)
    if trigger.review_id is not None and not comments and not trigger.instruction.strip():
        return "Nothing to address: the review has no comments and no text."
    branch, base = pull.head.ref, pull.base.ref
    await services.store.update(run.id, branch=branch, pr_number=run.number)
    remote = GitRemote(pull.base.repo.clone_url, await gh.token())
    await status.step(f"preparing `{branch}`")
    async with services.workspaces.checkout(
        run.repo, remote, base_branch=base, branch=branch
    ) as workspace:
        if not workspace.existed:
            raise RunFailed(Outcome.BRANCH_DELETED,
                            f"The branch `{branch}` of this pull request was "
                            "deleted, so Honk has nothing to add to; restore the branch, or "
                            "open a new request, and ask again.")
        if run.report and run.pushed_sha:
            change = Change.from_json(json.loads(run.report))
        else:
            prompt = review_prompt(
                pr_title=pull.title,
                pr_body=pull.body or "",
                diff=await workspace.diff_against_base(),
                comments=comments,
                review_body=trigger.instruction if trigger.review_id else "",
                instruction=None if trigger.review_id else trigger.instruction,
            )
            change = await _change_or_resume(
                run,
                trigger,
                gh,
                status,
                services,
                workspace,
                title=pull.title,
                body=pull.body or "",
                prompt=prompt,
                require_change=False,
            )
            if change.sha is not None:
                await _push(run, gh, status, services, workspace, change, pull.base.repo.clone_url)
    sha = (run.pushed_sha or "")[:7]
    # A resumed run may have replied in some threads already: those are not replied to again.
    if threads and run.attempts > 1:
        replied = await _replied(gh, run, await services.github.bot_login())
    else:
        replied = set()
    for comment, thread_id in threads.items():
        marker = reply_marker(run.id, comment.id)
        if marker in replied:
            continue
        # The marker goes last, after a cap that leaves room for it (GitHub's is 65,536).
        text = cap_body(_reply(comment.id, change, sha), MAX_BODY_CHARS - 500)
        await gh.reply_to_review_comment(run.number, thread_id, f"{text}\n{marker}", marker=marker)
    if comments:
        await status.step(f"replied in {len(comments)} review threads")
    await gh.request_review(run.number, trigger.sender)
    if not sha:
        return f"No change needed: {change.title}"
    if change.out_of_time:
        return f"Pushed `{sha}` to `{branch}` ({change.out_of_time}): {change.title}"
    return f"Pushed `{sha}` to `{branch}`: {change.title}"


async def _issue_as_asked(run: Run, trigger: Trigger, gh: RepoGitHub) -> tuple[str, str]:
    """The issue's title and body as the delivery carried them (an edit made since, by
    anyone, does not reach the agent); a trigger stored before Honk kept them is read
    from GitHub."""
    if trigger.issue_title is not None:
        return trigger.issue_title, trigger.issue_body or ""
    issue = await gh.issue(run.number)
    return issue.title, issue.body or ""


async def _review_threads(
    gh: RepoGitHub, number: int, review_id: int | None
) -> dict[ReviewComment, int]:
    """Each comment of the review, with the id of its thread's top comment (replies go there)."""
    if review_id is None:
        return {}
    return {
        ReviewComment(
            id=c.id,
            path=c.path,
            line=c.line or c.original_line,
            diff_hunk=c.diff_hunk,
            body=c.body,
            author=c.user.login if c.user else "",
        ): c.in_reply_to_id or c.id
        for c in await gh.review_comments(number, review_id)
    }


async def _replied(gh: RepoGitHub, run: Run, bot: str) -> set[str]:
    """The reply markers of this run already in the pull request's threads, from Honk."""
    found = set()
    for comment in await gh.pull_review_comments(run.number):
        if comment.user is None or comment.user.login != bot:
            continue
        found.update(re.findall(r"<!-- honk:reply:\d+:\d+ -->", comment.body or ""))
    return found


def _branch_names(wanted: str) -> list[str]:
    """The name Honk wants, then `-2`, `-3`, … for when a name is someone else's."""
    return [wanted, *(f"{wanted}-{n}" for n in range(2, MAX_BRANCH_NAMES + 1))]


async def _is_honks(gh: RepoGitHub, workspace: Workspace, bot: str) -> bool:
    """Whether Honk may build on the remote branch: it does not exist, or it carries Honk's
    own open PR (a reviewer's commits on it are welcome), or, with no PR open, every commit
    on it beyond the base is Honk's."""
    if not workspace.existed:
        return True
    pull = await gh.find_pull(workspace.branch)
    if pull is not None:
        return pull.user is not None and pull.user.login == bot
    return all(email == bot_email(bot) for email in await workspace.authors_since_base())


def _reply(comment_id: int, change: Change, sha: str) -> str:
    said = change.replies.get(comment_id, "").strip()
    if sha:
        return f"Done in `{sha}`: {said or change.title}"
    return said or "Honk left the code as it is; see the pull request's status comment."


async def _change_or_resume(
    run: Run,
    trigger: Trigger,
    gh: RepoGitHub,
    status: StatusUpdater,
    services: Services,
    workspace: Workspace,
    *,
    title: str,
    body: str,
    prompt: str | None = None,
    require_change: bool = True,
) -> Change:
    """The change to push. A run resumed after a crash or a fault reuses what it made: what
    it pushed, or the commit it could not push, if this machine's mirror still has it."""
    if run.report:
        change = Change.from_json(json.loads(run.report))
        if run.pushed_sha or change.sha is None or await workspace.adopt(change.sha):
            log.info("run resumed with its earlier change", run_id=run.id, sha=change.sha)
            return change
    bot = await services.github.bot_login()
    request = ChangeRequest(
        repo=run.repo,
        number=run.number,
        title=title,
        body=body,
        requested_by=trigger.sender,
        instruction=trigger.instruction or None,
        author_name=bot,
        author_email=bot_email(bot),
        transcript=transcript_path(services.settings.data_dir, run.id),
        prompt=prompt,
        require_change=require_change,
    )
    change = await make_change(
        services.settings,
        workspace,
        services.anthropic,
        RunProgress(run, services.store, status),
        request,
        redact=services.redactor,
    )
    await services.store.update(run.id, report=json.dumps(change.to_json()))
    return change


async def _push(
    run: Run,
    gh: RepoGitHub,
    status: StatusUpdater,
    services: Services,
    workspace: Workspace,
    change: Change,
    clone_url: str,
) -> None:
    if run.pushed_sha:
        return
    await status.step(f"pushing `{workspace.branch}`")
    # A fresh token: the agent may have worked for most of the first one's hour.
    remote = GitRemote(clone_url, await gh.token())
    try:
        sha = await _push_through_faults(workspace, remote)
    except PushRejected as rejection:
        if rejection.reason != "workflows":
            raise RunFailed(Outcome.PUSH_REJECTED, _push_sentence(rejection, workspace)) from None
        patch = await workspace.diff_against_base(paths=rejection.paths)
        if await workspace.drop_paths(rejection.paths) is None:
            raise RunFailed(Outcome.WORKFLOWS, _workflows_sentence(rejection.paths)) from None
        change.notes.append(_workflows_note(rejection.paths, patch))
        sha = await _push_through_faults(workspace, remote)
    run.pushed_sha = sha
    await services.store.update(run.id, pushed_sha=sha, report=json.dumps(change.to_json()))


async def _push_through_faults(workspace: Workspace, remote: GitRemote) -> str:
    """Push; a push the git host dropped (reset, 5xx) is tried again a few times, after
    which the GitError hands the run back (the commit is kept for the next attempt)."""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            return await workspace.push(remote)
        except PushRejected:
            raise
        except GitError as error:
            if attempt == PUSH_ATTEMPTS:
                raise
            log.warning("push failed; retrying", attempt=attempt, error=str(error))
            await asyncio.sleep(PUSH_BACKOFF_SECONDS * attempt)
    raise AssertionError("unreachable")


async def _create_labels(run: Run, trigger: Trigger, services: Services) -> Outcome:
    label = services.settings.label
    for repo in trigger.repos:
        gh = await services.github.for_repo(run.installation_id, repo)
        created = await gh.ensure_label(label, color=LABEL_COLOR, description=LABEL_DESCRIPTION)
        log.info("label checked", repo=repo, label=label, created=created, run_id=run.id)
    await services.store.finish(
        run.id,
        RunState.DONE,
        Outcome.SUCCESS,
        f"Label `{label}` present in {len(trigger.repos)} repositories.",
    )
    return Outcome.SUCCESS


async def _fail(
    run: Run,
    trigger: Trigger,
    gh: RepoGitHub,
    status: StatusUpdater,
    services: Services,
    outcome: Outcome,
    sentence: str,
) -> Outcome:
    sentence = services.redactor(sentence)
    log.info("run failed", run_id=run.id, outcome=outcome, detail=sentence)
    await status.finish(status.comment.failed(sentence))
    await _react(gh, trigger, "confused")
    await services.store.finish(run.id, RunState.FAILED, outcome, sentence)
    return outcome


async def _stopped(
    run: Run, trigger: Trigger, gh: RepoGitHub, status: StatusUpdater, services: Services
) -> None:
    sentence = "Stopped by `/honk stop`; nothing was pushed."
    if run.pushed_sha:
        sentence = f"Stopped by `/honk stop` after pushing `{run.pushed_sha[:7]}`."
    await status.finish(status.comment.stopped(sentence))
    await services.store.finish(run.id, RunState.CANCELLED, Outcome.STOPPED, sentence)


def branch_name(number: int, title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].rstrip("-")
    return f"honk/{number}-{slug}" if slug else f"honk/{number}"


def _run_url(services: Services, run: Run) -> str | None:
    base = services.settings.public_url
    return f"{base}/runs/{run.id}" if base else None


def _internal_error(run: Run) -> str:
    return (
        f"Honk hit an internal error (run {run.id}); the operator's log has the "
        "details. Comment `/honk` to try again."
    )


def _transient_git(error: GitError) -> bool:
    """A fetch or push the git host dropped (a refusal is a PushRejected, not transient)."""
    return not isinstance(error, PushRejected) and bool({"fetch", "push"} & set(error.command))


async def keep_statuses_true(services: Services, stop: asyncio.Event) -> None:
    """Until `stop`: re-send the final states GitHub did not take (and say on the issue
    that a run crashed for good), every `retry_seconds`. Survives any failure."""
    while not stop.is_set():
        try:
            await deliver_owed_statuses(services)
        except Exception:
            log.exception("owed statuses not sent")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=services.settings.retry_seconds)


async def deliver_owed_statuses(services: Services) -> int:
    """One pass of `keep_statuses_true`; the number of statuses GitHub took."""
    delivered = 0
    for run in await services.store.owed_statuses():
        if run.kind == RunKind.LABELS:  # an installation's run has no issue to speak on
            await services.store.status_paid(run.id)
            continue
        try:
            gh = await services.github.for_repo(run.installation_id, run.repo)
        except GitHubError as error:
            await _owed_status_failed(services, run, error)
            continue
        stats = Stats(turns=run.turns, input_tokens=run.input_tokens,
                      output_tokens=run.output_tokens, cost_usd=run.cost_usd,
                      started_at=run.started_at or run.created_at)
        comment = StatusComment(run.id, stats, _run_url(services, run))
        body = run.final_status or comment.failed(run.detail or "Honk stopped.")
        updater = StatusUpdater(gh, services.store, run, comment)
        if not await updater.deliver(body):
            assert updater.last_error is not None
            await _owed_status_failed(services, run, updater.last_error)
            continue
        if run.final_status is None:  # a crash or a give-up the run could not report itself
            await _react(gh, Trigger.from_json(run.trigger_data), "confused")
        await services.store.status_paid(run.id)
        log.info("owed status sent", run_id=run.id)
        delivered += 1
    return delivered


async def _owed_status_failed(services: Services, run: Run, error: GitHubError) -> None:
    """Try again next time if GitHub may take it then; not if it refused (the issue or the
    installation is gone, the App lost access)."""
    log.warning("owed status not sent", run_id=run.id, error=str(error),
                giving_up=not error.transient)
    if not error.transient:
        await services.store.status_paid(run.id)


def _push_sentence(rejection: PushRejected, workspace: Workspace) -> str:
    if rejection.reason == "conflict":
        return (
            f"Someone pushed to `{workspace.branch}` while Honk worked and the changes "
            "conflict; Honk never force-pushes. Comment `/honk` to redo the work on top."
        )
    return f"GitHub refused the push to `{workspace.branch}`."


def _workflows_sentence(paths: tuple[str, ...]) -> str:
    listed = ", ".join(f"`{path}`" for path in paths)
    return (
        f"The change touches only workflow files ({listed}), which this App may not push "
        "without the `workflows` permission."
    )


def _workflows_note(paths: tuple[str, ...], patch: str) -> str:
    listed = ", ".join(f"`{path}`" for path in paths)
    return (
        f"GitHub does not let this App change workflow files without the `workflows` "
        f"permission, so {listed} was left out of the push. The change, to apply by hand:"
        f"\n>\n> <details><summary>Patch</summary>\n>\n> ```diff\n> "
        + patch.replace("\n", "\n> ")
        + "\n> ```\n> </details>"
    )
