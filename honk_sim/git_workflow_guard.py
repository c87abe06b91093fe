"""The bare repositories' proc-receive hook: GitHub's refusal of App pushes to workflows.

git runs this for every pushed ref (`receive.procReceiveRefs = refs`). When the server says
the pusher is an App without the `workflows` permission (HONK_SIM_WORKFLOWS=deny), a ref
whose new commits add, change or delete a file under `.github/workflows/` is refused with
GitHub's message; every other ref falls through to git's own update. The script only reads
the repository: nothing from a pushed tree is executed.
"""

import os
import subprocess
import sys
from typing import BinaryIO

ZERO_SHA = "0" * 40
WORKFLOWS_DIR = ".github/workflows/"


def read_packet(stream: BinaryIO) -> bytes | None:
    size = stream.read(4)
    if len(size) < 4 or size == b"0000":
        return None
    return stream.read(int(size, 16) - 4)


def write_packet(stream: BinaryIO, text: str) -> None:
    data = text.encode()
    stream.write(b"%04x" % (len(data) + 4) + data)


def changed_workflow(new_sha: str) -> str | None:
    """The first workflow file touched by commits that no existing ref reaches."""
    listing = subprocess.run(
        ["git", "log", "--format=", "--name-only", "--no-renames", "-z", new_sha, "--not", "--all"],
        capture_output=True,
        check=True,
    ).stdout.decode(errors="replace")
    paths = sorted({p for p in listing.replace("\n", "\0").split("\0") if p})
    return next((p for p in paths if p.startswith(WORKFLOWS_DIR)), None)


def main() -> int:
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while read_packet(source) is not None:  # version negotiation; we ask for no features
        pass
    write_packet(sink, "version=1\n")
    sink.write(b"0000")
    sink.flush()
    commands = []
    while (packet := read_packet(source)) is not None:
        old_sha, new_sha, ref = packet.decode().rstrip("\n").split(" ", 2)
        commands.append((old_sha, new_sha, ref))
    guarded = os.environ.get("HONK_SIM_WORKFLOWS") == "deny"
    for _old_sha, new_sha, ref in commands:
        path = changed_workflow(new_sha) if guarded and new_sha != ZERO_SHA else None
        if path is not None:
            write_packet(
                sink,
                f"ng {ref} refusing to allow a GitHub App to create or update workflow "
                f"`{path}` without `workflows` permission\n",
            )
        else:
            write_packet(sink, f"ok {ref}\n")
            write_packet(sink, "option fall-through\n")
    sink.write(b"0000")
    sink.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
