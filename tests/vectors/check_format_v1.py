#!/usr/bin/env python3
"""Independent check of format-v1.json against docs/FORMAT.md, written from
the document (not from the Rust code) with the `cryptography` package.

    python3 tests/vectors/check_format_v1.py [tests/vectors/format-v1.json]
"""
import json
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def data_key(secret, producer, epoch, topic):
    info = producer + struct.pack(">I", epoch) + topic
    return HKDF(hashes.SHA256(), 32, b"kafka-e2ee/v1/data-key", info).derive(secret)


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
    if flags & 0xFC:
        raise FormatError("reserved_flags")
    if flags & 0x02 and not flags & 0x01:
        raise FormatError("key_null_without_key_bound")
    return header


def binding_of(flags):
    if not flags & 0x01:
        return "unbound"
    return "null" if flags & 0x02 else "bytes"


def aad(topic, header, binding):
    out = b"kafka-e2ee/v1" + struct.pack(">H", len(topic)) + topic + header[:18]
    if binding not in ("unbound", "null"):
        key = bytes.fromhex(binding)
        out += struct.pack(">I", len(key)) + key
    return out


def nonce(header):
    return b"\x00\x00\x00\x00" + header[10:14] + header[14:18]


def open_record(key, header, topic, binding, ciphertext):
    decode(header)
    given = binding if binding in ("unbound", "null") else "bytes"
    if binding_of(header[1]) != given:
        raise FormatError("key_binding_mismatch")
    try:
        return ChaCha20Poly1305(key).decrypt(
            nonce(header), ciphertext + header[18:34], aad(topic, header, binding)
        )
    except InvalidTag:
        raise FormatError("authentication")


def seal(key, producer, epoch, counter, topic, binding, plaintext):
    flags = 0 if binding == "unbound" else (0x03 if binding == "null" else 0x01)
    head = bytes([1, flags]) + producer + struct.pack(">II", epoch, counter)
    sealed = ChaCha20Poly1305(key).encrypt(nonce(head), plaintext, aad(topic, head, binding))
    ct, tag = sealed[:-16], sealed[-16:]
    return head + tag, ct


def main(path):
    vectors = json.load(open(path, encoding="utf-8"))
    pos = neg = 0
    for v in vectors:
        topic = bytes.fromhex(v["topic_hex"])
        assert topic == v["topic"].encode("utf-8"), v["description"]
        header = bytes.fromhex(v["header"])
        ciphertext = bytes.fromhex(v["ciphertext"])
        if "expected_error" in v:
            try:
                open_record(bytes.fromhex(v["data_key"]), header, topic, v["key_binding"], ciphertext)
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
        got = seal(key, producer, v["epoch"], v["counter"], topic, v["key_binding"], plaintext)
        assert got == (header, ciphertext), v["description"]
        assert open_record(key, header, topic, v["key_binding"], ciphertext) == plaintext
        pos += 1
    print(f"ok: {pos} positive and {neg} negative vectors")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors/format-v1.json")
