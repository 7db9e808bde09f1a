"""A real Kafka broker for tests, run by scripts/test-broker.

Used by conftest.py's ``broker`` fixture and by any test that needs its own
broker. Also runs Kafka's own command-line tools against it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_BROKER = ROOT / "scripts" / "test-broker"
# The keys topic's retention `doctor` asks for with default settings: the
# longest key retention (7 days), one rotation (15 minutes) and a day.
KEYS_RETENTION_MS = 604_800_000 + 900_000 + 86_400_000


class BrokerError(RuntimeError):
    """scripts/test-broker failed; the message holds its stderr."""


@dataclass
class Broker:
    """A running single-node broker; segment files live under ``data_dir``."""

    dir: Path
    bootstrap: str
    pid: int

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        return self.dir / "logs" / "server.log"

    def tool(
        self,
        name: str,
        *args: str,
        input: str | bytes | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Runs one of Kafka's tools (console-producer, console-consumer,
        producer-perf-test, consumer-perf-test, topics) against this broker:
        ``--bootstrap-server`` is added. Returns the completed process (text mode
        unless ``input`` is bytes)."""
        return run_tool(
            name,
            "--bootstrap-server",
            self.bootstrap,
            *args,
            input=input,
            timeout=timeout,
            check=check,
        )

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        self.tool(
            "topics",
            "--create",
            "--topic",
            topic,
            "--partitions",
            str(partitions),
            "--replication-factor",
            "1",
        )

    def create_topics_with_e2ee(self, *topics: str) -> None:
        """Creates ``topics`` (one partition each) and kafka-e2ee's control and
        keys topics as ``doctor`` asks for them, in one admin call: faster than
        a JVM per topic."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([
            *(NewTopic(t, 1, 1) for t in topics),
            NewTopic("_e2ee_control", 1, 1, config={"cleanup.policy": "delete", "retention.ms": "3600000"}),
            NewTopic("_e2ee_keys", 1, 1, config={"cleanup.policy": "compact,delete",
                                                 "retention.ms": str(KEYS_RETENTION_MS)}),
        ])
        for f in futures.values():
            f.result(timeout=60)

    def stop(self) -> None:
        stop(self.dir)

    def restart(self) -> None:
        """Starts this broker again after ``stop``: same data, same address."""
        again = restart(self.dir)
        assert again.bootstrap == self.bootstrap, (again.bootstrap, self.bootstrap)
        self.pid = again.pid


def run_tool(
    name: str,
    *args: str,
    input: str | bytes | None = None,
    timeout: float = 60,
    check: bool = True,
) -> subprocess.CompletedProcess:
    text = not isinstance(input, bytes)
    proc = subprocess.run(
        [str(TEST_BROKER), "tool", name, *args],
        input=input,
        capture_output=True,
        text=text,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise BrokerError(
            f"kafka tool {name} {' '.join(args)} exited with {proc.returncode}:\n{proc.stderr}"
        )
    return proc


def start(
    dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    properties: dict[str, str] | None = None,
) -> Broker:
    """Starts a broker in ``dir`` (which must not hold one already) and returns
    once it answers requests; ``properties`` are added to its server.properties.
    On failure nothing is left running."""
    extra = [f"{k}={v}" for k, v in (properties or {}).items()]
    proc = subprocess.run(
        [str(TEST_BROKER), "start", str(dir), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise BrokerError(f"test-broker start {dir} failed:\n{proc.stderr}")
    bootstrap = (dir / "bootstrap").read_text().strip()
    pid = int((dir / "broker.pid").read_text())
    return Broker(dir=dir, bootstrap=bootstrap, pid=pid)


def restart(dir: Path, timeout: float = 120) -> Broker:
    """Starts the stopped broker of ``dir`` again on its data and ports."""
    proc = subprocess.run(
        [str(TEST_BROKER), "restart", str(dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BrokerError(f"test-broker restart {dir} failed:\n{proc.stderr}")
    bootstrap = (dir / "bootstrap").read_text().strip()
    pid = int((dir / "broker.pid").read_text())
    return Broker(dir=dir, bootstrap=bootstrap, pid=pid)


def stop(dir: Path, timeout: float = 120) -> None:
    proc = subprocess.run(
        [str(TEST_BROKER), "stop", str(dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BrokerError(f"test-broker stop {dir} failed:\n{proc.stderr}")


def process_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def java_processes_mentioning(text: str) -> list[int]:
    """Pids of live java processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"java"):
            continue
        if text.encode() in b" ".join(argv) and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
