"""Who picks a run up: the embedded pool (SQLite) or procrastinate's workers (PostgreSQL).

`backend` opens the database that DATABASE_URL names with its queue; `pool` claims runs
from the runs table, `jobs` runs them as procrastinate jobs. Either one is handed the
function that carries a run out (`run.pipeline.execute`), so nothing here knows what a
run does: it claims, renews the lease, stops, recovers from dead workers, hands back.

May import: `store`, `models`, `settings`, `metrics`. Never `run`, `web` or `github`.
"""
