"""The kafka-e2ee CLI against a real broker: `inspect` on topics of real
ciphertext (sealed by the core engine), plaintext and malformed records;
`doctor` with a live broker and control topic."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
CLI = TARGET / "kafka-e2ee"
PRODUCE_SEALED = TARGET / "examples" / "produce_sealed"


@pytest.fixture(scope="module", autouse=True)
def built():
    """The release CLI and sealing helper, as scripts/test's release step
    builds them (a no-op there; a debug build with other features would
    recompile the dependency tree, minutes of CI)."""
    for extra in ([], ["--example", "produce_sealed"]):
        subprocess.run(
            ["cargo", "build", "-q", "--release", "-p", "kafka-e2ee-ffi", "-p", "kafka-e2ee-cli", *extra],
            cwd=ROOT,
            check=True,
            timeout=1800,
        )


def cli(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 120):
    p = subprocess.run(
        [str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"kafka-e2ee {args} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def setup_trust(tmp: Path) -> tuple[Path, Path]:
    cli("authority", "init", "--out", str(tmp / "auth"))
    cred = tmp / "writer.cred"
    cli("credential", "issue", "--authority", str(tmp / "auth"), "--name", "writer",
        "--produce", "*", "--consume", "*", "--out", str(cred))
    return cred, tmp / "auth" / "trust"


def produce_sealed(broker, topic: str, count: int, cred: Path, trust: Path, rotate_every=0):
    p = subprocess.run(
        [str(PRODUCE_SEALED), broker.bootstrap, topic, str(count), str(cred), str(trust),
         str(rotate_every)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return [line.split()[0] for line in p.stdout.splitlines()]


def produce_plain(broker, topic: str, lines: list[str], headers: bool = False):
    args = ["console-producer", "--topic", topic]
    if headers:
        args += ["--property", "parse.headers=true"]
    broker.tool(*args, input="\n".join(lines) + "\n")


def test_inspect_counts_a_mixed_topic_and_fails_on_plaintext(broker, tmp_path):
    cred, trust = setup_trust(tmp_path)
    broker.create_topic("mixed")
    key_ids = produce_sealed(broker, "mixed", 6, cred, trust, rotate_every=3)
    assert len(set(key_ids)) == 2, key_ids  # two epochs of one producer
    produce_plain(broker, "mixed", ["plain one", "plain two", "plain three"])
    # Header values the console producer can write: wrong length, and a
    # 34-byte header with version 2.
    bad_version = "\x02" + "A" * 33
    produce_plain(
        broker, "mixed",
        [f"e2ee:short\tforged one", f"e2ee:{bad_version}\tforged two"],
        headers=True,
    )

    p = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "mixed", "--json",
            check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["sampled"] == 11
    assert (report["encrypted"], report["plaintext"], report["malformed"]) == (6, 3, 2)
    assert report["protected"] is True
    producer = key_ids[0].split("/")[0]
    assert [x["producer"] for x in report["producers"]] == [producer]
    assert sorted(report["producers"][0]["epochs"]) == sorted(
        {int(k.split("/")[1]) for k in key_ids})
    assert report["newest_key"]["key_id"] == key_ids[-1]
    assert 0 <= report["newest_key"]["age_s"] < 600
    assert "NOT PROTECTED" in report["verdict"]
    # Progress went to stderr, not into the JSON.
    assert "connecting to" in p.stderr

    text = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "mixed",
               check=False).stdout
    assert "plaintext          3" in text and "malformed          2" in text, text
    assert "no e2ee header (plaintext)" in text

    # --max samples the newest records: the last 5 are 3 plaintext + 2 forged.
    p = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "mixed", "--max", "5",
            "--json", check=False)
    r = json.loads(p.stdout)
    assert (r["sampled"], r["encrypted"], r["plaintext"], r["malformed"]) == (5, 0, 3, 2)


def test_inspect_an_encrypted_topic_passes(broker, tmp_path):
    cred, trust = setup_trust(tmp_path)
    broker.create_topic("sealed", partitions=1)
    produce_sealed(broker, "sealed", 20, cred, trust)
    p = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "sealed")
    assert "every sampled record with a value is encrypted" in p.stdout, p.stdout
    assert "encrypted         20" in p.stdout, p.stdout
    # The broker's own segment files hold no plaintext value.
    segments = list((broker.data_dir / "sealed-0").glob("*.log"))
    assert segments
    assert not any(b"secret value" in s.read_bytes() for s in segments)


def test_inspect_bad_input(broker, tmp_path):
    p = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "no-such-topic",
            check=False)
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    # A config whose e2ee.topics does not cover the topic: plaintext is reported
    # but is not a failure.
    broker.create_topic("public")
    produce_plain(broker, "public", ["hello"])
    cfg = tmp_path / "c.properties"
    cfg.write_text(f"bootstrap.servers={broker.bootstrap}\ne2ee.topics=orders.*\n")
    p = cli("inspect", "--config", str(cfg), "--topic", "public", "--json")
    r = json.loads(p.stdout)
    assert (r["plaintext"], r["protected"]) == (1, False)


def test_doctor_against_a_live_broker(broker, tmp_path):
    cred, trust = setup_trust(tmp_path)
    cfg = tmp_path / "producer.properties"
    cfg.write_text(
        f"bootstrap.servers={broker.bootstrap}\n"
        "interceptor.classes=dev.kafkae2ee.E2eeProducerInterceptor\n"
        f"e2ee.credential={cred}\ne2ee.trust={trust}\ne2ee.state.dir={tmp_path / 'st'}\n"
    )
    p = cli("doctor", "--config", str(cfg), "--json")
    r = json.loads(p.stdout)
    assert r["problems"] == 0, p.stdout
    control = [c for c in r["checks"] if c["subject"] == "control topic"]
    assert control[0]["level"] == "warning" and "does not exist" in control[0]["message"]
    assert "kafka-topics.sh" in control[0]["fix"]
    keys = [c for c in r["checks"] if c["subject"] == "keys topic"]
    assert keys[0]["level"] == "warning" and "does not exist" in keys[0]["message"]
    # the retention the clients would give it: default retention + rotation + 1 day
    assert "cleanup.policy=compact,delete" in keys[0]["fix"]
    assert f"retention.ms={604_800_000 + 900_000 + 86_400_000}" in keys[0]["fix"]

    broker.tool("topics", "--create", "--topic", "_e2ee_control", "--partitions", "1")
    broker.tool("topics", "--create", "--topic", "_e2ee_keys", "--partitions", "1")
    r = json.loads(cli("doctor", "--config", str(cfg), "--json").stdout)
    control = [c for c in r["checks"] if c["subject"] == "control topic"]
    assert control[0]["level"] == "ok", control
    keys = [c for c in r["checks"] if c["subject"] == "keys topic"]
    assert keys[0]["level"] == "ok", keys
    broker_check = [c for c in r["checks"] if c["subject"] == "broker"]
    assert broker_check[0]["level"] == "ok"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_tls_is_verified_against_the_configured_ca(tmp_path):
    """No TLS listener on the test broker: a TLS server that is not Kafka
    shows the handshake succeeds with the right CA (the failure comes after,
    from the Kafka protocol) and fails on the certificate with the wrong one."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=test-ca", cwd=tmp_path)
    _openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost",
             cwd=tmp_path)
    (tmp_path / "ext").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "1", "-extfile", "ext",
             cwd=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "leaf.pem",
         "-key", "leaf.key", "-quiet"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not start"
                time.sleep(0.1)
        good = tmp_path / "good.properties"
        good.write_text(f"bootstrap.servers=localhost:{port}\nsecurity.protocol=SSL\n"
                        f"ssl.ca.location={tmp_path / 'ca.pem'}\n")
        p = cli("inspect", "--config", str(good), "--topic", "t", "--timeout", "10",
                check=False)
        assert p.returncode == 1
        assert "certificate" not in p.stderr and "cannot sync versions" in p.stderr, p.stderr
        bad = tmp_path / "bad.properties"
        bad.write_text(f"bootstrap.servers=localhost:{port}\nsecurity.protocol=SSL\n")
        p = cli("inspect", "--config", str(bad), "--topic", "t", "--timeout", "10",
                check=False)
        assert p.returncode == 1 and "invalid peer certificate" in p.stderr, p.stderr
    finally:
        server.kill()
        server.wait(timeout=10)
