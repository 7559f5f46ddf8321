"""One definition of the cci image: the server path's script is generated from it; the host path installs it."""

from __future__ import annotations

import subprocess
import sys

from cci_builtin_plugins.images import contents
from cci_builtin_plugins.images.commands import BUILTIN_SCRIPT
from tests import shellcheck


def test_the_committed_server_script_is_the_generated_one() -> None:
    assert BUILTIN_SCRIPT.read_text() == contents.server_script(), \
        "regenerate it: python -m cci_builtin_plugins.images.contents > plugins/images/cci-image.sh"


def test_the_generator_prints_the_script() -> None:
    result = subprocess.run([sys.executable, "-m", "cci_builtin_plugins.images.contents"], capture_output=True,
                            text=True, check=True)
    assert result.stdout == BUILTIN_SCRIPT.read_text()


def test_the_server_script_installs_every_package_and_sets_up_the_user_and_units() -> None:
    script = contents.server_script()
    words = set(script.replace("\\\n", " ").split())
    assert set(contents.PACKAGES) <= words
    assert f"optional=({' '.join(contents.OPTIONAL_PACKAGES)})" in script
    assert "apt-get install -y nodejs" in script and "apt-get install -y gh" in script  # nodejs brings npm
    assert f"usermod --append --groups docker {contents.USER}" in script
    assert f"echo '{contents.SUDOERS_LINE}' > {contents.SUDOERS_FILE}" in script
    assert "systemctl enable docker.socket" in script and "systemctl mask systemd-modules-load.service" in script
    assert "npm install" not in script  # the tool comes from the host, not from the build container


def test_the_host_path_installs_the_same_packages_plus_the_distribution_extras() -> None:
    packages = set(contents.host_packages())
    assert set(contents.PACKAGES) <= packages
    assert {"nodejs", "npm", "gh"} <= packages
    for needed in ("docker.io", "git", "tmux", "build-essential", "curl", "jq", "python3", "sudo", "locales",
                   "less", "ca-certificates", "openssh-client", "unzip", "dbus"):
        assert needed in packages
    assert {"systemd-sysv", "isc-dhcp-client", "ifupdown"} <= set(contents.SYSTEM_PACKAGES)
    assert "docker-cli" in contents.OPTIONAL_PACKAGES


def test_the_generated_script_passes_shellcheck(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "cci-image.sh"
    script.write_text(contents.server_script())
    result = shellcheck(script)
    assert result.returncode == 0, result.stdout
