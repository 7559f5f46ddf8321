"""Core commands ask the driver whether a name is acceptable: a bad one is one line, exit 2, before any request."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cci_core.cli.main import cli

RULE = "an Incus container name is 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen"


def refused(*args: str) -> str:
    """The one ``cci:`` line of a command that must fail with exit code 2."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cci: "), result.output
    return lines[0]


@pytest.mark.parametrize("name", ["with space", "x" * 64, "under_score", "trail-", "newline\n"])
def test_container_commands_refuse_a_name_the_driver_refuses(name: str, tmp_path: Path) -> None:
    assert refused("container", "launch", "some-image", name) == f"cci: invalid container name {name!r} ({RULE})"
    assert refused("image", "publish", name, "some-alias") == f"cci: invalid container name {name!r} ({RULE})"
    local = tmp_path / "file"
    local.write_text("x")
    assert refused("file", "push", str(local), f"{name}:/tmp/x") == (
        f"cci: {name + ':/tmp/x'!r} is not CONTAINER:PATH (e.g. my-container:/workspace/file.txt)")


@pytest.mark.parametrize("alias", ["", "with space", "tab\there", "new\nline"])
def test_image_commands_refuse_an_alias_the_driver_refuses(alias: str) -> None:
    assert refused("image", "exists", alias).startswith(f"cci: invalid image alias {alias!r} (")
    assert refused("image", "delete", alias).startswith(f"cci: invalid image alias or fingerprint {alias!r} (")
    assert refused("image", "publish", "a-container", alias).startswith(f"cci: invalid image alias {alias!r} (")
