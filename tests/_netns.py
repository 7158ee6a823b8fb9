"""
Running a test scenario in a private network namespace, so that no datagram
it sends can leave it: the multicast tests send only there.

L{runInNamespace} runs a Python program under C{unshare -n} (a new, empty
network namespace: root, as CI runs), after bringing up its loopback and
routing the multicast groups to it:

  - C{ip route add 224.0.0.0/4 dev lo src 127.0.0.1} for IPv4 groups;
  - C{ip -6 route add local ff00::/8 dev lo} for IPv6 groups.  A plain
    route through C{lo} does not do: Linux turns any route through the
    loopback interface that is not of type C{local} into a reject route,
    and IPv6 multicast sent on it is dropped (C{Ip6OutNoRoutes}).

With C{veth=True} it also makes a pair of virtual Ethernet interfaces whose
two ends are both in the namespace, C{mc0} (10.9.0.1/24, fd00::1/64) and
C{mc1} (10.9.0.2/24, fd00::2/64): what is sent out of one arrives on the
other, and on an interface that is not the loopback one, a sender's
loopback setting decides whether receivers on the host hear it (through
C{lo} they always do).

Where the namespace cannot be made (not root, no C{unshare} or C{ip}, no
C{veth}), L{namespaceUnavailable} says why, and the tests skip with it;
with C{TCPSC_REQUIRE_NETNS=1} in the environment (for CI, which runs as
root and must run them) they fail with it instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Bound of the set-up probe and of a scenario, in seconds.
PROBE_TIMEOUT = 30.0
SCENARIO_TIMEOUT = 60.0

#: The commands that make the namespace ready for multicast, in order.
SETUP = [
    "ip link set lo up",
    "ip route add 224.0.0.0/4 dev lo src 127.0.0.1",
    "ip -6 route add local ff00::/8 dev lo",
]

#: The commands that add the pair of virtual Ethernet interfaces.
VETH = [
    "ip link add mc0 type veth peer name mc1",
    "ip addr add 10.9.0.1/24 dev mc0",
    "ip addr add 10.9.0.2/24 dev mc1",
    "ip -6 addr add fd00::1/64 dev mc0 nodad",
    "ip -6 addr add fd00::2/64 dev mc1 nodad",
    "ip link set mc0 up",
    "ip link set mc1 up",
    # mc1 receives datagrams from an address of this host (mc0's): let it.
    "echo 1 > /proc/sys/net/ipv4/conf/mc1/accept_local",
    "echo 0 > /proc/sys/net/ipv4/conf/mc1/rp_filter",
    "echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter",
    "echo 1 > /proc/sys/net/ipv4/conf/all/accept_local",
]

#: The interfaces' addresses, for the scenarios.
VETH_ADDRESSES = {"mc0": ("10.9.0.1", "fd00::1"), "mc1": ("10.9.0.2", "fd00::2")}


def _shell(veth: bool) -> str:
    commands = SETUP + (VETH if veth else [])
    return " && ".join(commands) + ' && exec "$@"'


def _prefix(veth: bool) -> list[str]:
    unshare = shutil.which("unshare")
    assert unshare is not None
    return [unshare, "-n", "sh", "-c", _shell(veth), "sh"]


@cache
def namespaceUnavailable(veth: bool = False) -> str | None:
    """
    Why a namespace set up for multicast cannot be made here, or C{None} if
    it can.
    """
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed (packages util-linux, iproute2)"
    try:
        probe = subprocess.run([*_prefix(veth), "true"], capture_output=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -n failed: {e}"
    if probe.returncode != 0:
        return (
            "no private network namespace set up for multicast (unshare -n needs root; "
            f"{' && '.join(SETUP + (VETH if veth else []))}): "
            + probe.stderr.decode(errors="replace").strip()
        )
    return None


#: The environment variable that turns a skip for want of a namespace into a
#: failure.
REQUIRE = "TCPSC_REQUIRE_NETNS"


def required() -> bool:
    """
    Whether the namespace tests must run here (C{TCPSC_REQUIRE_NETNS=1}).
    """
    return os.environ.get(REQUIRE, "") not in ("", "0")


def runInNamespace(
    arguments: list[str], veth: bool = False, timeout: float = SCENARIO_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python ARGUMENTS} (this interpreter, from the repository's root)
    in a new network namespace set up for multicast.

    @raise AssertionError: it did not end within C{timeout} seconds.
    """
    try:
        return subprocess.run(
            [*_prefix(veth), sys.executable, *arguments],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        output = e.stdout or b""
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        raise AssertionError(
            f"the scenario {arguments} took more than {timeout:g} s:\n{text}"
        ) from e
