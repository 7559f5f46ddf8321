"""The proxy's request log read back: squid's JSON lines (as a real squid 6 wrote them), duplicates and garbage."""

from __future__ import annotations

import json

import pytest

from cci_builtin_plugins.incus import proxy_log, squid
from cci_core.api import RequestRecord

#: lines squid 6.13 wrote with squid.render's configuration (tests/integration/test_squid_image.py makes more)
SPLICED_PEEK = ('{"time":"1796313533.976","client":"127.0.0.1","method":"CONNECT","host":"allowed.test","port":"8443",'
                '"sni":"allowed.test","status":"200","squid":"NONE_NONE","bump":"splice","rule":"allow%2520allowed.test'
                '%253A8443%2520%2528allowed_domains%2529","sent":"68","received":"0","ms":"0"}')
SPLICED = ('{"time":"1796313533.981","client":"127.0.0.1","method":"CONNECT","host":"allowed.test","port":"8443",'
           '"sni":"allowed.test","status":"200","squid":"TCP_TUNNEL","bump":"splice","rule":"allow%2520allowed.test'
           '%253A8443%2520%2528allowed_domains%2529","sent":"1795","received":"3071","ms":"5"}')
MISMATCH = ('{"time":"1796313533.992","client":"127.0.0.1","method":"CONNECT","host":"allowed.test","port":"8443",'
            '"sni":"other.test","status":"200","squid":"NONE_NONE","bump":"terminate","rule":"TLS%2520server%2520name'
            '%2520is%2520not%2520the%2520requested%2520host","sent":"68","received":"0","ms":"1"}')
DENIED_GET = ('{"time":"1796313499.702","client":"127.0.0.1","method":"GET","host":"evil%250a.test","port":"80",'
              '"sni":"-","status":"403","squid":"TCP_DENIED","bump":"-","rule":"no%2520rule","sent":"65",'
              '"received":"3335","ms":"0"}')
DENIED_CONNECT = ('{"time":"1796313504.722","client":"127.0.0.1","method":"CONNECT","host":"denied.test","port":"443",'
                  '"sni":"denied.test","status":"200","squid":"TCP_DENIED","bump":"bump","rule":"no%2520rule",'
                  '"sent":"66","received":"0","ms":"2"}')
DENIED_CONNECT_INNER = ('{"time":"1796313504.723","client":"127.0.0.1","method":"GET","host":"denied.test",'
                        '"port":"443","sni":"denied.test","status":"403","squid":"NONE_NONE","bump":"-","rule":"-",'
                        '"sent":"56","received":"3337","ms":"0"}')
REFUSED_CONNECT = ('{"time":"1796315353.041","client":"127.0.0.1","method":"CONNECT","host":"nowhere.test",'
                   '"port":"443","sni":"-","status":"403","squid":"TCP_DENIED","bump":"-","rule":"no%2520rule",'
                   '"sent":"61","received":"510","ms":"0"}')
BUMPED_GET = ('{"time":"1796313555.442","client":"127.0.0.1","method":"GET","host":"allowed.test","port":"8443",'
              '"sni":"allowed.test","status":"0","squid":"TCP_MISS_ABORTED","bump":"bump",'
              '"rule":"allow%2520allowed.test%253A8443%2520%2528allowed_domains%2529","sent":"117","received":"0",'
              '"ms":"2979"}')


def test_the_log_format_is_the_one_squid_writes() -> None:
    assert f"logformat cci_json {proxy_log.LOG_FORMAT}" in squid.render(squid.ProxySpec(()), ())[
        squid.SQUID_CONF][0].decode().splitlines()


def test_a_spliced_tunnel_is_one_allowed_record_with_its_rule() -> None:
    assert proxy_log.parse_line(SPLICED_PEEK) is None  # squid's extra line for the peek
    assert proxy_log.parse_line(SPLICED) == RequestRecord(
        time=1796313533.981, method="CONNECT", host="allowed.test", port=8443, allowed=True,
        rule="allow allowed.test:8443 (allowed_domains)", status=200, sni="allowed.test", sent=1795, received=3071,
        duration_ms=5, client="127.0.0.1")


def test_a_server_name_mismatch_is_a_denied_record() -> None:
    record = proxy_log.parse_line(MISMATCH)
    assert record is not None and not record.allowed and record.rule == proxy_log.SNI_MISMATCH
    assert record.status == 0  # squid answered the CONNECT with 200, then cut the TLS handshake: no answer
    assert (record.host, record.sni) == ("allowed.test", "other.test")


def test_denials_are_denied_records_and_the_inner_line_of_a_denied_connect_is_dropped() -> None:
    get = proxy_log.parse_line(DENIED_GET)
    assert get is not None and not get.allowed and get.rule == proxy_log.NO_RULE and get.status == 403
    assert get.host == "evil%0a.test"  # decoded once: what the client asked for, as it wrote it
    connect = proxy_log.parse_line(DENIED_CONNECT)  # squid 6's way on an ssl-bump port: 200, then 403 inside TLS
    assert connect is not None and not connect.allowed and connect.method == "CONNECT" and connect.status == 403
    refused = proxy_log.parse_line(REFUSED_CONNECT)  # cci's way: 403 to the CONNECT
    assert refused is not None and not refused.allowed and refused.status == 403 and refused.rule == "no rule"
    assert proxy_log.parse_line(DENIED_CONNECT_INNER) is None


def test_a_request_in_a_bumped_tunnel_is_its_own_record() -> None:
    record = proxy_log.parse_line(BUMPED_GET)
    assert record is not None and record.allowed and record.method == "GET" and record.duration_ms == 2979


def test_an_allowed_rule_with_a_denied_result_is_denied() -> None:
    line = json.loads(SPLICED)
    line["squid"] = "TCP_DENIED"
    record = proxy_log.parse_line(json.dumps(line))
    assert record is not None and not record.allowed


@pytest.mark.parametrize("text", [
    "", "garbage", "{", "[]", "null", "1e999", '"text"', '{"squid":"TCP_TUNNEL"}',
    '{"time":"x","method":"GET","squid":"TCP_TUNNEL"}', '{"time":"nan","method":"GET","squid":"TCP_TUNNEL"}',
    '{"time":"-1","method":"GET","squid":"TCP_TUNNEL"}', '{"time":"1","method":"-","squid":"TCP_TUNNEL"}',
    '{"time":"1","method":"GET","squid":"TCP_TUNNEL","port":8443}', '{"time":"1","method":"GET","squid":["x"]}',
    "[" * 100000, "[" * 60000, '{"time":"1","method":"GET","squid":"TCP_TUNNEL","host":"' + "a" * 70000 + '"}',
    "\udcff", '{"time":"1","method":"GET","squid":"TCP_TUNNEL"' + ',"x":"y"' * 10 + "",
])
def test_garbage_is_no_record_and_never_an_error(text: str) -> None:
    assert proxy_log.parse_line(text) is None


def test_hostile_values_are_decoded_but_never_crash() -> None:
    line = json.loads(SPLICED)
    line.update(method="G%1B%5B2J%00ET", host="%ZZ%", port="99999999999999999999999", sent="-5", received="-",
                ms="1.5", sni="%E2%80%AE%FF", rule="%25%25%25", client="\u202e")
    record = proxy_log.parse_line(json.dumps(line))
    assert record is not None
    assert record.method == "G\x1b[2J\x00ET" and record.host == "%ZZ%" and record.sni == "\u202e\ufffd"
    assert (record.port, record.sent, record.received, record.duration_ms) == (0, 0, 0, 0)
    assert not record.allowed and record.rule == "%%%"  # no rule says "allow ...": denied
