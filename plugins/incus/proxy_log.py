"""The request log of a plan's proxy: squid's JSON lines (:data:`LOG_FORMAT`) read back as :class:`RequestRecord`.

Every value in the log may come from the agent (a method, a host name, a TLS server
name): squid writes those URL-encoded, and :func:`parse_line` never fails on a line,
whatever it holds; it gives None for what is not a request (squid's extra line for a
CONNECT it peeked at or bumped, a line cut short, garbage). Display the strings through
``printable`` (they are decoded, not cleaned).
"""

from __future__ import annotations

import json
import math
from urllib.parse import unquote

from cci_core.api import RequestRecord

#: the most characters the log keeps of a value the agent chooses (a host, a TLS server name), URL-encoded: a line
#: stays far below :data:`MAX_LINE` (a 60000-byte server name made a line the reader skipped)
MAX_FIELD = 1000
#: the squid log format the proxy writes (:mod:`cci_builtin_plugins.incus.squid` uses it): every value a string
LOG_FORMAT = ('{"time":"%ts.%03tu","client":"%>a","method":"%#.100rm",'
              f'"host":"%#.{MAX_FIELD}>rd","port":"%>rP","sni":"%#.{MAX_FIELD}ssl::>sni",'
              '"status":"%>Hs","squid":"%Ss","bump":"%ssl::bump_mode",'
              '"rule":"%#note{rule}","sent":"%>st","received":"%<st","ms":"%tr"}')
#: the rule the log names for a request no rule allows, and for a TLS server name that is not the CONNECT's
NO_RULE = "no rule"
SNI_MISMATCH = "TLS server name is not the requested host"
#: the longest line read (a longer one is not a record)
MAX_LINE = 64 * 1024


def parse_line(text: str) -> RequestRecord | None:
    """The request of one log line, or None when the line is no request record."""
    if len(text) > MAX_LINE:
        return None
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict) or not all(isinstance(value, str) for value in fields.values()):
        return None
    squid = fields.get("squid", "")
    if squid in ("", "-") or squid.startswith("NONE") and fields.get("bump") != "terminate":
        return None  # squid's extra line for a CONNECT it peeked at or bumped (the request has its own)
    time = _number(fields.get("time"))
    method = _text(fields.get("method"))
    if time is None or not method:
        return None
    rule = _text(_text(fields.get("rule")))  # URL-encoded in squid's configuration, then in the log
    status = _integer(fields.get("status"))
    denied = "DENIED" in squid or not rule.startswith("allow ")
    if denied and status == 200 and method == "CONNECT":
        # squid accepted the CONNECT, then refused inside TLS (its 403) or cut the TLS handshake (terminate): the
        # client got no tunnel; the log says what it saw
        status = 403 if "DENIED" in squid else 0
    return RequestRecord(
        time=time, method=method, host=_text(fields.get("host")), port=_integer(fields.get("port")),
        allowed=not denied, rule=rule, status=status, sni=_text(fields.get("sni")),
        sent=_integer(fields.get("sent")), received=_integer(fields.get("received")),
        duration_ms=_integer(fields.get("ms")), client=_text(fields.get("client")),
    )


def _text(value: str | None) -> str:
    """A URL-encoded log value decoded; squid's ``-`` (no value) as ""."""
    if value is None or value == "-":
        return ""
    return unquote(value, errors="replace")


def _number(value: str | None) -> float | None:
    try:
        number = float(value or "")
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _integer(value: str | None) -> int:
    try:
        number = int(value or "0")
    except ValueError:
        return 0
    return number if 0 <= number < 2**63 else 0
