"""Real-traffic laboratory: peers, captures, namespaces and tshark as the referee.

A package by concern: :mod:`lab.base` (commands, ports, paths), :mod:`lab.dicom` (Part 10
files, the PDV walker), :mod:`lab.peers` (dcmtk and pynetdicom peers), :mod:`lab.capture`
(tcpdump/dumpcap, capture-file conversions), :mod:`lab.netns` (namespaces, loss, reordering),
:mod:`lab.tshark` (the referee, conversation checks), :mod:`lab.cli` (the CLI under test),
:mod:`lab.synthetic` (TCP conversations made to order, for rules real peers hit only rarely).
``import lab`` gives every name of them, as ``lab.X``.

Everything here is meant to be reused by every test that needs real DICOM
traffic (C-STORE, C-FIND, C-MOVE, ...):

* :func:`free_port`, :func:`make_dicom_files` -- ports and Part 10 files;
* :class:`Capture` -- tcpdump (or dumpcap) writing a complete capture file;
* :class:`Peer`, :class:`StoreSCP`, :func:`run_storescu`, :func:`run_echoscu`
  -- dcmtk peers (always the dcmtk binaries: pynetdicom installs console
  scripts of the same names that come first on PATH);
* :class:`PynetdicomSCP`, :func:`pynetdicom_store` -- in-process pynetdicom
  peers, for what dcmtk cannot do (IPv6: dcmtk 3.6.7 cannot connect to ::1);
* :class:`NetnsPair` -- two network namespaces joined by a veth pair, with
  MTU, loss (nftables), reordering (htb + nftables), VLAN;
* :func:`tshark_conv_tcp`, :func:`tshark_follow_raw`,
  :func:`tshark_retransmissions` -- what tshark says about a capture;
* :func:`run_dicomtrace` -- the CLI under test.

Rules kept everywhere: every subprocess has a timeout and no stdin, every
process started here is ended (by its own process group id) when its context
exits, every namespace made here is deleted, and traffic only ever goes to
loopback or to addresses inside namespaces made here.
"""

from __future__ import annotations

from types import ModuleType

from lab import base, capture, cli, dicom, netns, peers, synthetic, tshark

for _part in (base, dicom, peers, capture, netns, tshark, cli, synthetic):
    globals().update({k: v for k, v in vars(_part).items()
                      if not k.startswith("__") and not isinstance(v, ModuleType)})
del _part
