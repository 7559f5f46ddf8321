#!/usr/bin/env python3
"""The proxy mode's cost: requests through a plan's proxy against direct ones, and session start against ``restricted``.

    sudo .venv/bin/python benchmarks/proxy.py [--runs N] [--requests N] [--project P] [--image I]

(a) Per request, to the same local test server (tests/network_hosts.py: 198.51.100.2 in a network
    namespace, HTTPS on 443 with a test CA, HTTP on 8080), timed inside the container by
    tests/web_client.py: "direct" from a container on the ``restricted`` bridge, "proxy" from a
    ``proxy``-mode container through its proxy (the Incus proxy device, squid splicing the TLS it
    does not terminate). Each with a new connection per request and with one kept-alive
    connection. Prints the median and p90 of each, the milliseconds the proxy adds at the median
    (target: under 2 ms) and sequential requests per second (1000 / mean ms).
(b) ``cci run -- true`` in proxy mode against restricted (alternating): with the proxy already
    running (another container of the plan keeps it up), and with the proxy stopped before each
    run (the first launch after a pause starts it). Target: within 1.5x with the proxy running.

Needs root (the test hosts) and the Incus test environment with an image that has python3 (default
cci-test-claude) and the proxy image ([network] proxy_image, default cci-proxy; cci builds it when
missing). Runs in the test project (default cci-test); deletes what it made (its containers, its
proxy network and proxy container). Prints medians and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from lifecycle import incus_options, median_p90, report, sh  # noqa: E402  (benchmarks/ is no package)

NAME = "bench.ccit.test"
PROXY = "127.0.0.1:3128"
CAFILES = ("/etc/cci/ca-certificates.crt", "/workspace/ccit-ca.pem")
#: inside a container with a NIC: until its DHCP lease gives it a route (20 s at most)
WAIT_FOR_ROUTE = "for i in $(seq 100); do [ $(wc -l < /proc/net/route) -gt 1 ] && break; sleep 0.2; done"
#: requests dropped from the front of each series (connection set-up of the kept-alive one, caches)
WARM_UP = 20


def proxy_settings(ca: Path) -> dict[str, object]:
    """The benchmark's ``[network]``: one name, on 443 and 8080, resolved by the proxy's host map."""
    from tests.network_hosts import INTERNET_HOSTS, WEB_PORT

    return {"mode": "proxy", "allowed_domains": [NAME, f"{NAME}:{WEB_PORT}"], "hosts": {NAME: INTERNET_HOSTS[0]},
            "proxy_trust_ca": str(ca)}


def toml(settings: dict[str, object]) -> str:
    lines = ["[network]"]
    for key, value in settings.items():
        if isinstance(value, dict):
            value = "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()) + " }"
        else:
            value = json.dumps(value)
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def proxy_network(settings: dict[str, object]) -> str:
    """The bridge cci makes for ``settings`` (NAT off, as in the tests)."""
    from cci_core.config import NetworkConfig
    from cci_builtin_plugins.incus.networks import network_name
    from cci_builtin_plugins.network.proxy import ProxyPolicy

    return network_name(ProxyPolicy(presets={}).plan(NetworkConfig(**settings)), nat=False)  # type: ignore[arg-type]


def workspace(root: Path, name: str, settings: dict[str, object], ca: Path) -> Path:
    """A workspace with a trusted ``.cci.toml``, the web client and the test CA."""
    from tests.network_hosts import WEB_CLIENT
    from tests.workspace_config import write_trusted

    made = root / name
    made.mkdir()
    made.chmod(0o755)
    write_trusted(made, toml(settings))
    shutil.copy(WEB_CLIENT, made / "web_client.py")
    shutil.copy(ca, made / "ccit-ca.pem")
    return made


def timed_requests(cci: str, where: Path, env: dict[str, str], spec: dict[str, object], count: int,
                   keep_alive: bool) -> list[float]:
    """Milliseconds per request, measured inside a fresh container of ``where``'s plan."""
    client = ["python3", "/workspace/web_client.py", *(f"--cafile {path}" for path in CAFILES),
              "--repeat", str(count + WARM_UP), *(["--keep-alive"] if keep_alive else []), shlex.quote(json.dumps(spec))]
    # 'cci run' does not wait for the boot: a container with a NIC waits for its DHCP lease (a route) first
    script = f"{WAIT_FOR_ROUTE}; {' '.join(client)}" if "proxy" not in spec else " ".join(client)
    result = subprocess.run([cci, "run", "--", "bash", "-c", script], cwd=where, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    if result.returncode:
        raise SystemExit(f"cci run failed ({result.returncode}): {result.stderr.strip()}")
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    if timing["errors"]:
        raise SystemExit(f"requests failed ({spec}): {timing['errors'][:3]}")
    return [float(ms) for ms in timing["ms"][WARM_UP:]]


def request_line(label: str, direct: list[float], proxied: list[float]) -> None:
    (d50, d90), (p50, p90) = median_p90(direct), median_p90(proxied)
    added = p50 - d50
    rps = (1000 / statistics.fmean(direct), 1000 / statistics.fmean(proxied))
    print(f"{label:<30}{d50:>9.2f}{d90:>8.2f}{p50:>10.2f}{p90:>8.2f}{added:>9.2f}{p50 / d50:>7.2f}"
          f"{rps[0]:>9.0f}{rps[1]:>9.0f}  target added < 2 ms {'ok' if added < 2 else 'OVER'}")


def one_ms(action: Callable[[], object]) -> float:
    """Wall time of one call of ``action`` in milliseconds."""
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def proxy_status(incus: list[str], proxy: str) -> str:
    """The status of container ``proxy`` (lower case; "" when there is none)."""
    result = subprocess.run([*incus, "list", "--format", "json", f"^{proxy}$"], capture_output=True, text=True,
                            check=False)
    found = [item for item in json.loads(result.stdout or "[]") if item["name"] == proxy]
    return str(found[0]["status"]).lower() if found else ""


def wait_proxy(incus: list[str], proxy: str, status: str, timeout: float = 120) -> None:
    """Until container ``proxy`` has ``status`` (``stopped``: stopped by hand when cci left it running)."""
    if status == "stopped" and proxy_status(incus, proxy) == "running":
        subprocess.run([*incus, "stop", "--force", proxy], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while (current := proxy_status(incus, proxy)) != status:
        if time.monotonic() > deadline:
            raise SystemExit(f"the proxy {proxy} is {current or 'missing'}, not {status}, after {timeout} s")
        time.sleep(0.2)


def containers_of(incus: list[str], workspace: Path) -> list[str]:
    """The containers cci labelled with ``workspace``."""
    result = subprocess.run([*incus, "list", "--format", "json"], capture_output=True, text=True, check=False)
    return [item["name"] for item in json.loads(result.stdout or "[]")
            if item.get("config", {}).get("user.cci.workspace") == str(workspace)]


def main() -> int:
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--requests", type=int, default=200)
    extra, sys.argv[1:] = ours.parse_known_args()
    args = incus_options(__doc__, 7, os.environ.get("CCI_TEST_CLAUDE_IMAGE", "cci-test-claude"))
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/proxy.py needs root (the test hosts are network namespaces)")

    from cci_builtin_plugins.incus.proxy import proxy_name
    from tests.incus_env import NETWORK_SUBNETS
    from tests.network_hosts import INTERNET_HOSTS, WEB_PORT, TestHosts

    incus = ["incus", "--project", args.project]
    with tempfile.TemporaryDirectory() as scratch_dir, TestHosts(wait=600) as hosts:
        scratch = Path(scratch_dir)
        scratch.chmod(0o755)
        home = scratch / "home"
        home.mkdir()
        os.environ["HOME"] = str(home)  # write_trusted trusts in $HOME/.cci, where cci reads it
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
               "CCI_INCUS_PROJECT": args.project, "CCI_DEFAULTS_IMAGE": args.image,
               "CCI_INCUS_NETWORK_NAT": "false", "CCI_INCUS_NETWORK_SUBNETS": NETWORK_SUBNETS}
        settings = proxy_settings(hosts.ca_file)
        network = proxy_network(settings)
        proxy = proxy_name(network)
        proxied = workspace(scratch, "proxied", settings, hosts.ca_file)
        direct = workspace(scratch, "direct", {"mode": "restricted"}, hosts.ca_file)
        keeper: subprocess.Popen[bytes] | None = None
        try:
            # (a) requests; one untimed run of each plan makes its network (and the proxy) first
            sh(args.cci, "--workspace", str(proxied), "run", "--", "true", env=env)
            sh(args.cci, "--workspace", str(direct), "run", "--", "true", env=env)
            print(f"{'(a) per request':<30}{'direct ms':>9}{'p90':>8}{'proxy ms':>10}{'p90':>8}{'added':>9}"
                  f"{'ratio':>7}{'req/s':>9}{'req/s':>9}  ({extra.requests} requests each, {args.image})")
            series = {
                "HTTPS": ({"url": f"https://{NAME}/", "connect": f"{INTERNET_HOSTS[0]}:443"},
                          {"url": f"https://{NAME}/", "proxy": PROXY}),
                "HTTP": ({"url": f"http://{INTERNET_HOSTS[0]}:{WEB_PORT}/"},
                         {"url": f"http://{NAME}:{WEB_PORT}/", "proxy": PROXY}),
            }
            for protocol, (direct_spec, proxy_spec) in series.items():
                for keep_alive in (False, True):
                    label = f"{protocol}, {'kept alive' if keep_alive else 'new connection each'}"
                    request_line(label,
                                 timed_requests(args.cci, direct, env, direct_spec, extra.requests, keep_alive),
                                 timed_requests(args.cci, proxied, env, proxy_spec, extra.requests, keep_alive))

            # (b) session start, proxy against restricted, alternating: proxy stopped before each, then kept running
            def run_true(where: Path) -> Callable[[], None]:
                return lambda: sh(args.cci, "--workspace", str(where), "run", "--", "true", env=env)

            cold: list[float] = []
            restricted_cold: list[float] = []
            for _ in range(args.runs):
                wait_proxy(incus, proxy, "stopped")
                cold.append(one_ms(run_true(proxied)))
                restricted_cold.append(one_ms(run_true(direct)))
            keeper = subprocess.Popen([args.cci, "run", "--", "sleep", "3600"], cwd=proxied, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            wait_proxy(incus, proxy, "running")
            warm: list[float] = []
            restricted_warm: list[float] = []
            for _ in range(args.runs):
                warm.append(one_ms(run_true(proxied)))
                restricted_warm.append(one_ms(run_true(direct)))
            print(f"\n{'(b) cci run -- true':<34}{'proxy ms':>10}{'p90':>9}{'restr. ms':>11}{'ratio':>8}"
                  f"   ({args.runs} runs each)")
            report("proxy running", median_p90(warm), median_p90(restricted_warm), 1.5)
            report("proxy stopped before each run", median_p90(cold), median_p90(restricted_cold), 1.5)
        finally:
            if keeper is not None:
                keeper.terminate()
                keeper.wait(timeout=120)
            for where in (proxied, direct):  # a run killed above may leave its container
                for name in containers_of(incus, where):
                    subprocess.run([*incus, "delete", "--force", name], capture_output=True, check=False)
            subprocess.run([args.cci, "network", "delete", network], env=env, capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
