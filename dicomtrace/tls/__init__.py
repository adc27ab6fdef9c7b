"""DICOM over TLS (PS3.15 B.9-B.11): the record layer, the handshake seen from outside, NSS key
logs and decryption, as a stream transform between ``tcp`` and ``ul`` (see docs/tls.md).

The names below are imported from their modules when first asked for (PEP 562): the
analysis of a capture without TLS loads only the detection (``transform``, ``records``),
not the handshake, the sessions or the decryption."""

import importlib

_EXPORTS = {"KeyLog": "keylog", "KeyLogError": "keylog", "load_keylog": "keylog",
            "TlsSession": "session", "TlsLayer": "transform", "TLS_PORTS": "transform",
            "PlainOnTlsPort": "transform"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
