"""Java clients for the real-broker tests: building the jar and the test apps,
the classpath, properties files, and long-running client processes. Shared by
test_java.py and test_malicious_broker.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import broker as test_broker

ROOT = test_broker.ROOT
CLI = ROOT / "target" / "release" / "kafka-e2ee"
JAVA = ROOT / "java-interceptor"
VERSION = "0.1.0"
JAR = JAVA / "target" / f"kafka-e2ee-{VERSION}.jar"
TEST_CLASSES = JAVA / "target" / "test-classes"
TOOLS_LOG4J = ROOT / "scripts" / "kafka" / "tools-log4j2.properties"
TOOLS = {
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
}
STRING_SER = "org.apache.kafka.common.serialization.StringSerializer"
STRING_DE = "org.apache.kafka.common.serialization.StringDeserializer"


def build() -> str:
    """The CLI, the jar with its native library, and the test apps, built if
    missing; returns the classpath (Kafka's jars, the jar, the test classes)."""
    if not CLI.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-cli"], cwd=ROOT, check=True)
    if not JAR.exists() or not (TEST_CLASSES / "dev" / "kafkae2ee" / "it" / "E2eeApp.class").exists():
        subprocess.run([str(ROOT / "scripts" / "build-native")], cwd=ROOT, check=True)
        subprocess.run(
            ["mvn", "-B", "-q", "-f", str(JAVA / "pom.xml"), "package", "-DskipTests"], cwd=ROOT, check=True
        )
    cp = subprocess.run(
        [str(test_broker.TEST_BROKER), "classpath"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"{cp}:{JAR}:{TEST_CLASSES}"


def props(path: Path, bootstrap: str, **kv) -> Path:
    lines = [f"bootstrap.servers={bootstrap}"]
    lines += [f"{k.replace('_', '.')}={v}" for k, v in kv.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def e2ee(creds, who: str, **kv) -> dict:
    return {"e2ee_credential": creds[who], "e2ee_trust": creds["trust"], **kv}


def java(cp: str, main: str, *args: str, input: str | None = None, timeout: float = 120):
    return subprocess.run(
        ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
         f"-Dlog4j2.configurationFile={TOOLS_LOG4J}", "-cp", cp, main, *args],
        input=input, capture_output=True, text=True, timeout=timeout,
    )


def app(cp, *args, timeout=120):
    return java(cp, "dev.kafkae2ee.it.E2eeApp", *args, timeout=timeout)


class Running:
    """A producer process kept running (it serves the keys of what it sealed)
    until ``close``; stdin stays open until then. ``env`` is added to its
    environment (e.g. LD_PRELOAD and CLOCKSHIFT_MS for clockshift.c). With ``log``, stderr goes
    to that file: a long run's logging must not fill a pipe nobody reads."""

    def __init__(self, cp: str, main: str, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None):
        self.log = log
        self.proc = subprocess.Popen(
            ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
             f"-Dlog4j2.configurationFile={TOOLS_LOG4J}", "-cp", cp, main, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(log, "w") if log else subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )

    def write(self, text: str):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait_line(self, prefix: str, timeout: float = 120) -> str:
        """The first stdout line starting with ``prefix``; fails if the process ends first."""
        import select
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(prefix):
                    return line.strip()
                if line == "":
                    break
        self.proc.kill()
        out, err = self.proc.communicate()
        raise AssertionError(f"no '{prefix}' line; exit {self.proc.returncode}\n{out}\n{err}")

    def close(self, timeout: float = 60) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(input=None if self.proc.stdin.closed else "", timeout=timeout)
        if self.log:
            err = self.log.read_text(errors="replace")
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
