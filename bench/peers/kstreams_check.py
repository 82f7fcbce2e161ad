"""Does the Kafka Streams peer map as ttbridge does? `python -m bench.peers.kstreams_check [--n 2000]`.

Maps the benchmark's load (bench.load.make_load: conversions of every kind with their clicks)
with ttbridge's own mapping, as the Quix peer does (decode_click, then map_event with
MappingConfig(default_region="GB")), and with the peer's Java mapper (`--map-stdin`), at the same
`now`, and compares each conversion's data[] items (or that both refused it) exactly: same keys,
same values, and an integer on one side is an integer on the other. Prints the match count;
exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import orjson

from app.mapping.decode import decode_click
from app.mapping.events import MappingConfig, Refusal, Skip, map_event
from bench.load import make_load

__all__ = ["JAR", "POM", "build_jar", "check"]

PEER = Path(__file__).resolve().parent / "kstreams"
POM = PEER / "pom.xml"
JAR = PEER / "target" / "kstreams-peer.jar"


def build_jar() -> Path:
    """The peer's runnable jar, built with Maven when it is missing; RuntimeError if that fails."""
    if not JAR.exists():
        done = subprocess.run(["mvn", "-q", "-f", str(POM), "package", "-DskipTests"], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not JAR.exists():
            raise RuntimeError(f"mvn package failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
    return JAR


def _typed(v):
    # 3 == 3.0 in Python: keep the JSON type so that an int/float mix-up counts as a difference.
    if isinstance(v, dict):
        return {k: _typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_typed(x) for x in v]
    if isinstance(v, float):
        return ("float", v)
    return v


def _ttbridge(raw: bytes, click_raw: bytes | None, config: MappingConfig, now: float) -> dict:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"refused": "invalid_json"}
    click = None
    if click_raw is not None:
        try:
            click = decode_click(click_raw, 1 << 20)[1]
        except Refusal:
            click = None
    try:
        return {"items": map_event(event, click, config, now)}
    except (Refusal, Skip) as e:
        return {"refused": e.reason}


def check(n: int) -> tuple[int, int, list[str]]:
    """(matching conversions, conversions, the first differences shown)."""
    now = time.time()
    load = make_load(n, "chk", now)
    clicks = dict(load.clicks + load.late_clicks)
    config = MappingConfig(default_region="GB")
    lines, expected = [], []
    for _, raw in load.events:
        try:
            event = orjson.loads(raw)
            line = {"event": event}
            click_id = (event.get("properties") or {}).get("click_id")
        except orjson.JSONDecodeError:
            line, click_id = {"raw": raw.decode()}, None
        click_raw = clicks.get(click_id.encode()) if isinstance(click_id, str) else None
        line.update(click=orjson.loads(click_raw) if click_raw else None, now=now)
        lines.append(orjson.dumps(line))
        expected.append(_ttbridge(raw, click_raw, config, now))
    out = subprocess.run(["java", "-jar", str(build_jar()), "--map-stdin"], input=b"\n".join(lines) + b"\n",
                         capture_output=True, check=True).stdout.splitlines()
    if len(out) != len(expected):
        raise SystemExit(f"the Java mapper answered {len(out)} lines for {len(expected)}")
    same, shown = 0, []
    for i, (want, got) in enumerate(zip(expected, map(orjson.loads, out))):
        if _typed(orjson.loads(orjson.dumps(want))) == _typed(got):
            same += 1
        elif len(shown) < 3:
            shown.append(f"conversion {i}:\n  ttbridge: {orjson.dumps(want).decode()}\n  java:     "
                         f"{orjson.dumps(got).decode()}")
    return same, len(expected), shown


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.kstreams_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="conversions of the benchmark's load to compare")
    args = p.parse_args(argv)
    same, total, shown = check(args.n)
    print("\n".join(shown))
    print(f"kstreams mapping: {same:,} of {total:,} conversions map exactly as ttbridge maps them")
    sys.exit(0 if same == total else 1)


if __name__ == "__main__":
    main()
