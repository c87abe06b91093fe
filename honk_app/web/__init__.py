"""The request path: everything that answers HTTP, and nothing of a run's work.

`app` (routes and the lifespan that opens the store and, in `honk serve`, the embedded
workers), `webhooks` (verify → trigger → store → answer), `triggers` (what a delivery
means: pure), `setup` (registering the App through GitHub's manifest flow), `signin`
(GitHub sign-in for Honk's pages), `pages`, `runs_pages`, `charts` and `views` (what a
person reads, in a browser or from `honk runs`).

May import: `store`, `workers` (to open them), `github` (through its functions only),
`models`, `settings`, `metrics`, `redact`; `run` only in `app`, to hand the workers the
function that carries a run out. Nothing here calls GitHub or Anthropic on a webhook.
"""
