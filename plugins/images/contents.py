"""What the cci image contains: the one definition both build paths install, so they cannot drift.

The image-server path (``cci build --source server``) runs ``cci-image.sh`` on
Ubuntu 22.04; that script is generated from this module
(``python -m cci_builtin_plugins.images.contents > plugins/images/cci-image.sh``)
and a unit test keeps the committed copy equal. The host path
(``--source host``) installs the same lists into a debootstrapped Debian.
Either way the tool's own files (Claude Code's binary) are fetched on the host
and copied in (see :meth:`cci_core.tool.ToolAdapter.image_files`).
"""

from __future__ import annotations

#: the Debian release the host path installs by default
SUITE = "trixie"
#: installed from the distribution on both paths
PACKAGES = (
    "bash", "build-essential", "ca-certificates", "curl", "dbus", "docker.io", "git", "gnupg", "iproute2", "jq",
    "less", "locales", "openssh-client", "procps", "python3", "sudo", "tmux", "unzip", "vim-tiny",
)
#: installed too where the distribution has them: Debian 13 moved the ``docker`` command out of docker.io
OPTIONAL_PACKAGES = ("docker-cli",)
#: Node.js with npm, and the GitHub CLI: the host path takes them from the distribution; the server path
#: from their vendors' apt repositories (Ubuntu 22.04's are too old)
DISTRIBUTION_EXTRAS = ("nodejs", "npm", "gh")
NODE_MAJOR = 20
#: what debootstrap installs first on the host path (the image server's images have it already):
#: systemd as init, DHCP on eth0, the rest of a session's basics
SYSTEM_PACKAGES = ("bash", "ca-certificates", "dbus", "ifupdown", "iproute2", "iputils-ping", "isc-dhcp-client",
                   "less", "procps", "sudo", "systemd-sysv", "tmux")

#: the container user: cci maps the host user onto it
USER = "code"
UID = 1000
GROUPS = ("docker",)
SUDOERS_FILE = "/etc/sudoers.d/90-cci-code"
SUDOERS_LINE = f"{USER} ALL=(ALL) NOPASSWD:ALL"
#: systemd units enabled, disabled, and masked (module loading fails in a container). Docker starts when its
#: socket is first used, not at every boot: the packages enable docker.service and containerd.service, which
#: took half of a session container's boot
ENABLED_UNITS = ("docker.socket",)
DISABLED_UNITS = ("docker.service", "containerd.service")
MASKED_UNITS = ("systemd-modules-load.service",)
#: run last in the build, in this order: what systemd would run at every container's first boot because /usr is
#: newer than /etc/.updated (systemd-sysusers, ldconfig, systemd-journal-catalog-update and systemd-update-done,
#: the units with ConditionNeedsUpdate=), done once here; the last one writes /etc/.updated and /var/.updated
FIRST_BOOT_WORK = ("systemd-sysusers", "ldconfig", "journalctl --update-catalog",
                   "/usr/lib/systemd/systemd-update-done")


def host_packages() -> tuple[str, ...]:
    """What the host path installs with apt after debootstrap (without the optional ones)."""
    return tuple(sorted(set(PACKAGES) | set(DISTRIBUTION_EXTRAS)))


def definition() -> str:
    """Everything above that the host path installs or sets up, as text (part of its recipe)."""
    return "\n".join([SUITE, *PACKAGES, "|", *OPTIONAL_PACKAGES, "|", *DISTRIBUTION_EXTRAS, "|", *SYSTEM_PACKAGES,
                      "|", USER, str(UID), *GROUPS, SUDOERS_FILE, SUDOERS_LINE, *ENABLED_UNITS,
                      "|", *DISABLED_UNITS, "|", *MASKED_UNITS, "|", *FIRST_BOOT_WORK])


def server_script() -> str:
    """``cci-image.sh``: the server path's build script, made from the lists above."""
    return _SERVER_TEMPLATE.format(
        packages=_wrap(PACKAGES), optional=" ".join(OPTIONAL_PACKAGES), node=NODE_MAJOR, user=USER, uid=UID,
        groups=",".join(GROUPS), sudoers=SUDOERS_FILE, sudoers_line=SUDOERS_LINE,
        enable=" ".join(ENABLED_UNITS), disable=" ".join(DISABLED_UNITS), mask=" ".join(MASKED_UNITS),
        first_boot="\n".join(FIRST_BOOT_WORK),
    )


def _wrap(words: tuple[str, ...], width: int = 100) -> str:
    lines, line = [], "   "
    for word in words:
        if len(line) + len(word) + 3 > width:
            lines.append(line)
            line = "   "
        line += " " + word
    return " \\\n".join([*lines, line])


_SERVER_TEMPLATE = """\
#!/usr/bin/env bash
# GENERATED from plugins/images/contents.py (python -m cci_builtin_plugins.images.contents): do not edit.
# Builds the cci image on Ubuntu 22.04 (run by 'cci build --source server' as root in the build container):
# the packages of contents.py, Node.js {node} and the GitHub CLI from their vendors' apt repositories, and
# the user '{user}' (uid {uid}) with passwordless sudo, so 'sudo poweroff' ends a session. cci copies the
# tool (Claude Code's binary, fetched on the host) in after this script.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

step() {{ printf '\\n--- %s\\n' "$*"; }}

step "packages"
apt-get update
apt-get install -y --no-install-recommends \\
{packages}
optional=({optional})
for package in "${{optional[@]}}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then
        apt-get install -y --no-install-recommends "$package"
    fi
done

step "Node.js {node}"
install -d -m 0755 /etc/apt/keyrings
curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key \\
    | gpg --dearmor -o /etc/apt/keyrings/nodesource.gpg
echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_{node}.x nodistro main" \\
    > /etc/apt/sources.list.d/nodesource.list
apt-get update
apt-get install -y nodejs

step "GitHub CLI"
curl -fsSL https://cli.github.com/packages/githubcli-archive-keyring.gpg \\
    -o /etc/apt/keyrings/githubcli-archive-keyring.gpg
chmod 0644 /etc/apt/keyrings/githubcli-archive-keyring.gpg
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/githubcli-archive-keyring.gpg]" \\
    "https://cli.github.com/packages stable main" > /etc/apt/sources.list.d/github-cli.list
apt-get update
apt-get install -y gh

step "the user '{user}' (uid {uid})"
existing=$(getent passwd {uid} | cut -d: -f1 || true)
if [ -n "$existing" ] && [ "$existing" != {user} ]; then
    # Ubuntu images ship 'ubuntu' with uid {uid}: it becomes '{user}'
    usermod --login {user} --home /home/{user} --move-home "$existing"
    groupmod --new-name {user} "$(id -gn {user})"
elif [ -z "$existing" ]; then
    useradd --create-home --uid {uid} --user-group --shell /bin/bash {user}
fi
usermod --append --groups {groups} {user}
echo '{sudoers_line}' > {sudoers}
chmod 0440 {sudoers}
visudo --check --file {sudoers}

step "systemd units"
systemctl enable {enable}
systemctl disable {disable}
systemctl mask {mask}

step "clean up"
apt-get clean
rm -rf /var/lib/apt/lists/*

step "what the first boot would do: the same in every container, so done once here (nothing changes /usr after)"
{first_boot}
"""


if __name__ == "__main__":
    print(server_script(), end="")
