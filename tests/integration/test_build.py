"""``cci build custom`` on the real Incus, offline: a script on the test base, published and aliased.

Every image made here carries this test's random alias and is deleted afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import assert_error, run_cci

pytestmark = pytest.mark.incus


@pytest.fixture
def alias(driver: IncusDriver) -> Iterator[str]:
    """A fresh image alias; every image carrying it (or its versioned form) is deleted afterwards."""
    name = f"bt{uuid4().hex[:8]}"
    yield name
    for image in driver.list_images():
        if any(alias == name or alias.startswith(f"{name}-") for alias in image.aliases):
            driver.delete_image(image.fingerprint)


def build_containers(driver: IncusDriver) -> list[str]:
    return [info.name for info in driver.list_containers() if info.labels.get("kind") == "build"]


def build(alias: str, script: Path, env: dict[str, str], *extra: str):  # type: ignore[no-untyped-def]
    return run_cci("build", "custom", alias, "--script", str(script), "--base", incus_env.IMAGE, "--offline",
                   *extra, env=env, timeout=300)


def test_custom_build_publishes_a_versioned_image_and_moves_the_alias(
    alias: str, driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "build.sh"
    script.write_text("set -e\necho step-one\necho built-by-script > /etc/cci-built\n")
    before = set(build_containers(driver))
    result = build(alias, script, cci_environ)
    assert result.returncode == 0, result.stderr
    assert "step-one" in result.stdout  # the script's output streams through
    versioned = re.search(rf"publishing ({alias}-\d{{8}}-\d{{6}})", result.stdout).group(1)  # type: ignore[union-attr]
    log = Path(result.stderr.strip().rsplit("log: ", 1)[1])
    assert "step-one" in log.read_text()
    [image] = [image for image in driver.list_images() if alias in image.aliases]
    assert versioned in image.aliases
    assert set(build_containers(driver)) == before  # the build container is gone

    launched = run_cci("run", "--image", alias, "--", "cat", "/etc/cci-built", env=cci_environ, cwd=tmp_path)
    assert (launched.returncode, launched.stdout) == (0, "built-by-script\n"), launched.stderr

    assert_error(build(alias, script, cci_environ), 2, f"image '{alias}' exists already", "--force")
    rebuilt = build(alias, script, cci_environ, "--force")
    assert rebuilt.returncode == 0, rebuilt.stderr
    images = {image.fingerprint: image.aliases for image in driver.list_images()
              if any(name.startswith(alias) for name in image.aliases)}
    assert len(images) == 2  # the first build keeps its versioned alias; the alias moved to the new one
    assert images[image.fingerprint] == (versioned,)


def test_a_failing_script_leaves_no_image_and_no_container(
    alias: str, driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "build.sh"
    script.write_text("echo about-to-fail\nexit 7\n")
    before = set(build_containers(driver))
    result = build(alias, script, cci_environ)
    assert result.returncode == 1
    assert "about-to-fail" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"cci: building {alias} failed: the build script failed with exit code 7 (the log is ")
    assert "about-to-fail" in Path(line.rsplit("the log is ", 1)[1].rstrip(")")).read_text()
    assert not [image for image in driver.list_images() if any(a.startswith(alias) for a in image.aliases)]
    assert set(build_containers(driver)) == before


def test_bad_build_input_is_one_line(alias: str, cci_environ: dict[str, str], tmp_path: Path) -> None:
    assert_error(build(alias, tmp_path / "missing.sh", cci_environ), 2, "cannot read the build script")
    script = tmp_path / "ok.sh"
    script.write_text("true\n")
    assert_error(build("bad/name", script, cci_environ), 2, "'bad/name' is not a valid image name")
    assert_error(run_cci("build", "custom", alias, "--script", str(script), "--base", "no-such-base", "--offline",
                         env=cci_environ), 5, "base image 'no-such-base' not found")
