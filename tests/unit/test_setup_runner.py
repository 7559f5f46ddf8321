"""How ``cci setup`` carries out a plan: progress lines, the facts read again after a refresh step, a failed
command stopping setup, and a step left to the user failing the run at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.errors import CciError
from cci_builtin_plugins.setup.command import Runner
from cci_builtin_plugins.setup.plan import DONE, MANUAL, PENDING, Action, Plan, Step


def touch(path: Path) -> Action:
    return Action(("tee", str(path)), "made\n")


def test_steps_run_in_order_with_progress_and_the_plan_is_made_again_after_a_refresh(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = Plan((Step("one", PENDING, "make a", (touch(tmp_path / "a"),), refresh=True),
                  Step("two", PENDING, "stale plan: never run", (touch(tmp_path / "stale"),))), ())
    again = Plan((Step("one", DONE, "a exists"), Step("two", PENDING, "make b", (touch(tmp_path / "b"),),
                                                      note="b is new")), ("mind b",))
    Runner(first, lambda: again).run("alice")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "cci setup for user alice: 2 steps, 2 to do"
    assert out[1:3] == ["[1/2] one: to do: make a", f"      $ echo made | tee {tmp_path / 'a'}"]
    assert out[3].startswith("      done in ") and "(setup: " in out[3]
    assert out[4:6] == ["[2/2] two: to do: make b", f"      $ echo made | tee {tmp_path / 'b'}"]
    assert out[-3:-1] == ["warning: mind b", "note: b is new"]
    assert out[-1].startswith("cci setup: ready in ") and out[-1].endswith("(2 step(s) done now, 0 done already)")
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text() == "made\n"
    assert not (tmp_path / "stale").exists()


def test_a_failed_command_stops_setup_with_one_line(tmp_path: Path) -> None:
    plan = Plan((Step("one", PENDING, "fail", (Action(("false",)),)), Step("two", PENDING, "never", (touch(tmp_path / "x"),))),
                ())
    with pytest.raises(CciError) as error:
        Runner(plan, lambda: plan).run("alice")
    assert error.value.message == "step 1/2 (one) failed: 'false' exited with 1"
    assert not (tmp_path / "x").exists()


def test_a_missing_program_is_one_line_too() -> None:
    plan = Plan((Step("one", PENDING, "x", (Action(("/nonexistent/prog",)),)),), ())
    with pytest.raises(CciError) as error:
        Runner(plan, lambda: plan).run("alice")
    assert error.value.message == "step 1/1 (one) failed: cannot run /nonexistent/prog: No such file or directory"


def test_a_step_left_to_the_user_fails_the_run_after_the_others(tmp_path: Path) -> None:
    plan = Plan((Step("restart", MANUAL, "run this yourself"), Step("two", PENDING, "b", (touch(tmp_path / "b"),))), ())
    with pytest.raises(CciError) as error:
        Runner(plan, lambda: plan).run("alice")
    assert (tmp_path / "b").exists()
    assert error.value.message.endswith("(1 step(s) done now, 0 done already): restart needs you")


def test_a_failed_cci_command_lets_its_own_error_line_stand(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cci = tmp_path / "cci"  # stands in for cci build: says what failed in its own 'cci:' line
    cci.write_text("#!/bin/sh\necho 'cci: building demo failed: debootstrap failed (the log is x)' >&2\nexit 4\n")
    cci.chmod(0o755)
    plan = Plan((Step("image demo", PENDING, "build it", (Action((str(cci), "build"), own=True),)),), ())
    with pytest.raises(CciError) as error:
        Runner(plan, lambda: plan).run("alice")
    assert capfd.readouterr().err == "cci: building demo failed: debootstrap failed (the log is x)\n"
    assert (error.value.message, error.value.hint) == ("step 1/1 (image demo) stopped with exit code 4",
                                                       "then run cci setup again")

