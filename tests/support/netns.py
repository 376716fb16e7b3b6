"""Several hosts on one machine: Linux network namespaces on a bridge, and partitions.

    with Network.create() as net:          # skipped where namespaces cannot be made
        worker_host = net.host("w1")       # a namespace with an address on the bridge
        argv = worker_host.wrap(["celery", ...])  # runs inside it
        worker_host.partition()            # nothing passes between it and the gateway
        worker_host.block(broker_port)     # only the gateway's broker port is cut off
        worker_host.heal()                 # every rule gone: the link is whole again

- The bridge's own address, `net.gateway`, is this (root) namespace's address
  on the bridge: private servers listen on it (`servers.PostgresServer(also=...)`),
  and processes in a namespace reach them there, as they would a database host.
- A partition is an nftables `drop` in the namespace, both ways: packets
  vanish, as on a real network failure. Connections are not reset; a
  connection that outlives the partition carries on (TCP retransmits), and a
  new one hangs until its own timeout.
- Every name carries this process's pid and a random token: concurrent test
  processes never share a bridge, a namespace or a subnet (subnets are
  allocated under a file lock). Leaving the `with` block deletes every
  namespace and link made in it, even after a failed test; a process killed
  before that leaves its own, which the next `Network.create` sweeps (their
  owner's pid is dead).
- Processes started in a namespace must be killed before the namespace is
  deleted: their sockets are left without a link.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PREFIX = "bfns"  # namespaces: bfns-PID-TOKEN-NAME; links: bfTOKEN... (15 characters at most)
SUBNETS = ipaddress.ip_network("10.231.0.0/16")  # one /24 of it per network
LOCK = Path("/tmp/backfill-netns.lock")
TABLE = "backfill_partition"


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no `ip` or `nft`)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep() -> None:
    """Delete what dead test processes left: their namespaces, then their bridges."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        ours = len(parts) >= 4 and parts[0] == PREFIX and parts[1].isdigit()
        if ours and not _pid_alive(int(parts[1])):
            _ip("netns", "delete", name, check=False)
            _ip("link", "delete", f"bf{parts[2]}br", check=False)


def _used_subnets() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in _ip("-o", "-4", "addr", "show", check=False).stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_subnets()
    candidates = [net for net in SUBNETS.subnets(new_prefix=24) if net not in used]
    if not candidates:
        raise RuntimeError(f"no free /24 left in {SUBNETS}")
    return candidates[secrets.randbelow(len(candidates))]


@dataclass
class Host:
    """One namespace on the bridge: a host of its own, as far as the network goes."""

    namespace: str
    address: str
    gateway: str
    partitioned: bool = False
    blocked: set[int] = field(default_factory=set)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def partition(self) -> None:
        """Drop every packet between this host and the gateway, both ways."""
        self.partitioned = True
        self._apply()

    def block(self, port: int) -> None:
        """Drop the packets between this host and the gateway's TCP `port` only."""
        self.blocked.add(port)
        self._apply()

    def unblock(self, port: int) -> None:
        self.blocked.discard(port)
        self._apply()

    def heal(self) -> None:
        """Remove every partition and block: the link is whole again."""
        self.partitioned = False
        self.blocked.clear()
        self._apply()

    def _apply(self) -> None:
        """Replace the namespace's nftables table with one for the current rules, atomically."""
        out, into = [], []
        if self.partitioned:
            out.append(f"ip daddr {self.gateway} drop")
            into.append(f"ip saddr {self.gateway} drop")
        for port in sorted(self.blocked):
            out.append(f"ip daddr {self.gateway} tcp dport {port} drop")
            into.append(f"ip saddr {self.gateway} tcp sport {port} drop")
        script = "\n".join(
            [
                f"table inet {TABLE}",  # made if missing, so that the delete cannot fail
                f"delete table inet {TABLE}",
                f"table inet {TABLE} {{",
                "  chain out { type filter hook output priority 0; policy accept;",
                *(f"    {rule}" for rule in out),
                "  }",
                "  chain into { type filter hook input priority 0; policy accept;",
                *(f"    {rule}" for rule in into),
                "  }",
                "}",
            ]
        )
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespace, "nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft in {self.namespace} failed: {result.stderr}\n{script}")


class Network:
    """A bridge in this namespace and the hosts (namespaces) attached to it."""

    def __init__(self, token: str, subnet: ipaddress.IPv4Network) -> None:
        self.token, self.subnet = token, subnet
        self.bridge = f"bf{token}br"
        self.gateway = str(subnet.network_address + 1)
        self.hosts: list[Host] = []

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Network]:
        """A network with no host yet; every namespace and link deleted on exit.
        Skipped where namespaces cannot be made, except in CI, where it fails."""
        try:
            _check_usable()
        except NamespacesUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"{exc}. CI is set: the multi-host tests must not be skipped", False)
            pytest.skip(str(exc))
        network = None
        try:
            with _locked():
                _sweep()
                network = cls(secrets.token_hex(3)[:5], _free_subnet())
                _ip("link", "add", network.bridge, "type", "bridge")
                _ip("addr", "add", f"{network.gateway}/24", "dev", network.bridge)
                _ip("link", "set", network.bridge, "up")
            yield network
        finally:
            if network is not None:
                network.destroy()

    def host(self, name: str) -> Host:
        """A new namespace `name` with an address on the bridge and loopback up."""
        number = len(self.hosts) + 1
        namespace = f"{PREFIX}-{os.getpid()}-{self.token}-{name}"
        outer, inner = f"bf{self.token}h{number}", f"bf{self.token}n{number}"
        address = str(self.subnet.network_address + 1 + number)
        _ip("netns", "add", namespace)
        host = Host(namespace, address, self.gateway)
        self.hosts.append(host)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return host

    def destroy(self) -> None:
        """Delete every namespace (their veth ends go with them) and the bridge; never raises."""
        for host in self.hosts:
            _ip("netns", "delete", host.namespace, check=False)
        _ip("link", "delete", self.bridge, check=False)
        self.hosts.clear()


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_usable() -> None:
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        raise NamespacesUnavailable(
            f"{' and '.join(missing)} not found: install iproute2 and nftables"
        )
    if os.geteuid() != 0:
        raise NamespacesUnavailable("network namespaces need root")
