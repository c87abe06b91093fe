"""Honk: a GitHub App that turns a labelled issue into a verified pull request.

Read top-down, the folders are the flow of DESIGN.md:

- `web/`: the request path. Everything that answers HTTP (webhooks, setup, sign-in, the
  runs pages); it stores a run and answers, and does no run's work.
- `store/`: the only SQL. Runs and deliveries on SQLite or PostgreSQL, and migrations.
- `workers/`: who picks a run up (the embedded pool on SQLite, procrastinate on
  PostgreSQL), given the function that carries a run out.
- `run/`: one run, start to end: the pipeline, the status comment, making the change.
- `github/`: the only code that talks to GitHub.
- `agent/`: the Claude loop; it knows nothing of GitHub, git or the store.
- `sandbox/`: the trust boundary, agent side: bubblewrap and the agent's tools.
- `workspace/`: the trust boundary, host side: git over a tree the agent wrote.

Beside them, the shared nouns (`models`), the settings, logs, metrics and redaction.
The simulators are a sibling package, `honk_sim`, which this package never imports (the
`honk demo` command loads it when it runs).
"""
