"""Record protection: key derivation and decryption of TLS 1.2 (RFC 5246 6.3, 6.2.3; AEAD
RFC 5288/6655/7905; encrypt-then-MAC RFC 7366) and TLS 1.3 (RFC 8446 5.2-5.3, 7.1-7.3), with
the ``cryptography`` package's primitives (AESGCM, AESCCM, ChaCha20Poly1305, AES-CBC, HMAC,
HKDF-Expand).

Sequence numbers and capture gaps: every record's protection depends on its sequence number
(the AEAD nonce or additional data, or the MAC).  When the framing was kept (a gap inside a
record whose header was seen) exactly one record was lost and the count carries on.  When the
framing was lost, the number of lost records is unknown: TLS 1.2 AES-GCM/CCM carry an explicit
nonce that implementations set to the sequence number (checked on the records before the gap),
which gives it back exactly; otherwise the next record is tried with the sequence numbers the
lost bytes allow (the AEAD tag, or the MAC, says which one is right).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from dicomtrace.tls.names import CIPHER_SUITES

MAX_SEQ_TRIALS = 4096  # sequence numbers tried on the first record after a framing loss
# (key length, implicit IV length, explicit nonce length) of the bulk ciphers decrypted
AEAD = {"AES_128_GCM": (16, 4, 8), "AES_256_GCM": (32, 4, 8), "AES_128_CCM": (16, 4, 8),
        "AES_256_CCM": (32, 4, 8), "CHACHA20_POLY1305": (32, 12, 0)}
CBC = {"AES_128_CBC": 16, "AES_256_CBC": 32}
MAC_LEN = {"SHA": 20, "SHA256": 32, "SHA384": 48}
_HASHES = {"SHA": hashes.SHA1, "SHA256": hashes.SHA256, "SHA384": hashes.SHA384}


def _aead(cipher: str, key: bytes):
    if cipher.endswith("GCM"):
        return AESGCM(key)
    if cipher.endswith("CCM"):
        return AESCCM(key)
    return ChaCha20Poly1305(key)


def supported(suite: int, version: int) -> bool:
    s = CIPHER_SUITES.get(suite)
    if s is None or version not in (0x0303, 0x0304):
        return False
    return s.cipher in AEAD or (version == 0x0303 and s.cipher in CBC)


# -- key schedules -----------------------------------------------------------

def prf_tls12(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """The TLS 1.2 PRF, P_hash over HMAC (RFC 5246 5); SHA-256 unless the suite says SHA-384."""
    algo = hashes.SHA384 if hash_name == "SHA384" else hashes.SHA256

    def mac(data: bytes) -> bytes:
        h = hmac.HMAC(secret, algo())
        h.update(data)
        return h.finalize()

    seed = label + seed
    out = b""
    a = seed
    while len(out) < length:
        a = mac(a)
        out += mac(a + seed)
    return out[:length]


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, algo) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1)."""
    full = b"tls13 " + label.encode()
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algo(), length, info).derive(secret)


class DirectionKeys:
    """Decrypts the records of one direction; ``seq`` is the next record's sequence number."""

    def __init__(self, version: int, cipher: str, key: bytes, iv: bytes, mac_key: bytes = b"",
                 mac_hash: str = "", encrypt_then_mac: bool = False):
        self.version = version
        self.cipher = cipher
        self.key, self.iv, self.mac_key = key, iv, mac_key
        self.mac_hash = mac_hash
        self.etm = encrypt_then_mac
        self.seq = 0
        self.explicit_is_seq: bool | None = None  # TLS 1.2 GCM/CCM: explicit nonce == seq so far
        self.aead = _aead(cipher, key) if cipher in AEAD else None
        self.failures = 0

    # -- one record at a known sequence number ------------------------------
    def _try(self, seq: int, content_type: int, version: int, fragment: bytes):
        """(content type, plaintext) or None when the record does not verify at ``seq``."""
        try:
            if self.version == 0x0304:
                nonce = bytes(a ^ b for a, b in zip(self.iv, seq.to_bytes(12, "big")))
                header = bytes([content_type]) + version.to_bytes(2, "big") + len(fragment).to_bytes(2, "big")
                inner = self.aead.decrypt(nonce, fragment, header)
                inner = inner.rstrip(b"\x00")
                if not inner:
                    return None
                return inner[-1], inner[:-1]
            if self.aead is not None:
                explicit = AEAD[self.cipher][2]
                if explicit:
                    nonce = self.iv + fragment[:explicit]
                else:
                    nonce = bytes(a ^ b for a, b in zip(self.iv, seq.to_bytes(12, "big")))
                body = fragment[explicit:]
                aad = (seq.to_bytes(8, "big") + bytes([content_type]) + version.to_bytes(2, "big")
                       + max(0, len(body) - 16).to_bytes(2, "big"))
                return content_type, self.aead.decrypt(nonce, body, aad)
            return self._cbc(seq, content_type, version, fragment)
        except (InvalidTag, ValueError):
            return None

    def _mac(self, seq: int, content_type: int, version: int, data: bytes) -> bytes:
        h = hmac.HMAC(self.mac_key, _HASHES[self.mac_hash]())
        h.update(seq.to_bytes(8, "big") + bytes([content_type]) + version.to_bytes(2, "big")
                 + len(data).to_bytes(2, "big"))
        h.update(data)
        return h.finalize()

    def _cbc(self, seq: int, content_type: int, version: int, fragment: bytes):
        """AES-CBC with HMAC, MAC-then-encrypt (RFC 5246 6.2.3.2) or encrypt-then-MAC (RFC 7366);
        the IV is explicit in each record (TLS 1.1 and later)."""
        mlen = MAC_LEN[self.mac_hash]
        if self.etm:
            if len(fragment) < mlen + 32:
                return None
            data, tag = fragment[:-mlen], fragment[-mlen:]
            if not constant_time.bytes_eq(self._mac(seq, content_type, version, data), tag):
                return None
            plain = self._cbc_decrypt(data)
            return None if plain is None else (content_type, plain)
        if len(fragment) < 32 or len(fragment) % 16:
            return None
        plain = self._cbc_decrypt(fragment)
        if plain is None or len(plain) < mlen:
            return None
        content, tag = plain[:-mlen], plain[-mlen:]
        if not constant_time.bytes_eq(self._mac(seq, content_type, version, content), tag):
            return None
        return content_type, content

    def _cbc_decrypt(self, data: bytes) -> bytes | None:
        if len(data) < 32 or len(data) % 16:
            return None
        d = Cipher(algorithms.AES(self.key), modes.CBC(data[:16])).decryptor()
        plain = d.update(data[16:]) + d.finalize()
        pad = plain[-1]
        if pad + 1 > len(plain) or any(b != pad for b in plain[-pad - 1:]):
            return None
        return plain[:-pad - 1]

    # -- the stream of records ----------------------------------------------
    def decrypt(self, content_type: int, version: int, fragment: bytes):
        """Decrypt the next record (the sequence number advances); None when it does not verify."""
        got = self._try(self.seq, content_type, version, fragment)
        if got is None:
            self.failures += 1
            self.seq += 1
            return None
        if self.aead is not None and self.version == 0x0303 and AEAD[self.cipher][2]:
            same = fragment[:8] == self.seq.to_bytes(8, "big")
            self.explicit_is_seq = same if self.explicit_is_seq is None else (self.explicit_is_seq and same)
        self.seq += 1
        return got

    def skip(self, records: int = 1) -> None:
        """Records known to be lost (their headers were seen)."""
        self.seq += records

    def resync(self, content_type: int, version: int, fragment: bytes, lost_bytes: int):
        """After a framing loss of ``lost_bytes``: find the sequence number of this record and
        decrypt it.  Returns (records lost, (content type, plaintext)) or None."""
        if self.explicit_is_seq and len(fragment) >= 8:
            seq = int.from_bytes(fragment[:8], "big")
            if seq >= self.seq:
                got = self._try(seq, content_type, version, fragment)
                if got is not None:
                    lost = seq - self.seq
                    self.seq = seq + 1
                    return lost, got
        # each lost record took at least a header and some protected bytes
        most = min(MAX_SEQ_TRIALS, lost_bytes // 6 + 1)
        for lost in range(0, most + 1):
            got = self._try(self.seq + lost, content_type, version, fragment)
            if got is not None:
                self.seq += lost + 1
                return lost, got
        return None


def tls12_keys(master: bytes, client_random: bytes, server_random: bytes, suite: int,
               encrypt_then_mac: bool) -> tuple[DirectionKeys, DirectionKeys] | None:
    """Client-write and server-write keys from the master secret (RFC 5246 6.3)."""
    s = CIPHER_SUITES.get(suite)
    if s is None:
        return None
    prf_hash = "SHA384" if s.hash == "SHA384" else "SHA256"
    if s.cipher in AEAD:
        klen, ivlen, _ = AEAD[s.cipher]
        mlen = 0
    elif s.cipher in CBC:
        klen, ivlen, mlen = CBC[s.cipher], 16, MAC_LEN[s.hash]
    else:
        return None
    block = prf_tls12(master, b"key expansion", server_random + client_random,
                      2 * (mlen + klen + ivlen), prf_hash)
    cm, sm = block[:mlen], block[mlen:2 * mlen]
    p = 2 * mlen
    ck, sk = block[p:p + klen], block[p + klen:p + 2 * klen]
    p += 2 * klen
    civ, siv = block[p:p + ivlen], block[p + ivlen:p + 2 * ivlen]
    etm = encrypt_then_mac and s.cipher in CBC
    return (DirectionKeys(0x0303, s.cipher, ck, civ, cm, s.hash, etm),
            DirectionKeys(0x0303, s.cipher, sk, siv, sm, s.hash, etm))


def tls13_hash(suite: int):
    s = CIPHER_SUITES.get(suite)
    return hashes.SHA384 if s is not None and s.hash == "SHA384" else hashes.SHA256


def tls13_keys(secret: bytes, suite: int) -> DirectionKeys | None:
    """Traffic key and IV from a traffic secret (RFC 8446 7.3)."""
    s = CIPHER_SUITES.get(suite)
    if s is None or s.cipher not in AEAD:
        return None
    algo = tls13_hash(suite)
    klen = AEAD[s.cipher][0]
    return DirectionKeys(0x0304, s.cipher, hkdf_expand_label(secret, "key", b"", klen, algo),
                         hkdf_expand_label(secret, "iv", b"", 12, algo))


def tls13_next_secret(secret: bytes, suite: int) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate (RFC 8446 7.2)."""
    algo = tls13_hash(suite)
    return hkdf_expand_label(secret, "traffic upd", b"", algo.digest_size, algo)
