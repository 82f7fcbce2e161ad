"""Input topics and their shapes: a preset, a mapping file of one's own, several [[inputs]]."""
from __future__ import annotations

import pytest

from app.job.topics import load_specs
from app.settings import Input, SettingsError, input_topics, load, mapping_config, mapping_configs


def settings_from(tmp_path, body: str, **env):
    path = tmp_path / "ttbridge.toml"
    path.write_text(body)
    return load({"TTBRIDGE_CONFIG": str(path), **env})


def test_the_default_is_one_input_read_as_segment():
    s = load({})
    assert input_topics(s) == (Input("tracking-events", None, None),)
    config = mapping_config(s)
    assert config.click_id_paths == ("properties.click_id", "context.click_id")
    assert config.tiktok_names("Order Completed") == ("Purchase",)


def test_a_mapping_file_extends_the_preset_and_the_settings_still_apply(tmp_path):
    own = tmp_path / "own.toml"
    own.write_text('extends = "segment"\n[event]\nclick_id = ["properties.subid"]\n[events]\n"Quote Requested" = "Lead"\n')
    s = settings_from(tmp_path, f'[ttbridge]\nmapping_file = "{own}"\ndefault_region = "GB"\n'
                                'limited_data_use = true\n')
    config = mapping_config(s)
    assert config.click_id_paths == ("properties.subid",)
    assert config.tiktok_names("Quote Requested") == ("Lead",)
    assert config.tiktok_names("Order Completed") == ("Purchase",)  # the preset's table, merged
    assert (config.default_region, config.limited_data_use) == ("GB", True)


def test_several_inputs_each_with_its_shape_and_topic(tmp_path):
    own = tmp_path / "b.toml"
    own.write_text('[events]\n"Booked" = "Schedule"\n')
    s = settings_from(tmp_path, f'[[inputs]]\ntopic = "web-events"\n\n[[inputs]]\ntopic = "b-events"\n'
                                f'preset = "segment"\nmapping_file = "{own}"\n')
    assert input_topics(s) == (Input("web-events", None, None), Input("b-events", "segment", str(own)))
    configs = mapping_configs(s)
    assert list(configs) == ["web-events", "b-events"]
    assert configs["web-events"].tiktok_names("Booked") == ()
    assert configs["b-events"].tiktok_names("Booked") == ("Schedule",)
    specs = load_specs(s)
    assert (specs["input:web-events"].name, specs["input:b-events"].name) == ("web-events", "b-events")
    assert specs["input:b-events"].config == specs["tracking-events"].config


@pytest.mark.parametrize("body, message", [
    ('[ttbridge]\npreset = "segmnet"\n', "TTBRIDGE_CONFIG [ttbridge].preset: 'segmnet' is not a preset "
                                          "(did you mean 'segment'?)"),
    ('[[inputs]]\ntopic = "a"\npreset = "rudder"\n', "TTBRIDGE_CONFIG [[inputs]] #1.preset: 'rudder' is not a "
                                                     "preset (did you mean 'rudderstack'?)"),
    ('[[inputs]]\ntopic = "a"\n[[inputs]]\ntopic = "a"\n', "TTBRIDGE_CONFIG [[inputs]] #2.topic: 'a' is listed twice"),
    ('[[inputs]]\npreset = "segment"\n', "TTBRIDGE_CONFIG [[inputs]] #1.topic: required, a Kafka topic name, got None"),
    ('[[inputs]]\ntopic = "a"\ntopci = "b"\n', "TTBRIDGE_CONFIG [[inputs]] #1.topci: unknown key (did you mean 'topic'?)"),
    ('[[inputs]]\ntopic = "clicks"\n', "TTBRIDGE_CONFIG [[inputs]] #1.topic: 'clicks' is already TTBRIDGE_TOPIC_CLICKS"),
    ('[ttbridge]\npreset = "segment"\n[[inputs]]\ntopic = "a"\n',
     "TTBRIDGE_CONFIG [ttbridge].preset: with [[inputs]], say it per input"),
    ('[[inputs]]\ntopic = "a"\n[events]\n"X" = "Lead"\n',
     "TTBRIDGE_CONFIG [events]: with [[inputs]], each input's mapping_file holds its [events]"),
    ('inputs = 3\n', "TTBRIDGE_CONFIG [[inputs]]: expected an array of tables, one [[inputs]] per input topic"),
])
def test_wrong_inputs_are_one_clear_line(tmp_path, body, message):
    with pytest.raises(SettingsError) as e:
        settings_from(tmp_path, body)
    assert str(e.value) == message


def test_a_wrong_mapping_file_names_the_file_and_the_key(tmp_path):
    own = tmp_path / "own.toml"
    own.write_text('extends = "segment"\n[user]\nemial = ["traits.email"]\n')
    with pytest.raises(SettingsError) as e:
        settings_from(tmp_path, f'[ttbridge]\nmapping_file = "{own}"\n')
    assert str(e.value) == f"TTBRIDGE_CONFIG mapping_file {own}: user.emial: unknown key (did you mean 'email'?)"
    with pytest.raises(SettingsError) as e:
        settings_from(tmp_path, f'[ttbridge]\nmapping_file = "{tmp_path / "nope.toml"}"\n')
    assert str(e.value) == f"TTBRIDGE_CONFIG mapping_file {tmp_path / 'nope.toml'}: cannot read it (No such file or directory)"


def test_a_mapping_file_without_extends_is_a_shape_of_its_own(tmp_path):
    # A home-made shape: nothing of Segment's (no `type` filter, no Segment paths) comes along.
    own = tmp_path / "shop.toml"
    own.write_text('[event]\nname = ["kind"]\ntimestamp = ["at"]\nevent_id = ["id"]\nclick_id = ["clk"]\n'
                   '[events]\n"sale" = "Purchase"\n[user]\nemail = ["who.email"]\n')
    config = mapping_config(settings_from(tmp_path, f'[ttbridge]\nmapping_file = "{own}"\n'))
    assert config.click_id_paths == ("clk",)
    assert config.tiktok_names("sale") == ("Purchase",)
    assert config.tiktok_names("Order Completed") == ()  # not Segment's table
    assert config.plan.kind_path is None
    assert [(f.name, f.paths) for f in config.plan.hashed_user] == [("email", (("who", "email"),))]


def test_a_preset_and_an_extends_that_say_it_twice_are_refused(tmp_path):
    own = tmp_path / "own.toml"
    own.write_text('extends = "redtrack"\n')
    with pytest.raises(SettingsError) as e:
        settings_from(tmp_path, f'[[inputs]]\ntopic = "a"\npreset = "segment"\nmapping_file = "{own}"\n')
    assert str(e.value) == (f"TTBRIDGE_CONFIG mapping_file {own}: extends: the input already names preset "
                            "'segment'; say it once")
