"""A network partition for the fault suite (benchmarks/faults.py): the workers on a host of their own,
a Linux network namespace, behind a router namespace that can drop every packet between them and
Redis/Postgres, silently (no RST, no ICMP), both ways, while their links stay up and the model
endpoints stay reachable. The same construction as the reproductions' netlab (needs root and iproute2).

    root namespace (this run, Redis, Postgres, the doubles)  10.78.1.2 services, 10.78.1.3 endpoints
        | veth
    router namespace  10.78.1.1 / 10.78.2.1   <- the cut: `ip rule ... blackhole` 10.78.2.2 <-> 10.78.1.2
        | veth
    worker namespace  10.78.2.2   (every `herd worker` of the run)

The embedded Redis and Postgres listen on 127.0.0.1 only, which another namespace cannot reach, so
`socat` forwards 10.78.1.2:PORT (and 10.78.1.3:PORT for each double) to 127.0.0.1:PORT in the root
namespace. The cut drops the packets between the worker host and 10.78.1.2 in the router, so the
workers' connections to the forwarders hang exactly as across a real partition.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.processes import Procs

SERVICES_IP, ENDPOINTS_IP, ROUTER_UP, ROUTER_DOWN, WORKER_IP = (
    "10.78.1.2",
    "10.78.1.3",
    "10.78.1.1",
    "10.78.2.1",
    "10.78.2.2",
)
_CUT = ((WORKER_IP, SERVICES_IP, 1000), (SERVICES_IP, WORKER_IP, 1001))


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if r.returncode:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")


class Netlab:
    """The three namespaces of one run, named after its pid (nothing else on the machine is touched)."""

    def __init__(self, procs: Procs) -> None:
        tag = f"hf{os.getpid()}"
        self.router, self.worker = f"{tag}r", f"{tag}w"
        self.veths = (f"{tag}a", f"{tag}b", f"{tag}c", f"{tag}d")  # root-router pair, router-worker pair
        self.procs = procs
        self.up = False

    @staticmethod
    def unavailable() -> str | None:
        """Why namespaces cannot be used here, or None."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        missing = [tool for tool in ("ip", "socat") if shutil.which(tool) is None]
        if missing:
            return f"{' and '.join(missing)} not found on PATH"
        return None

    def start(self) -> None:
        """Build the namespaces; OSError (with the failing `ip` command) if the kernel refuses."""
        a, b, c, d = self.veths
        r, w = self.router, self.worker
        self.up = True  # from here `stop` removes whatever was made
        for ns in (r, w):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", b, "netns", r)
        _ip("link", "add", c, "type", "veth", "peer", "name", d)
        _ip("link", "set", c, "netns", r)
        _ip("link", "set", d, "netns", w)
        _ip("addr", "add", f"{SERVICES_IP}/24", "dev", a)
        _ip("addr", "add", f"{ENDPOINTS_IP}/24", "dev", a)
        _ip("link", "set", a, "up")
        _ip("-n", r, "addr", "add", f"{ROUTER_UP}/24", "dev", b)
        _ip("-n", r, "addr", "add", f"{ROUTER_DOWN}/24", "dev", c)
        _ip("-n", w, "addr", "add", f"{WORKER_IP}/24", "dev", d)
        for ns, dev in ((r, b), (r, c), (w, d)):
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("route", "add", "10.78.2.0/24", "via", ROUTER_UP)
        _ip("-n", w, "route", "add", "default", "via", ROUTER_DOWN)
        subprocess.run(
            ["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True, timeout=20
        )

    def forward(self, ip: str, port: int, log: Path) -> None:
        """`socat` from ip:port to 127.0.0.1:port in the root namespace, for the whole run."""
        cmd = ["socat", f"TCP-LISTEN:{port},bind={ip},reuseaddr,fork", f"TCP:127.0.0.1:{port}"]
        self.procs.start(cmd, env=dict(os.environ), log=log)

    def wrap(self, cmd: list[str]) -> list[str]:
        """`cmd` run on the worker host (`ip netns exec` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.worker, *cmd]

    def cut(self) -> str:
        for src, dst, prio in _CUT:
            _ip("-n", self.router, "rule", "add", "from", src, "to", dst, "blackhole", "prio", str(prio))
        return f"partition: every packet between the workers ({WORKER_IP}) and Redis/Postgres dropped"

    def heal(self) -> str:
        for _src, _dst, prio in _CUT:
            _ip("-n", self.router, "rule", "del", "prio", str(prio))
        return "partition healed"

    def stop(self) -> None:
        """Remove the namespaces (their veths go with them) and the route; forwarders stop with procs."""
        if not self.up:
            return
        self.up = False
        subprocess.run(["ip", "route", "del", "10.78.2.0/24"], capture_output=True, timeout=20)
        for ns in (self.worker, self.router):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", self.veths[0]], capture_output=True, timeout=20)
