"""Kafka Connect in distributed mode on a real broker (issue 16 item 4): two
workers of one Connect cluster (org.apache.kafka.connect.cli.ConnectDistributed,
one JVM each, one broker), each with its own credential and both interceptors
given as ``producer.``/``consumer.`` worker settings (configuration only, no
connector changes). Two FileStreamSource connectors (one task each) read two
files of secret-marked lines into the topic ``lines``; one FileStreamSink
connector writes them to a file. The connectors are created through the REST
API of one worker; the tasks run on both (checked with /connectors/X/status),
so some records are sealed on one worker and opened on the other. Then the
worker running the sink is killed (SIGKILL), 100 more lines per file are
written, and the other worker, now running every task, moves them too.

Checked: the sink file holds every line exactly once after each phase;
every record of ``lines`` on the broker carries an e2ee header and no line is
in its segment files; and
the worker's own topics (config, offset, status), written by the worker's
internal clients that do not get the ``producer.``/``consumer.`` settings,
hold what docs/QUICKSTART.md (Kafka Connect) says, in clear: connector
configurations and the workers' session key, source offsets (file name and
position), task states and topics used; neither a line nor the workers' e2ee
settings."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


import broker as test_broker
from java_clients import CLI, JAR, build
from test_streams import HEADER_ON_DISK, record_count, segments

TOPIC = "lines"
INTERNAL = {"config": "connect-configs", "offset": "connect-offsets", "status": "connect-status"}
N = 100  # lines per source file
# Set KAFKA_E2EE_CONNECT_PLAINTEXT=1 to run the same workers without the
# interceptors: the test must then fail ("plaintext lines in lines's segment
# files"; it did when written), so it cannot pass with the interceptors unused.
PLAINTEXT_RUN = os.environ.get("KAFKA_E2EE_CONNECT_PLAINTEXT") == "1"

# INFO for Connect's distributed herder (its rebalances are what this test
# waits for), WARN elsewhere; into the worker's log file.
LOG4J = """status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
logger.herder.name = org.apache.kafka.connect.runtime.distributed
logger.herder.level = info
logger.e2ee.name = dev.kafkae2ee
logger.e2ee.level = info
"""


def cli(*args: str) -> None:
    subprocess.run([str(CLI), *args], check=True, capture_output=True, text=True, timeout=120)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(port: int, method: str, path: str, body: dict | None = None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


class Worker:
    """One distributed worker; the log is its stderr (log4j above)."""

    def __init__(self, cp: str, tmp: Path, name: str, bootstrap: str, auth: Path, log4j: Path):
        self.port = free_port()
        self.id = f"127.0.0.1:{self.port}"  # Connect's worker_id: the advertised REST address
        self.log = tmp / f"{name}.log"
        cred = tmp / f"{name}.cred"
        cli("credential", "issue", "--authority", str(auth), "--name", name,
            "--produce", TOPIC, "--consume", TOPIC, "--out", str(cred))
        settings = {
            "bootstrap.servers": bootstrap,
            "group.id": "e2ee-connect",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "config.storage.topic": INTERNAL["config"],
            "offset.storage.topic": INTERNAL["offset"],
            "status.storage.topic": INTERNAL["status"],
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "1",
            "status.storage.partitions": "1",
            "offset.flush.interval.ms": "1000",
            # A dead worker is noticed after 6 s and its tasks reassigned at once
            # (default: 10 s, then up to 5 minutes waiting for it to come back).
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "2000",
            "scheduled.rebalance.max.delay.ms": "0",
            # The sink's consumer group keeps a dead member's partitions for the
            # consumer's session.timeout.ms (default 45 s) before the moved task gets them.
            "consumer.session.timeout.ms": "6000",
            "consumer.heartbeat.interval.ms": "2000",
            "listeners": f"http://{self.id}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.port),
            # connect-file carries its ServiceLoader manifests: no slow reflective
            # scan of the ~100 jars of the classpath.
            "plugin.discovery": "service_load",
        }
        if not PLAINTEXT_RUN:
            # The worker hands producer.*/consumer.* (prefix removed) to the clients of
            # its tasks only; its internal config/offset/status clients get neither.
            for client, interceptor in [("producer", "E2eeProducerInterceptor"),
                                        ("consumer", "E2eeConsumerInterceptor")]:
                settings[f"{client}.interceptor.classes"] = f"dev.kafkae2ee.{interceptor}"
                settings[f"{client}.e2ee.credential"] = str(cred)
                settings[f"{client}.e2ee.trust"] = str(auth / "trust")
        self.config = tmp / f"{name}.properties"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.proc = subprocess.Popen(
            ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
             f"-Dlog4j2.configurationFile={log4j}", "-cp", cp,
             "org.apache.kafka.connect.cli.ConnectDistributed", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_rest(self, deadline: float) -> dict:
        while True:
            assert self.proc.poll() is None, f"worker exited {self.proc.returncode}\n{self.text()[-4000:]}"
            try:
                return rest(self.port, "GET", "/")
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, self.text()[-4000:]
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_connect_distributed_two_workers_move_every_line_encrypted(broker, tmp_path: Path):
    started = time.monotonic()
    build()  # the CLI and the jar
    # Connect's own stack (scripts/kafka/connect/pom.xml: the newest release with
    # connect-file on Maven Central), not the broker's; the kafka-e2ee jar next to it.
    connect_cp = subprocess.run([str(test_broker.TEST_BROKER), "connect-classpath"],
                                capture_output=True, text=True, check=True).stdout.strip()
    cp = f"{connect_cp}:{JAR}"
    auth = tmp_path / "auth"
    cli("authority", "init", "--out", str(auth))
    broker.create_topics_with_e2ee(TOPIC)

    sources = {}
    for src in ("a", "b"):
        sources[src] = tmp_path / f"source-{src}.txt"
        sources[src].write_text("".join(f"SECRET-{src}-{i:03d} card 4111-{i:04d}\n" for i in range(N)))
    expected = sorted(ln for p in sources.values() for ln in p.read_text().splitlines())
    sink = tmp_path / "sink.txt"

    log4j = tmp_path / "connect-log4j2.properties"
    log4j.write_text(LOG4J)
    workers = [Worker(cp, tmp_path, name, broker.bootstrap, auth, log4j) for name in ("worker1", "worker2")]
    try:
        deadline = time.monotonic() + 120
        info = [w.wait_rest(deadline) for w in workers][0]
        # Both in the group before any connector exists: one assignment spreads them,
        # no task is moved while it runs.
        for w in workers:
            while "Finished starting connectors and tasks" not in w.text():
                assert w.proc.poll() is None and time.monotonic() < deadline, w.text()[-4000:]
                time.sleep(0.3)

        connectors = {
            f"source-{src}": {"connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                              "tasks.max": "1", "file": str(path), "topic": TOPIC}
            for src, path in sources.items()
        }
        connectors["sink"] = {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                              "tasks.max": "1", "file": str(sink), "topics": TOPIC}
        # The sink first, and the sources once its consumer has published its prekeys:
        # a source task may still be moved by a rebalance while it runs (seen on a
        # loaded machine), and the producer it leaves behind can only have sealed its
        # keys to consumers whose prekeys it saw (docs/PROTOCOL.md, section 5a); a
        # consumer that appears after a producer exited needs a keeper.
        rest(workers[0].port, "POST", "/connectors", {"name": "sink", "config": connectors["sink"]})
        keys_log = broker.data_dir / "_e2ee_keys-0"
        while True:
            try:
                status = rest(workers[0].port, "GET", "/connectors/sink/status")
            except urllib.error.HTTPError as e:  # 404 until the status store has it
                status = {"tasks": [], "http": e.code}
            published = b"".join(p.read_bytes() for p in keys_log.glob("*.log")) if keys_log.exists() else b""
            if [t["state"] for t in status["tasks"]] == ["RUNNING"] and b"KE2X\x01\x0c" in published:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        for name, config in connectors.items():
            if name != "sink":
                rest(workers[0].port, "POST", "/connectors", {"name": name, "config": config})

        def sink_lines(want: int) -> list[str]:
            got: list[str] = []
            while len(got) < want:
                assert time.monotonic() < deadline + 90, (
                    f"{len(got)} of {want} lines\n" + "\n".join(w.text()[-3000:] for w in workers))
                time.sleep(0.5)
                got = sink.read_text().splitlines() if sink.exists() else []
            time.sleep(2)  # a duplicate would arrive now
            return sink.read_text().splitlines()

        def placement(port: int) -> dict[str, str]:
            tasks = {}
            for name in connectors:
                status = rest(port, "GET", f"/connectors/{name}/status")
                assert [t["state"] for t in status["tasks"]] == ["RUNNING"], status
                tasks[name] = status["tasks"][0]["worker_id"]
            return tasks

        got1 = sink_lines(len(expected))
        task_workers = placement(workers[1].port)

        # Failover: the worker running the sink dies (SIGKILL, no goodbye). Its tasks
        # move to the other worker once the group notices (session.timeout.ms); new
        # lines written meanwhile reach the sink through the survivor alone.
        victim = next(w for w in workers if w.id == task_workers["sink"])
        survivor = next(w for w in workers if w is not victim)
        victim.proc.kill()
        victim.proc.wait()
        for src, path in sources.items():
            with path.open("a") as f:
                f.write("".join(f"SECRET-{src}-{i:03d} card 4111-{i:04d}\n" for i in range(N, 2 * N)))
        expected2 = sorted(ln for p in sources.values() for ln in p.read_text().splitlines())
        got2 = sink_lines(len(expected2))
        after = placement(survivor.port)
    finally:
        for w in workers:
            w.stop()
    logs = [w.text() for w in workers]

    # Every line once: no loss, no duplicate. (Connect is at-least-once: a worker
    # that dies before committing its offsets repeats records. Here the victim
    # had been idle for 2 s, twice offset.flush.interval.ms, so it had committed
    # everything, and a duplicate would be a fault.)
    assert sorted(got1) == expected, (len(got1), len(expected))
    assert sorted(got2) == expected2, (len(got2), len(expected2))
    # Both workers ran tasks, so records crossed workers: sealed by one worker's
    # producer, opened by the other's consumer (keys exchanged between them).
    assert set(task_workers.values()) == {w.id for w in workers}, task_workers
    assert set(after.values()) == {survivor.id}, after
    for log in logs:
        assert "dropped the record" not in log, log[-4000:]

    data = segments(broker, TOPIC)
    assert b"SECRET-" not in data, f"plaintext lines in {TOPIC}'s segment files"
    sealed = len(re.findall(HEADER_ON_DISK, data, re.S))
    assert sealed == record_count(data) == len(expected2), (sealed, record_count(data))

    # The worker's own topics, written by its internal clients (no interceptor):
    internal = {kind: segments(broker, topic) for kind, topic in INTERNAL.items()}
    for kind, data in internal.items():
        assert b"SECRET-" not in data, f"a line in the {kind} topic"
        assert b"e2ee" not in data and b".cred" not in data, f"e2ee settings in the {kind} topic"
    # ... connector configurations in clear (class, file, topic),
    assert b"FileStreamSourceConnector" in internal["config"] and str(sink).encode() in internal["config"]
    # ... with the workers' session key (HMAC key of their internal REST requests),
    assert b"session-key" in internal["config"] and b'"algorithm":"HmacSHA256"' in internal["config"]
    # ... each source's offset: its file name and a byte position,
    assert str(sources["a"]).encode() in internal["offset"] and b'"position"' in internal["offset"]
    # ... the states of connectors and tasks with the worker running them,
    # and the topics each connector used.
    assert b"RUNNING" in internal["status"] and workers[0].id.encode() in internal["status"]
    assert b'"topic":{"name":"lines","connector":"source-a"' in internal["status"]

    file_version = re.search(r"/connect-file-([^/:]*)\.jar", cp).group(1)
    print(f"\nconnect-runtime {info['version']}, connect-file {file_version}, tasks {task_workers}, after the kill {after}, "
          f"{time.monotonic() - started:.1f}s")
