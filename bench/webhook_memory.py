"""What strangers' bodies cost `honk serve`: memory under large wrong-signature bodies, and
connections held by slow ones.

Starts `honk serve` (SQLite, a webhook secret, no App) on loopback and measures:
- peak resident memory (VmHWM) before and after 12 concurrent 24 MiB bodies that carry a
  well-formed but wrong X-Hub-Signature-256 (every one must be read before it can be
  found wrong, so a server that reads them all at once holds them all at once);
- of 300 connections that send headers and 100 bytes of a 1 KB body, then nothing: how
  many the server still holds after `--hold` seconds.

    python bench/webhook_memory.py [--hold 15]

To measure another tree (e.g. before a change), run with PYTHONPATH=<that tree>.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET = "bench-webhook-secret-0123456789"
BODY_MIB = 24
BODIES = 12
SLOW = 300


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def head(port: int, length: int) -> bytes:
    return (
        f"POST /api/github/webhooks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-GitHub-Event: issues\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def post_big(port: int, body: bytes, answers: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        try:
            sock.sendall(head(port, len(body)) + body)
            answers.append(sock.recv(200).split(b"\r\n", 1)[0].decode())
        except OSError as error:  # the server answered early and closed
            answers.append(f"closed early ({type(error).__name__})")


def still_open(sock: socket.socket) -> bool:
    """True while the server keeps the connection (an answer read, the close not seen)."""
    sock.setblocking(False)
    while True:
        try:
            if sock.recv(1 << 16) == b"":
                return False  # closed by the server
        except BlockingIOError:
            return True
        except OSError:
            return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=15.0)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from honk_sim.loopback import free_port

    with tempfile.TemporaryDirectory(prefix="honk-memory-") as tmp:
        port = free_port()
        env = {**os.environ, "WEBHOOK_SECRET": SECRET, "HONK_DATA_DIR": tmp, "PORT": str(port),
               "HOST": "127.0.0.1", "LOG_LEVEL": "error"}
        for name in ("APP_ID", "PRIVATE_KEY", "PRIVATE_KEY_PATH", "DATABASE_URL"):
            env.pop(name, None)
        honk = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))
        proc = subprocess.Popen([honk, "serve"], env=env, cwd=tmp)
        try:
            deadline = time.monotonic() + 30
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                assert time.monotonic() < deadline and proc.poll() is None, "no server"
                time.sleep(0.05)
            time.sleep(1)
            rss_before = memory_kib(proc.pid, "VmRSS")
            body = b"x" * (BODY_MIB * 2**20)
            answers: list[str] = []
            threads = [threading.Thread(target=post_big, args=(port, body, answers))
                       for _ in range(BODIES)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.monotonic() - started
            peak = memory_kib(proc.pid, "VmHWM")
            print(f"resident before: {rss_before / 1024:.0f} MiB; peak with {BODIES} concurrent "
                  f"{BODY_MIB} MiB wrong-signature bodies: {peak / 1024:.0f} MiB "
                  f"(+{(peak - rss_before) / 1024:.0f} MiB, {seconds:.1f} s)")
            counts: dict[str, int] = {}
            for answer in answers:
                counts[answer] = counts.get(answer, 0) + 1
            print("answers:", ", ".join(f"{n} x {a}" for a, n in sorted(counts.items())))

            slow = []
            for _ in range(SLOW):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(head(port, 1000) + b"{" * 100)
                slow.append(sock)
            time.sleep(args.hold)
            held = sum(still_open(sock) for sock in slow)
            print(f"slow bodies: {held} of {SLOW} connections still held after {args.hold:.0f} s")
            for sock in slow:
                sock.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
