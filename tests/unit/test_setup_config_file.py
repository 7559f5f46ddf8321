"""``cci setup`` records the policy network range in a config file: existing content kept, idempotent."""

from __future__ import annotations

import pytest

from cci_core.config.sources import _tomllib
from cci_core.errors import ConfigError
from cci_builtin_plugins.setup.config_file import HEADER, recorded, with_setting


def add(text: str | None) -> str:
    return with_setting(text, "incus", "network_subnets", "10.150.0.0/16", path="/etc/cci/config.toml")


def test_a_new_file_says_who_wrote_it() -> None:
    text = add(None)
    assert text.startswith(HEADER)
    assert "cci setup" in HEADER
    assert _tomllib().loads(text) == {"incus": {"network_subnets": "10.150.0.0/16"}}


def test_the_key_goes_under_an_existing_incus_table_and_everything_else_stays() -> None:
    before = ('# my settings\n[defaults]\nimage = "cci-rust"  # mine\n\n[incus] # the daemon\n'
              'project = "work"\n\n[network]\nmode = "open"\n')
    after = add(before)
    assert after == before.replace('[incus] # the daemon\n', '[incus] # the daemon\nnetwork_subnets = "10.150.0.0/16"\n')
    assert _tomllib().loads(after)["incus"] == {"project": "work", "network_subnets": "10.150.0.0/16"}


def test_without_an_incus_table_one_is_appended() -> None:
    before = '[defaults]\nimage = "x"'  # no newline at the end
    after = add(before)
    assert after.startswith(before + "\n")
    assert _tomllib().loads(after) == {"defaults": {"image": "x"}, "incus": {"network_subnets": "10.150.0.0/16"}}


def test_adding_again_changes_nothing() -> None:
    once = add('[incus]\nproject = "work"\n')
    assert add(once) == once


def test_a_value_recorded_already_is_kept() -> None:
    before = '[incus]\nnetwork_subnets = "10.99.0.0/16"\n'
    assert add(before) == before
    assert recorded(before, "incus", "network_subnets") == "10.99.0.0/16"
    assert recorded('incus.network_subnets = "auto"\n', "incus", "network_subnets") == "auto"
    assert recorded(None, "incus", "network_subnets") is None


def test_an_inline_table_is_refused_rather_than_broken() -> None:
    with pytest.raises(ConfigError) as error:
        add('incus = { project = "work" }\n')
    assert error.value.message == "cannot add [incus] network_subnets to /etc/cci/config.toml safely"
    assert "add 'network_subnets = \"10.150.0.0/16\"' under [incus] yourself" in error.value.hint


def test_a_file_that_is_not_toml_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        add("[incus\n")
    assert error.value.message.startswith("/etc/cci/config.toml is not valid TOML")
