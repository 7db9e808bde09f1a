#!/usr/bin/env python3
"""Independent check of format-v1.json against docs/FORMAT.md, written from
the document (not from the Rust code) with the `cryptography`, `zstandard`
and `lz4` packages.

    python3 tests/vectors/check_format_v1.py [tests/vectors/format-v1.json]
    python3 tests/vectors/check_format_v1.py tests/vectors/format-v1-headers.json
    python3 tests/vectors/check_format_v1.py tests/vectors/format-v1-keys.json

Vectors with sealed application headers (FORMAT.md section 12) carry
`headers`, `header_list`, `headers_key` and `sealed_headers`. The keys file
(section 13) has tokens of record keys and records sealed with a tokenized
key; FF1 is written here from NIST SP 800-38G (a test oracle: the product
uses the `fpe` crate), so the bit order of section 13.1 is checked too.
"""
import json
import struct
import sys

import lz4.block
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AES_256_GCM = 0x08
COMPRESSION = 0x30
HEADERS = 0x80
KIND_NULL = 0x01
KIND_CLEAR = 0x02
COMPRESSION_NAMES = {0x00: "none", 0x10: "zstd", 0x20: "lz4"}


def data_key(secret, producer, epoch, topic):
    info = producer + struct.pack(">I", epoch) + topic
    return HKDF(hashes.SHA256(), 32, b"kafka-e2ee/v1/data-key", info).derive(secret)


def cipher_key(key, cipher):
    if cipher == "chacha20-poly1305":
        return key
    return HKDF(hashes.SHA256(), 32, b"kafka-e2ee/v1/cipher-key", cipher.encode()).derive(key)


def cipher_of(flags):
    return "aes-256-gcm" if flags & AES_256_GCM else "chacha20-poly1305"


def aead(key, flags):
    if flags & AES_256_GCM:
        return AESGCM(cipher_key(key, "aes-256-gcm"))
    return ChaCha20Poly1305(key)


class FormatError(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


def decode(header):
    if len(header) != 34:
        raise FormatError("header_length")
    if header[0] != 1:
        raise FormatError("unsupported_version")
    flags = header[1]
    if flags & 0x04 or flags & COMPRESSION == COMPRESSION:
        raise FormatError("reserved_flags")
    if flags & 0x02 and not flags & 0x01:
        raise FormatError("key_null_without_key_bound")
    return header


def headers_key(key, cipher):
    return HKDF(hashes.SHA256(), 32, b"kafka-e2ee/v1/headers-key", cipher.encode()).derive(key)


def headers_aead(key, flags):
    k = headers_key(key, cipher_of(flags))
    return AESGCM(k) if flags & AES_256_GCM else ChaCha20Poly1305(k)


def headers_aad(topic, header):
    return b"kafka-e2ee/v1/headers" + struct.pack(">H", len(topic)) + topic + header[:18]


def encode_list(headers):
    """headers: [(name str, value bytes or None, clear bool)]"""
    out = b""
    for name, value, clear in headers:
        kind = (KIND_NULL if value is None else 0) | (KIND_CLEAR if clear else 0)
        n = name.encode("utf-8")
        out += bytes([kind]) + struct.pack(">I", len(n)) + n
        if value is not None:
            out += struct.pack(">I", len(value)) + value
    return out


def decode_list(data):
    out, i = [], 0
    try:
        while i < len(data):
            kind = data[i]
            if kind & ~(KIND_NULL | KIND_CLEAR):
                raise FormatError("header_list")
            (n,) = struct.unpack(">I", data[i + 1:i + 5])
            name = data[i + 5:i + 5 + n]
            if len(name) != n:
                raise FormatError("header_list")
            name = name.decode("utf-8")
            i += 5 + n
            value = None
            if not kind & KIND_NULL:
                (m,) = struct.unpack(">I", data[i:i + 4])
                value = data[i + 4:i + 4 + m]
                if len(value) != m:
                    raise FormatError("header_list")
                i += 4 + m
            out.append((name, value, bool(kind & KIND_CLEAR)))
    except (struct.error, UnicodeDecodeError):
        raise FormatError("header_list")
    return out


def headers_of(items):
    return [(h["name"], None if h["value"] is None else bytes.fromhex(h["value"]), h["clear"])
            for h in items]


def open_headers(key, header, topic, sealed, visible):
    """Section 12.4 steps 2, 3 and 5: the decoded list, or None."""
    flags = header[1]
    if not flags & HEADERS:
        if sealed:
            raise FormatError("sealed_headers_unexpected")
        return None
    if not sealed:
        raise FormatError("sealed_headers_missing")
    if len(sealed) > 1:
        raise FormatError("sealed_headers_duplicate")
    if len(sealed[0]) < 16:
        raise FormatError("authentication")
    try:
        plain = headers_aead(key, flags).decrypt(nonce(header), sealed[0], headers_aad(topic, header))
    except InvalidTag:
        raise FormatError("authentication")
    listed = decode_list(plain)
    clear = [(n, v) for n, v, c in listed if c]
    names = {n for n, _ in clear}
    if [(n, v) for n, v, _ in visible if n in names] != clear:
        raise FormatError("clear_headers_mismatch")
    return plain


def binding_of(flags):
    if not flags & 0x01:
        return "unbound"
    return "null" if flags & 0x02 else "bytes"


def aad(topic, header, binding, value_len=None):
    out = b"kafka-e2ee/v1" + struct.pack(">H", len(topic)) + topic + header[:18]
    if value_len is not None:
        out += struct.pack(">Q", value_len)
    if binding not in ("unbound", "null"):
        key = bytes.fromhex(binding)
        out += struct.pack(">I", len(key)) + key
    return out


def nonce(header):
    return b"\x00\x00\x00\x00" + header[10:14] + header[14:18]


def split_padding(value):
    """A compressed value is sealed || 0x80 || zeros: the last non-zero byte
    is the marker."""
    end = len(value.rstrip(b"\x00"))
    if end == 0 or value[end - 1] != 0x80:
        raise FormatError("authentication")
    return value[: end - 1]


def decompress(compression, packed, length):
    try:
        if compression == "zstd":
            out = zstandard.ZstdDecompressor().decompress(packed, max_output_size=length)
        else:
            out = lz4.block.decompress(packed, uncompressed_size=length)
    except Exception:
        raise FormatError("decompression")
    if len(out) != length:
        raise FormatError("decompression")
    return out


def open_record(key, header, topic, binding, value, sealed=(), visible=()):
    """Returns (plaintext, compressed form or None, header list or None)."""
    decode(header)
    flags = header[1]
    given = binding if binding in ("unbound", "null") else "bytes"
    if binding_of(flags) != given:
        raise FormatError("key_binding_mismatch")
    listed = open_headers(key, header, topic, list(sealed), list(visible))
    compression = COMPRESSION_NAMES[flags & COMPRESSION]
    compressed = compression != "none"
    sealed = split_padding(value) if compressed else value
    try:
        opened = aead(key, flags).decrypt(
            nonce(header),
            sealed + header[18:34],
            aad(topic, header, binding, len(value) if compressed else None),
        )
    except InvalidTag:
        raise FormatError("authentication")
    if not compressed:
        return opened, None, listed
    return decompress(compression, opened, len(value)), opened, listed


def seal(key, producer, epoch, counter, topic, binding, plaintext, cipher, compressed, listed=None):
    """Seals `compressed` (the compressed form of `plaintext`) when given, and
    the encoded header list `listed` when given (returned as a third item)."""
    flags = 0 if binding == "unbound" else (0x03 if binding == "null" else 0x01)
    if cipher == "aes-256-gcm":
        flags |= AES_256_GCM
    if compressed is not None:
        flags |= {"zstd": 0x10, "lz4": 0x20}[compressed[0]]
    if listed is not None:
        flags |= HEADERS
    head = bytes([1, flags]) + producer + struct.pack(">II", epoch, counter)
    message = plaintext if compressed is None else compressed[1]
    value_len = None if compressed is None else len(plaintext)
    sealed = aead(key, flags).encrypt(nonce(head), message, aad(topic, head, binding, value_len))
    ct, tag = sealed[:-16], sealed[-16:]
    if compressed is not None:
        assert len(ct) < len(plaintext)
        ct += b"\x80" + bytes(len(plaintext) - len(ct) - 1)
    if listed is None:
        return head + tag, ct
    sealed = headers_aead(key, flags).encrypt(nonce(head), listed, headers_aad(topic, head))
    return head + tag, ct, sealed


TOKEN_KEY = 0x40


def hkdf(salt, ikm, info, length):
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def ff1_radix2(key, tweak, bits):
    """NIST SP 800-38G Algorithm 7 (FF1) for radix 2: `bits` is a list of
    0/1 numerals, most significant first."""
    n, t = len(bits), len(tweak)
    u, v = n // 2, n - n // 2
    a, b = bits[:u], bits[u:]
    blen = (v + 7) // 8
    d = 4 * ((blen + 3) // 4) + 4
    p = bytes([1, 2, 1]) + (2).to_bytes(3, "big") + bytes([10, u % 256]) + n.to_bytes(4, "big") \
        + t.to_bytes(4, "big")
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

    def prf(x):
        y = bytes(16)
        for j in range(0, len(x), 16):
            y = ecb.update(bytes(i ^ k for i, k in zip(y, x[j:j + 16])))
        return y

    def num(xs):
        return int("".join(map(str, xs)), 2) if xs else 0

    for i in range(10):
        q = tweak + bytes((-t - blen - 1) % 16) + bytes([i]) + num(b).to_bytes(blen, "big")
        r = prf(p + q)
        s = r
        for j in range(1, (d + 15) // 16):
            s += ecb.update(bytes(x ^ y for x, y in zip(r, j.to_bytes(16, "big"))))
        y = int.from_bytes(s[:d], "big")
        m = u if i % 2 == 0 else v
        c = (num(a) + y) % (1 << m)
        a, b = b, [int(ch) for ch in format(c, "0%db" % m)] if m else []
    return a + b


def token(secret, topic, key):
    """Section 13.1."""
    n = len(key)
    if n == 0:
        return b""
    if n < 3 or n > 255 * 32:
        raise FormatError("key_not_tokenizable")
    if n < 16:
        k = hkdf(b"kafka-e2ee/v1/key-token", secret, b"ff1-aes-256", 32)
        bits = [(byte >> i) & 1 for byte in key for i in range(8)]
        out = ff1_radix2(k, topic, bits)
        return bytes(sum(out[8 * j + i] << i for i in range(8)) for j in range(n))
    prf = hkdf(b"kafka-e2ee/v1/key-token", secret, b"hkdf-sha256", 32)
    ikm = struct.pack(">H", len(topic)) + topic + key
    return hkdf(prf, ikm, b"kafka-e2ee/v1/key-token/expand", n)


def record_key_aead(key, flags):
    k = hkdf(b"kafka-e2ee/v1/record-key-key", key, cipher_of(flags).encode(), 32)
    return AESGCM(k) if flags & AES_256_GCM else ChaCha20Poly1305(k)


def key_aad(topic, header, wire):
    return b"kafka-e2ee/v1/record-key" + struct.pack(">H", len(topic)) + topic + header[:18] \
        + struct.pack(">I", len(wire)) + wire


def open_key(key, header, topic, wire, sealed):
    """Section 13.3: the real key, or None for a record without TOKEN_KEY."""
    decode(header)
    flags = header[1]
    if not flags & TOKEN_KEY:
        if sealed:
            raise FormatError("sealed_key_unexpected")
        return None
    if not sealed:
        raise FormatError("sealed_key_missing")
    if len(sealed) > 1:
        raise FormatError("sealed_key_duplicate")
    if wire is None:
        raise FormatError("sealed_key_unexpected")
    if len(sealed[0]) < 16:
        raise FormatError("authentication")
    try:
        real = record_key_aead(key, flags).decrypt(nonce(header), sealed[0], key_aad(topic, header, wire))
    except InvalidTag:
        raise FormatError("authentication")
    if len(real) != len(wire):
        raise FormatError("sealed_key_length")
    return real


def main_keys(vectors):
    tokens = records = neg = 0
    for v in vectors:
        topic = v["topic"].encode("utf-8")
        if "expected_error" in v:
            header = bytes.fromhex(v["header"])
            wire = None if v["wire_key"] is None else bytes.fromhex(v["wire_key"])
            binding = "unbound" if not v["key_bound"] else ("null" if wire is None else wire.hex())
            sealed_h = [bytes.fromhex(v["sealed_headers"])] if "sealed_headers" in v else []
            try:
                dk = bytes.fromhex(v["data_key"])
                open_key(dk, header, topic, wire, [bytes.fromhex(k) for k in v["sealed_keys"]])
                open_record(dk, header, topic, binding, bytes.fromhex(v["ciphertext"]), sealed_h)
            except FormatError as e:
                assert e.kind == v["expected_error"], (v["description"], e.kind)
            else:
                raise AssertionError("opened: " + v["description"])
            neg += 1
            continue
        secret, key = bytes.fromhex(v["token_secret"]), bytes.fromhex(v["key"])
        tok = token(secret, topic, key)
        assert tok.hex() == v["token"], v["description"]
        if "epoch" not in v:
            tokens += 1
            continue
        dk = bytes.fromhex(v["data_key"])
        header, ct = bytes.fromhex(v["header"]), bytes.fromhex(v["ciphertext"])
        assert header[1] & TOKEN_KEY, v["description"]
        real = open_key(dk, header, topic, tok, [bytes.fromhex(v["sealed_key"])])
        assert real == key, v["description"]
        # Sealing again reproduces e2ee.k.
        again = record_key_aead(dk, header[1]).encrypt(nonce(header), key, key_aad(topic, header, tok))
        assert again.hex() == v["sealed_key"], v["description"]
        binding = tok.hex() if v["key_bound"] else "unbound"
        sealed_h = [bytes.fromhex(v["sealed_headers"])] if "sealed_headers" in v else []
        opened, _, listed = open_record(dk, header, topic, binding, ct, sealed_h)
        assert opened == bytes.fromhex(v["plaintext"]), v["description"]
        assert (listed.hex() if listed is not None else None) == v.get("header_list"), v["description"]
        records += 1
    print(f"ok: {tokens} token, {records} record and {neg} negative keys vectors")


def main(path):
    vectors = json.load(open(path, encoding="utf-8"))
    if any("token" in v or "sealed_keys" in v for v in vectors):
        return main_keys(vectors)
    pos = neg = 0
    for v in vectors:
        topic = bytes.fromhex(v["topic_hex"])
        assert topic == v["topic"].encode("utf-8"), v["description"]
        header = bytes.fromhex(v["header"])
        ciphertext = bytes.fromhex(v["ciphertext"])
        if "expected_error" in v:
            sealed = [bytes.fromhex(h) for h in v.get("sealed_headers", [])]
            visible = headers_of(v.get("visible_headers", []))
            try:
                open_record(bytes.fromhex(v["data_key"]), header, topic, v["key_binding"], ciphertext,
                            sealed, visible)
            except FormatError as e:
                assert e.kind == v["expected_error"], (v["description"], e.kind)
            else:
                raise AssertionError("opened: " + v["description"])
            neg += 1
            continue
        producer = bytes.fromhex(v["producer"])
        key = data_key(bytes.fromhex(v["epoch_secret"]), producer, v["epoch"], topic)
        assert key.hex() == v["data_key"], v["description"]
        plaintext = bytes.fromhex(v["plaintext"])
        cipher = v.get("cipher", "chacha20-poly1305")
        compression = v.get("compression", "none")
        assert cipher_of(header[1]) == cipher, v["description"]
        if "cipher" in v:
            assert cipher_key(key, cipher).hex() == v["cipher_key"], v["description"]
        compressed = None
        if compression != "none":
            compressed = (compression, bytes.fromhex(v["compressed"]))
            assert decompress(compression, compressed[1], len(plaintext)) == plaintext
        listed, sealed, visible = None, [], []
        if "headers" in v:
            headers = headers_of(v["headers"])
            listed = encode_list(headers)
            assert listed.hex() == v["header_list"], v["description"]
            assert decode_list(listed) == headers, v["description"]
            assert headers_key(key, cipher).hex() == v["headers_key"], v["description"]
            sealed = [bytes.fromhex(v["sealed_headers"])]
            visible = [h for h in headers if h[2]]
        got = seal(key, producer, v["epoch"], v["counter"], topic, v["key_binding"], plaintext,
                   cipher, compressed, listed)
        expected = (header, ciphertext) if listed is None else (header, ciphertext, sealed[0])
        assert got == expected, v["description"]
        assert len(ciphertext) == len(plaintext), v["description"]
        opened, packed, got_list = open_record(key, header, topic, v["key_binding"], ciphertext,
                                               sealed, visible)
        assert opened == plaintext, v["description"]
        assert packed == (compressed and compressed[1]), v["description"]
        assert got_list == listed, v["description"]
        pos += 1
    print(f"ok: {pos} positive and {neg} negative vectors")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors/format-v1.json")
