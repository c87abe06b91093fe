"""How much a command costs under Sandbox.run against a bare subprocess, measured here, now.

    .venv/bin/python bench/sandbox_overhead.py [--runs N]

Both sides run `bash -c COMMAND` and read its output to the end; the sandbox side adds
prlimit, the pids cgroup (when one can be made) and bubblewrap with every namespace. A
third row runs Sandbox in its unsafe mode (same launcher, no bubblewrap) to show where
the time goes. Target: median overhead <= 20 ms a command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from honk_app.agent.sandbox import Sandbox, SandboxLimits

TARGET_OVERHEAD_MS = 20.0
Runner = Callable[[str], Awaitable[object]]
COMMANDS = ("true", "echo hi")


async def bare(command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    await process.communicate()


async def timings(modes: dict[str, Runner], command: str, runs: int) -> dict[str, list[float]]:
    """Milliseconds per run of each mode, interleaved so that all see the same machine load."""
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(runs + 3):  # the first three rounds warm caches
        order = list(modes)
        random.shuffle(order)
        for mode in order:
            start = time.perf_counter()
            await modes[mode](command)
            if round_ >= 3:
                samples[mode].append((time.perf_counter() - start) * 1000)
    return samples


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


async def main(runs: int) -> int:
    with tempfile.TemporaryDirectory(prefix="honk-bench-") as directory:
        workspace = Path(directory)
        sandbox = Sandbox(workspace, limits=SandboxLimits(timeout_seconds=30))
        unsafe = Sandbox(workspace, limits=SandboxLimits(timeout_seconds=30),
                         unsafe_no_sandbox=True)
        modes: dict[str, Runner] = {
            "bare subprocess": bare, "launcher, no bwrap": unsafe.run, "Sandbox.run": sandbox.run}
        print(f"{runs} runs each, interleaved; process cap: {sandbox.process_cap}; "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'command':<10} {'mode':<22} {'median ms':>10} {'p90 ms':>8}")
        worst = 0.0
        for command in COMMANDS:
            rows = await timings(modes, command, runs)
            for mode, samples in rows.items():
                print(f"{command:<10} {mode:<22} {statistics.median(samples):>10.2f} "
                      f"{p90(samples):>8.2f}")
            overhead = statistics.median(rows["Sandbox.run"]) - statistics.median(
                rows["bare subprocess"])
            overhead_p90 = p90(rows["Sandbox.run"]) - p90(rows["bare subprocess"])
            print(f"{command:<10} overhead: {overhead:.2f} ms median, {overhead_p90:.2f} ms p90\n")
            worst = max(worst, overhead)
    verdict = "within" if worst <= TARGET_OVERHEAD_MS else "OVER"
    print(f"worst median overhead {worst:.2f} ms: {verdict} the {TARGET_OVERHEAD_MS:g} ms target "
          f"(load average now {os.getloadavg()[0]:.2f})")
    return 0 if worst <= TARGET_OVERHEAD_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    sys.exit(asyncio.run(main(parser.parse_args().runs)))
