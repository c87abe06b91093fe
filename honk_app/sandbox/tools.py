"""The agent's tools: Anthropic's bash tool and text editor tool, confined to the workspace.

`bash` runs each command in a fresh sandbox (see bubblewrap.py).

The editor runs on the host, with Python file I/O, rather than in the sandbox: a view or
an edit then costs no process start, and the bytes written are exactly the model's. It is
confined in two steps. First the path is resolved inside the workspace the way the sandbox
would see it: `..` given by the model is refused, absolute paths must be under /workspace,
and symlinks are followed one component at a time only while they stay inside the
workspace (honk_app/sandbox/links.py; an absolute target is read as a sandbox path, so
`/workspace/...` is inside and anything else is refused). Then the resolved path is
opened by walking directory file descriptors from the workspace root with O_NOFOLLOW at
every component, so a directory or file swapped for a symlink after the check makes the
call fail instead of leaving the workspace. Writes go to a new file in the same directory,
renamed over the target, so a write never follows a link. `.git` and everything under it
are refused for writes, and so is any path that reaches .git through a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from honk_app.agent.types import ToolOutput
from honk_app.sandbox.bubblewrap import WORKSPACE_MOUNT, Sandbox, cap_text
from honk_app.sandbox.links import LeadsIntoGit, LeavesTree, resolve

BASH_TOOL = "bash"
EDITOR_TOOL = "str_replace_based_edit_tool"
MAX_EDITOR_FILE_BYTES = 10 * 2**20
SNIPPET_CONTEXT_LINES = 4
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class EditorError(Exception):
    """An editor call the model can correct; the message says how."""


class AgentTools:
    """Runs the model's tool calls: bash in the sandbox, the editor inside the workspace."""

    def __init__(self, sandbox: Sandbox, workspace: Path) -> None:
        self.sandbox = sandbox
        self.editor = Editor(workspace, output_limit_chars=sandbox.limits.output_limit_chars,
                             owner=sandbox.file_owner)

    async def run_tool(self, name: str, tool_input: Mapping[str, Any]) -> ToolOutput:
        if name == BASH_TOOL:
            return await self._bash(tool_input)
        if name == EDITOR_TOOL:
            try:
                return ToolOutput(await asyncio.to_thread(self.editor.run, tool_input))
            except EditorError as error:
                return ToolOutput(str(error), is_error=True)
        return ToolOutput(f"unknown tool {name!r}: use {BASH_TOOL} or {EDITOR_TOOL}.",
                          is_error=True)

    async def _bash(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        if tool_input.get("restart"):
            return ToolOutput("The bash tool has been restarted. Each command runs in a fresh "
                              f"shell in {WORKSPACE_MOUNT}; nothing carries over between "
                              "commands (cd, variables, background jobs).")
        command = tool_input.get("command")
        if not isinstance(command, str) or not command.strip():
            return ToolOutput("Give the shell command to run in `command`.", is_error=True)
        if "\0" in command:
            return ToolOutput("The command contains a NUL character; remove it.", is_error=True)
        result = await self.sandbox.run(command)
        text = result.output.rstrip("\n")
        if result.timed_out:
            return ToolOutput(f"{text}\nRun something narrower that finishes in time (one test "
                              "file, a smaller target), or avoid commands that wait for input "
                              "or run forever (servers, watchers).", is_error=True)
        if result.exit_code != 0:
            text = f"{text}\nexit code {result.exit_code}".lstrip("\n")
        return ToolOutput(text or "(no output)")


class Editor:
    """Anthropic's text editor commands (text_editor_20250728) on files of one workspace."""

    def __init__(self, workspace: Path, *, output_limit_chars: int,
                 owner: tuple[int, int] | None = None) -> None:
        self.root = workspace.resolve(strict=True)
        self.output_limit_chars = output_limit_chars
        # The sandbox's (uid, gid) when it is not Honk's: what the editor writes is theirs,
        # so that the agent's commands can change it as they change their own files.
        self.owner = owner

    def run(self, tool_input: Mapping[str, Any]) -> str:
        command = tool_input.get("command")
        path = _string(tool_input, "path")
        if command == "view":
            text = self.view(path, tool_input.get("view_range"))
        elif command == "create":
            text = self.create(path, _string(tool_input, "file_text", allow_empty=True))
        elif command == "str_replace":
            new_str = tool_input.get("new_str", "")
            if not isinstance(new_str, str):
                raise EditorError("`new_str` must be a string.")
            text = self.str_replace(path, _string(tool_input, "old_str"), new_str)
        elif command == "insert":
            key = "insert_text" if "insert_text" in tool_input else "new_str"
            text = self.insert(path, tool_input.get("insert_line"),
                               _string(tool_input, key, allow_empty=True))
        else:
            raise EditorError(f"Unknown editor command {command!r}: use view, create, "
                              "str_replace or insert.")
        return cap_text(text, self.output_limit_chars)[0]

    def view(self, path: str, view_range: Any = None) -> str:
        parts = self._resolve(path)
        display = _display(parts)
        with self._parent(parts, display) as parent:
            name = parts[-1] if parts else "."
            try:
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            except FileNotFoundError:
                raise EditorError(f"{display} does not exist.") from None
            if stat.S_ISDIR(mode):
                if view_range is not None:
                    raise EditorError("`view_range` applies to files only, and "
                                      f"{display} is a directory.")
                return self._list(parent, name, display)
            data = _read(parent, name, display)
        if b"\0" in data:
            raise EditorError(f"{display} is a binary file; inspect it with bash (e.g. xxd).")
        lines = _lines(data.decode(errors="replace"))
        start, end = _view_bounds(view_range, len(lines), display)
        if not lines:
            return f"{display} is empty."
        return (f"Here's the result of running `cat -n` on {display}:\n"
                + _numbered(lines[start - 1:end], start))

    def create(self, path: str, file_text: str) -> str:
        parts = self._writable(path)
        display = _display(parts)
        with self._parent(parts, display, create=True) as parent:
            existing = _lstat(parent, parts[-1])
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                raise EditorError(f"{display} exists and is not a regular file.")
            mode = stat.S_IMODE(existing.st_mode) if existing else 0o644
            _write(parent, parts[-1], file_text.encode(), mode, self.owner)
        return f"File {'overwritten' if existing else 'created'}: {display}"

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        parts = self._writable(path)
        display = _display(parts)
        with self._parent(parts, display) as parent:
            text, mode = _read_text(parent, parts[-1], display)
            count = text.count(old_str)
            if count == 0:
                raise EditorError(f"No replacement was performed: old_str does not appear "
                                  f"verbatim in {display}. Check whitespace and indentation, "
                                  "or view the file first.")
            if count > 1:
                lines = [text.count("\n", 0, index) + 1 for index in _occurrences(text, old_str)]
                raise EditorError(f"No replacement was performed: old_str occurs {count} times "
                                  f"in {display} (starting on lines {_some(lines)}). Include more "
                                  "surrounding lines so it occurs exactly once.")
            index = text.index(old_str)
            edited = text[:index] + new_str + text[index + len(old_str):]
            _write(parent, parts[-1], edited.encode(), mode, self.owner)
        first = text.count("\n", 0, index) + 1
        return _edited(display, edited, first, first + new_str.count("\n"))

    def insert(self, path: str, insert_line: Any, insert_text: str) -> str:
        parts = self._writable(path)
        display = _display(parts)
        with self._parent(parts, display) as parent:
            text, mode = _read_text(parent, parts[-1], display)
            lines = text.splitlines(keepends=True)
            if not isinstance(insert_line, int) or isinstance(insert_line, bool) \
                    or not 0 <= insert_line <= len(lines):
                raise EditorError(f"`insert_line` must be a whole number from 0 (top) to "
                                  f"{len(lines)} (end of {display}), got {insert_line!r}.")
            if insert_text and not insert_text.endswith("\n"):
                insert_text += "\n"
            if insert_line == len(lines) and lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            edited = "".join([*lines[:insert_line], insert_text, *lines[insert_line:]])
            _write(parent, parts[-1], edited.encode(), mode, self.owner)
        return _edited(display, edited, insert_line + 1, insert_line + insert_text.count("\n"))

    def _writable(self, path: str) -> list[str]:
        parts = self._resolve(path)
        if not parts:
            raise EditorError(f"{WORKSPACE_MOUNT} is the workspace directory, not a file.")
        if parts[0] == ".git":
            raise EditorError(f"{_display(parts)} is inside .git, which is read-only: Honk "
                              "commits your changes itself. Edit the working tree only.")
        return parts

    def _resolve(self, path: str) -> list[str]:
        """The path's components below the root, following only symlinks that stay inside."""
        given = PurePosixPath(path)
        if given.is_absolute():
            if not given.is_relative_to(WORKSPACE_MOUNT):
                raise EditorError(f"{path} is outside the workspace: give a path under "
                                  f"{WORKSPACE_MOUNT}.")
            given = given.relative_to(WORKSPACE_MOUNT)
        if ".." in given.parts:
            raise EditorError(f"{path}: '..' is not allowed; give the path from "
                              f"{WORKSPACE_MOUNT}.")
        def read_link(parts: tuple[str, ...]) -> str | None:
            entry = self.root.joinpath(*parts)
            try:
                if not stat.S_ISLNK(os.lstat(entry).st_mode):
                    return None
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                raise EditorError(f"{_display(list(parts[:-1]))} is not a directory.") from None
            return os.readlink(entry)

        try:
            return resolve(given.parts, read_link, absolute_root=WORKSPACE_MOUNT)
        except LeadsIntoGit:
            raise EditorError(f"{path} leads through a symlink into .git, which is read-only: "
                              "Honk commits your changes itself.") from None
        except LeavesTree as error:
            raise EditorError(f"{path} leads outside the workspace through a symlink "
                              f"({error}); refusing to follow it.") from None

    @contextlib.contextmanager
    def _parent(self, parts: list[str], display: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory holding parts[-1], opened without following links."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in parts[:-1]:
                if create and _lstat(fd, name) is None:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                        if self.owner is not None:
                            os.chown(name, *self.owner, dir_fd=fd, follow_symlinks=False)
                try:
                    child = os.open(name, _DIRECTORY_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    raise EditorError(f"{display} does not exist.") from None
                except OSError:  # ELOOP, ENOTDIR: a symlink or file where a directory should be
                    raise EditorError(f"{display}: a parent is not a directory inside the "
                                      "workspace.") from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _list(self, parent: int, name: str, display: str) -> str:
        fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
        try:
            lines = [f"{display}/", *_tree(fd, display.rstrip("/"), depth=2)]
        finally:
            os.close(fd)
        return (f"Here are the files and directories up to 2 levels deep in {display}, "
                "excluding hidden items:\n" + "\n".join(lines))


def _tree(fd: int, prefix: str, depth: int) -> Iterator[str]:
    with os.scandir(fd) as scan:
        entries = sorted((entry for entry in scan if not entry.name.startswith(".")),
                         key=lambda entry: entry.name)
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        yield f"{prefix}/{entry.name}{'/' if is_dir else ''}"
        if is_dir and depth > 1:
            try:
                child = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError:
                continue
            try:
                yield from _tree(child, f"{prefix}/{entry.name}", depth - 1)
            finally:
                os.close(child)


def _read(parent: int, name: str, display: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO the agent made must not hang the worker.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=parent)
    except FileNotFoundError:
        raise EditorError(f"{display} does not exist.") from None
    except OSError:
        raise EditorError(f"{display} cannot be opened as a file inside the workspace.") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EditorError(f"{display} is not a regular file.")
        if info.st_size > MAX_EDITOR_FILE_BYTES:
            raise EditorError(f"{display} is {info.st_size:,} bytes, too large for the editor; "
                              "use bash (sed -n '10,40p', grep -n, head) to read parts of it.")
        return file.read(MAX_EDITOR_FILE_BYTES + 1)


def _read_text(parent: int, name: str, display: str) -> tuple[str, int]:
    """The file's text and permission bits, for an edit."""
    data = _read(parent, name, display)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise EditorError(f"{display} is not UTF-8 text; edit it with bash.") from None
    info = _lstat(parent, name)
    return text, stat.S_IMODE(info.st_mode) if info else 0o644


def _write(parent: int, name: str, data: bytes, mode: int,
           owner: tuple[int, int] | None = None) -> None:
    """Replace parent/name with data: a new file renamed over it, so no link is followed."""
    temporary = f".honk-edit-{uuid.uuid4().hex}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if owner is not None:
                os.fchown(file.fileno(), *owner)
            os.fchmod(file.fileno(), mode)
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=parent)
        raise


def _lstat(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _string(tool_input: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = tool_input.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise EditorError(f"`{key}` is required and must be a {'' if allow_empty else 'non-empty '}"
                          "string.")
    if "\0" in value and key == "path":
        raise EditorError("`path` contains a NUL character.")
    return value


def _view_bounds(view_range: Any, line_count: int, display: str) -> tuple[int, int]:
    if view_range is None:
        return 1, line_count
    if (not isinstance(view_range, list | tuple) or len(view_range) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in view_range)):
        raise EditorError("`view_range` must be two whole numbers [start, end]; end -1 means "
                          "the last line.")
    start, end = view_range
    if not 1 <= start <= max(line_count, 1):
        raise EditorError(f"`view_range` start {start} is outside {display}, which has "
                          f"{line_count} lines.")
    if end != -1 and end < start:
        raise EditorError(f"`view_range` end {end} is before its start {start}.")
    return start, line_count if end == -1 else min(end, line_count)


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(lines, first))


def _edited(display: str, text: str, first: int, last: int) -> str:
    lines = _lines(text)
    start = max(1, first - SNIPPET_CONTEXT_LINES)
    end = min(len(lines), last + SNIPPET_CONTEXT_LINES)
    return (f"The file {display} has been edited. Here's the result of running `cat -n` on a "
            f"snippet of {display}:\n{_numbered(lines[start - 1:end], start)}\n"
            "Review the changes and make sure they are as expected. Edit the file again if "
            "necessary.")


def _occurrences(text: str, needle: str) -> Iterator[int]:
    index = text.find(needle)
    while index != -1:
        yield index
        index = text.find(needle, index + 1)


def _some(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (", ..." if len(numbers) > 10 else "")


def _display(parts: list[str]) -> str:
    return "/".join([WORKSPACE_MOUNT, *parts])
