"""Prometheus metrics, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "honk_webhook_deliveries_total",
    "Webhook deliveries by event and outcome.",
    ["event", "outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "honk_webhook_seconds",
    "Time to verify, store and answer a webhook delivery.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
RUNS = Counter("honk_runs_total", "Finished runs by kind and outcome.", ["kind", "outcome"])
RUN_SECONDS = Histogram(
    "honk_run_seconds",
    "Wall time of a run, from claim to end.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
TOKENS = Counter("honk_model_tokens_total", "Model tokens by model and kind.", ["model", "kind"])
COST = Counter("honk_model_cost_usd_total", "Model spend in US dollars by model.", ["model"])
QUEUE_DEPTH = Gauge("honk_queue_depth", "Runs waiting for a worker.")
BACKGROUND_ERRORS = Counter(
    "honk_background_errors_total",
    "Failed calls (the database's, mostly) in a background task, which then tried again.",
    ["task"],
)

# The X-GitHub-Event values counted by name: those the App subscribes to (app-manifest.yml)
# and those GitHub sends every App. Any other value, and every request whose signature was
# not checked, is counted under a fixed label, so strangers cannot add series.
KNOWN_EVENTS = frozenset({
    "issues", "issue_comment", "pull_request", "pull_request_review",
    "pull_request_review_comment", "pull_request_review_thread", "installation",
    "installation_repositories", "installation_target", "github_app_authorization",
    "meta", "ping",
})
OTHER = "other"
UNVERIFIED = "unverified"
_UNVERIFIED_OUTCOMES = (
    "unconfigured", "bad_signature", "too_large", "busy", "slow_body", "disconnected"
)


def event_label(event: str) -> str:
    return event if event in KNOWN_EVENTS or event == UNVERIFIED else OTHER


# Created up front, so the series /metrics shows do not depend on what strangers sent.
for _outcome in _UNVERIFIED_OUTCOMES:
    DELIVERIES.labels(event=UNVERIFIED, outcome=_outcome)
