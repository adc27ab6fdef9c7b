"""DICOM over TLS (PS3.15 B.9-B.11): the record layer, the handshake seen from outside, NSS key
logs and decryption, as a stream transform between ``tcp`` and ``ul`` (see docs/tls.md)."""

from dicomtrace.tls.keylog import KeyLog, KeyLogError, load_keylog
from dicomtrace.tls.session import TlsSession
from dicomtrace.tls.transform import TLS_PORTS, PlainOnTlsPort, TlsLayer

__all__ = ["KeyLog", "KeyLogError", "load_keylog", "TlsSession", "TlsLayer", "TLS_PORTS",
           "PlainOnTlsPort"]
