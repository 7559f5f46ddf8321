"""Text the agent chose (file names, link targets, config values) never acts on the user's terminal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cci_core.cli.main import cli
from cci_core.terminal_text import escape_in_string, printable, warn
from tests import CCI_SCRIPT

#: an OSC title change, a carriage return and newline that forge a line, CSI as one C1 byte, a right-to-left override
HOSTILE = "a\x1b]0;owned\x07b\r\ncci: all good\x9b31m\u202ed"


def test_printable_escapes_every_control_and_reordering_character_and_keeps_the_rest() -> None:
    assert printable(HOSTILE) == "a\\x1b]0;owned\\x07b\\r\\ncci: all good\\x9b31m\\u202ed"
    assert printable("plain ütf-8 名前\twith a tab") == "plain ütf-8 名前\twith a tab"
    assert printable("bad byte \udcff") == "bad byte \\xff"


def test_a_quoted_string_stays_valid_json_and_toml_with_the_controls_escaped() -> None:
    import tomllib

    quoted = escape_in_string(json.dumps(HOSTILE, ensure_ascii=False))
    assert not any(0x80 <= ord(char) <= 0x9f or char in "\x1b\u202e" for char in quoted)
    assert json.loads(quoted) == HOSTILE and tomllib.loads(f"v = {quoted}")["v"] == HOSTILE


def test_a_warning_is_one_safe_line(capsys: pytest.CaptureFixture[str]) -> None:
    warn(f"workspace file {HOSTILE} was created")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\x9b" not in err and "\u202e" not in err


def test_an_error_naming_a_hostile_path_is_one_safe_line(tmp_path: Path) -> None:
    result = subprocess.run([str(CCI_SCRIPT), "--workspace", str(tmp_path / HOSTILE), "run", "--", "true"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("cci: workspace ")
    assert "\\x1b]0;owned\\x07b\\r\\ncci: all good" in result.stderr and "\x1b" not in result.stderr


def test_config_show_and_trust_escape_what_a_workspace_config_says(tmp_path: Path) -> None:
    text = '[defaults]\nimage = "x\\u009b31m\\u202ey"\n# a comment with a raw C1 control \u009b2J\n'
    (tmp_path / ".cci.toml").write_text(text)
    trusted = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "config", "trust"])
    assert trusted.exit_code == 0, trusted.output
    assert "\u009b" not in trusted.output and "\\x9b2J" in trusted.output
    shown = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "config", "show"])
    assert shown.exit_code == 0, shown.output
    assert 'image = "x\\u009b31m\\u202ey"' in shown.output and "\u202e" not in shown.output
