"""Java and librdkafka clients read each other's encrypted records, byte for
byte: a Java producer (serializer path) to kcat and confluent-kafka consumers
(the plugin), and kcat and confluent-kafka producers (the plugin) to Java
consumers. Both hosts share one record format and one control topic, and the
broker's segment files hold none of the plaintext."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from test_java import (  # noqa: F401  (pytest fixtures)
    STRING_DE,
    STRING_SER,
    Running,
    app,
    assert_no_plaintext,
    built,
    creds,
    e2ee,
    kafka,
    prefix,
    producing,
    props,
)

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
CLIENTS = Path(__file__).with_name("plugin_clients.py")


def kcat(kafka, creds, who: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kcat", "-b", kafka.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
         "-X", f"e2ee.credential={creds[who]}", "-X", f"e2ee.trust={creds['trust']}", *args],
        capture_output=True, text=True, timeout=120, **kw,
    )


def ck(mode: str, spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CLIENTS), mode, json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_java_producer_to_kcat_and_confluent_kafka_consumers(built, kafka, creds, tmp_path):
    topic, p, n = "interop-java-to-rdkafka", prefix(), 200
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER)
    with producing(built, prod, topic, p, n, "string") as producer:
        expected = None
        # kcat with the plugin.
        r = kcat(kafka, creds, "reader", "-C", "-t", topic, "-o", "beginning", "-c", str(n), "-f", "%k=%s\\n")
        assert r.returncode == 0, r.stderr
        got = r.stdout.splitlines()
        assert len(got) == n and all(line.startswith("key-") for line in got), got[:3]
        expected = got
        # confluent-kafka (the wheel's own librdkafka) with the plugin.
        out, stop = tmp_path / "ck.jsonl", tmp_path / "stop"
        c = ck("consume", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic, "group": "ck",
                           "e2ee": {"e2ee.credential": str(creds["reader"]), "e2ee.trust": str(creds["trust"])},
                           "seconds": 90, "out": str(out), "stop": str(stop)})
        deadline = time.time() + 90
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < n):
            time.sleep(0.5)
        stop.touch()
        c.wait(timeout=30)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert not [r for r in rows if "error" in r], rows[:3]
        assert [f"{r['k']}={r['v']}" for r in rows] == expected
        assert producer.close().returncode == 0
    # What the Java app sent, byte for byte: "key-i" -> the app's string value.
    java_values = [line.split("=", 1)[1] for line in expected]
    assert all(v.startswith(p) for v in java_values)
    assert len(set(java_values)) == n
    assert_no_plaintext(kafka, java_values, topic)


def test_kcat_and_confluent_kafka_producers_to_java_consumers(built, kafka, creds, tmp_path):
    topic = "interop-rdkafka-to-java"
    kafka.create_topic(topic)
    p = prefix()
    # kcat, with the record key bound (the default) and not bound.
    kcat_lines = [f"kk{i}:{p}-kcat-{i}" for i in range(100)]
    state = tmp_path / "kcat-state"
    r = kcat(kafka, creds, "writer", "-P", "-t", topic, "-K:", "-X", f"e2ee.state.dir={state}",
             input="\n".join(kcat_lines) + "\n")
    assert r.returncode == 0, r.stderr
    unbound_lines = [f"ku{i}:{p}-unbound-{i}" for i in range(50)]
    state2 = tmp_path / "kcat-state-unbound"
    r = kcat(kafka, creds, "writer", "-P", "-t", topic, "-K:", "-X", "e2ee.bind.key=false",
             "-X", f"e2ee.state.dir={state2}", input="\n".join(unbound_lines) + "\n")
    assert r.returncode == 0, r.stderr
    # confluent-kafka, staying up to serve its keys.
    stop = tmp_path / "stop"
    prod = ck("produce", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic,
                          "e2ee": {"e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"])},
                          "count": 100, "rate": 500, "out": str(tmp_path / "produced.json"), "stop": str(stop)})
    # kcat -P has exited: restarted writers with the same state directories serve its keys.
    servers = [
        subprocess.Popen(["kcat", "-b", kafka.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
                          "-X", f"e2ee.credential={creds['writer']}", "-X", f"e2ee.trust={creds['trust']}",
                          "-P", "-t", topic, "-X", f"e2ee.state.dir={d}"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for d in (state, state2)
    ]
    try:
        deadline = time.time() + 60
        produced = tmp_path / "produced.json"
        while time.time() < deadline and not produced.exists():
            time.sleep(0.2)
        ck_values = json.loads(produced.read_text())["delivered"]
        assert len(ck_values) == 100
        total = len(kcat_lines) + len(unbound_lines) + len(ck_values)
        expected = sorted([l.split(":", 1)[1] for l in kcat_lines + unbound_lines] + ck_values)

        # The Java consumer interceptor sees record keys: it opens key-bound and unbound records.
        cons = props(tmp_path / "ci.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                     key_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                     group_id="java-ci", auto_offset_reset="earliest")
        r = app(built, "consume", str(cons), topic, str(total), "90000", "bytes")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert sorted(r.stdout.splitlines()) == expected

        # The Java deserializer cannot see keys: a key-bound record fails on
        # poll's error path, naming the fix, and nothing reaches the app as data.
        cons = props(tmp_path / "cd.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                     key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                     e2ee_inner_value_deserializer=STRING_DE, group_id="java-de", auto_offset_reset="earliest")
        r = app(built, "consume", str(cons), topic, "1", "60000", "string")
        assert r.returncode == 4, r.stdout + r.stderr
        assert "DESERIALIZATION-FAILED partition=0" in r.stdout
        assert "e2ee.bind.key=false" in r.stdout + r.stderr
        assert p not in r.stdout.replace("DESERIALIZATION-FAILED", "")  # no plaintext, no ciphertext as data
    finally:
        stop.touch()
        prod.wait(timeout=30)
        for s in servers:
            s.stdin.close()
            s.wait(timeout=30)
    assert_no_plaintext(kafka, expected, topic)
