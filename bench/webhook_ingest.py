"""Webhook ingest: `honk serve` (each delivery durably stored) against a bare endpoint.

Both servers run on the same stack (uvicorn with uvloop and httptools, one process), on
loopback, in the same run. The load is `wrk` posting a real-shaped, correctly signed
`issues.labeled` delivery with a new X-GitHub-Delivery on every request, and a new
event in it too (the issue's id differs, so the body and its signature do: wrk signs each
body with libcrypto's HMAC through LuaJIT's FFI), so Honk stores every one and queues a
run for it rather than answering "already received" to a replay. Prints p50/p99 latency
and throughput of both and the ratios; targets (DESIGN.md): throughput >= 0.5x the bare
endpoint, p99 <= 2x.

    python bench/webhook_ingest.py [--seconds 10] [--connections 32]

Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET = "bench-webhook-secret-0123456789"
ISSUE_ID = 918273645546372819  # a placeholder: each request puts another id here

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def hook(request):
    await request.body()
    return JSONResponse({"message": "ok"})

app = Starlette(routes=[Route("/api/github/webhooks", hook, methods=["POST"])])
"""

WRK_SCRIPT = """
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end
local ffi = require("ffi")
ffi.cdef[[
const void *EVP_sha256(void);
unsigned char *HMAC(const void *md, const void *key, int key_len, const unsigned char *d,
                    size_t n, unsigned char *out, unsigned int *out_len);
]]
local crypto = ffi.load("libcrypto.so.3")
local digest = ffi.new("unsigned char[32]")
local digest_len = ffi.new("unsigned int[1]")
local hex = {}
for i = 0, 255 do hex[i] = string.format("%02x", i) end
local function sign(body)
  crypto.HMAC(crypto.EVP_sha256(), SECRET, #SECRET, body, #body, digest, digest_len)
  local out = {}
  for i = 0, 31 do out[i + 1] = hex[digest[i]] end
  return "sha256=" .. table.concat(out)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "issues"
end
function request()
  counter = counter + 1
  local body = BODY_HEAD .. (id * 1000000000 + counter) .. BODY_TAIL
  wrk.headers["X-GitHub-Delivery"] = RUN .. "-" .. id .. "-" .. counter
  wrk.headers["X-Hub-Signature-256"] = sign(body)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def payload() -> bytes:
    body = {
        "action": "labeled",
        "issue": {"id": ISSUE_ID, "number": 7, "title": "add() returns the difference",
                  "body": "x" * 2000, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()),
                  "user": {"login": "mona", "type": "User"}, "labels": [{"name": "honk"}]},
        "label": {"name": "honk", "color": "7057ff"},
        "repository": {"full_name": "octo/calculator", "name": "calculator",
                       "clone_url": "https://github.com/octo/calculator.git",
                       "owner": {"login": "octo"}, "default_branch": "main"},
        "sender": {"login": "mona", "type": "User", "id": 1},
        "installation": {"id": 42, "node_id": "MDIzOkludGVncmF0aW9uNDI="},
    }
    return json.dumps(body).encode()


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("server did not listen")


def start_honk(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "HONK_DATA_DIR": str(data_dir),
           "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "warning"}
    for name in ("APP_ID", "PRIVATE_KEY", "PRIVATE_KEY_PATH", "DATABASE_URL"):
        env.pop(name, None)
    honk = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))
    return subprocess.Popen([honk, "serve"], env=env, cwd=data_dir)


def start_bare(port: int, work_dir: Path) -> subprocess.Popen[bytes]:
    (work_dir / "bare_app.py").write_text(BARE_APP)
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning", "--no-access-log"],
        cwd=work_dir)


def load(port: int, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}/api/github/webhooks"],
        check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    figures["throughput"] = figures["requests"] / figures["seconds"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE.parent))
    from honk_sim.loopback import free_port

    body = payload()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="honk-bench-") as tmp:
        work = Path(tmp)
        for name, start in (("bare", start_bare), ("honk", start_honk)):
            script = work / f"{name}.lua"
            head, tail = body.decode().split(str(ISSUE_ID))
            script.write_text(
                f"BODY_HEAD = {json.dumps(head)}\nBODY_TAIL = {json.dumps(tail)}\n"
                f"SECRET = \"{SECRET}\"\nRUN = \"{name}-{int(time.time())}\"\n" + WRK_SCRIPT)
            port = free_port()
            data = work / name
            data.mkdir()
            proc = start(port, data)
            try:
                wait_listening(port, proc)
                load(port, script, 2, args.connections)  # warm-up
                results[name] = load(port, script, args.seconds, args.connections)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        stored, queued = _stored_deliveries(work / "honk")
    bare, honk = results["bare"], results["honk"]
    print(f"{'':8}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:8}{int(r['requests']):>10}{r['throughput']:>10.0f}"
              f"{r['p50_us'] / 1000:>9.2f}{r['p99_us'] / 1000:>9.2f}"
              f"{int(r['errors'] + r['non2xx']):>8}")
    throughput_ratio = honk["throughput"] / bare["throughput"]
    p99_ratio = honk["p99_us"] / max(bare["p99_us"], 1)
    print(f"honk stored {stored} deliveries and queued {queued} runs "
          "(every one answered 202 after its commit)")
    print(f"throughput ratio honk/bare: {throughput_ratio:.2f} (target >= 0.5)")
    print(f"p99 ratio honk/bare: {p99_ratio:.2f} (target <= 2)")
    return 0


def _stored_deliveries(data_dir: Path) -> tuple[int, int]:
    import sqlite3

    with sqlite3.connect(data_dir / "honk.db") as conn:
        deliveries = int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
        runs = int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
        return deliveries, runs


if __name__ == "__main__":
    sys.exit(main())
