"""Names of the Incus test environment made by scripts/incus-test-env (overridable like the script's)."""

from __future__ import annotations

import functools
import ipaddress
import os
from pathlib import Path

SOCKET = Path(os.environ.get("INCUS_SOCKET", "/var/lib/incus/unix.socket"))
PROJECT = os.environ.get("CCI_TEST_PROJECT", "cci-test")
IMAGE = os.environ.get("CCI_TEST_IMAGE", "cci-test-base")
#: the real default image, with Claude Code (scripts/incus-test-env builds it)
CLAUDE_IMAGE = os.environ.get("CCI_TEST_CLAUDE_IMAGE", "cci-test-claude")
#: the filtering proxy's image (scripts/incus-test-env builds it with 'cci build proxy')
PROXY_IMAGE = os.environ.get("CCI_TEST_PROXY_IMAGE", "cci-proxy")
POOL = os.environ.get("CCI_TEST_POOL", "cci-test")
BRIDGE = os.environ.get("CCI_TEST_BRIDGE", "ccitestbr0")
#: the test bridge's network (scripts/incus-test-env gives it CCI_TEST_SUBNET, default 10.213.7.1/24)
BRIDGE_SUBNET = str(ipaddress.ip_interface(os.environ.get("CCI_TEST_SUBNET", "10.213.7.1/24")).network)
TEST_USER = os.environ.get("CCI_TEST_USER", "ccitest")
#: where cci's policy networks take their subnets in tests (their NAT is off: nothing leaves the machine)
NETWORK_SUBNETS = os.environ.get("CCI_TEST_NETWORK_SUBNETS", "10.214.0.0/16")
#: the test daemon on loopback HTTPS, as a remote of the incus CLI whose config scripts/incus-test-env keeps in
#: STATE_DIR/remote-conf (the test user's; its client certificate trusted)
STATE_DIR = Path(os.environ.get("CCI_TEST_STATE_DIR", "/var/lib/cci-test-env"))
REMOTE = os.environ.get("CCI_TEST_REMOTE", "cci-test-remote")
REMOTE_CONF = STATE_DIR / "remote-conf"
HTTPS_ADDRESS = os.environ.get("CCI_TEST_HTTPS_ADDRESS", "127.0.0.1:18443")
#: where scripts/incus-test-env and the tests keep what they fetch on the host
CACHE_DIR = Path(os.environ.get("CCI_TEST_CACHE_DIR", "/var/cache/cci-test-env"))


@functools.lru_cache(maxsize=1)
def incus_problem() -> str | None:
    """Why the Incus test environment is unusable, or None when it is ready."""
    if not SOCKET.exists():
        return f"no Incus socket at {SOCKET}"
    if not os.access(SOCKET, os.R_OK | os.W_OK):
        return f"no permission on {SOCKET}"
    return None
