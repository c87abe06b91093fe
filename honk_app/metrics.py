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
