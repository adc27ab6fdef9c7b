"""TCP connections and reassembly (sans-I/O)."""

from dicomtrace.tcp.reassembly import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    Connection,
    ConnectionClosed,
    ConnectionOpened,
    HalfConnection,
    StreamData,
    StreamGap,
    TcpEvent,
    TcpReassembler,
)

__all__ = ["CLIENT_TO_SERVER", "SERVER_TO_CLIENT", "Connection", "ConnectionClosed",
           "ConnectionOpened", "HalfConnection", "StreamData", "StreamGap", "TcpEvent",
           "TcpReassembler"]
