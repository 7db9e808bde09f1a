"""The keys topic (e2ee.keys.topic) on a real broker, from both hosts: a Java
client and a librdkafka client (confluent-kafka with the plugin) each create
it when missing, compacted and deleted after the key retention plus one
rotation and one day; and a producer's close, which first reads the keys
topic to its end and hands its key envelopes to the broker, ends well within
e2ee.close.timeout.ms while the broker is up. (What the envelopes carry is the
core's; this tests the hosts around it.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from java_clients import CLI, STRING_SER, Running, build, e2ee, props

CLIENTS = Path(__file__).with_name("plugin_clients.py")
PLUGIN = Path(__file__).resolve().parents[2] / "target" / "release" / "libkafka_e2ee.so"

# Small enough that a wrong formula shows; the keys topic must keep envelopes
# for retention + rotation + 1 day.
ROTATION_MS = 60_000
RETENTION_MS = 3_600_000
KEYS_RETENTION_MS = RETENTION_MS + ROTATION_MS + 86_400_000
CLOSE_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def built():
    """The CLI, the jar with its native library and the test apps; the plugin."""
    cp = build()
    if not PLUGIN.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-ffi"],
                       cwd=PLUGIN.parents[2], check=True)
    return cp


@pytest.fixture(scope="module")
def creds(built, tmp_path_factory):
    d = tmp_path_factory.mktemp("creds")
    cli = lambda *a: subprocess.run([str(CLI), *a], check=True, capture_output=True, text=True)  # noqa: E731
    cli("authority", "init", "--out", str(d / "authority"))
    cli("credential", "issue", "--authority", str(d / "authority"), "--name", "writer",
        "--produce", "*", "--consume", "*", "--out", str(d / "writer.cred"))
    return {"trust": d / "authority" / "trust", "writer": d / "writer.cred"}


def topic_configs(broker, topic: str) -> dict[str, str]:
    """The topic's configs as the broker describes them (name=value pairs)."""
    r = broker.tool("configs", "--describe", "--entity-type", "topics", "--entity-name", topic)
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        line = line.strip()
        # "cleanup.policy=compact,delete sensitive=false synonyms={...}"
        if "=" in line and not line.startswith("Dynamic configs") and not line.startswith("All configs"):
            name, _, rest = line.partition("=")
            out[name] = rest.split(" sensitive=")[0]
    return out


def wait_for_keys_topic(broker, topic: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = broker.tool("topics", "--list").stdout.split()
        if topic in listed:
            return topic_configs(broker, topic)
        time.sleep(0.5)
    raise AssertionError(f"{topic} was not created")


def assert_keys_topic(configs: dict[str, str], topic: str):
    assert configs.get("cleanup.policy") == "compact,delete", (topic, configs)
    assert configs.get("retention.ms") == str(KEYS_RETENTION_MS), (topic, configs)


def test_java_producer_creates_the_keys_topic_and_closes_within_the_timeout(built, broker, creds, tmp_path):
    topic, keys = "java-keyed-orders", "keys-java"
    broker.create_topic(topic)
    prod = props(tmp_path / "p.properties", broker.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER, e2ee_keys_topic=keys,
                 e2ee_key_rotation_ms=ROTATION_MS, e2ee_key_retention_ms=RETENTION_MS,
                 e2ee_close_timeout_ms=CLOSE_TIMEOUT_MS)
    with Running(built, "dev.kafkae2ee.it.E2eeApp", "produce", str(prod), topic, "v", "20", "string") as p:
        p.wait_line("SENT")
        assert_keys_topic(wait_for_keys_topic(broker, keys), keys)
        # The control topic keeps its own settings.
        control = topic_configs(broker, "_e2ee_control")
        assert control.get("cleanup.policy") == "delete", control
        start = time.monotonic()
        r = p.close(timeout=CLOSE_TIMEOUT_MS / 1000 + 30)
        took = time.monotonic() - start
    assert r.returncode == 0, r.stdout + r.stderr
    assert took < CLOSE_TIMEOUT_MS / 1000, f"close took {took:.1f} s"
    assert "key envelope(s) were not acknowledged" not in r.stderr, r.stderr


def test_plugin_producer_creates_the_keys_topic_and_exits_within_the_timeout(built, broker, creds, tmp_path):
    topic, keys = "plugin-keyed-orders", "keys-plugin"
    broker.create_topic(topic)
    stop, out = tmp_path / "stop", tmp_path / "out.json"
    spec = {
        "bootstrap": broker.bootstrap, "plugin": str(PLUGIN), "topic": topic,
        "count": 20, "rate": 1000, "out": str(out), "stop": str(stop),
        "e2ee": {"e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"]),
                 "e2ee.keys.topic": keys, "e2ee.key.rotation.ms": str(ROTATION_MS),
                 "e2ee.key.retention.ms": str(RETENTION_MS),
                 "e2ee.close.timeout.ms": str(CLOSE_TIMEOUT_MS)},
    }
    proc = subprocess.Popen([sys.executable, str(CLIENTS), "produce", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert out.exists(), proc.communicate(timeout=30)[0] if proc.poll() is not None else "no output"
        result = json.loads(out.read_text())
        assert len(result["delivered"]) == 20 and not result["failed"], result
        assert_keys_topic(wait_for_keys_topic(broker, keys), keys)
        # The client is destroyed when the script ends: its control plane
        # closes (catch up on the keys topic, last tick, flush) before exit.
        start = time.monotonic()
        stop.touch()
        output, _ = proc.communicate(timeout=CLOSE_TIMEOUT_MS / 1000 + 30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert took < CLOSE_TIMEOUT_MS / 1000, f"exit took {took:.1f} s"
    assert "key envelope(s) were not acknowledged" not in output, output


def closing_time_with_no_broker(kind: str, creds, timeout_ms: int) -> float:
    """Seconds a confluent-kafka client of ``kind`` with the plugin takes to
    be destroyed (``del``) when nothing listens at its bootstrap address."""
    conf = {"bootstrap.servers": "127.0.0.1:1", "plugin.library.paths": str(PLUGIN),
            "e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"]),
            "e2ee.close.timeout.ms": str(timeout_ms), "log_level": "0"}
    if kind == "Consumer":
        conf["group.id"] = "g"
    script = ("import json, sys, time\n"
              f"from confluent_kafka import {kind}\n"
              f"c = {kind}(json.loads(sys.argv[1]))\n"
              "time.sleep(0.5)\n"
              "t = time.monotonic()\n"
              "del c\n"
              "print(time.monotonic() - t)\n")
    p = subprocess.run([sys.executable, "-c", script, json.dumps(conf)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return float(p.stdout.strip())


def test_plugin_close_with_no_broker_waits_for_producers_only_and_on_time(built, creds):
    """The producer's close cannot catch up on the keys topic, so it waits,
    but no longer than e2ee.close.timeout.ms (blocking setup calls are cut to
    the deadline); a consumer-only client does not wait for key envelopes."""
    took = closing_time_with_no_broker("Producer", creds, 2000)
    assert 1.5 <= took < 3.0, f"producer close took {took:.1f} s"
    took = closing_time_with_no_broker("Consumer", creds, 2000)
    assert took < 1.5, f"consumer close took {took:.1f} s"
