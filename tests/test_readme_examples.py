"""README.md's `ttbridge map` examples, run exactly as written: every output line byte for byte.

The README writes each example's files as fenced blocks whose info string names the file
(```json file=order.json, ```toml file=shop.toml) and the command with what it prints as a
```console block: `$ ttbridge map ...` on the first line, the expected stdout below it. A block
uses the files written above it (a later block of the same name replaces an earlier one). The
examples pin the clock with `--now`, so their fixed timestamps are never stale_event.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from app.mapping.events import SKIP_REASONS
from app.mapping.spec import PRESETS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# A fenced block: its info string, then its body up to the closing fence.
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def map_examples() -> list[tuple[str, list[str], dict[str, str]]]:
    """(command, expected stdout lines, the files written above it) per `$ ttbridge map` block."""
    files: dict[str, str] = {}
    out = []
    for m in FENCE.finditer(README):
        info, body = m.group(1).split(), m.group(2)
        named = [word.removeprefix("file=") for word in info[1:] if word.startswith("file=")]
        if named:
            files[named[0]] = body
        elif info[:1] == ["console"] and body.startswith("$ ttbridge map"):
            command, *expected = body.splitlines()
            out.append((command.removeprefix("$ "), expected, dict(files)))
    return out


EXAMPLES = map_examples()


def run_as_written(command: str, files: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """The README's command line, with `ttbridge` as `python -m app` and `< FILE` as stdin."""
    for name, body in files.items():
        (cwd / name).write_text(body, encoding="utf-8")
    argv = shlex.split(command)
    assert argv[:2] == ["ttbridge", "map"], command
    stdin = b""
    if "<" in argv:
        at = argv.index("<")
        stdin = (cwd / argv[at + 1]).read_bytes()
        del argv[at:at + 2]
    # The worker's configuration must play no part: every example names its shape.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTBRIDGE_", "TIKTOK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "app", *argv[1:]], input=stdin, capture_output=True,
                          cwd=cwd, env=env, timeout=60)


def test_every_preset_has_one_example_and_a_mapping_file_has_one():
    presets = [shlex.split(c)[shlex.split(c).index("--preset") + 1] for c, _, _ in EXAMPLES if "--preset" in c]
    assert sorted(presets) == sorted(PRESETS)
    assert any("--config" in c for c, _, _ in EXAMPLES)
    for command, expected, _ in EXAMPLES:
        assert expected, f"{command}: no output written under it"
        assert "--now" in command, f"{command}: without --now its fixed timestamps go stale"


@pytest.mark.parametrize("command, expected, files", EXAMPLES, ids=[c for c, _, _ in EXAMPLES])
def test_the_example_prints_what_the_readme_says(command, expected, files, tmp_path):
    done = run_as_written(command, files, tmp_path)
    assert (done.returncode, done.stderr.decode()) == (0, "")
    assert done.stdout.decode().splitlines() == expected
    assert done.stdout == ("\n".join(expected) + "\n").encode()  # byte for byte, one line per event


def test_every_skip_reason_is_documented():
    for reason in SKIP_REASONS:
        assert f"`{reason}`" in README, reason
    assert "`unmapped_event`" in README
