"""The benchmark's outputs: percentiles, the printed table, the JSON file and the PNG chart."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import orjson

__all__ = ["REQUIRED_KEYS", "percentile", "latency_summary", "table", "write_json", "write_png"]

# What every result file holds (tests and CI tooling read these).
REQUIRED_KEYS = ("date", "cores", "n", "ceiling_eps", "naive_eps", "ttbridge_eps", "latency_ms",
                 "rss_mb", "recovery_s")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest observed value with at least p% of values at or
    below it. Exact on small samples (no interpolation between observations)."""
    if not values:
        return math.nan
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "max": max(ms) if ms else math.nan, "count": len(ms)}


def _num(v: Any, fmt: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, fmt)


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a and b else None


def _us(v: Any) -> str:
    """CPU µs per event, and what that is per 1,000 events in seconds."""
    return "n/a" if v is None else f"{v:,.0f} µs ({v / 1000:.3f} s per 1,000)"


def _peer(p: dict | None) -> str:
    if not p:
        return "n/a"
    if "skipped" in p or "failed" in p:
        return f"skipped: {p.get('skipped') or p.get('failed')}"[:160]
    return f"{_num(p.get('eps'))} events/s, {_us(p.get('cpu_us_per_conversion'))} per conversion"


def _vs(v: dict | None) -> str:
    if not v:
        return "n/a"
    return f"{_num(v.get('eps_ratio'), '.2f')}x events/s, {_num(v.get('cpu_ratio'), '.2f')}x CPU per conversion"


def table(r: dict) -> str:
    """The one table `python -m bench` prints."""
    lat = r.get("latency_ms") or {}
    cpu = r.get("cpu_share", {}).get("ttbridge") or {}
    at_rtt = r.get("ttbridge_at_rtt") or {}
    rows = [
        ("ceiling: aiokafka consumer + orjson", f"{_num(r.get('ceiling_eps'))} events/s"),
        ("naive: one awaited POST per event", f"{_num(r.get('naive_eps'))} events/s"),
        ("naive, API answering in {} ms".format((r.get("naive_at_rtt") or {}).get("rtt_ms", "?")),
         f"{_num((r.get('naive_at_rtt') or {}).get('eps'))} events/s"),
        ("ttbridge: end to end", f"{_num(r.get('ttbridge_eps'))} events/s"),
        ("  CPU per conversion (worker tree, clicks preloaded)", _us(r.get("cpu_us_per_conversion"))),
        ("  CPU per click (worker tree, preload indexing)",
         f"{_us(r.get('cpu_us_per_click'))}  at {_num(r.get('preload_index_cps'))} clicks/s"),
        ("ttbridge: clicks and conversions together",
         f"{_num(r.get('together_eps'))} events/s, {_us(r.get('cpu_us_per_conversion_together'))} "
         "per conversion, clicks' CPU included"),
        ("Quix Streams peer, the same records", _peer(r.get("quix"))),
        ("ttbridge / Quix Streams (together)", _vs(r.get("ttbridge_vs_quix"))),
        ("Kafka Streams peer, the same records", _peer(r.get("kstreams"))),
        ("ttbridge / Kafka Streams (together)", _vs(r.get("ttbridge_vs_kstreams"))),
        ("scaling: conversions/s with {} workers".format(" / ".join(str(p["workers"]) for p in r.get("scaling") or [])
                                                          or "1 / 2 / 4"),
         " / ".join(_num(p["eps"]) for p in r.get("scaling") or []) or "not run (--scaling 1,2,4)"),
        ("receiver_capacity_eps ({})".format(r.get("receiver", "?")),
         f"{_num(r.get('receiver_capacity_eps'))} events/s  (faithful fake: {_num(r.get('fake_capacity_eps'))}; "
         f"{_num(r.get('receiver_headroom'), '.1f')}x the fastest phase)"),
        ("ttbridge / ceiling", _num(_ratio(r.get("ttbridge_eps"), r.get("ceiling_eps")), ".3f")),
        ("ttbridge / naive", _num(_ratio(r.get("ttbridge_eps"), r.get("naive_eps")), ".1f") + "x"),
        ("ttbridge, API answering in {} ms".format(at_rtt.get("rtt_ms", "?")),
         f"{_num(at_rtt.get('eps'))} events/s  "
         f"({_num(_ratio(at_rtt.get('eps'), (r.get('naive_at_rtt') or {}).get('eps')), '.0f')}x naive at that latency)"),
        ("ttbridge, two workers on these cores", f"{_num((r.get('two_workers') or {}).get('eps'))} events/s"),
        ("latency p50 / p95 / p99",
         f"{_num(lat.get('p50'))} / {_num(lat.get('p95'))} / {_num(lat.get('p99'))} ms"
         f"  (at {_num(r.get('latency_offered_eps'))} events/s offered)"),
        ("rss_mb (peak, worker)", f"{_num(r.get('rss_mb'))} MB with {_num(r.get('clicks_in_table'))} "
                                  "clicks in the table"),
        ("recovery_s (fresh worker, table from Kafka)", f"{_num(r.get('recovery_s'), '.1f')} s"
                                                      f"  (rss {_num(r.get('rss_recovered_mb'))} MB)"),
        ("startup_s (empty table)", f"{_num(r.get('startup_s'), '.1f')} s"),
        ("clicks indexed", f"{_num(r.get('click_index_cps') or r.get('preload_index_cps'))} clicks/s"),
        ("events joined with their click", f"{_num(r.get('joined_share'), '.1%')}"),
        ("cpu during ttbridge catch-up (cores)",
         ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) or "n/a"),
        ("n / cores / fake", f"{_num(r.get('n'))} / {r.get('cores')} / {r.get('fake')}"),
    ]
    width = max(len(k) for k, _ in rows)
    head = f"ttbridge benchmark, {r.get('date')}{'  (quick)' if r.get('quick') else ''}"
    return "\n".join([head, "-" * len(head)] + [f"{k:<{width}}  {v}" for k, v in rows])


def write_json(result: dict, path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    latency = result["latency_ms"]
    if not isinstance(latency, dict) or not {"p50", "p95", "p99"} <= set(latency):
        raise ValueError("latency_ms must hold p50, p95 and p99")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")


def write_png(result: dict, latencies_ms: Sequence[float], path: Path) -> None:
    """Throughput bars (log scale) and the latency histogram with its CDF."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, hist) = plt.subplots(1, 2, figsize=(12, 4.8))
    rtt = result.get("naive_at_rtt") or {}
    names = ["ceiling\n(consume+decode)", "naive\n(1 POST/event)",
             f"naive, API\nanswering in {rtt.get('rtt_ms', '?')} ms", "ttbridge\n(end to end)",
             f"ttbridge, API\nanswering in {rtt.get('rtt_ms', '?')} ms"]
    values = [result.get("ceiling_eps") or 0, result.get("naive_eps") or 0, rtt.get("eps") or 0,
              result.get("ttbridge_eps") or 0, (result.get("ttbridge_at_rtt") or {}).get("eps") or 0]
    drawn = bars.bar(names, values, color=["#9aa5b1", "#e07b39", "#f2b48a", "#2b7bba", "#7fb3de"])
    bars.tick_params(axis="x", labelsize=8)
    bars.set_yscale("log")
    bars.set_ylabel("events/s (log scale)")
    bars.set_title(f"throughput, n={result.get('n'):,}, {result.get('cores')} cores")
    for rect, v in zip(drawn, values):
        bars.annotate(f"{v:,.0f}", (rect.get_x() + rect.get_width() / 2, max(v, 1)),
                      ha="center", va="bottom", fontsize=9)
    if latencies_ms:
        hist.hist(latencies_ms, bins=60, color="#2b7bba", alpha=0.7)
        hist.set_xlabel("produce → Events API, ms")
        hist.set_ylabel("events")
        cdf = hist.twinx()
        ordered = sorted(latencies_ms)
        cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], color="#c0392b")
        cdf.set_ylim(0, 1.01)
        cdf.set_ylabel("CDF")
        lat = result.get("latency_ms") or {}
        for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-.")):
            if lat.get(key) is not None:
                hist.axvline(lat[key], color="black", linestyle=style, linewidth=1, label=f"{key} {lat[key]:,.0f} ms")
        hist.legend(loc="center right", fontsize=8)
    hist.set_title(f"latency at {result.get('latency_offered_eps') or 0:,.0f} events/s offered")
    fig.suptitle(f"ttbridge benchmark {result.get('date')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
