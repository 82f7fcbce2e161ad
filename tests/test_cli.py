"""`ttbridge` itself: --version says the package's version (pyproject's), and the variables faust
reads when it is imported cannot break a command."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_version_is_the_package_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    done = run("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"ttbridge {version}\n", "")


def test_faust_import_time_variables_from_service_links_break_nothing():
    # Kubernetes Services named faust-web, f-web, faust-console: faust parses these as numbers
    # when it is imported (faust/types/_env.py), before any setting of ours applies.
    links = {"FAUST_WEB_PORT": "tcp://10.0.0.2:6066", "F_WEB_PORT": "tcp://10.0.0.3:6066",
             "FAUST_CONSOLE_PORT": "tcp://10.0.0.4:50101", "F_CONSOLE_PORT": "tcp://10.0.0.5:50101"}
    crash = subprocess.run([sys.executable, "-c", "import faust.types.settings"], capture_output=True,
                           text=True, env={**os.environ, **links}, timeout=60)
    assert "invalid literal for int() with base 10: 'tcp://" in crash.stderr  # what it did without us
    done = run("worker", "--help", env=links)  # imports faust and the whole job
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ttbridge worker")
