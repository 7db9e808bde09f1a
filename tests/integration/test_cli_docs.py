"""Runs the commands of docs/QUICKSTART.md and docs/OPERATIONS.md, so the
docs stay true. Every fenced block whose info string is `sh test` runs, in
order, in one scratch directory, against a real broker; `sh test exit=N`
expects exit status N. `kafka-e2ee`, `kafka-topics.sh` and
`kafka-console-producer.sh` are on PATH (the latter two are Kafka's own tools
via scripts/test-broker), and $BOOTSTRAP is the broker."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
DOCS = [ROOT / "docs" / "QUICKSTART.md", ROOT / "docs" / "OPERATIONS.md"]
FENCE = re.compile(r"^```sh test(?: exit=(\d+))?\n(.*?)^```\n", re.S | re.M)


def blocks(path: Path) -> list[tuple[int, str]]:
    return [(int(m.group(1) or 0), m.group(2)) for m in FENCE.finditer(path.read_text())]


def test_docs_have_tested_blocks():
    for doc in DOCS:
        assert len(blocks(doc)) >= 3, f"{doc.name}: expected at least 3 `sh test` blocks"


JAR = ROOT / "java-interceptor" / "target" / "kafka-e2ee-0.1.0.jar"
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"


@pytest.fixture(scope="module")
def built():
    """The CLI, and the two encryption hosts the QUICKSTART runs: the jar
    (with its native library) and the librdkafka plugin."""
    subprocess.run(
        ["cargo", "build", "-q", "--release", "-p", "kafka-e2ee-ffi", "-p", "kafka-e2ee-cli"],
        cwd=ROOT, check=True, timeout=1800,
    )
    if not JAR.exists():
        subprocess.run([str(ROOT / "scripts" / "build-native")], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["mvn", "-B", "-q", "-f", str(ROOT / "java-interceptor" / "pom.xml"), "package",
                        "-DskipTests"], cwd=ROOT, check=True)


def shims(bin_dir: Path) -> None:
    bin_dir.mkdir()
    (bin_dir / "kafka-e2ee").symlink_to(TARGET / "kafka-e2ee")
    for name, tool in [("kafka-topics.sh", "topics"),
                       ("kafka-console-producer.sh", "console-producer")]:
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{ROOT}/scripts/test-broker" tool {tool} "$@"\n')
        shim.chmod(0o755)


def test_quickstart_and_operations_commands_run(built, broker, tmp_path):
    bin_dir = tmp_path / "bin"
    shims(bin_dir)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BOOTSTRAP": broker.bootstrap,
           "KAFKA_E2EE_JAR": str(JAR), "KAFKA_E2EE_PLUGIN": str(PLUGIN)}
    ran = 0
    for doc in DOCS:
        for i, (want, script) in enumerate(blocks(doc)):
            p = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=work, env=env, capture_output=True, text=True, timeout=300,
            )
            assert p.returncode == want, (
                f"{doc.name} block {i + 1} exited {p.returncode}, expected {want}:\n"
                f"{script}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
            )
            ran += 1
    assert ran >= 6
    # What the blocks claim happened, happened.
    assert (work / "authority" / "trust").exists()
    assert (work / "pinned.trust").exists()
    assert "denied: 1" in subprocess.run(
        [str(TARGET / "kafka-e2ee"), "trust", "show", "authority/trust"],
        cwd=work, capture_output=True, text=True, check=True).stdout
    assert '"plaintext":1' in (work / "orders.eu.json").read_text()
    # The Java producer's records reached the librdkafka consumer decrypted,
    # and the broker holds none of them in plaintext.
    assert (work / "received.txt").read_text().splitlines() == ["order 1", "order 2", "order 3"]
    disk = b"".join(p.read_bytes() for p in broker.data_dir.glob("orders.us-*/*.log"))
    assert disk and b"order 1" not in disk and b"e2ee" in disk
