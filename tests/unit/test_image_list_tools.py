"""'cci image list': the TOOL column and the json field ``tools`` come from the cci.tool.<name>.version properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cci_core.cli.image_cmd import tool_versions
from cci_core.driver import ImageInfo

PROPERTIES = {"cci.tool.claude.version": "2.1.332", "cci.tool.codex.version": "0.171.0", "cci.tool.version": "x",
              "cci.tool..version": "y", "cci.recipe": "abc", "description": "d"}


def test_tool_versions_are_read_from_the_properties() -> None:
    image = ImageInfo("f" * 64, ("cci",), "d", "", 1, PROPERTIES)
    assert tool_versions(image) == {"claude": "2.1.332", "codex": "0.171.0"}
    assert tool_versions(image._replace(properties={})) == {}


def test_the_list_shows_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.cli import image_cmd
    from cci_core.cli.main import cli
    from cci_core.config import load_config
    from tests.fakes import FakeDriver

    driver = FakeDriver(load_config(tmp_path, environ={}))
    driver.images = {"a" * 64: ImageInfo("a" * 64, ("cci",), "with claude", "2026-01-01T00:00:00Z", 2048,
                                         {"cci.tool.claude.version": "2.1.332"}),
                     "b" * 64: ImageInfo("b" * 64, ("cci-old",), "none", "2025-01-01T00:00:00Z", 1024, {})}
    monkeypatch.setattr(image_cmd, "get_state", lambda ctx: type("State", (), {"driver": driver})())
    table = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "image", "list"])
    header, first, second = table.output.splitlines()
    assert header.split() == ["ALIASES", "FINGERPRINT", "DESCRIPTION", "TOOL", "CREATED", "SIZE"]
    import re

    assert re.split(r"\s{2,}", first)[3] == "claude 2.1.332" and re.split(r"\s{2,}", second)[3] == "-"
    listed = json.loads(CliRunner().invoke(cli, ["--workspace", str(tmp_path), "image", "list", "--format",
                                                 "json"]).output)
    assert [entry["tools"] for entry in listed] == [{"claude": "2.1.332"}, {}]
