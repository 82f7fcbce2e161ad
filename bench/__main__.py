"""python -m bench [--quick] [--n N] [--clicks M] [--json PATH] [--png PATH] [--profile]

Starts its own Kafka broker on free ports in a temporary directory (always stopped at the end),
the fake Events API, and ttbridge workers; measures ceiling, naive and ttbridge throughput,
latency at half load, peak RSS with M clicks in the table and recovery of a fresh worker; prints
one table and writes JSON and a PNG chart (default: bench/out/).
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from bench.report import table, write_json, write_png
from bench.run import FULL, QUICK, Bench, BenchError, Options, Stack

OUT = Path(__file__).resolve().parent / "out"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"small and short (n={QUICK['n']:,}, {QUICK['clicks']:,} clicks): under two minutes")
    p.add_argument("--n", type=int, help=f"conversions for the throughput phases (default {FULL['n']:,}; "
                                         f"quick {QUICK['n']:,})")
    p.add_argument("--clicks", type=int, help=f"clicks in the table for the state phase (default "
                                              f"{FULL['clicks']:,}; quick {QUICK['clicks']:,})")
    p.add_argument("--naive-s", type=float, help="seconds the naive forwarder runs (default 15; quick 4)")
    p.add_argument("--latency-s", type=float, help="seconds of steady load for latency (default 15; quick 6)")
    p.add_argument("--fake", choices=("in-process", "subprocess"), default="in-process",
                   help="run the fake Events API on the benchmark's event loop or in its own process")
    p.add_argument("--receiver", choices=("counting", "fake"), default="counting",
                   help="the throughput phases' Events API: the counting receiver in its own process "
                        "(default; bench/receiver.py) or the faithful fake (--fake says where it runs)")
    p.add_argument("--scaling", type=_counts, metavar="1,2,4",
                   help="worker counts of the scaling curve (default 1,2,4; quick: none); 'off': none")
    p.add_argument("--profile", nargs="?", const=OUT, type=Path, metavar="DIR",
                   help="sample the worker with py-spy in each phase; raw stacks into DIR "
                        "(default bench/out/)")
    p.add_argument("--json", type=Path, help="result file (default bench/out/bench[-quick].json)")
    p.add_argument("--png", type=Path, help="chart (default bench/out/bench[-quick].png)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, broker data)")
    return p.parse_args(argv)


def _counts(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "off", "none", "0"):
        return ()
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected worker counts like 1,2,4, got {text!r}") from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("worker counts must be >= 1")
    return counts


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    defaults = QUICK if args.quick else FULL
    opts = Options(n=args.n or defaults["n"], clicks=args.clicks or defaults["clicks"],
                   naive_s=args.naive_s or defaults["naive_s"], latency_s=args.latency_s or defaults["latency_s"],
                   fake=args.fake, profile_dir=args.profile, quick=args.quick, receiver=args.receiver,
                   scaling=defaults["scaling"] if args.scaling is None else args.scaling,
                   capacity_s=defaults["capacity_s"])
    stem = "bench-quick" if args.quick else "bench"
    json_path = args.json or OUT / f"{stem}.json"
    png_path = args.png or OUT / f"{stem}.png"
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="ttbridge-bench-"))
    stack = Stack()
    try:
        result, latencies = asyncio.run(Bench(opts, workdir, stack, say).run())
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    except Exception as e:  # noqa: BLE001 - report, show the workers' logs, clean up
        if not isinstance(e, BenchError):
            traceback.print_exc()
        say(f"benchmark failed: {e}")
        for w in stack.workers:
            say(f"worker log tail ({w.log_path}):\n{w.log_tail(1500)}")
        return 1
    finally:
        stack.close()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say("stopped the workers, the fake and the broker")
    say("")
    say(table(result))
    write_json(result, json_path)
    write_png(result, latencies, png_path)
    say(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
