"""``cci build --source auto``: the image server when it answers from the host, else the host path."""

from __future__ import annotations

#: what is asked of the image server, and how long it may take
SERVER_INDEX = "https://images.linuxcontainers.org/streams/v1/index.json"
TIMEOUT = 5.0


def choose_source(url: str = SERVER_INDEX, timeout: float = TIMEOUT) -> tuple[str, str]:
    """``("server", why)`` when ``url`` answers within ``timeout`` seconds, else ``("host", why)``."""
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(url).netloc
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a constant https URL)
            response.read(1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return "host", f"the image server {host} is unreachable ({reason}); --source server forces it"
    return "server", f"the image server {host} answered in {time.monotonic() - started:.1f} s; --source host avoids it"
