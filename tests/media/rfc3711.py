"""An independent SRTP/SRTCP reference (RFC 3711), used only by the tests.

It shares no code with pylibsrtp: key derivation (4.3), AES counter mode (4.1.1) and
HMAC-SHA1 (4.2.1) are computed here with ``cryptography``, so a packet both agree on was
protected correctly, not merely consistently.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# RFC 3711 4.3.1 and 4.3.2 key derivation labels.
LABEL_RTP_ENCRYPTION = 0x00
LABEL_RTP_AUTH = 0x01
LABEL_RTP_SALT = 0x02
LABEL_RTCP_ENCRYPTION = 0x03
LABEL_RTCP_AUTH = 0x04
LABEL_RTCP_SALT = 0x05

TAG_LENGTH = 10  # HMAC-SHA1-80


def aes_cm_keystream(key: bytes, iv: int, length: int) -> bytes:
    """AES in counter mode (RFC 3711 4.1.1): encrypt IV, IV+1, ... as 128-bit blocks."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive(
    master_key: bytes, master_salt: bytes, label: int, length: int, *, index: int = 0,
    kdr: int = 0,
) -> bytes:
    """RFC 3711 4.3.1: ``PRF_n(k_master, x)`` with ``x = (label || r) XOR master_salt``."""
    r = index // kdr if kdr else 0
    key_id = (label << 48) | r
    x = key_id ^ int.from_bytes(master_salt, "big")
    return aes_cm_keystream(master_key, x << 16, length)


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def _rtp_header_length(packet: bytes) -> int:
    cc = packet[0] & 0x0F
    length = 12 + 4 * cc
    if packet[0] & 0x10:
        words = struct.unpack_from("!H", packet, length + 2)[0]
        length += 4 + 4 * words
    return length


class ReferenceSrtp:
    """One direction of SRTP + SRTCP from 30 bytes of key material (no replay protection)."""

    def __init__(self, key_material: bytes) -> None:
        assert len(key_material) == 30
        master_key, master_salt = key_material[:16], key_material[16:]
        self.rtp_key = derive(master_key, master_salt, LABEL_RTP_ENCRYPTION, 16)
        self.rtp_auth = derive(master_key, master_salt, LABEL_RTP_AUTH, 20)
        self.rtp_salt = derive(master_key, master_salt, LABEL_RTP_SALT, 14)
        self.rtcp_key = derive(master_key, master_salt, LABEL_RTCP_ENCRYPTION, 16)
        self.rtcp_auth = derive(master_key, master_salt, LABEL_RTCP_AUTH, 20)
        self.rtcp_salt = derive(master_key, master_salt, LABEL_RTCP_SALT, 14)
        self.roc = 0
        self._last_seq: int | None = None
        self.rtcp_index = 0

    @staticmethod
    def _iv(salt: bytes, ssrc: int, index: int) -> int:
        # RFC 3711 4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)
        return (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)

    def protect_rtp(self, packet: bytes) -> bytes:
        """Sender side: track the ROC across sequence wraps and protect one packet."""
        seq = struct.unpack_from("!H", packet, 2)[0]
        if self._last_seq is not None and seq < self._last_seq and self._last_seq - seq > 0x8000:
            self.roc += 1
        self._last_seq = seq
        return self.protect_rtp_with(packet, self.roc)

    def protect_rtp_with(self, packet: bytes, roc: int) -> bytes:
        header_length = _rtp_header_length(packet)
        seq = struct.unpack_from("!H", packet, 2)[0]
        ssrc = struct.unpack_from("!I", packet, 8)[0]
        index = (roc << 16) | seq
        payload = packet[header_length:]
        keystream = aes_cm_keystream(self.rtp_key, self._iv(self.rtp_salt, ssrc, index),
                                     len(payload))
        protected = packet[:header_length] + _xor(payload, keystream)
        tag = hmac.new(self.rtp_auth, protected + struct.pack("!I", roc), hashlib.sha1).digest()
        return protected + tag[:TAG_LENGTH]

    def unprotect_rtp(self, data: bytes, roc: int = 0) -> bytes:
        """Receiver side: verify the tag (raise ValueError) and decrypt."""
        body, tag = data[:-TAG_LENGTH], data[-TAG_LENGTH:]
        expected = hmac.new(self.rtp_auth, body + struct.pack("!I", roc), hashlib.sha1).digest()
        if not hmac.compare_digest(expected[:TAG_LENGTH], tag):
            raise ValueError("SRTP authentication failed")
        header_length = _rtp_header_length(body)
        seq = struct.unpack_from("!H", body, 2)[0]
        ssrc = struct.unpack_from("!I", body, 8)[0]
        index = (roc << 16) | seq
        payload = body[header_length:]
        keystream = aes_cm_keystream(self.rtp_key, self._iv(self.rtp_salt, ssrc, index),
                                     len(payload))
        return body[:header_length] + _xor(payload, keystream)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """RFC 3711 3.4: encrypt after the first 8 bytes, append E||index, then the tag."""
        index = self.rtcp_index
        self.rtcp_index += 1
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        body = packet[8:]
        keystream = aes_cm_keystream(self.rtcp_key, self._iv(self.rtcp_salt, ssrc, index),
                                     len(body))
        protected = packet[:8] + _xor(body, keystream) + struct.pack("!I", 0x80000000 | index)
        tag = hmac.new(self.rtcp_auth, protected, hashlib.sha1).digest()
        return protected + tag[:TAG_LENGTH]

    def unprotect_rtcp(self, data: bytes) -> bytes:
        """Verify and decrypt one SRTCP packet (raise ValueError on a bad tag)."""
        body, tag = data[:-TAG_LENGTH], data[-TAG_LENGTH:]
        expected = hmac.new(self.rtcp_auth, body, hashlib.sha1).digest()
        if not hmac.compare_digest(expected[:TAG_LENGTH], tag):
            raise ValueError("SRTCP authentication failed")
        e_index = struct.unpack_from("!I", body, len(body) - 4)[0]
        packet = body[:-4]
        if not e_index & 0x80000000:
            return packet
        index = e_index & 0x7FFFFFFF
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        keystream = aes_cm_keystream(self.rtcp_key, self._iv(self.rtcp_salt, ssrc, index),
                                     len(packet) - 8)
        return packet[:8] + _xor(packet[8:], keystream)
