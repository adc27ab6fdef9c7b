"""The whole analysis of one capture: stages wired in their one direction."""

from __future__ import annotations

from dicomtrace.capture import open_capture
from dicomtrace.model.association import Analysis
from dicomtrace.model.builder import AnalysisBuilder, AnalysisConfig
from dicomtrace.model.links import link_operations
from dicomtrace.net import NetStats, decode_batch
from dicomtrace.pipeline import summarize
from dicomtrace.tcp import TcpReassembler


def analyze_capture(path: str, config: AnalysisConfig, observer=None, series: bool = False) -> Analysis:
    """Read ``path`` through every stage up to the model of associations and operations."""
    reader = open_capture(path)
    try:
        return analyze_reader(reader, config, observer, series)
    finally:
        reader.close()


def analyze_reader(reader, config: AnalysisConfig, observer=None, series: bool = False) -> Analysis:
    """The same for an open reader (a file or a live capture).  An interrupt (Ctrl-C)
    ends the reading, not the analysis.  ``series``: also record bounded time series of
    each TCP direction for graphs."""
    net = NetStats()
    tcp = TcpReassembler(config.ports, record_series=series)
    builder = AnalysisBuilder(config, observer)
    batches = reader.batches()
    try:
        for batch in batches:
            builder.feed(tcp.feed(decode_batch(batch, net)))
    except KeyboardInterrupt:
        if reader.format != "live":
            raise
    builder.feed(tcp.finish())
    assocs = builder.finish()
    link_operations(assocs)
    return Analysis(assocs, tcp.connections, summarize(reader, net, reader.path), config.ports)
