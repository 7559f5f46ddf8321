"""Names of the Incus test environment made by scripts/incus-test-env (overridable like the script's)."""

from __future__ import annotations

import functools
import ipaddress
import os
from pathlib import Path

SOCKET = Path(os.environ.get("INCUS_SOCKET", "/var/lib/incus/unix.socket"))
PROJECT = os.environ.get("CCI_TEST_PROJECT", "cci-test")
IMAGE = os.environ.get("CCI_TEST_IMAGE", "cci-test-base")
POOL = os.environ.get("CCI_TEST_POOL", "cci-test")
BRIDGE = os.environ.get("CCI_TEST_BRIDGE", "ccitestbr0")
#: the test bridge's network (scripts/incus-test-env gives it CCI_TEST_SUBNET, default 10.213.7.1/24)
BRIDGE_SUBNET = str(ipaddress.ip_interface(os.environ.get("CCI_TEST_SUBNET", "10.213.7.1/24")).network)
TEST_USER = os.environ.get("CCI_TEST_USER", "ccitest")
#: where cci's policy networks take their subnets in tests (their NAT is off: nothing leaves the machine)
NETWORK_SUBNETS = os.environ.get("CCI_TEST_NETWORK_SUBNETS", "10.214.0.0/16")


@functools.lru_cache(maxsize=1)
def incus_problem() -> str | None:
    """Why the Incus test environment is unusable, or None when it is ready."""
    if not SOCKET.exists():
        return f"no Incus socket at {SOCKET}"
    if not os.access(SOCKET, os.R_OK | os.W_OK):
        return f"no permission on {SOCKET}"
    return None
