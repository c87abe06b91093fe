"""`honk demo --json`, as a newcomer runs it: a subprocess, offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def test_demo_takes_the_issue_to_a_reviewed_pull_request() -> None:
    honk = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))
    done = subprocess.run([honk, "demo", "--json"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["pr_number"] and result["pr_url"].endswith(f"/pull/{result['pr_number']}")
    assert result["branch"].startswith("honk/1-")
    assert len(result["commits"]) == 1 and len(result["commits"][0]) == 40
    assert result["checks_passed"] is True
    assert result["status_comment"].startswith("🚀 Opened #")
    assert 0 < result["seconds_to_ack"] < result["seconds_total"]
    assert len(result["followup_commits"]) == 1
    assert result["thread_replies"] == 2
    assert "Timeline" in done.stdout and "+    return a + b" in done.stdout
