"""`honk demo`, as a newcomer runs it: a subprocess, offline (and with fault rules)."""

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


def test_honk_demo_shows_faults_from_a_file(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess
    import sys

    rules = {
        "github": [
            {"action": "lose-after-acting", "status": 502, "method": "POST", "path": "/pulls$"},
            {"action": "lose-after-acting", "method": "POST", "path": "/replies$"},
        ],
        "claude": [{"status": 529, "count": 6}],
    }
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps(rules))
    honk = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))
    done = subprocess.run([honk, "demo", "--json", "--faults", str(faults)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status_comment"].startswith(f"🚀 Opened #{result['pr_number']}")
    assert "Anthropic is overloaded; waiting" in result["status_comment"]
    assert result["thread_replies"] == 2 and len(result["followup_commits"]) == 1
    faults.write_text('{"gitlab": []}')
    refused = subprocess.run([honk, "demo", "--faults", str(faults)], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "honk demo --faults:" in refused.stderr
