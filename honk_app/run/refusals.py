"""Refusing a person, once per issue or pull request.

An outsider who comments `/honk` five times gets one comment saying why Honk will not act,
then only a 😕 reaction on each later attempt: the refusal is remembered in the store, so
it holds across workers and restarts, and nobody can make Honk fill an issue with refusals.
"""

from __future__ import annotations

from honk_app.github.client import RepoGitHub
from honk_app.store.runs import RunStore

REFUSED_REACTION = "confused"


async def refuse_once(
    gh: RepoGitHub,
    store: RunStore,
    *,
    lock_key: str,
    number: int,
    login: str,
    comment_id: int | None,
    sentence: str,
) -> bool:
    """Tell `login` why Honk will not act (`sentence`) the first time on this issue/PR, and
    react to their comment (or the issue) after that. True when the comment was posted."""
    if not await store.refused_before(lock_key, login):
        # Remembered once posted: a comment GitHub did not take is posted at the retry.
        await gh.comment(number, f"@{login} {sentence}")
        await store.remember_refusal(lock_key, login)
        return True
    if comment_id is not None:
        await gh.react(REFUSED_REACTION, comment_id=comment_id)
    else:
        await gh.react(REFUSED_REACTION, issue=number)
    return False
