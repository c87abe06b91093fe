"""One run, start to end.

`pipeline` is the sequence of DESIGN.md's flow (authorize, acknowledge, check out, make
the change, push, open the pull request or reply, final status) and the one place that
decides what a resumed run reuses; `status` is what the run says on GitHub; `change`
makes the change in a workspace (setup, the agent, the checks, the commit) and touches
neither GitHub nor the store; `services` is what a run is given.

May import: `github`, `store`, `workspace`, `agent`, `sandbox`, `models`, `settings`,
`metrics`, `redact`. Never `web` or `workers`.
"""
