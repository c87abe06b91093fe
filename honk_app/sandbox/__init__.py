"""The trust boundary, agent side: where the agent's commands and edits run.

`bubblewrap` runs one command in a fresh sandbox (namespaces, no network unless allowed,
a uid that owns nothing, seccomp, rlimits) with the limits of `cgroups`, `disk`, `mounts`,
`output`, `seccomp` and `user`; `tools` are the agent's bash and text editor, confined to
the workspace; `links` resolves a path inside a tree the agent wrote, symlinks physically
(the host side uses it too, for the commit); `factory` builds the sandbox every agent
command, setup command and check runs in, and that `honk sandbox` runs.

May import: `settings` (in `factory` only) and `agent.types`. Nothing of GitHub, git or
the store; importing it does not import the anthropic SDK.
"""
