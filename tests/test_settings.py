import pytest

from app.mapping.events import Refusal, map_event
from app.settings import Secret, SettingsError, load, mapping_config
from app.tiktok.facts import STANDARD_EVENTS

TOKEN = "tok-" + "x" * 36


def test_defaults_match_the_contract():
    s = load({})
    assert (s.bootstrap_servers, s.api_url, s.topic_clicks, s.topic_events, s.topic_retry,
            s.topic_dlq, s.app_id, s.data_dir, s.web_port) == (
        "127.0.0.1:9092", "https://business-api.tiktok.com", "clicks", "tracking-events",
        "tiktok-retry", "tiktok-dlq", "ttbridge", "./.ttbridge", 6066)
    assert s.track_url == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    assert s.pixels == {}


def test_single_pixel_from_env_routes_by_default():
    s = load({"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": TOKEN,
              "TIKTOK_TEST_EVENT_CODE": "TEST123", "KAFKA_BOOTSTRAP_SERVERS": "a:1, b:2"})
    assert s.pixels["PIX1"].token.reveal() == TOKEN
    assert s.pixels["PIX1"].test_event_code == "TEST123"
    assert s.routing.default == "PIX1"
    assert s.broker_urls == ["kafka://a:1", "kafka://b:2"]


def test_token_never_in_repr_or_str():
    s = load({"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": TOKEN})
    for text in (repr(s), str(s), repr(s.pixels), f"{s.pixels['PIX1'].token}"):
        assert TOKEN not in text
    assert "***" in repr(s.pixels["PIX1"].token)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(Secret(TOKEN))


@pytest.mark.parametrize("env, message", [
    ({"TTBRIDGE_WEB_PORT": "abc"}, "TTBRIDGE_WEB_PORT: expected an integer, got 'abc'"),
    ({"TTBRIDGE_WEB_PORT": "70000"}, "TTBRIDGE_WEB_PORT: expected a port 1-65535, got 70000"),
    ({"TTBRIDGE_WEB_PORT": "0"}, "TTBRIDGE_WEB_PORT: expected a port 1-65535, got 0"),
    ({"TIKTOK_API_URL": "business-api.tiktok.com"},
     "TIKTOK_API_URL: expected an http(s) URL, got 'business-api.tiktok.com'"),
    ({"TIKTOK_PIXEL_CODE": "PIX1"}, "TIKTOK_ACCESS_TOKEN: required when TIKTOK_PIXEL_CODE is set"),
    ({"TTBRIDGE_CONFIG": "/nonexistent/ttbridge.toml"},
     "TTBRIDGE_CONFIG: file '/nonexistent/ttbridge.toml' does not exist"),
    ({"KAFKA_BOOTSTRAP_SERVERS": " , "},
     "KAFKA_BOOTSTRAP_SERVERS: expected comma-separated host:port, got ','"),
    ({"TTBRIDGE_TOPIC_CLICKS": "my clicks"}, "TTBRIDGE_TOPIC_CLICKS: expected a Kafka topic name "
     "(at most 249 letters, digits, '.', '_' or '-'), got 'my clicks'"),
    ({"TTBRIDGE_TOPIC_DLQ": "x" * 250}, "TTBRIDGE_TOPIC_DLQ: expected a Kafka topic name "
     f"(at most 249 letters, digits, '.', '_' or '-'), got '{'x' * 250}'"),
    ({"TTBRIDGE_TOPIC_DLQ": "clicks"}, "TTBRIDGE_TOPIC_DLQ: 'clicks' is already TTBRIDGE_TOPIC_CLICKS"),
    ({"TTBRIDGE_APP_ID": "my/app"}, "TTBRIDGE_APP_ID: expected letters, digits, '.', '_' or '-' "
     "(it prefixes topic names), got 'my/app'"),
    # A misspelled variable would be ignored and its default used.
    ({"TTBRIDGE_TOPIC_CLIKS": "clicks"},
     "TTBRIDGE_TOPIC_CLIKS: unknown variable (did you mean TTBRIDGE_TOPIC_CLICKS?)"),
    ({"TTBRIDGE_WEBPORT": "8080"}, "TTBRIDGE_WEBPORT: unknown variable (did you mean TTBRIDGE_WEB_PORT?)"),
    ({"TTBRIDGE_ZZZ": ""}, "TTBRIDGE_ZZZ: unknown variable (known: TTBRIDGE_APP_ID, TTBRIDGE_CACHE_DIR, "
     "TTBRIDGE_CONFIG, TTBRIDGE_DATA_DIR, TTBRIDGE_MIN_INSYNC_REPLICAS, TTBRIDGE_REPLICATION_FACTOR, "
     "TTBRIDGE_TOPICS_DIR, TTBRIDGE_TOPIC_CLICKS, TTBRIDGE_TOPIC_DLQ, "
     "TTBRIDGE_TOPIC_EVENTS, TTBRIDGE_TOPIC_RETRY, TTBRIDGE_WEB_HOST, TTBRIDGE_WEB_PORT)"),
    ({"TTBRIDGE_WEB_HOST": "0.0.0.0 6066"},
     "TTBRIDGE_WEB_HOST: expected an IP address or host name, got '0.0.0.0 6066'"),
])
def test_wrong_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as e:
        load(env)
    assert str(e.value) == message


def test_unknown_variables_are_refused_in_os_environ_too(monkeypatch):
    monkeypatch.setenv("TTBRIDGE_TOPIC_CLIKS", "clicks")
    with pytest.raises(SettingsError) as e:
        load()
    assert str(e.value) == "TTBRIDGE_TOPIC_CLIKS: unknown variable (did you mean TTBRIDGE_TOPIC_CLICKS?)"


def test_every_known_variable_loads_and_other_namespaces_are_left_alone(tmp_path):
    config = tmp_path / "ttbridge.toml"
    config.write_text("")
    s = load({"TTBRIDGE_CONFIG": str(config), "TTBRIDGE_TOPIC_CLICKS": "c", "TTBRIDGE_TOPIC_EVENTS": "e",
              "TTBRIDGE_TOPIC_RETRY": "r", "TTBRIDGE_TOPIC_DLQ": "d", "TTBRIDGE_APP_ID": "a",
              "TTBRIDGE_DATA_DIR": str(tmp_path), "TTBRIDGE_WEB_PORT": "8080",
              "TTBRIDGE_WEB_HOST": "127.0.0.1", "TTBRIDGE_TOPICS_DIR": str(tmp_path), "TTBRIDGE_CACHE_DIR": str(tmp_path),
              # TikTok's and Kafka's namespaces hold names we do not read (KAFKA_HEAP_OPTS, ...).
              "TIKTOK_SOMETHING_ELSE": "x", "KAFKA_HEAP_OPTS": "-Xmx1G"})
    assert (s.topic_clicks, s.topic_events, s.topic_retry, s.topic_dlq, s.app_id, s.web_port, s.web_host) == (
        "c", "e", "r", "d", "a", 8080, "127.0.0.1")


def test_toml_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_A_TOKEN", TOKEN)
    path = tmp_path / "ttbridge.toml"
    path.write_text("""
[ttbridge]
batch_window_s = 0.5
join_wait_s = 10
attribution_window_days = 28
retry_tiers_s = [1, 2]
default_region = "gb"
partitions = 3
max_in_flight_per_pixel = 1
session_timeout_s = 6
sweep_interval_s = 60
click_id_paths = ["properties.clid"]
limited_data_use = true
content_type = "product_group"
send_page_url = false

[[pixels]]
code = "PIXA"
token_env = "SHOP_A_TOKEN"
test_event_code = "TEST1"

[routing]
path = "properties.site"
rules = { "shop-a" = "PIXA" }
default = "PIXA"

[events]
"Order Completed" = ["Purchase", "CompletePayment"]
"Quote Requested" = "Lead"
""")
    s = load({"TTBRIDGE_CONFIG": str(path)})
    assert s.batch_window_s == 0.5 and s.join_wait_s == 10.0 and s.attribution_window_days == 28
    assert s.retry_tiers_s == (1.0, 2.0) and s.default_region == "GB"
    assert (s.partitions, s.max_in_flight_per_pixel, s.session_timeout_s, s.sweep_interval_s) == (3, 1, 6.0, 60.0)
    assert s.click_id_paths == ("properties.clid",)
    assert (s.limited_data_use, s.content_type, s.send_page_url) == (True, "product_group", False)
    assert s.pixels["PIXA"].token.reveal() == TOKEN and s.pixels["PIXA"].test_event_code == "TEST1"
    assert s.routing.path == "properties.site" and s.routing.rules == {"shop-a": "PIXA"}
    assert s.event_map == {"Order Completed": ("Purchase", "CompletePayment"), "Quote Requested": ("Lead",)}


EVENT_TIME = 1704721970  # 2024-01-08T13:52:50Z
EVENT = {"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "user_123",
         "timestamp": "2024-01-08T13:52:50Z",
         "context": {"page": {"url": "https://shop.example/done", "referrer": "https://shop.example/cart"}},
         "properties": {"currency": "GBP", "value": 10}}


def mapped(tmp_path, body: str) -> dict:
    """The one TikTok item EVENT becomes under the settings of a TOML file `body`."""
    path = tmp_path / "ttbridge.toml"
    path.write_text(body)
    [item] = map_event(EVENT, None, mapping_config(load({"TTBRIDGE_CONFIG": str(path)})), EVENT_TIME + 30)
    return item


def test_mapping_settings_in_the_file_reach_the_payload(tmp_path):
    default = mapped(tmp_path, "")
    assert "limited_data_use" not in default and "content_type" not in default["properties"]
    assert default["page"] == {"url": "https://shop.example/done", "referrer": "https://shop.example/cart"}
    item = mapped(tmp_path, "[ttbridge]\nlimited_data_use = true\ncontent_type = \"product\"\n"
                            "send_page_url = false\n")
    assert item["limited_data_use"] is True
    assert item["properties"]["content_type"] == "product"
    assert "page" not in item
    assert mapped(tmp_path, "[ttbridge]\nlimited_data_use = false\n")["limited_data_use"] is False


def test_max_future_s_is_the_mappings_allowed_clock_skew(tmp_path):
    assert (load({}).max_future_s, mapping_config(load({})).max_future_s) == (300.0, 300.0)
    path = tmp_path / "ttbridge.toml"
    path.write_text("[ttbridge]\nmax_future_s = 0\n")
    config = mapping_config(load({"TTBRIDGE_CONFIG": str(path)}))
    assert config.max_future_s == 0
    with pytest.raises(Refusal) as refused:  # EVENT is 1 s ahead of this clock
        map_event(EVENT, None, config, EVENT_TIME - 1)
    assert refused.value.reason == "future_event"


def test_tokens_named_in_the_file_stay_out_of_ttbridges_namespace(tmp_path, monkeypatch):
    # load() refuses TTBRIDGE_* variables it does not know, so a token there could never be read.
    path = tmp_path / "ttbridge.toml"
    path.write_text("[[pixels]]\ncode = 'P'\ntoken_env = 'TTBRIDGE_TOKEN_A'\n")
    monkeypatch.setenv("TTBRIDGE_TOKEN_A", TOKEN)
    monkeypatch.setenv("TTBRIDGE_CONFIG", str(path))
    with pytest.raises(SettingsError) as e:
        load()
    assert str(e.value) == ("TTBRIDGE_CONFIG [[pixels]] #1.token_env: 'TTBRIDGE_TOKEN_A' is in ttbridge's own "
                            "namespace; name the token's variable otherwise, e.g. TIKTOK_TOKEN_SHOP_A")


PIXEL = "[[pixels]]\ncode = 'PIXA'\ntoken_env = 'SHOP_A_TOKEN'\n"
NUMBER = "TTBRIDGE_CONFIG [ttbridge].{}: expected a number > 0, got 0.0"


@pytest.mark.parametrize("body, message", [
    # A misspelled key anywhere: named, with where it is and the nearest known name.
    ("[pixel]\ncode='x'\n", "TTBRIDGE_CONFIG: unknown table 'pixel' (did you mean [[pixels]]?)"),
    ("[zzz]\n", "TTBRIDGE_CONFIG: unknown table 'zzz' (known: [events], [[inputs]], [[pixels]], [routing], [ttbridge])"),
    ("batch_window_s = 1\n[ttbridge]\n",
     "TTBRIDGE_CONFIG: 'batch_window_s' is outside any table (it belongs in [ttbridge])"),
    ("[ttbridge]\nbatch_windw_s = 1\n",
     "TTBRIDGE_CONFIG [ttbridge].batch_windw_s: unknown key (did you mean 'batch_window_s'?)"),
    ("[ttbridge]\nlimited_data = true\n",
     "TTBRIDGE_CONFIG [ttbridge].limited_data: unknown key (did you mean 'limited_data_use'?)"),
    (PIXEL + "[[pixels]]\ncode = 'PIXB'\ntokn_env = 'SHOP_A_TOKEN'\n",
     "TTBRIDGE_CONFIG [[pixels]] #2.tokn_env: unknown key (did you mean 'token_env'?)"),
    ("[routing]\npth = 'properties.site'\n",
     "TTBRIDGE_CONFIG [routing].pth: unknown key (did you mean 'path'?)"),
    ("[routing]\nzzz = 1\n", "TTBRIDGE_CONFIG [routing].zzz: unknown key (known: 'default', 'path', 'rules')"),
    # Tables of the wrong shape.
    ("ttbridge = 5\n", "TTBRIDGE_CONFIG [ttbridge]: expected a table, got 5"),
    ("[pixels]\ncode = 'PIXA'\n",
     "TTBRIDGE_CONFIG [[pixels]]: expected an array of tables, one [[pixels]] per pixel"),
    ("events = ['Purchase']\n", "TTBRIDGE_CONFIG [events]: expected a table, got ['Purchase']"),
    # Values of the wrong type.
    ("[ttbridge]\nbatch_window_s = 'fast'\n",
     "TTBRIDGE_CONFIG [ttbridge].batch_window_s: expected a number, got 'fast'"),
    ("[ttbridge]\nbatch_window_s = nan\n", "TTBRIDGE_CONFIG [ttbridge].batch_window_s: expected a number, got nan"),
    ("[ttbridge]\nsession_timeout_s = inf\n",
     "TTBRIDGE_CONFIG [ttbridge].session_timeout_s: expected a number, got inf"),
    ("[ttbridge]\npartitions = 6.5\n", "TTBRIDGE_CONFIG [ttbridge].partitions: expected an integer, got 6.5"),
    ("[ttbridge]\nbatch_max = true\n", "TTBRIDGE_CONFIG [ttbridge].batch_max: expected an integer, got True"),
    ("[ttbridge]\nretry_tiers_s = 30\n", "TTBRIDGE_CONFIG [ttbridge].retry_tiers_s: expected a list of seconds, got 30"),
    ("[ttbridge]\nclick_id_paths = 'properties.click_id'\n", "TTBRIDGE_CONFIG [ttbridge].click_id_paths: "
     "expected a list of dotted paths, got 'properties.click_id'"),
    ("[ttbridge]\ndefault_region = 'GBR'\n",
     "TTBRIDGE_CONFIG [ttbridge].default_region: expected a two-letter region such as \"GB\", got 'GBR'"),
    ("[ttbridge]\nlimited_data_use = 'yes'\n",
     "TTBRIDGE_CONFIG [ttbridge].limited_data_use: expected true or false, got 'yes'"),
    ("[ttbridge]\nsend_page_url = 0\n", "TTBRIDGE_CONFIG [ttbridge].send_page_url: expected true or false, got 0"),
    ("[ttbridge]\ncontent_type = 1\n", "TTBRIDGE_CONFIG [ttbridge].content_type: expected a string, got 1"),
    ("[routing]\npath = 'p'\nrules = { shop-a = 5 }\n",
     "TTBRIDGE_CONFIG [routing.rules].'shop-a': expected a pixel code, got 5"),
    ("[routing]\npath = 'p'\n[routing.rules]\nshop-a = 5\n",
     "TTBRIDGE_CONFIG [routing.rules].'shop-a': expected a pixel code, got 5"),
    ("[routing]\nrules = 'PIXA'\n", "TTBRIDGE_CONFIG [routing].rules: expected a table of value = pixel code, got 'PIXA'"),
    ("[routing]\ndefault = 5\n", "TTBRIDGE_CONFIG [routing].default: expected a pixel code, got 5"),
    ("[events]\n'Order Completed' = 5\n",
     "TTBRIDGE_CONFIG [events].'Order Completed': expected a TikTok event name or a list of them, got 5"),
    ("[events]\n'Order Completed' = ['Purchase', 5]\n", "TTBRIDGE_CONFIG [events].'Order Completed': "
     "expected a TikTok event name or a list of them, got ['Purchase', 5]"),
    # Values out of range.
    ("[ttbridge]\npartitions = 0\n", "TTBRIDGE_CONFIG [ttbridge].partitions: expected an integer >= 1, got 0"),
    ("[ttbridge]\nmax_in_flight_per_pixel = 0\n",
     "TTBRIDGE_CONFIG [ttbridge].max_in_flight_per_pixel: expected an integer >= 1, got 0"),
    ("[ttbridge]\nbatch_window_s = -1\n", "TTBRIDGE_CONFIG [ttbridge].batch_window_s: expected a number >= 0, got -1.0"),
    ("[ttbridge]\njoin_wait_s = -0.5\n", "TTBRIDGE_CONFIG [ttbridge].join_wait_s: expected a number >= 0, got -0.5"),
    ("[ttbridge]\nmax_event_age_days = 0\n", NUMBER.format("max_event_age_days")),
    ("[ttbridge]\nhttp_connect_timeout_s = 0\n", NUMBER.format("http_connect_timeout_s")),
    ("[ttbridge]\nhttp_total_timeout_s = 0\n", NUMBER.format("http_total_timeout_s")),
    ("[ttbridge]\nshutdown_timeout_s = 0\n", NUMBER.format("shutdown_timeout_s")),
    ("[ttbridge]\nsession_timeout_s = 0\n", NUMBER.format("session_timeout_s")),
    ("[ttbridge]\nsweep_interval_s = 0\n", NUMBER.format("sweep_interval_s")),
    ("[ttbridge]\nattribution_window_days = 30\n", "TTBRIDGE_CONFIG [ttbridge].attribution_window_days: "
     "expected more than 0 and at most 28 (TikTok's limit), got 30.0"),
    ("[ttbridge]\nattribution_window_days = 0\n", "TTBRIDGE_CONFIG [ttbridge].attribution_window_days: "
     "expected more than 0 and at most 28 (TikTok's limit), got 0.0"),
    ("[ttbridge]\nbatch_max = 1001\n", "TTBRIDGE_CONFIG [ttbridge].batch_max: expected 1-1000 (TikTok's limit), got 1001"),
    ("[ttbridge]\nbatch_max = 0\n", "TTBRIDGE_CONFIG [ttbridge].batch_max: expected 1-1000 (TikTok's limit), got 0"),
    ("[ttbridge]\nmax_message_bytes = 1048576\n", "TTBRIDGE_CONFIG [ttbridge].max_message_bytes: expected "
     "1024-524288 (a dead letter holding the message must fit in one Kafka record), got 1048576"),
    ("[ttbridge]\nmax_message_bytes = 100\n", "TTBRIDGE_CONFIG [ttbridge].max_message_bytes: expected "
     "1024-524288 (a dead letter holding the message must fit in one Kafka record), got 100"),
    ("[ttbridge]\nretry_tiers_s = []\n",
     "TTBRIDGE_CONFIG [ttbridge].retry_tiers_s: expected a non-empty list of delays >= 0 seconds, got []"),
    ("[ttbridge]\nretry_tiers_s = [30, -1]\n",
     "TTBRIDGE_CONFIG [ttbridge].retry_tiers_s: expected a non-empty list of delays >= 0 seconds, got [30.0, -1.0]"),
    # Mapping values, checked by MappingConfig at load time.
    ("[ttbridge]\nmax_future_s = -1\n",
     "TTBRIDGE_CONFIG [ttbridge].max_future_s: must be from 0 to 86400 seconds, got -1.0"),
    ("[ttbridge]\nmax_future_s = 86401\n",
     "TTBRIDGE_CONFIG [ttbridge].max_future_s: must be from 0 to 86400 seconds, got 86401.0"),
    ("[ttbridge]\nmax_future_s = '5m'\n", "TTBRIDGE_CONFIG [ttbridge].max_future_s: expected a number, got '5m'"),
    ("[ttbridge]\ncontent_type = 'products'\n",
     "TTBRIDGE_CONFIG [ttbridge].content_type: must be one of ['product', 'product_group']"),
    ("[ttbridge]\ndefault_region = 'XX'\n", "TTBRIDGE_CONFIG [ttbridge].default_region: 'XX' is not a region code like GB"),
    ("[ttbridge]\nclick_id_paths = []\n",
     "TTBRIDGE_CONFIG [ttbridge].click_id_paths: must be a non-empty list of dotted paths"),
    ("[ttbridge]\nclick_id_paths = ['properties..clid']\n",
     "TTBRIDGE_CONFIG [ttbridge].click_id_paths: 'properties..clid' is not a dotted path"),
    ("[events]\n'Quote Requested' = 'Leed'\n", "TTBRIDGE_CONFIG [events].'Quote Requested': 'Leed' is not a "
     "TikTok standard event (did you mean 'Lead'?)"),
    ("[events]\n'Quote Requested' = 'Quote'\n", "TTBRIDGE_CONFIG [events].'Quote Requested': 'Quote' is not a "
     f"TikTok standard event (known: {', '.join(sorted(STANDARD_EVENTS))})"),
    # Pixels.
    ("[[pixels]]\ntoken_env = 'SHOP_A_TOKEN'\n", "TTBRIDGE_CONFIG [[pixels]] #1.code: required, the pixel code"),
    ("[[pixels]]\ncode = 'PIXA'\n", "TTBRIDGE_CONFIG [[pixels]] #1.token_env: required, the environment "
     "variable holding the pixel's token"),
    ("[[pixels]]\ncode = 'P'\ntoken_env = 'NOT_SET_ANYWHERE'\n",
     "TTBRIDGE_CONFIG [[pixels]] #1.token_env: environment variable NOT_SET_ANYWHERE is not set"),
    (PIXEL + "event_source = 'server'\n",
     "TTBRIDGE_CONFIG [[pixels]] #1.event_source: expected web, app, offline or crm, got 'server'"),
    (PIXEL + "test_event_code = 123\n", "TTBRIDGE_CONFIG [[pixels]] #1.test_event_code: expected a string, got 123"),
    (PIXEL + PIXEL, "TTBRIDGE_CONFIG [[pixels]] #2.code: pixel 'PIXA' is configured twice"),
    # Routing.
    ("[routing]\npath = 'properties..site'\n",
     "TTBRIDGE_CONFIG [routing].path: expected a dotted path such as \"properties.site\", got 'properties..site'"),
    (PIXEL + "[routing]\nrules = { shop-a = 'PIXA' }\n",
     "TTBRIDGE_CONFIG [routing].rules: needs [routing].path, the event field whose value picks a rule"),
    ("[routing]\ndefault = 'NOPE'\n",
     "TTBRIDGE_CONFIG [routing].default: pixel 'NOPE' is not configured (no pixel is configured)"),
    (PIXEL + "[routing]\npath = 'properties.site'\nrules = { shop-b = 'PIXB' }\n",
     "TTBRIDGE_CONFIG [routing.rules].'shop-b': pixel 'PIXB' is not configured (configured: 'PIXA')"),
])
def test_wrong_toml_is_one_clear_line(tmp_path, monkeypatch, body, message):
    monkeypatch.setenv("SHOP_A_TOKEN", TOKEN)
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(SettingsError) as e:
        load({"TTBRIDGE_CONFIG": str(path)})
    assert str(e.value) == message


def test_invalid_toml_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("not toml [")
    with pytest.raises(SettingsError) as e:
        load({"TTBRIDGE_CONFIG": str(path)})
    assert str(e.value).startswith(f"TTBRIDGE_CONFIG: {str(path)!r} is not valid TOML: ")  # then tomllib's reason
    assert "\n" not in str(e.value)


def test_overrides_are_checked_like_the_file():
    with pytest.raises(SettingsError) as e:
        load({}, max_in_flight_per_pixel=0)
    assert str(e.value) == "TTBRIDGE_CONFIG [ttbridge].max_in_flight_per_pixel: expected an integer >= 1, got 0"
    with pytest.raises(SettingsError) as e:
        load({}, content_type="products")
    assert str(e.value) == "TTBRIDGE_CONFIG [ttbridge].content_type: must be one of ['product', 'product_group']"
