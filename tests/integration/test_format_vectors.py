"""The record-format vectors, checked by the independent Python
implementation (tests/vectors/check_format_v1.py, written from
docs/FORMAT.md with the cryptography, zstandard and lz4 packages). The Rust
side checks the same file in core/tests/format_vectors.rs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "tests" / "vectors" / "check_format_v1.py"
VECTORS = ROOT / "tests" / "vectors" / "format-v1.json"
HEADERS_VECTORS = ROOT / "tests" / "vectors" / "format-v1-headers.json"


def test_python_checker_accepts_every_vector():
    vectors = json.loads(VECTORS.read_text())
    positive = [v for v in vectors if "expected_error" not in v]
    negative = [v for v in vectors if "expected_error" in v]
    r = subprocess.run([sys.executable, str(CHECKER), str(VECTORS)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"ok: {len(positive)} positive and {len(negative)} negative vectors"
    # Both ciphers and both compressions are covered, and the original
    # ChaCha20-Poly1305 vectors carry no new fields.
    assert {v.get("cipher", "chacha20-poly1305") for v in positive} == {"chacha20-poly1305", "aes-256-gcm"}
    assert {v.get("compression", "none") for v in positive} == {"none", "zstd", "lz4"}


def test_python_checker_rejects_a_wrong_vector(tmp_path):
    # The checker is not vacuous: one flipped ciphertext bit in a compressed
    # AES vector makes it fail.
    vectors = json.loads(VECTORS.read_text())
    v = next(v for v in vectors if v.get("cipher") == "aes-256-gcm" and v.get("compression") == "lz4")
    ct = bytearray.fromhex(v["ciphertext"])
    ct[0] ^= 1
    v["ciphertext"] = ct.hex()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(vectors))
    r = subprocess.run([sys.executable, str(CHECKER), str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "AES-256-GCM + lz4" in r.stderr


def test_python_checker_accepts_every_headers_vector():
    # Sealed application headers (docs/FORMAT.md section 12).
    vectors = json.loads(HEADERS_VECTORS.read_text())
    positive = [v for v in vectors if "expected_error" not in v]
    negative = [v for v in vectors if "expected_error" in v]
    r = subprocess.run([sys.executable, str(CHECKER), str(HEADERS_VECTORS)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"ok: {len(positive)} positive and {len(negative)} negative vectors"
    assert {v["cipher"] for v in positive} == {"chacha20-poly1305", "aes-256-gcm"}
    assert {v["expected_error"] for v in negative} >= {
        "authentication", "sealed_headers_missing", "sealed_headers_duplicate",
        "sealed_headers_unexpected", "clear_headers_mismatch"}
    assert any(len(v["headers"]) == 0 for v in positive)
    assert any(h["value"] is None for v in positive for h in v["headers"])


def test_python_checker_rejects_a_wrong_headers_vector(tmp_path):
    # One flipped bit of a sealed header list makes the checker fail.
    vectors = json.loads(HEADERS_VECTORS.read_text())
    v = next(v for v in vectors if "expected_error" not in v and v["headers"])
    sealed = bytearray.fromhex(v["sealed_headers"])
    sealed[0] ^= 1
    v["sealed_headers"] = sealed.hex()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(vectors))
    r = subprocess.run([sys.executable, str(CHECKER), str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


KEYS_VECTORS = ROOT / "tests" / "vectors" / "format-v1-keys.json"


def test_python_checker_accepts_every_keys_vector():
    # Tokenized record keys (docs/FORMAT.md section 13): the tokens (FF1
    # and PRF regimes) and records whose real key travels in e2ee.k.
    vectors = json.loads(KEYS_VECTORS.read_text())
    tokens = [v for v in vectors if "epoch" not in v and "expected_error" not in v]
    records = [v for v in vectors if "epoch" in v]
    negative = [v for v in vectors if "expected_error" in v]
    r = subprocess.run([sys.executable, str(CHECKER), str(KEYS_VECTORS)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == (f"ok: {len(tokens)} token, {len(records)} record and "
                                f"{len(negative)} negative keys vectors")
    lengths = {len(v["key"]) // 2 for v in tokens}
    assert 0 in lengths and any(3 <= n < 16 for n in lengths) and any(n >= 16 for n in lengths)
    assert {v["expected_error"] for v in negative} >= {
        "authentication", "sealed_key_missing", "sealed_key_duplicate", "sealed_key_unexpected"}


def test_python_checker_rejects_a_wrong_token(tmp_path):
    # One flipped bit of an FF1 token, and of a sealed key, each fail.
    for field, pick in (("token", lambda v: "epoch" not in v and 3 <= len(v["key"]) // 2 < 16),
                        ("sealed_key", lambda v: "epoch" in v)):
        vectors = json.loads(KEYS_VECTORS.read_text())
        v = next(v for v in vectors if "expected_error" not in v and pick(v))
        b = bytearray.fromhex(v[field])
        b[0] ^= 1
        v[field] = b.hex()
        path = tmp_path / f"bad-{field}.json"
        path.write_text(json.dumps(vectors))
        r = subprocess.run([sys.executable, str(CHECKER), str(path)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0, field
