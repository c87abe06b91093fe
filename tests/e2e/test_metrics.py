"""What an operator watches: /metrics and the log lines of a real run, and the label Honk
brings along.

The Prometheus registry is the process's, shared by every test that ran before: each
assertion is on how much a series grew across this test's run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import LogCapture

from honk_app.run.pipeline import LABEL_COLOR, LABEL_DESCRIPTION
from honk_app.settings import DEFAULT_MODEL
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.harness import OfflineHonk, offline_honk
from tests.conftest import sample_honk

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(honk: OfflineHonk) -> Samples:
    answer = httpx.get(f"{honk.server.url}/metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def honk(tmp_path: Path) -> Iterator[OfflineHonk]:
    with sample_honk(tmp_path, demo_script()) as running:
        yield running


def test_metrics_after_a_run(honk: OfflineHonk) -> None:
    before = scrape(honk)
    sim = honk.github
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    sim.label_issue(REPO, number, "bug", sender=MAINTAINER)  # not Honk's label: ignored
    [*_, run] = honk.wait_until_idle(2)
    assert run["outcome"] == "success"
    after = scrape(honk)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("honk_webhook_deliveries_total", event="issues", outcome="queued") == 1
    assert grew("honk_webhook_deliveries_total", event="issues", outcome="ignored") >= 1
    assert grew("honk_webhook_seconds_count") >= 2
    assert grew("honk_runs_total", kind="task", outcome="success") == 1
    assert grew("honk_run_seconds_count") == 1
    assert grew("honk_run_seconds_sum") > 0
    assert grew("honk_model_tokens_total", model=DEFAULT_MODEL, kind="output") > 0
    tokens_in = sum(
        grew("honk_model_tokens_total", model=DEFAULT_MODEL, kind=kind)
        for kind in ("input", "cache_read", "cache_write")
    )
    assert tokens_in == run["input_tokens"]
    assert grew("honk_model_cost_usd_total", model=DEFAULT_MODEL) == pytest.approx(
        run["cost_usd"]
    )
    assert value(after, "honk_queue_depth") == 0


def test_installing_on_repositories_creates_the_label_in_each(tmp_path: Path) -> None:
    with offline_honk(tmp_path, script=[]) as honk:
        sim = honk.github
        for name in ("acme/one", "acme/two", "acme/three"):
            sim.create_repo(name, {"README.md": "# hi\n"})
        installation = sim.install(["acme/one", "acme/two"])
        honk.wait_until_idle(1)
        sim.add_repos_to_installation(installation, ["acme/three"])
        runs = honk.wait_until_idle(2)
        assert [(r["kind"], r["outcome"]) for r in runs] == [("labels", "success")] * 2
        for repo in ("acme/one", "acme/two", "acme/three"):
            [label] = [label for label in sim.labels(repo) if label["name"] == "honk"]
            assert (label["color"], label["description"]) == (LABEL_COLOR, LABEL_DESCRIPTION)


def test_every_log_line_of_a_run_carries_its_ids(honk: OfflineHonk) -> None:
    captured = LogCapture()
    previous = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, captured])
    try:
        sim = honk.github
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        [*_, run] = honk.wait_until_idle(2)
    finally:
        structlog.configure(**previous)
    of_run = [entry for entry in captured.entries if entry.get("run_id") == run["id"]]
    events = {entry["event"] for entry in of_run}
    assert {"run queued", "run claimed", "agent.turn", "run done"} <= events
    for entry in of_run:
        assert (entry.get("delivery_id"), entry.get("repo"), entry.get("number")) == (
            run["delivery_id"], REPO, number
        ), entry
