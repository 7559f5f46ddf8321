#!/usr/bin/env bash
# GENERATED from plugins/images/contents.py (python -m cci_builtin_plugins.images.contents): do not edit.
# Builds the cci image on Ubuntu 22.04 (run by 'cci build --source server' as root in the build container):
# the packages of contents.py, Node.js 20 and the GitHub CLI from their vendors' apt repositories, and
# the user 'code' (uid 1000) with passwordless sudo, so 'sudo poweroff' ends a session. cci copies the
# tool (Claude Code's binary, fetched on the host) in after this script.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

step() { printf '\n--- %s\n' "$*"; }

step "packages"
apt-get update
apt-get install -y --no-install-recommends \
    bash build-essential ca-certificates curl dbus docker.io git gnupg iproute2 jq less locales \
    openssh-client procps python3 sudo tmux unzip vim-tiny
optional=(docker-cli)
for package in "${optional[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then
        apt-get install -y --no-install-recommends "$package"
    fi
done

step "Node.js 20"
install -d -m 0755 /etc/apt/keyrings
curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key \
    | gpg --dearmor -o /etc/apt/keyrings/nodesource.gpg
echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main" \
    > /etc/apt/sources.list.d/nodesource.list
apt-get update
apt-get install -y nodejs

step "GitHub CLI"
curl -fsSL https://cli.github.com/packages/githubcli-archive-keyring.gpg \
    -o /etc/apt/keyrings/githubcli-archive-keyring.gpg
chmod 0644 /etc/apt/keyrings/githubcli-archive-keyring.gpg
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/githubcli-archive-keyring.gpg]" \
    "https://cli.github.com/packages stable main" > /etc/apt/sources.list.d/github-cli.list
apt-get update
apt-get install -y gh

step "the user 'code' (uid 1000)"
existing=$(getent passwd 1000 | cut -d: -f1 || true)
if [ -n "$existing" ] && [ "$existing" != code ]; then
    # Ubuntu images ship 'ubuntu' with uid 1000: it becomes 'code'
    usermod --login code --home /home/code --move-home "$existing"
    groupmod --new-name code "$(id -gn code)"
elif [ -z "$existing" ]; then
    useradd --create-home --uid 1000 --user-group --shell /bin/bash code
fi
usermod --append --groups docker code
echo 'code ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cci-code
chmod 0440 /etc/sudoers.d/90-cci-code
visudo --check --file /etc/sudoers.d/90-cci-code

step "systemd units"
systemctl enable docker.socket
systemctl disable docker.service containerd.service
systemctl mask systemd-modules-load.service

step "clean up"
apt-get clean
rm -rf /var/lib/apt/lists/*

step "what the first boot would do: the same in every container, so done once here (nothing changes /usr after)"
systemd-sysusers
ldconfig
journalctl --update-catalog
/usr/lib/systemd/systemd-update-done
