"""`GET /runs` and `GET /runs/{id}`: what Honk did, for people who may see it.

Private: a person signs in with GitHub (signin.py) and sees only the runs of repositories
GitHub says they can read; another run's page is a 404, as on GitHub. Without an OAuth
client the pages are off. A run's page shows its timeline and the agent's transcript
(`{HONK_DATA_DIR}/runs/{id}/transcript.jsonl`, written by agent/loop.py), redacted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from honk_app.github.manifest import github_web_url
from honk_app.models import Run, RunKind, transcript_path
from honk_app.redact import Redactor
from honk_app.settings import Settings
from honk_app.store.runs import RunStore
from honk_app.web import charts, pages
from honk_app.web.signin import GitHubSignIn, SignInError, Viewer, oauth_configured
from honk_app.web.views import duration_text, run_seconds, when

LIST_LIMIT = 200
CHART_DAYS = 30
CHART_LIMIT = 20_000
MAX_TRANSCRIPT_BYTES = 8 * 2**20
MAX_BLOCK_CHARS = 4_000


class RunsPages:
    def __init__(
        self,
        settings: Callable[[], Settings],
        store: RunStore,
        signin: GitHubSignIn,
        redactor: Redactor,
    ) -> None:
        self._settings = settings
        self._store = store
        self._signin = signin
        self._redact = redactor

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/runs", self.list_runs, methods=["GET"]),
            Route("/runs/{run_id:int}", self.show_run, methods=["GET"]),
        ]

    async def list_runs(self, request: Request) -> Response:
        access = await self._access(request)
        if isinstance(access, Response):
            return access
        viewer, repos = access
        runs = await self._store.of_repos(repos, limit=LIST_LIMIT)
        since = time.time() - CHART_DAYS * 86_400
        recent = await self._store.of_repos(repos, limit=CHART_LIMIT, since=since)
        days = charts.per_day(recent, days=CHART_DAYS, today=datetime.now(UTC).date())
        body = (
            f"<h1>Runs</h1><p class='hint'>Runs of the {len(repos)} repositories you can read "
            f"where Honk is installed; the newest {LIST_LIMIT} at most.</p>"
            f"<h2>Last {CHART_DAYS} days</h2>{charts.runs_chart(days)}{charts.cost_chart(days)}"
            f"{self._table(runs)}"
        )
        return HTMLResponse(pages.page("Honk runs", body, viewer=viewer.login))

    async def show_run(self, request: Request) -> Response:
        access = await self._access(request)
        if isinstance(access, Response):
            return access
        viewer, repos = access
        run = await self._store.get(request.path_params["run_id"])
        if run is None or run.repo not in repos:
            return HTMLResponse(
                pages.page("No such run", "<h1>No such run</h1><p>There is no run with this "
                           "number in a repository you can read.</p>", viewer=viewer.login),
                status_code=404,
            )
        transcript = transcript_path(self._settings().data_dir, run.id)
        records = read_transcript(transcript)
        body = (
            f"<h1>Run {run.id}: {escape(run.repo)}#{run.number}</h1>"
            f"{self._facts(run)}<h2>Timeline</h2>{self._timeline(run, records)}"
            f"<h2>Transcript</h2>{self._transcript(records)}"
        )
        return HTMLResponse(pages.page(f"Honk run {run.id}", body, viewer=viewer.login))

    async def _access(self, request: Request) -> tuple[Viewer, frozenset[str]] | Response:
        """The signed-in person and what they can read, or the answer for everyone else."""
        if not oauth_configured(self._settings()):
            return HTMLResponse(pages.pages_off(), status_code=404)
        viewer = self._signin.viewer(request)
        if viewer is None:
            return self._signin.redirect_to_signin(request)
        try:
            repos = await self._signin.readable_repos(viewer)
        except SignInError as error:
            return HTMLResponse(pages.signin_failed(str(error)), status_code=502)
        if repos is None:
            return self._signin.redirect_to_signin(request)
        return viewer, repos

    # --- rendering -----------------------------------------------------------------------

    def _web(self, path: str) -> str:
        return f"{github_web_url(self._settings().github_api_url)}/{path}"

    def _thread_link(self, run: Run) -> str:
        if run.kind == RunKind.LABELS:
            return "—"
        kind = "pull" if run.kind == RunKind.FOLLOWUP else "issues"
        link = f'<a href="{escape(self._web(f"{run.repo}/{kind}/{run.number}"))}">#{run.number}</a>'
        if run.pr_number and run.pr_number != run.number:
            pull = self._web(f"{run.repo}/pull/{run.pr_number}")
            link += f' → <a href="{escape(pull)}">#{run.pr_number}</a>'
        return link

    def _table(self, runs: list[Run]) -> str:
        if not runs:
            return "<p>No runs yet.</p>"
        rows = "".join(
            f"<tr><td><a href='/runs/{run.id}'>{run.id}</a></td><td>{escape(run.state)}</td>"
            f"<td>{escape(run.outcome or '')}</td><td>{escape(run.repo)}</td>"
            f"<td>{self._thread_link(run)}</td><td>{escape(run.kind)}</td>"
            f"<td>{escape(run.sender)}</td><td class='num'>{run.turns}</td>"
            f"<td class='num'>${run.cost_usd:.2f}</td>"
            f"<td class='num'>{duration_text(run_seconds(run))}</td>"
            f"<td>{when(run.created_at)}</td></tr>"
            for run in runs
        )
        return (
            "<table><thead><tr><th>run</th><th>state</th><th>outcome</th><th>repository</th>"
            "<th>issue/PR</th><th>kind</th><th>asked by</th><th class='num'>turns</th>"
            "<th class='num'>cost</th><th class='num'>duration</th><th>created</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )

    def _facts(self, run: Run) -> str:
        facts = [
            ("state", escape(run.state) + (f" ({escape(run.outcome)})" if run.outcome else "")),
            ("issue/PR", self._thread_link(run)),
            ("kind", escape(run.kind)),
            ("asked by", escape(run.sender)),
            ("detail", escape(self._redact(run.detail or ""))),
            ("turns", str(run.turns)),
            ("tokens", f"{run.input_tokens:,} in, {run.output_tokens:,} out"),
            ("cost", f"${run.cost_usd:.4f}"),
            ("duration", duration_text(run_seconds(run))),
            ("attempts", str(run.attempts)),
            ("branch", f"<code>{escape(run.branch)}</code>" if run.branch else "—"),
            ("pushed", f"<code>{escape(run.pushed_sha[:12])}</code>" if run.pushed_sha else "—"),
            ("delivery", f"<code>{escape(run.delivery_id)}</code>"),
        ]
        rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
        return f"<table>{rows}</table>"

    def _timeline(self, run: Run, records: list[dict[str, Any]]) -> str:
        events: list[tuple[float, str]] = [(run.created_at, "queued")]
        if run.started_at:
            events.append((run.started_at, f"started (attempt {run.attempts})"))
        for record in records:
            if record.get("kind") == "turn":
                calls = [_call_line(b) for b in record.get("assistant", []) if _is_call(b)]
                what = "; ".join(calls) or str(record.get("action", ""))
                events.append((float(record.get("time", 0)), f"turn {record.get('turn')}: {what}"))
            elif record.get("kind") == "end":
                events.append((float(record.get("time", 0)),
                               f"agent ended: {record.get('outcome')} {record.get('detail', '')}"))
        if run.finished_at:
            events.append((run.finished_at, f"finished: {run.outcome} {run.detail or ''}"))
        items = "".join(
            f"<li><code>{when(at, seconds=True)}</code> {escape(self._redact(_short(text, 300)))}"
            "</li>"
            for at, text in sorted(events, key=lambda event: event[0])
        )
        return f"<ol>{items}</ol>"

    def _transcript(self, records: list[dict[str, Any]]) -> str:
        if not records:
            return "<p>No transcript: the agent did not run for this run.</p>"
        parts = []
        for record in records:
            if record.get("kind") == "turn":
                parts.append(self._turn(record))
            elif record.get("kind") == "end":
                parts.append(f"<p><strong>End:</strong> {escape(str(record.get('outcome')))} — "
                             f"{escape(self._redact(str(record.get('detail', ''))))}</p>")
            elif record.get("kind") == "truncated":
                parts.append("<p class='hint'>The rest of the transcript is too long to show "
                             "here; it is on the server.</p>")
        return "".join(parts)

    def _turn(self, record: dict[str, Any]) -> str:
        usage = record.get("usage") or {}
        summary = (
            f"Turn {record.get('turn')}: {escape(str(record.get('action', '')))} · "
            f"${float(usage.get('cost_usd', 0)):.4f}"
        )
        blocks = []
        if record.get("system"):
            blocks.append(self._block("system prompt", str(record["system"])))
        for block in record.get("user") or []:
            if block.get("type") == "text":
                blocks.append(self._block("to the agent", str(block.get("text", ""))))
        for block in record.get("assistant") or []:
            if block.get("type") == "text":
                blocks.append(self._block("agent", str(block.get("text", ""))))
            elif _is_call(block):
                text = json.dumps(block.get("input"), indent=1, ensure_ascii=False)
                blocks.append(self._block(f"tool call: {block.get('name')}", text))
        for result in record.get("tool_results") or []:
            if result.get("type") == "tool_result":
                label = "tool error" if result.get("is_error") else "tool output"
                blocks.append(self._block(label, _result_text(result)))
            elif result.get("type") == "text":
                blocks.append(self._block("to the agent", str(result.get("text", ""))))
        return f"<details><summary>{summary}</summary>{''.join(blocks)}</details>"

    def _block(self, label: str, text: str) -> str:
        shown = escape(self._redact(_cut_middle(text, MAX_BLOCK_CHARS)))
        return f"<p><strong>{escape(label)}</strong></p><pre>{shown}</pre>"


def read_transcript(path: Path) -> list[dict[str, Any]]:
    """The transcript's records; a line cut by a crash is skipped, a huge file is cut."""
    if not path.is_file():
        return []
    with path.open("rb") as file:
        raw = file.read(MAX_TRANSCRIPT_BYTES + 1)
    records: list[dict[str, Any]] = []
    for line in raw[:MAX_TRANSCRIPT_BYTES].decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    if len(raw) > MAX_TRANSCRIPT_BYTES:
        records.append({"kind": "truncated"})
    return records


def _is_call(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") in ("tool_use", "server_tool_use")


def _call_line(block: dict[str, Any]) -> str:
    tool_input = block.get("input") or {}
    if block.get("name") == "bash":
        return f"bash `{_short(str(tool_input.get('command', 'restart')), 80)}`"
    if isinstance(tool_input, dict) and "path" in tool_input:
        return f"{tool_input.get('command', block.get('name'))} {tool_input['path']}"
    return str(block.get("name"))


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit // 2
    return f"{text[:head]}\n[… {len(text) - limit:,} characters not shown …]\n{text[-head:]}"
