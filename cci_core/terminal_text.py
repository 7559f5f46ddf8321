"""Text from containers and workspaces, made safe to show on the user's terminal.

File names, link targets, error messages and config values can come from the agent.
Printed as they are, control characters in them could move the cursor, rewrite what
the terminal shows (a forged ``cci:`` line), change the window title, or, with
bidirectional overrides, make text read differently from what it is. Everything cci
prints about such things goes through :func:`printable`, or :func:`escape_in_string`
inside a quoted TOML or JSON string.
"""

from __future__ import annotations

import re

#: C0 controls but tab, DEL, C1 controls, and the Unicode format characters that reorder or hide text
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\udc80-\udcff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` on one line with every control or reordering character shown as an escape (``\\x1b``)."""
    return _UNSAFE.sub(lambda match: _escape(match.group()), text)


def escape_in_string(quoted: str) -> str:
    """A quoted JSON/TOML string (``json.dumps(..., ensure_ascii=False)``) with the characters that JSON
    leaves raw (C1 controls, reordering characters) written as ``\\u`` escapes (four hex digits), which both formats read."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)


def warn(message: str) -> None:
    """Print ``cci: warning: MESSAGE`` on stderr, as one safe line."""
    import sys

    print(f"cci: warning: {printable(message)}", file=sys.stderr, flush=True)
