"""`ttbridge demo` from the command line: exits 0, accounts for every event, leaves nothing running."""
import re
import subprocess
import sys


def test_demo_runs_and_leaves_nothing_behind():
    done = subprocess.run([sys.executable, "-m", "app", "demo"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"events in\s+11\n", out)
    assert re.search(r"joined with a click\s+8\n", out)  # 6 orders/carts, the landing's sign-up, the late one
    assert re.search(r"TikTok events sent\s+7 in \d+ request", out)
    assert "skipped              {'unmapped': 2}" in out
    assert "dead-lettered        {'invalid_currency': 1, 'invalid_json': 1}" in out
    assert '"event_source_id": "DEMOPIXEL0000000000"' in out
    assert "demo-token" not in out + done.stderr
    assert out.rstrip().endswith("stopped the worker, the fake and the broker")
    left = subprocess.run(["pgrep", "-f", "ttbridge-demo-"], capture_output=True, text=True).stdout
    assert left == ""
