"""cci's SHA-256 is the standard one, without OpenSSL's library."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from cci_core.api import sha1, sha256


def test_it_gives_the_standard_digest_whole_and_in_pieces() -> None:
    data = bytes(range(256)) * 300
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    running = sha256()
    for start in range(0, len(data), 4097):
        running.update(data[start:start + 4097])
    assert running.digest() == hashlib.sha256(data).digest()
    assert sha256().hexdigest() == hashlib.sha256(b"").hexdigest()
    assert sha1(data).digest() == hashlib.sha1(data).digest()


def test_naming_a_workspace_loads_no_openssl() -> None:
    code = ("import sys; from pathlib import Path; from cci_core.naming import container_name; "
            "container_name(Path('/tmp'), 1); print('_hashlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
