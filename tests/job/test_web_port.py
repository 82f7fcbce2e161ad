"""The worker's web port serves ttbridge's pages and nothing of faust's: no /table view (a click's
IP, user agent, ttclid and URL, unauthenticated), no /router, /graph, /assignment or
/performance. Real worker processes on the real broker; the second one runs in the environment
a Kubernetes pod gets from Services named `web`, `faust-web`, ... plus faust's own variables."""
import time

import aiohttp
import orjson

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.topics import create_topics
from app.settings import load
from tests.support import PIXEL_A, TOKEN_A, wait_accepted

# faust-streaming 0.15.3's views (faust/web/apps/*.py), each with the path params it takes. With
# a table named `clicks` the /table ones answered with the stored click.
FAUST_VIEWS = (
    "/table/", "/table/clicks/", "/table/clicks/{click_id}/",
    "/router/", "/router/topics", "/router/clicks/", "/router/clicks/{click_id}/",
    "/graph/", "/assignment/", "/performance/",
)
CLICK = {"click_id": "c-web-1", "ttclid": "E.C.P.webport", "ttp": "ttp-webport", "ip": "203.0.113.77",
         "user_agent": "Mozilla/5.0 (web port test)", "url": "https://shop.example/landing?secret=1"}


async def fetch(base: str, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(base + path, timeout=aiohttp.ClientTimeout(total=5), allow_redirects=False) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.text()


async def run_worker_with_a_stored_click(env: dict, kafka_bootstrap: str, fake, log) -> WorkerProcess:
    """A ready worker whose clicks table holds CLICK: a conversion joined to it reached the fake."""
    await create_topics(load(env))
    now = time.time()
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], [{**CLICK, "timestamp": now - 60}],
                       key=CLICK["click_id"])
    worker = WorkerProcess(env, log)
    if env.get("TTBRIDGE_WEB_HOST"):
        worker.web = f"http://{env['TTBRIDGE_WEB_HOST']}:{env['TTBRIDGE_WEB_PORT']}"
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [{
            "type": "track", "event": "Order Completed", "messageId": "web-1", "timestamp": now - 10,
            "properties": {"click_id": CLICK["click_id"], "value": 5, "currency": "USD"}}])
        await wait_accepted(fake, 1, "the conversion joined to the stored click")
    except BaseException:
        worker.kill()
        raise
    assert fake.accepted[0]["event"]["user"]["ttclid"] == CLICK["ttclid"]  # the click is in the table
    return worker


async def assert_serves_only_ttbridge_pages(base: str) -> None:
    for template in FAUST_VIEWS:
        path = template.format(click_id=CLICK["click_id"])
        status, _, body = await fetch(base, path)
        assert status == 404, (path, status, body)
        assert CLICK["ip"] not in body and CLICK["ttclid"] not in body, path

    status, _, body = await fetch(base, "/healthz")
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    status, _, body = await fetch(base, "/readyz")
    assert (status, orjson.loads(body)) == (200, {"ready": True, "recovered": True, "clicks_caught_up": True,
                                                 "rebalancing": False})
    status, content_type, body = await fetch(base, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert "ttbridge_events_in_total" in body
    status, _, body = await fetch(base, "/stats")
    assert status == 200 and orjson.loads(body)["events_in"] == 1
    # faust's own index stays (it cannot be switched off) and says no more than this.
    status, _, body = await fetch(base, "/")
    assert (status, orjson.loads(body)) == (200, {"status": "OK"})
    for page in ("/healthz", "/readyz", "/metrics", "/stats", "/"):
        body = (await fetch(base, page))[2]
        assert CLICK["ip"] not in body and CLICK["ttclid"] not in body and TOKEN_A not in body, page


async def test_faust_views_are_404_and_ttbridge_pages_answer(kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url, "TIKTOK_PIXEL_CODE": PIXEL_A,
           "TIKTOK_ACCESS_TOKEN": TOKEN_A}
    worker = await run_worker_with_a_stored_click(env, kafka_bootstrap, fake, tmp_path / "worker.log")
    try:
        await assert_serves_only_ttbridge_pages(worker.web)
    finally:
        assert worker.stop() == 0, worker.log_tail()


# What a pod gets from Services named `web`, `faust-web`, `f-web` and `faust-console` (Kubernetes
# service links: <NAME>_PORT=tcp://..., <NAME>_SERVICE_HOST, ...), plus faust's own variables
# set to what would serve the tables again, or point faust elsewhere. faust read WEB_PORT and
# crashed (int('tcp://...')); FAUST_WEB_PORT and the like crashed the import of faust itself.
SERVICE_LINKS = {
    "WEB_PORT": "tcp://10.0.0.1:6066", "WEB_PORT_6066_TCP": "tcp://10.0.0.1:6066",
    "WEB_PORT_6066_TCP_PROTO": "tcp", "WEB_PORT_6066_TCP_PORT": "6066", "WEB_PORT_6066_TCP_ADDR": "10.0.0.1",
    "WEB_SERVICE_HOST": "10.0.0.1", "WEB_SERVICE_PORT": "6066",
    "FAUST_WEB_PORT": "tcp://10.0.0.2:6066", "FAUST_WEB_SERVICE_HOST": "10.0.0.2",
    "F_WEB_PORT": "tcp://10.0.0.3:6066", "F_WEB_SERVICE_HOST": "10.0.0.3",
    "FAUST_CONSOLE_PORT": "tcp://10.0.0.4:50101", "FAUST_CONSOLE_SERVICE_HOST": "10.0.0.4",
}
FAUST_OWN = {
    "WEB_HOST": "web.invalid", "WEB_BIND": "127.0.0.3", "WEB_TRANSPORT": "unix:///nonexistent/web.sock",
    "APP_WEB_TABLES_ENABLED": "true", "APP_WEB_ROUTER_ENABLED": "true", "APP_DEBUG": "true",
    "APP_WEB_STATS_ENABLED": "true", "APP_WEB_GRAPH_ENABLED": "true", "APP_WEB_METRICS_ENABLED": "true",
    "BROKER_URL": "kafka://127.0.0.1:1", "APP_DATADIR": "/nonexistent/faust-data",
}


async def test_service_links_and_faust_variables_change_nothing_and_the_bind_address_is_ours(
        kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, **SERVICE_LINKS, **FAUST_OWN, "TIKTOK_API_URL": fake.base_url,
           "TIKTOK_PIXEL_CODE": PIXEL_A, "TIKTOK_ACCESS_TOKEN": TOKEN_A,
           # Another loopback address: the web server binds this one only.
           "TTBRIDGE_WEB_HOST": "127.0.0.2"}
    worker = await run_worker_with_a_stored_click(env, kafka_bootstrap, fake, tmp_path / "worker.log")
    try:
        assert worker.web == f"http://127.0.0.2:{env['TTBRIDGE_WEB_PORT']}"
        await assert_serves_only_ttbridge_pages(worker.web)
        try:
            await fetch(f"http://127.0.0.1:{env['TTBRIDGE_WEB_PORT']}", "/healthz")
        except aiohttp.ClientConnectorError:
            pass
        else:
            raise AssertionError("the web server answers on 127.0.0.1 too")
    finally:
        assert worker.stop() == 0, worker.log_tail()
