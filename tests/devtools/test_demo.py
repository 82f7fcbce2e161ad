"""`ttbridge demo` from the command line: exits 0, accounts for every event, leaves nothing running."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def processes_marked(marker: str) -> list[int]:
    """Live processes whose command line or environment mentions `marker`.

    The demo's worker is `python -m app worker` (its work directory only in its environment);
    its broker names the directory on its command line.
    """
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue  # gone meanwhile, or not ours to read
        if marker.encode() in seen and "zombie" not in state:
            found.append(int(proc.name))
    return found


def refused(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_demo_runs_and_leaves_nothing_behind(tmp_path):
    # Its own TMPDIR: the demo's work directory, and so the marker of its processes, is this run's.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "app", "demo"], capture_output=True, text=True, timeout=240,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"events in\s+11\n", out)
    assert re.search(r"joined with a click\s+8\n", out)  # 6 orders/carts, the landing's sign-up, the late one
    assert re.search(r"TikTok events sent\s+7 in \d+ request", out)
    assert "skipped              {'not_a_conversion': 1, 'unmapped': 1}" in out  # the landing page view, Video Paused
    assert "dead-lettered        {'invalid_currency': 1, 'invalid_json': 1}" in out
    assert '"event_source_id": "DEMOPIXEL0000000000"' in out
    assert "demo-token" not in out + done.stderr
    assert out.rstrip().endswith("stopped the worker, the fake and the broker")
    broker, fake = re.search(r"broker (\S+), fake TikTok Events API http://(\S+)\n", out).groups()
    assert processes_marked(str(tmp_path)) == []  # no worker, no broker
    assert refused(broker) and refused(fake)
    assert list(tmp_path.iterdir()) == []  # its work directory removed


def test_a_leftover_process_would_be_seen(tmp_path):
    # The check above can fail: a process that only carries the marker in its environment.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env={**os.environ, "TTBRIDGE_DATA_DIR": str(tmp_path / "state")})
    try:
        assert processes_marked(str(tmp_path)) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert processes_marked(str(tmp_path)) == []
