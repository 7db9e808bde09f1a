"""The test broker itself: records round-trip through Kafka's own console
tools, stop leaves nothing behind, and bad input fails plainly and cleanly."""

from __future__ import annotations

import os
import socket
import subprocess

import broker as test_broker


def test_console_tools_round_trip_100_records(tmp_path):
    dir = tmp_path / "broker"
    b = test_broker.start(dir)
    try:
        assert (dir / "bootstrap").read_text().strip() == b.bootstrap
        assert b.bootstrap.startswith("127.0.0.1:")
        assert test_broker.process_alive(b.pid)

        values = [f"record-{i:03d}" for i in range(100)]
        b.create_topic("round-trip")
        b.tool("console-producer", "--topic", "round-trip", input="\n".join(values) + "\n")
        out = b.tool(
            "console-consumer",
            "--topic",
            "round-trip",
            "--from-beginning",
            "--max-messages",
            "100",
            "--timeout-ms",
            "30000",
        )
        assert out.stdout.splitlines() == values
        # The records are in the broker's own segment files under data/.
        segments = list((b.data_dir / "round-trip-0").glob("*.log"))
        assert segments and any(b"record-042" in s.read_bytes() for s in segments)
    finally:
        test_broker.stop(dir)

    assert not test_broker.process_alive(b.pid)
    assert test_broker.java_processes_mentioning(str(dir)) == []
    assert not (dir / "broker.pid").exists()


def test_start_on_a_taken_port_fails_plainly_and_leaves_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dir = tmp_path / "broker"
        proc = subprocess.run(
            [str(test_broker.TEST_BROKER), "start", str(dir)],
            env={**os.environ, "KAFKA_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert proc.stdout == ""
    assert not (dir / "broker.pid").exists()
    assert test_broker.java_processes_mentioning(str(dir)) == []


def test_broker_that_cannot_start_shows_its_log_and_leaves_nothing(tmp_path):
    # A broker JVM that refuses its options exits at once: start must fail, quote the
    # log, and not leave a process behind.
    dir = tmp_path / "broker"
    proc = subprocess.run(
        [str(test_broker.TEST_BROKER), "start", str(dir)],
        env={**os.environ, "KAFKA_BROKER_JVM_OPTS": "-XX:NoSuchOption"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "the broker exited during startup" in proc.stderr
    assert "NoSuchOption" in proc.stderr
    assert not (dir / "broker.pid").exists()
    assert test_broker.java_processes_mentioning(str(dir)) == []


def test_fixture_broker_answers(broker):
    out = broker.tool("topics", "--list")
    assert out.returncode == 0
    broker.create_topic("fixture-check", partitions=3)
    described = broker.tool("topics", "--describe", "--topic", "fixture-check").stdout
    assert "PartitionCount: 3" in described


def test_restart_keeps_records_and_address(tmp_path):
    # A stopped broker starts again on its own data directory and ports, so
    # running clients reconnect to the address they know.
    dir = tmp_path / "broker"
    b = test_broker.start(dir)
    try:
        b.create_topic("kept")
        b.tool("console-producer", "--topic", "kept", input="before-restart\n")
        first_pid = b.pid
        b.stop()
        assert not test_broker.process_alive(first_pid)
        b.restart()
        assert b.pid != first_pid and test_broker.process_alive(b.pid)
        assert (dir / "bootstrap").read_text().strip() == b.bootstrap
        b.tool("console-producer", "--topic", "kept", input="after-restart\n")
        out = b.tool("console-consumer", "--topic", "kept", "--from-beginning", "--max-messages", "2",
                     "--timeout-ms", "30000")
        assert out.stdout.splitlines() == ["before-restart", "after-restart"]
        # Restarting a running broker is refused, and leaves it running.
        again = subprocess.run([str(test_broker.TEST_BROKER), "restart", str(dir)], capture_output=True,
                               text=True, timeout=120)
        assert again.returncode != 0 and "already running" in again.stderr
        assert test_broker.process_alive(b.pid)
    finally:
        test_broker.stop(dir)
    assert test_broker.java_processes_mentioning(str(dir)) == []


def test_restart_without_a_broker_dir_fails_plainly(tmp_path):
    proc = subprocess.run([str(test_broker.TEST_BROKER), "restart", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "holds no broker to restart" in proc.stderr
