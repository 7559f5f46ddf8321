"""The range ``cci setup`` picks for cci's policy networks avoids the host's routes and Incus's networks."""

from __future__ import annotations

from cci_builtin_plugins.setup.subnets import IPv4Network, parse_proc_route, pick_bridge, pick_range

PROC_ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
br0\t0007D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
vpn\t0000960A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def test_proc_net_route_is_read_without_the_default_route() -> None:
    assert parse_proc_route(PROC_ROUTE) == [IPv4Network("10.213.7.0/24"), IPv4Network("192.0.2.0/24"),
                                            IPv4Network("10.150.0.0/16")]


def test_the_range_overlaps_no_route() -> None:
    routes = parse_proc_route(PROC_ROUTE)
    assert pick_range(routes) == IPv4Network("10.151.0.0/16")  # 10.150.0.0/16 is routed through the VPN


def test_the_range_overlaps_no_incus_network_even_one_of_a_24() -> None:
    taken = [IPv4Network("10.150.3.0/24"), IPv4Network("10.151.0.0/17")]
    assert pick_range(taken) == IPv4Network("10.152.0.0/16")


def test_a_route_covering_all_of_10_8_moves_the_range_to_172_16_12() -> None:
    assert pick_range([IPv4Network("10.0.0.0/8")]) == IPv4Network("172.16.0.0/16")


def test_nothing_free_is_none() -> None:
    assert pick_range([IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12")]) is None


def test_the_bridge_takes_a_free_24() -> None:
    assert pick_bridge([IPv4Network("10.150.0.0/24"), IPv4Network("10.150.1.0/25")]) == IPv4Network("10.150.2.0/24")
