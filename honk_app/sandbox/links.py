"""Where a path inside a tree the agent wrote really leads, symlinks resolved physically.

Both sides of the trust boundary resolve paths here: the editor on the host's files (is
this path, with every link on the way, still inside the workspace?) and the commit on the
tree it is about to record (does any link it adds lead out?). Neither follows a link to
find out: each hands `resolve` a `read_link` that says whether one entry is a symlink and
what it holds, and `resolve` walks the components as the kernel would.

It is stricter than the kernel in one way: `..` always goes up one level, even after a
component that does not exist (where the kernel would stop with ENOENT), so a link that
leads out only once some directory appears is refused now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

MAX_HOPS = 40  # as Linux's MAXSYMLINKS

# The target of the symlink at these components below the root, or None if the entry is
# not a symlink (or does not exist).
ReadLink = Callable[[tuple[str, ...]], str | None]


class LeavesTree(Exception):
    """The path leads out of the tree, into its .git through a link, or loops."""


class LeadsIntoGit(LeavesTree):
    """A symlink on the way leads into .git."""


def resolve(
    path: str | Sequence[str],
    read_link: ReadLink,
    *,
    absolute_root: str | None = None,
) -> list[str]:
    """The components below the root that `path` (relative to the root) leads to.

    absolute_root: an absolute target under it (e.g. "/workspace", as the sandbox mounts
    the root) is read as a path from the root; any other absolute target leads out.
    """
    pending = path.split("/") if isinstance(path, str) else list(path)
    resolved: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not resolved:
                raise LeavesTree("it leads above the root")
            resolved.pop()
            continue
        target = read_link((*resolved, name))
        if target is None:
            resolved.append(name)
            continue
        hops += 1
        if hops > MAX_HOPS:
            raise LeavesTree("too many levels of symlinks")
        if target.startswith("/"):
            root = (absolute_root or "").rstrip("/")
            if not root or not (target == root or target.startswith(root + "/")):
                raise LeavesTree(f"a symlink on the way points to {target}")
            resolved, target = [], target[len(root):]
        pending = [*target.split("/"), *pending]
    if hops and any(name.lower() == ".git" for name in resolved):
        raise LeadsIntoGit("a symlink on the way leads into .git")
    return resolved


def link_escapes(link_path: str, links: Callable[[str], str | None]) -> bool:
    """Whether the symlink at link_path leads out of the tree (or into .git), given what
    every symlink of the tree holds (`links(path)`: its target, or None for no link)."""
    try:
        resolve(link_path, lambda parts: links("/".join(parts)))
    except LeavesTree:
        return True
    return False
