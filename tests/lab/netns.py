"""Network namespaces joined by veth, with loss (nftables) and reordering (htb)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from lab.base import run, skip, unique_suffix

# --------------------------------------------------------------------------
# network namespaces
# --------------------------------------------------------------------------

def require_netns() -> None:
    """Skip unless we are root and can make a network namespace with a veth."""
    if os.geteuid() != 0:
        skip("needs root for ip netns")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            skip(f"{tool} not installed")
    probe = f"dtprobe{unique_suffix()}"
    res = run(["ip", "netns", "add", probe], timeout=15, check=False)
    if res.returncode != 0:
        skip(f"ip netns not possible: {res.stderr.decode(errors='replace').strip()}")
    run(["ip", "netns", "del", probe], timeout=15, check=False)


@dataclass
class LossRule:
    """Drop percent% (0.1 steps) of TCP packets going from side src ('a'|'b').

    hook="output": dropped in the sender's namespace before its veth, so a
    capture on either side never sees them (the capture has holes that the
    retransmission fills). hook="input": dropped by the receiver after its
    veth, so a capture taken in the receiver's namespace sees the packet and
    then its retransmission (a true duplicate).
    """
    src: str = "a"
    percent: float = 3.0
    hook: str = "output"


class _Namespaces:
    """Namespaces made for a with-block: set up on entry (skip unless possible), and on exit
    every process still inside them killed and the namespaces deleted (those in _made)."""

    _made: list[str]

    def __enter__(self):
        require_netns()
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _setup(self) -> None:
        raise NotImplementedError

    def kill_processes(self) -> None:
        """Kill what still runs inside our namespaces (only processes in them)."""
        for ns in self._made:
            res = run(["ip", "netns", "pids", ns], timeout=15, check=False)
            for pid in res.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)

    def cleanup(self) -> None:
        self.kill_processes()
        for ns in reversed(self._made):
            run(["ip", "netns", "del", ns], timeout=15, check=False)
        self._made.clear()

    def __exit__(self, *exc):
        self.cleanup()
        return False


class NetnsPair(_Namespaces):
    """Two namespaces joined by a veth pair, addressed 10.213.N.1/2 and fd00:213:N::1/2.

    Attributes: ns_a, ns_b, if_a, if_b (veth ends in each), ip_a, ip_b, ip6_a,
    ip6_b, and with vlan=ID also vif_a, vif_b (VLAN sub-interfaces) carrying
    vip_a/vip_b (10.214.N.1/2); the veth itself keeps its addresses too.

    mtu sets both veth ends (and TSO/GSO/GRO are switched off with ethtool
    when offloads=False, the default, so frames on the wire are MTU-sized as
    on a real network and losses hit single segments).
    loss: list of LossRule (or a float: that percent in both directions on output).
    handshake_drop: "syn" drops the first SYN of every IPv4 connection from a to b, "synack" the
    first SYN/ACK b sends back, both at the receiver's input (after a capture on either veth, so
    the capture shows the packet and, about a second later, its retransmission); named twice,
    the first two ("syn", "syn": the SYN goes out three times).
    segment_drop=(N, times): in every IPv4 connection from a to b, the first data segment a sends
    from its N-th packet on (conntrack counts them at b) is dropped at b's input, and so are its
    retransmissions until it was dropped `times` times in all (a capture on either veth shows
    the segment times + 1 times), deterministically, unlike the random loss rules.
    reorder_percent: that share of TCP packets from side reorder_src is put
    in a slow htb class (rate reorder_rate) so they leave later than packets
    sent after them (the kernel has no netem here; htb honours skb->priority
    set by nftables).
    """

    def __init__(self, *, mtu: int = 1500, loss: float | Sequence[LossRule] | None = None,
                 reorder_percent: float = 0.0, reorder_src: str = "a", reorder_rate: str = "20mbit",
                 vlan: int | None = None, offloads: bool = False, name: str = "dt",
                 handshake_drop: Sequence[str] = (), segment_drop: tuple[int, int] | None = None):
        self.suffix = unique_suffix()
        self.ns_a = f"{name}{self.suffix}a"
        self.ns_b = f"{name}{self.suffix}b"
        self.if_a = f"{name}v{self.suffix}a"[:15]
        self.if_b = f"{name}v{self.suffix}b"[:15]
        net = int(self.suffix) % 250 + 1
        self.ip_a, self.ip_b = f"10.213.{net}.1", f"10.213.{net}.2"
        self.ip6_a, self.ip6_b = f"fd00:213:{net}::1", f"fd00:213:{net}::2"
        self.mtu = mtu
        if isinstance(loss, (int, float)):
            loss = [LossRule("a", float(loss)), LossRule("b", float(loss))] if loss else []
        self.loss = list(loss or [])
        self.reorder_percent = reorder_percent
        self.reorder_src = reorder_src
        self.reorder_rate = reorder_rate
        if set(handshake_drop) - {"syn", "synack"}:
            raise ValueError(f"bad handshake_drop {handshake_drop}")
        self.handshake_drop = tuple(handshake_drop)
        if segment_drop is not None and (segment_drop[0] < 1 or segment_drop[1] < 1):
            raise ValueError(f"bad segment_drop {segment_drop}")
        self.segment_drop = segment_drop
        self.vlan = vlan
        self.offloads = offloads
        self.vif_a = self.vif_b = self.vip_a = self.vip_b = None
        if vlan is not None:
            self.vif_a = f"{self.if_a[:10]}.{vlan}"[:15]
            self.vif_b = f"{self.if_b[:10]}.{vlan}"[:15]
            self.vip_a, self.vip_b = f"10.214.{net}.1", f"10.214.{net}.2"
        self._made: list[str] = []

    def ns(self, side: str) -> str:
        return self.ns_a if side == "a" else self.ns_b

    def iface(self, side: str) -> str:
        return self.if_a if side == "a" else self.if_b

    def ipx(self, side: str, cmd: str) -> None:
        run(["ip", "-n", self.ns(side)] + cmd.split(), timeout=15)

    def _setup(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            run(["ip", "netns", "add", ns], timeout=15)
            self._made.append(ns)
        run(["ip", "link", "add", self.if_a, "netns", self.ns_a, "mtu", str(self.mtu), "type", "veth",
             "peer", "name", self.if_b, "netns", self.ns_b, "mtu", str(self.mtu)], timeout=15)
        for side, ip, ip6 in (("a", self.ip_a, self.ip6_a), ("b", self.ip_b, self.ip6_b)):
            ns, ifc = self.ns(side), self.iface(side)
            self.ipx(side, "link set lo up")
            self.ipx(side, f"addr add {ip}/24 dev {ifc}")
            self.ipx(side, f"addr add {ip6}/64 dev {ifc} nodad")
            if not self.offloads and shutil.which("ethtool"):
                run(["ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off"], netns=ns,
                    timeout=15, check=False)
            self.ipx(side, f"link set {ifc} up")
            if self.vlan is not None:
                vif = self.vif_a if side == "a" else self.vif_b
                vip = self.vip_a if side == "a" else self.vip_b
                res = run(["ip", "-n", ns, "link", "add", "link", ifc, "name", vif, "type", "vlan",
                           "id", str(self.vlan)], timeout=15, check=False)
                if res.returncode != 0:
                    self.cleanup()
                    skip("kernel cannot make a vlan interface (no 802.1Q support): "
                         + res.stderr.decode(errors="replace").strip())
                self.ipx(side, f"addr add {vip}/24 dev {vif}")
                if not self.offloads and shutil.which("ethtool"):
                    run(["ethtool", "-K", vif, "tso", "off", "gso", "off", "gro", "off"], netns=ns,
                        timeout=15, check=False)
                self.ipx(side, f"link set {vif} up")
        self._nft_setup()
        if self.reorder_percent:
            ns, ifc = self.ns(self.reorder_src), self.iface(self.reorder_src)
            run(["tc", "qdisc", "add", "dev", ifc, "root", "handle", "1:", "htb", "default", "10"], netns=ns, timeout=15)
            run(["tc", "class", "add", "dev", ifc, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"],
                netns=ns, timeout=15)
            run(["tc", "class", "add", "dev", ifc, "parent", "1:", "classid", "1:20", "htb",
                 "rate", self.reorder_rate, "burst", "3000", "cburst", "3000"], netns=ns, timeout=15)

    def _nft_setup(self) -> None:
        self._sets: dict[str, list[tuple[str, str]]] = {}
        rules: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for r in self.loss:
            if r.src not in ("a", "b") or r.hook not in ("output", "input"):
                raise ValueError(f"bad loss rule {r}")
            if r.percent <= 0:
                continue
            permille = int(round(r.percent * 10))
            if r.hook == "output":
                side, match = r.src, f'oifname "{self.iface(r.src)}"'
            else:
                side = "b" if r.src == "a" else "a"
                match = f'iifname "{self.iface(side)}"'
            if self.vlan is not None:
                vif = (self.vif_a if side == "a" else self.vif_b)
                match = match.replace(f'"{self.iface(side)}"', f'{{ "{self.iface(side)}", "{vif}" }}')
            rules[side][r.hook].append(f"{match} meta l4proto tcp numgen random mod 1000 < {permille} counter drop")
        for what in ("syn", "synack"):
            times = self.handshake_drop.count(what)
            if not times:
                continue
            # the SYN (SYN/ACK) of a connection: client address and port
            side, flags, key = (("b", "syn", "ip saddr . tcp sport") if what == "syn"
                                else ("a", "syn | ack", "ip daddr . tcp dport"))
            match = (f'iifname "{self.iface(side)}" meta nfproto ipv4 '
                     f"tcp flags & (syn | ack) == {flags}")
            self._drop_first(rules, side, what, match, key, match, times)
        if self.segment_drop is not None:
            after, times = self.segment_drop
            match = f'iifname "{self.iface("b")}" meta nfproto ipv4 meta l4proto tcp'
            # conntrack's packet counter picks the segment; a set of connections already hit
            # keeps it to one segment per connection
            self._sets.setdefault("b", []).append(("segment_conns", "ip saddr . tcp sport"))
            trigger = (f"{match} ct original packets >= {after} ip length > 100 "
                       "ip saddr . tcp sport != @segment_conns "
                       "add @segment_conns { ip saddr . tcp sport }")
            self._drop_first(rules, "b", "segment", match, "ip saddr . tcp sport . tcp sequence",
                             trigger, times)
        if self.reorder_percent:
            side = self.reorder_src
            permille = int(round(self.reorder_percent * 10))
            rules[side]["output"].append(
                f'oifname "{self.iface(side)}" meta l4proto tcp numgen random mod 1000 < {permille} '
                f"counter meta priority set 1:20")
        for side, hooks in rules.items():
            if self.segment_drop is not None and side == "b":  # `ct original packets` counts
                run(["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1"], netns=self.ns(side),
                    timeout=15)
            lines = ["table inet dtlab {"]
            for setname, key in self._sets.get(side, []):
                lines.append(f"  set {setname} {{ typeof {key}; flags dynamic, timeout; "
                             "timeout 10m; }")
            for hook, rs in hooks.items():
                lines.append(f"  chain {hook} {{")
                lines.append(f"    type filter hook {hook} priority 0; policy accept;")
                lines += [f"    {x}" for x in rs]
                lines.append("  }")
            lines.append("}")
            run(["nft", "-f", "-"], netns=self.ns(side), input=("\n".join(lines) + "\n").encode(), timeout=15)

    def _drop_first(self, rules, side: str, name: str, match: str, key: str, trigger: str,
                    times: int) -> None:
        """Rules of side's input chain that drop a packet picked by `trigger` and then the next
        times - 1 packets with its key (matched by `match`), then let that key pass: one dynamic
        set per drop remembers the keys dropped so far (name1, name2, ...)."""
        sets = [f"{name}{k}" for k in range(1, times + 1)]
        self._sets.setdefault(side, []).extend((x, key) for x in sets)
        chain = rules[side]["input"]
        chain.append(f"{match} {key} @{sets[-1]} accept")
        for k in range(times - 1, 0, -1):
            chain.append(f"{match} {key} @{sets[k - 1]} add @{sets[k]} {{ {key} }} counter drop")
        chain.append(f"{trigger} add @{sets[0]} {{ {key} }} counter drop")

    def nft_counters(self, side: str) -> str:
        """`nft list ruleset` in that namespace: every lab rule has a counter."""
        return run(["nft", "list", "ruleset"], netns=self.ns(side), timeout=15).stdout.decode()

    def tc_stats(self, side: str) -> str:
        return run(["tc", "-s", "class", "show", "dev", self.iface(side)], netns=self.ns(side),
                   timeout=15, check=False).stdout.decode()



class NetnsChain(_Namespaces):
    """Three namespaces in a row, a - r - b, with IP forwarding in r (a router).

    a: if_a = ip_a (10.215.N.1/24, default route via r); r: if_ra (10.215.N.2) and
    if_rb (10.216.N.2); b: if_b = ip_b (10.216.N.1/24, default route via r).
    drop_percent: {"a": P, "b": P} -- nftables in r's forward chain drops that
    share of TCP packets coming from that side, so a capture on if_a and one on
    if_b are two points of one path with losses between them.  Offloads (TSO,
    GSO, GRO) are off on every interface, so the router forwards the very
    segments each end sent.  :meth:`dropped` reads the rules' counters.
    """

    def __init__(self, drop_percent: dict[str, float] | None = None, *, mtu: int = 1500,
                 name: str = "dc"):
        self.suffix = unique_suffix()
        net = int(self.suffix) % 250 + 1
        self.ns_a, self.ns_r, self.ns_b = (f"{name}{self.suffix}{x}" for x in "arb")
        self.if_a, self.if_ra, self.if_rb, self.if_b = (f"{name}v{self.suffix}{x}"[:15]
                                                        for x in ("a", "ra", "rb", "b"))
        self.ip_a, self.ip_ra = f"10.215.{net}.1", f"10.215.{net}.2"
        self.ip_b, self.ip_rb = f"10.216.{net}.1", f"10.216.{net}.2"
        self.drop_percent = dict(drop_percent or {})
        self.mtu = mtu
        self._made: list[str] = []

    def ns(self, side: str) -> str:
        return {"a": self.ns_a, "r": self.ns_r, "b": self.ns_b}[side]

    def _setup(self) -> None:
        for ns in (self.ns_a, self.ns_r, self.ns_b):
            run(["ip", "netns", "add", ns], timeout=15)
            self._made.append(ns)
        for end, ns_end, rif in ((self.if_a, self.ns_a, self.if_ra), (self.if_b, self.ns_b, self.if_rb)):
            run(["ip", "link", "add", end, "netns", ns_end, "mtu", str(self.mtu), "type", "veth",
                 "peer", "name", rif, "netns", self.ns_r, "mtu", str(self.mtu)], timeout=15)
        for ns, ifc, ip in ((self.ns_a, self.if_a, self.ip_a), (self.ns_r, self.if_ra, self.ip_ra),
                            (self.ns_r, self.if_rb, self.ip_rb), (self.ns_b, self.if_b, self.ip_b)):
            run(["ip", "-n", ns, "link", "set", "lo", "up"], timeout=15)
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifc], timeout=15)
            if shutil.which("ethtool"):
                run(["ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off"], netns=ns,
                    timeout=15, check=False)
            run(["ip", "-n", ns, "link", "set", ifc, "up"], timeout=15)
        run(["ip", "-n", self.ns_a, "route", "add", "default", "via", self.ip_ra], timeout=15)
        run(["ip", "-n", self.ns_b, "route", "add", "default", "via", self.ip_rb], timeout=15)
        run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=self.ns_r, timeout=15)
        rules = []
        for side, pct in self.drop_percent.items():
            if pct > 0:
                ifc = self.if_ra if side == "a" else self.if_rb
                rules.append(f'    iifname "{ifc}" meta l4proto tcp numgen random mod 1000 < '
                             f"{int(round(pct * 10))} counter drop")
        text = ("table inet dtchain {\n  chain forward {\n"
                "    type filter hook forward priority 0; policy accept;\n"
                + "\n".join(rules) + "\n  }\n}\n")
        run(["nft", "-f", "-"], netns=self.ns_r, input=text.encode(), timeout=15)

    def dropped(self) -> dict[str, int]:
        """Packets the router dropped, by the side they came from."""
        text = run(["nft", "list", "ruleset"], netns=self.ns_r, timeout=15).stdout.decode()
        out = {"a": 0, "b": 0}
        for side, ifc in (("a", self.if_ra), ("b", self.if_rb)):
            m = re.search(rf'iifname "{ifc}" .*counter packets (\d+)', text)
            if m:
                out[side] = int(m.group(1))
        return out
