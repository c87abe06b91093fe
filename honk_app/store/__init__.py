"""The only SQL in Honk: deliveries and runs, on SQLite or PostgreSQL, and migrations.

`db` is the seam (an operation is an async function of one transaction's `Sql` handle)
and the embedded SQLite database; `postgres` the PostgreSQL one; `runs` the run store
whose queries run as written on both; `migrations` the schema changes of both.

May import: `models` and the standard library, psycopg and procrastinate's schema. Never
`web`, `workers`, `run`, `github`, `agent`, `sandbox` or `workspace`.
"""
