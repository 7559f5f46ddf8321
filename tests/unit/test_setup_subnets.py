"""The range ``cci setup`` picks for cci's policy networks avoids the host's routes and Incus's networks."""

from __future__ import annotations

from cci_builtin_plugins.setup.subnets import IPv4Network, parse_ip_routes, parse_proc_route, pick_bridge, pick_range

PROC_ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
br0\t0007D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
vpn\t0000960A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def test_proc_net_route_is_read_without_the_default_route() -> None:
    assert parse_proc_route(PROC_ROUTE) == [IPv4Network("10.213.7.0/24"), IPv4Network("192.0.2.0/24"),
                                            IPv4Network("10.150.0.0/16")]


#: ``ip -4 route show table all`` with a VPN routing through a table of its own (wg-quick's 51820, a policy table)
IP_ROUTES = """default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.2 metric 100
10.213.7.0/24 dev br0 proto kernel scope link src 10.213.7.1 linkdown
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
default dev wg0 table 51820 scope link
10.150.0.0/16 dev wg0 table 51820 scope link
unicast 172.16.8.0/22 via 10.150.0.1 dev wg0 table vpn proto static
10.160.4.9 dev tun0 table 200 scope link
unreachable 10.170.0.0/16 table 200
local 10.213.7.1 dev br0 table local proto kernel scope host src 10.213.7.1
broadcast 10.213.7.255 dev br0 table local proto kernel scope link src 10.213.7.1 linkdown
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
multicast 224.0.0.0/4 dev eth0 table local proto static scope link
"""


def test_routes_of_every_table_count_but_local_broadcast_and_default_ones_do_not() -> None:
    assert parse_ip_routes(IP_ROUTES) == [
        IPv4Network("10.213.7.0/24"), IPv4Network("192.0.2.0/24"), IPv4Network("10.150.0.0/16"),
        IPv4Network("172.16.8.0/22"), IPv4Network("10.160.4.9/32"), IPv4Network("10.170.0.0/16")]
    assert pick_range(parse_ip_routes(IP_ROUTES)) == IPv4Network("10.151.0.0/16")  # not the VPN's table's /16


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


def test_the_facts_read_every_table_through_ip(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cci_builtin_plugins.setup.facts import read_routes

    (tmp_path / "routes").write_text(IP_ROUTES)
    ip = tmp_path / "ip"
    ip.write_text(f'#!/bin/sh\n[ "$*" = "-4 route show table all" ] && exec cat {tmp_path / "routes"}\nexit 1\n')
    ip.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert IPv4Network("10.150.0.0/16") in read_routes()
