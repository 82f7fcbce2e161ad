import pytest

from app.settings import Secret, SettingsError, load

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
    ({"TIKTOK_API_URL": "business-api.tiktok.com"}, "TIKTOK_API_URL: expected an http(s) URL"),
    ({"TIKTOK_PIXEL_CODE": "PIX1"}, "TIKTOK_ACCESS_TOKEN: required when TIKTOK_PIXEL_CODE is set"),
    ({"TTBRIDGE_CONFIG": "/nonexistent/ttbridge.toml"}, "TTBRIDGE_CONFIG: file '/nonexistent/ttbridge.toml' does not exist"),
])
def test_wrong_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as e:
        load(env)
    assert str(e.value).startswith(message)


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
    assert s.pixels["PIXA"].token.reveal() == TOKEN and s.pixels["PIXA"].test_event_code == "TEST1"
    assert s.routing.path == "properties.site" and s.routing.rules == {"shop-a": "PIXA"}
    assert s.event_map == {"Order Completed": ("Purchase", "CompletePayment"), "Quote Requested": ("Lead",)}


@pytest.mark.parametrize("body, message", [
    ("[ttbridge]\nattribution_window_days = 30\n", "attribution_window_days: expected more than 0 and at most 28"),
    ("[ttbridge]\nbatch_max = 1001\n", "batch_max: expected 1-1000"),
    ("[ttbridge]\nmax_message_bytes = 1048576\n", "max_message_bytes: expected 1024-524288"),
    ("[ttbridge]\nmax_message_bytes = 100\n", "max_message_bytes: expected 1024-524288"),
    ("[ttbridge]\nbatch_window_s = 'fast'\n", "TTBRIDGE_CONFIG [ttbridge].batch_window_s: expected a number"),
    ("[ttbridge]\nbatch_windw_s = 1\n", "TTBRIDGE_CONFIG [ttbridge].batch_windw_s: unknown setting"),
    ("[pixel]\ncode='x'\n", "TTBRIDGE_CONFIG: unknown table [pixel]"),
    ("[[pixels]]\ncode = 'P'\ntoken_env = 'NOT_SET_ANYWHERE'\n", "TTBRIDGE_CONFIG [[pixels]] #1: 'token_env' must name"),
    ("[routing]\ndefault = 'NOPE'\n", "routing.default: pixel 'NOPE' is not configured"),
    ("not toml [", "TTBRIDGE_CONFIG: "),
])
def test_wrong_toml_is_one_clear_line(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(SettingsError) as e:
        load({"TTBRIDGE_CONFIG": str(path)})
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
