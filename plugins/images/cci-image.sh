#!/usr/bin/env bash
# Builds the cci image on Ubuntu 22.04 (run by 'cci build' as root in the build container):
# Docker, Node.js 20 + npm, the Claude Code CLI, the GitHub CLI, tmux, git, curl and build tools,
# and the user 'code' (uid 1000) with passwordless sudo, so 'sudo poweroff' ends a session.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
CODE_UID=1000

step() { printf '\n--- %s\n' "$*"; }

step "base packages"
apt-get update
apt-get install -y --no-install-recommends \
    ca-certificates curl gnupg git tmux sudo build-essential locales less vim-tiny \
    openssh-client unzip jq python3 iproute2

step "Docker"
apt-get install -y --no-install-recommends docker.io
systemctl enable docker

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

step "Claude Code"
npm install -g @anthropic-ai/claude-code
claude --version

step "the user 'code' (uid $CODE_UID)"
existing=$(getent passwd "$CODE_UID" | cut -d: -f1 || true)
if [ -n "$existing" ] && [ "$existing" != code ]; then
    # Ubuntu images ship 'ubuntu' with uid 1000: it becomes 'code'
    usermod --login code --home /home/code --move-home "$existing"
    groupmod --new-name code "$(id -gn code)"
elif [ -z "$existing" ]; then
    useradd --create-home --uid "$CODE_UID" --shell /bin/bash code
fi
usermod --append --groups docker code
echo 'code ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cci-code
chmod 0440 /etc/sudoers.d/90-cci-code
visudo --check --file /etc/sudoers.d/90-cci-code

step "clean up"
apt-get clean
rm -rf /var/lib/apt/lists/* /root/.npm
