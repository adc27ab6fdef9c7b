"""Registry names of TLS: versions, cipher suites (IANA TLS Cipher Suites registry),
alerts (RFC 8446 6, RFC 5246 7.2), handshake types and extensions (RFC 8446 4)."""

from __future__ import annotations

VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
            0x0304: "TLS 1.3"}

# record content types (RFC 8446 5.1)
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
CONTENT_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data",
                 24: "heartbeat"}

# handshake message types (RFC 8446 4, RFC 5246 7.4)
HANDSHAKE_TYPES = {0: "hello_request", 1: "client_hello", 2: "server_hello",
                   4: "new_session_ticket", 5: "end_of_early_data", 8: "encrypted_extensions",
                   11: "certificate", 12: "server_key_exchange", 13: "certificate_request",
                   14: "server_hello_done", 15: "certificate_verify", 16: "client_key_exchange",
                   20: "finished", 24: "key_update", 254: "message_hash"}

# alert descriptions as RFC 8446 6 (and RFC 5246 7.2.2 for the older ones) spell them
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
          21: "decryption_failed", 22: "record_overflow", 30: "decompression_failure",
          40: "handshake_failure", 41: "no_certificate", 42: "bad_certificate",
          43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
          46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
          49: "access_denied", 50: "decode_error", 51: "decrypt_error",
          60: "export_restriction", 70: "protocol_version", 71: "insufficient_security",
          80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
          100: "no_renegotiation", 109: "missing_extension", 110: "unsupported_extension",
          111: "certificate_unobtainable", 112: "unrecognized_name",
          113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
          115: "unknown_psk_identity", 116: "certificate_required",
          120: "no_application_protocol"}
ALERT_LEVELS = {1: "warning", 2: "fatal"}

# extensions (IANA TLS ExtensionType Values)
EXT_SERVER_NAME, EXT_ALPN, EXT_ENCRYPT_THEN_MAC, EXT_EXTENDED_MASTER_SECRET = 0, 16, 22, 23
EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE = 43, 51

# (IANA name, key exchange, bulk cipher, MAC/PRF hash); bulk cipher names are those decrypt.py knows
_SUITES = """
0000 TLS_NULL_WITH_NULL_NULL NULL NULL NULL
0001 TLS_RSA_WITH_NULL_MD5 RSA NULL MD5
0002 TLS_RSA_WITH_NULL_SHA RSA NULL SHA
0003 TLS_RSA_EXPORT_WITH_RC4_40_MD5 RSA_EXPORT RC4_40 MD5
0004 TLS_RSA_WITH_RC4_128_MD5 RSA RC4_128 MD5
0005 TLS_RSA_WITH_RC4_128_SHA RSA RC4_128 SHA
0009 TLS_RSA_WITH_DES_CBC_SHA RSA DES_CBC SHA
000A TLS_RSA_WITH_3DES_EDE_CBC_SHA RSA 3DES_EDE_CBC SHA
0016 TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA DHE_RSA 3DES_EDE_CBC SHA
0018 TLS_DH_anon_WITH_RC4_128_MD5 DH_anon RC4_128 MD5
002F TLS_RSA_WITH_AES_128_CBC_SHA RSA AES_128_CBC SHA
0033 TLS_DHE_RSA_WITH_AES_128_CBC_SHA DHE_RSA AES_128_CBC SHA
0034 TLS_DH_anon_WITH_AES_128_CBC_SHA DH_anon AES_128_CBC SHA
0035 TLS_RSA_WITH_AES_256_CBC_SHA RSA AES_256_CBC SHA
0039 TLS_DHE_RSA_WITH_AES_256_CBC_SHA DHE_RSA AES_256_CBC SHA
003A TLS_DH_anon_WITH_AES_256_CBC_SHA DH_anon AES_256_CBC SHA
003B TLS_RSA_WITH_NULL_SHA256 RSA NULL SHA256
003C TLS_RSA_WITH_AES_128_CBC_SHA256 RSA AES_128_CBC SHA256
003D TLS_RSA_WITH_AES_256_CBC_SHA256 RSA AES_256_CBC SHA256
0067 TLS_DHE_RSA_WITH_AES_128_CBC_SHA256 DHE_RSA AES_128_CBC SHA256
006B TLS_DHE_RSA_WITH_AES_256_CBC_SHA256 DHE_RSA AES_256_CBC SHA256
009C TLS_RSA_WITH_AES_128_GCM_SHA256 RSA AES_128_GCM SHA256
009D TLS_RSA_WITH_AES_256_GCM_SHA384 RSA AES_256_GCM SHA384
009E TLS_DHE_RSA_WITH_AES_128_GCM_SHA256 DHE_RSA AES_128_GCM SHA256
009F TLS_DHE_RSA_WITH_AES_256_GCM_SHA384 DHE_RSA AES_256_GCM SHA384
00FF TLS_EMPTY_RENEGOTIATION_INFO_SCSV SCSV NULL NULL
5600 TLS_FALLBACK_SCSV SCSV NULL NULL
1301 TLS_AES_128_GCM_SHA256 TLS13 AES_128_GCM SHA256
1302 TLS_AES_256_GCM_SHA384 TLS13 AES_256_GCM SHA384
1303 TLS_CHACHA20_POLY1305_SHA256 TLS13 CHACHA20_POLY1305 SHA256
1304 TLS_AES_128_CCM_SHA256 TLS13 AES_128_CCM SHA256
C009 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA ECDHE_ECDSA AES_128_CBC SHA
C00A TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA ECDHE_ECDSA AES_256_CBC SHA
C011 TLS_ECDHE_RSA_WITH_RC4_128_SHA ECDHE_RSA RC4_128 SHA
C012 TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA ECDHE_RSA 3DES_EDE_CBC SHA
C013 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA ECDHE_RSA AES_128_CBC SHA
C014 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA ECDHE_RSA AES_256_CBC SHA
C023 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 ECDHE_ECDSA AES_128_CBC SHA256
C024 TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384 ECDHE_ECDSA AES_256_CBC SHA384
C027 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 ECDHE_RSA AES_128_CBC SHA256
C028 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384 ECDHE_RSA AES_256_CBC SHA384
C02B TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ECDHE_ECDSA AES_128_GCM SHA256
C02C TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 ECDHE_ECDSA AES_256_GCM SHA384
C02F TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ECDHE_RSA AES_128_GCM SHA256
C030 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 ECDHE_RSA AES_256_GCM SHA384
C09C TLS_RSA_WITH_AES_128_CCM RSA AES_128_CCM SHA256
C09D TLS_RSA_WITH_AES_256_CCM RSA AES_256_CCM SHA256
C09E TLS_DHE_RSA_WITH_AES_128_CCM DHE_RSA AES_128_CCM SHA256
C09F TLS_DHE_RSA_WITH_AES_256_CCM DHE_RSA AES_256_CCM SHA256
C0AC TLS_ECDHE_ECDSA_WITH_AES_128_CCM ECDHE_ECDSA AES_128_CCM SHA256
C0AD TLS_ECDHE_ECDSA_WITH_AES_256_CCM ECDHE_ECDSA AES_256_CCM SHA256
CCA8 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 ECDHE_RSA CHACHA20_POLY1305 SHA256
CCA9 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 ECDHE_ECDSA CHACHA20_POLY1305 SHA256
CCAA TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256 DHE_RSA CHACHA20_POLY1305 SHA256
"""


class CipherSuite:
    __slots__ = ("code", "name", "kx", "cipher", "hash")

    def __init__(self, code, name, kx, cipher, hash_):
        self.code, self.name, self.kx, self.cipher, self.hash = code, name, kx, cipher, hash_


CIPHER_SUITES: dict[int, CipherSuite] = {}
for _line in _SUITES.strip().splitlines():
    _c, _n, _k, _b, _h = _line.split()
    CIPHER_SUITES[int(_c, 16)] = CipherSuite(int(_c, 16), _n, _k, _b, _h)


def suite_name(code: int) -> str:
    s = CIPHER_SUITES.get(code)
    if s is not None:
        return s.name
    if (code & 0x0F0F) == 0x0A0A:
        return f"GREASE (0x{code:04X})"
    return f"0x{code:04X}"


def version_name(v: int | None) -> str | None:
    if v is None:
        return None
    if (v & 0x0F0F) == 0x0A0A:
        return f"GREASE (0x{v:04X})"
    return VERSIONS.get(v, f"0x{v:04X}")


def alert_name(code: int) -> str:
    return ALERTS.get(code, f"alert_{code}")


def is_grease(v: int) -> bool:
    """RFC 8701 reserved values, sent to keep peers honest; never negotiated."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


# BCP 195 (RFC 9325 4.1): MUST NOT negotiate NULL, RC4, export, anonymous suites or ones offering
# less than 128 bits of security (DES, 3DES); static RSA key exchange and CBC-mode suites are not
# among the recommended ones (4.2), and DICOM's Extended BCP 195 profile (PS3.15 B.11) excludes them.
FORBIDDEN_CIPHERS = ("NULL", "RC4_128", "RC4_40", "DES_CBC", "3DES_EDE_CBC")


def suite_weakness(code: int) -> tuple[str, str] | None:
    """(severity, why) when BCP 195 excludes or discourages the suite, else None."""
    s = CIPHER_SUITES.get(code)
    if s is None:
        return None
    if s.cipher in FORBIDDEN_CIPHERS:
        what = "no encryption" if s.cipher == "NULL" else s.cipher.replace("_", " ")
    elif s.kx in ("DH_anon", "RSA_EXPORT"):
        what = f"{s.kx} key exchange"
    elif s.hash == "MD5":
        what = "MD5"
    else:
        what = None
    if what is not None:
        return ("warning", f"{s.name} uses {what}, which BCP 195 (RFC 9325 4.1) forbids")
    if s.kx == "RSA":
        return ("note", f"{s.name} uses static RSA key exchange (no forward secrecy), which BCP 195 "
                        "(RFC 9325 4.2) does not recommend and DICOM's Extended BCP 195 profile excludes")
    if s.cipher.endswith("_CBC"):
        return ("note", f"{s.name} is a CBC-mode suite, which BCP 195 (RFC 9325 4.2) does not "
                        "recommend and DICOM's Extended BCP 195 profile excludes")
    return None
