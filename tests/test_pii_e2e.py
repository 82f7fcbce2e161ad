"""Raw PII (emails, phones, external IDs) on a real worker, the real broker and the strict fake
Events API: what TikTok receives, what the retry tiers and the DLQ keep, is the SHA-256 of the
normalised value; the raw value appears in no log line, page or record the worker wrote — except
where the README says it does: the dead letter of an input that never mapped keeps the input's
own bytes (`dlq_original = "raw"`, the default), and with `dlq_original = "hashed"` not even there.
"""
from __future__ import annotations

import time

import orjson
import pytest

from app.devtools.kafka_local import free_port
from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.topics import create_topics
from app.settings import load
from tests.support import PIXEL_A, TOKEN_A, sha, wait_for
from tests.test_token_echo import page, records_of_topics

PAGES = ("/metrics", "/stats", "/readyz", "/healthz")
# Probe numbers by what becomes of the conversion carrying them.
DELIVERED = (1, 2, 3)
REFUSED = (4, 5, 6)          # the fake answers 50000 until the retry tiers give up: DLQ
UNMAPPED = 7                 # currency BTC: the mapping refuses it, DLQ with its original
INVALID_JSON = 8             # not JSON at all: DLQ with its original
LANDING = 9                  # a page call: recorded as a click, not sent
EXCEPTION_REASONS = {"invalid_currency", "invalid_json"}


def email(n: int) -> str:
    return f"Pii.Probe+{n}@Example.COM"


def phone(n: int) -> str:
    return f"+44 7700 900{n:03d}"


def external_id(n: int) -> str:
    return f"user-pii-probe-{n}"


def e164(n: int) -> str:
    """phone(n) in E.164: a + and its digits (a GB mobile number has no trunk 0 to drop)."""
    return "+" + "".join(filter(str.isdigit, phone(n)))


def hashed_user(n: int) -> dict[str, str]:
    """SHA-256 (sha: hashlib) of TikTok's normalisation, written out here rather than taken from
    app.mapping.normalise: the email as conversion() pads it, trimmed and lowercased; the phone in
    E.164; the external_id trimmed, its case kept."""
    return {"email": sha(f" {email(n)} ".strip().lower()), "phone": sha(e164(n)),
            "external_id": sha(external_id(n).strip())}


def raw_forms(n: int) -> list[bytes]:
    """Each way probe `n`'s PII may appear raw (emails are searched in any case): the email, the
    phone as produced, in E.164 and as E.164's bare digits, the external ID."""
    return [email(n).lower().encode(), phone(n).encode(), e164(n).encode(), e164(n)[1:].encode(),
            external_id(n).encode()]


ALL_PROBES = (*DELIVERED, *REFUSED, UNMAPPED, INVALID_JSON, LANDING)
NEEDLES = [form for n in ALL_PROBES for form in raw_forms(n)]


def raw_pii_in(data: bytes | str) -> list[str]:
    """The raw PII forms found in `data`; an email is found in any case."""
    if isinstance(data, str):
        data = data.encode()
    folded = data.lower()
    return [needle.decode() for needle in NEEDLES
            if needle in data or (b"@" in needle and needle in folded)]


def conversion(n: int, now: float, currency: str = "USD") -> dict:
    """A Segment track call with probe n's PII where the segment preset reads it, in one of
    its three places (context.traits, traits, properties) by n, padded as producers send it."""
    pii = {"email": f" {email(n)} ", "phone": phone(n)}
    event = {"type": "track", "event": "Order Completed", "messageId": f"order-{n}", "timestamp": now - 10,
             "userId": external_id(n),
             "properties": {"click_id": f"clk-{n}", "order_id": str(n), "value": 10 + n, "currency": currency}}
    if n % 3 == 0:
        event["context"] = {"traits": pii}
    elif n % 3 == 1:
        event["traits"] = pii
    else:
        event["properties"].update(pii)
    return event


def worker_env(bootstrap: str, unique: str, tmp_path, fake, dlq_original: str) -> dict[str, str]:
    config = tmp_path / "ttbridge.toml"
    config.write_text("[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 1\nretry_tiers_s = [0.3, 0.3]\n"
                      f'dlq_original = "{dlq_original}"\n')
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TIKTOK_API_URL": fake.base_url,
            "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A, "TTBRIDGE_CONFIG": str(config),
            "TTBRIDGE_APP_ID": f"pii{unique}", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
            "TTBRIDGE_WEB_PORT": str(free_port()),
            "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}",
            "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}"}


def dead_ids(records: list) -> set[str]:
    return {e["event_id"] for _, value, _ in records for e in (orjson.loads(value).get("request") or {}).get("data", [])}


@pytest.mark.parametrize("dlq_original", ["raw", "hashed"])
async def test_raw_pii_leaves_only_hashed_and_stays_only_in_unmapped_dead_letters(
        kafka_bootstrap, unique, tmp_path, fake, dlq_original):
    env = worker_env(kafka_bootstrap, unique, tmp_path, fake, dlq_original)
    await create_topics(load(env))
    dlq, events_topic = env["TTBRIDGE_TOPIC_DLQ"], env["TTBRIDGE_TOPIC_EVENTS"]
    tiers = [env["TTBRIDGE_TOPIC_RETRY"], f"{env['TTBRIDGE_TOPIC_RETRY']}-2"]
    now = time.time()
    clicks = [{"click_id": f"clk-{n}", "ttclid": f"E.C.P.probe{n}", "timestamp": now - 60}
              for n in (*DELIVERED, *REFUSED, UNMAPPED)]
    unmapped = orjson.dumps(conversion(UNMAPPED, now, currency="BTC"))
    invalid_json = (f'{{"type": "track", "event": "Order Completed", "userId": "{external_id(INVALID_JSON)}", '
                    f'"context": {{"traits": {{"email": "{email(INVALID_JSON)}", "phone": "{phone(INVALID_JSON)}"'
                    ).encode()  # cut off: not JSON
    landing = {"type": "page", "name": "Landing", "messageId": "landing-9", "timestamp": now - 20,
               "userId": external_id(LANDING),
               "context": {"page": {"url": "https://shop.example/?ttclid=E.C.P.landing9"},
                           "traits": {"email": email(LANDING), "phone": phone(LANDING)}},
               "properties": {"click_id": "clk-landing"}}
    originals = {"invalid_currency": unmapped, "invalid_json": invalid_json}

    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], clicks, key=lambda c: c["click_id"])
    # "debug": the most the worker ever logs (aiokafka's wire chatter included), so the scan below
    # covers every line it can write; on this handful of events that is ~1,800 lines, ~0.5 MB.
    worker = WorkerProcess(env, tmp_path / "worker.log", loglevel="debug")
    worker.start()
    try:
        await worker.wait_ready()
        # First the refused ones, each request answered 50000 until the tiers give up; the
        # inputs that never map go to the DLQ at once.
        fake.config.fail_share = 1.0
        await produce_json(kafka_bootstrap, events_topic,
                           [*(conversion(n, now) for n in REFUSED), unmapped, invalid_json, landing])

        async def refused_ones_dead_lettered():
            written = (await records_of_topics(kafka_bootstrap, unique)).get(dlq, [])
            reasons = {orjson.loads(v)["reason"] for _, v, _ in written}
            return dead_ids(written) >= {f"order-{n}" for n in REFUSED} and reasons >= EXCEPTION_REASONS
        await wait_for(refused_ones_dead_lettered, 40, "the refused conversions to be dead-lettered")
        fake.config.fail_share = 0.0
        await produce_json(kafka_bootstrap, events_topic, [conversion(n, now) for n in DELIVERED])

        async def delivered():
            return {a["event"]["event_id"] for a in fake.accepted} >= {f"order-{n}" for n in DELIVERED}
        await wait_for(delivered, 30, "the delivered conversions")
        pages = {path: await page(worker, path) for path in PAGES}
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # 1. TikTok got exactly the hashes of the normalised values.
    assert sorted(a["event"]["event_id"] for a in fake.accepted) == [f"order-{n}" for n in DELIVERED]
    for a in fake.accepted:
        n = int(a["event"]["event_id"].rsplit("-", 1)[1])
        user = a["event"]["user"]
        assert {k: user.get(k) for k in ("email", "phone", "external_id")} == hashed_user(n)
        assert user["ttclid"] == f"E.C.P.probe{n}"

    written = await records_of_topics(kafka_bootstrap, unique)
    ours = {t: records for t, records in written.items() if t not in (env["TTBRIDGE_TOPIC_CLICKS"], events_topic)}
    clicks_log = f"pii{unique}-clicks-by-click-id"
    assert {*tiers, dlq, clicks_log} <= {t for t, records in ours.items() if records}
    # The landing (whose PII the page call carried) is in the clicks table's log the scan reads.
    assert any(b'"clk-landing"' in value for _, value, _ in ours[clicks_log])

    # 1, continued: the retry tiers and the DLQ keep the same hashes in the requests they keep.
    kept_requests = [orjson.loads(v)["request"] for t in (*tiers, dlq) for _, v, _ in ours[t]
                     if "request" in orjson.loads(v)]
    refused_users = {e["event_id"]: e["user"] for body in kept_requests for e in body["data"]}
    assert set(refused_users) == {f"order-{n}" for n in REFUSED}
    for event_id, user in refused_users.items():
        n = int(event_id.rsplit("-", 1)[1])
        assert {k: user.get(k) for k in ("email", "phone", "external_id")} == hashed_user(n)

    # 3. The documented exception, exactly: dead letters of inputs that never mapped.
    dead = [orjson.loads(v) for _, v, _ in ours[dlq]]
    # (the refused conversions are dead-lettered by the request that carried them, one or several)
    assert {d["reason"] for d in dead} == {*EXCEPTION_REASONS, "retries_exhausted"}
    assert dead_ids(ours[dlq]) == {f"order-{n}" for n in REFUSED}
    exceptions = {d["reason"]: d for d in dead if d["reason"] in EXCEPTION_REASONS}
    assert sum(d["reason"] in EXCEPTION_REASONS for d in dead) == len(exceptions) == len(EXCEPTION_REASONS)
    if dlq_original == "raw":
        for reason, d in exceptions.items():
            assert d["original"].encode() == originals[reason] and d["original_base64"] is False
            assert raw_pii_in(d["original"]), reason
    else:
        assert all(d["original_hashed"] is True for d in exceptions.values())
        assert "original" not in exceptions["invalid_json"]  # not a JSON object: not kept
        kept = orjson.loads(exceptions["invalid_currency"]["original"])
        assert (kept["userId"], kept["traits"]["email"], kept["traits"]["phone"]) == (
            hashed_user(UNMAPPED)["external_id"], hashed_user(UNMAPPED)["email"], hashed_user(UNMAPPED)["phone"])

    # 2. Raw PII nowhere else: no record (key, value, headers) of any topic the worker wrote —
    # a raw dead letter's `original` aside —, no log line, no page.
    def scanned(topic: str, value: bytes) -> bytes:
        if topic == dlq and dlq_original == "raw":
            d = orjson.loads(value)
            if d["reason"] in EXCEPTION_REASONS:
                d.pop("original")
                return orjson.dumps(d)
        return value

    leaks = [(t, found) for t, records in ours.items() for key, value, headers in records
             for part in (key or b"", scanned(t, value or b""), *(v for _, v in headers))
             if (found := raw_pii_in(part))]
    assert leaks == [], f"raw PII in records the worker wrote: {leaks}"
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "DEBUG" in log  # the scan covered the most verbose log there is
    log_leaks = [line for line in log.splitlines() if raw_pii_in(line)]
    assert log_leaks == [], f"raw PII in the worker's log: {log_leaks}"
    assert {path: status for path, (status, _) in pages.items()} == dict.fromkeys(PAGES, 200)
    page_leaks = {path: found for path, (_, text) in pages.items() if (found := raw_pii_in(text))}
    assert page_leaks == {}, f"raw PII on the worker's pages: {page_leaks}"
