import tomllib

import pytest

from appliance.config import DEFAULT_FILE, load_config
from appliance.errors import InvalidInput


def test_the_shipped_config_loads_and_gives_the_source_design_weights() -> None:
    config = load_config(env={})
    assert config.events.weights["product_viewed"] == 0.1
    assert config.events.weights["product_clicked"] == 2.0
    assert config.events.weights["product_added_to_cart"] == 5.0
    assert config.encoder.dim == 384
    assert config.server.port == 8000


def test_every_key_in_config_toml_is_commented_with_its_default() -> None:
    lines = DEFAULT_FILE.read_text().splitlines()
    keyed = [ln for ln in lines if "=" in ln.split("#")[0] and not ln.lstrip().startswith("#")]
    assert keyed, "no keys found"
    missing = [ln for ln in keyed if "# default" not in ln]
    assert missing == []


def test_env_overrides_file_and_values_are_typed(tmp_path) -> None:
    shop = tmp_path / "shop.toml"
    shop.write_text('[server]\nport = 9100\ndata_dir = "/srv/shop"\n')
    config = load_config(shop, env={"APPLIANCE_SERVER__PORT": "9200", "APPLIANCE_FEED__PER_PAGE": "30"})
    assert config.server.port == 9200
    assert config.server.data_dir == "/srv/shop"
    assert config.feed.per_page == 30


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"catalog": {"tier_thresholds": [100.0, 25.0, 300.0]}}, "catalog.tier_thresholds"),
        ({"events": {"weights": {"product_viewed": -1.0}}}, "events.weights"),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"server": {"colour": "blue"}}, "server"),
        ({"server": {"gc_full_pass_threshold": 0}}, "server.gc_full_pass_threshold"),
        ({"server": {"switch_interval_ms": 0}}, "server.switch_interval_ms"),
        ({"feed": {"per_page": 500}}, "feed.per_page"),
        ({"training": {"negatives": "some"}}, "training.negatives"),
        ({"queue": {"backend": "kafka"}}, "queue.backend"),
        ({"queue": {"backend": "sqs"}}, "queue.sqs_queue_url"),
        ({"queue": {"outbox_batch": 11}}, "queue.outbox_batch"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(overrides, field) -> None:
    with pytest.raises(InvalidInput) as err:
        load_config(env={}, overrides=overrides)
    assert err.value.field == field


def test_every_section_is_a_table_of_the_config() -> None:
    data = tomllib.loads(DEFAULT_FILE.read_text())
    config = load_config(env={})
    assert set(data) == {name for name in vars(config)}


def test_every_key_is_named_in_the_readme() -> None:
    readme = (DEFAULT_FILE.parent / "README.md").read_text()
    data = tomllib.loads(DEFAULT_FILE.read_text())
    keys = [key for section in data.values() for key in section]
    assert [k for k in keys if f"`{k}`" not in readme and k != "weights"] == []


def test_the_services_take_the_configured_switch_interval(tmp_path, encoder) -> None:
    import sys

    from web.services import build_services

    before = sys.getswitchinterval()
    config = load_config(env={}, overrides={"server": {"data_dir": str(tmp_path), "load_demo": False,
                                                       "switch_interval_ms": 0.25}})
    services = build_services(config, encoder)
    try:
        assert sys.getswitchinterval() == pytest.approx(0.00025)
        assert load_config(env={}).server.switch_interval_ms == 0.5  # the shipped default
    finally:
        services.close()
        sys.setswitchinterval(before)
