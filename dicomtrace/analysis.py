"""The whole analysis of one capture: stages wired in their one direction."""

from __future__ import annotations

from dicomtrace.capture import open_capture
from dicomtrace.model.association import Analysis
from dicomtrace.model.builder import AnalysisBuilder, AnalysisConfig
from dicomtrace.model.links import link_operations
from dicomtrace.net import NetStats
from dicomtrace.pipeline import summarize, tcp_event_batches
from dicomtrace.tcp import TcpReassembler


def analyze_capture(path: str, config: AnalysisConfig, on_data=None) -> Analysis:
    """Read ``path`` through every stage up to the model of associations and operations."""
    reader = open_capture(path)
    net = NetStats()
    tcp = TcpReassembler(config.ports)
    builder = AnalysisBuilder(config, on_data)
    try:
        for events in tcp_event_batches(reader, tcp, net):
            builder.feed(events)
    finally:
        reader.close()
    assocs = builder.finish()
    link_operations(assocs)
    return Analysis(assocs, tcp.connections, summarize(reader, net, path))
