"""The trust boundary, host side: git over a tree the agent wrote.

`git` runs the git CLI with a safe configuration (no hooks, no fsmonitor, no config the
agent could have planted); `checkout` keeps a mirror per repository and a slot (a kept
worktree) per run, and commits what the agent left, refusing links that lead out.

May import: `sandbox.user` and `sandbox.links`. Never `github`, `store` or `agent`.
"""
