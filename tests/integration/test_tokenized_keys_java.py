"""Tokenized record keys (e2ee.keys=tokenize, docs/FORMAT.md section 13) with
the Java hooks against a real broker: a producer with
key.serializer=value.serializer=dev.kafkae2ee.EncryptingSerializer writes
several values per key and a tombstone to a compacted topic; a Java consumer
(E2eeConsumerInterceptor, byte[] keys) gets every record back with exactly
its real key (never a token), equal keys share a partition, and the broker's
segment files hold neither a key nor a value in the clear. A consumer that
cannot restore keys (the DecryptingDeserializer pair) fails every tokenized
record rather than hand its application a token."""

from __future__ import annotations

import json
import uuid

from confluent_kafka.admin import AdminClient, NewTopic
from java_clients import STRING_SER, Running, java
from test_java import built, creds, e2ee, kafka, props, segments  # noqa: F401  (pytest fixtures)
from test_tokenized_keys import PLUGIN, spawn, wait_file

BYTES_DE = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
PARTITIONS = 3


def compacted_topic(kafka, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    config = {"cleanup.policy": "compact", "segment.ms": "200", "min.cleanable.dirty.ratio": "0.01",
              "delete.retention.ms": "1000"}
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=config)]).values():
        f.result(timeout=60)


def records(tag: str) -> tuple[list[dict], list[str]]:
    """Three values for each key, then a tombstone for the first key. Keys of
    both token constructions: 3-15 bytes (FF1) and 16 and more (HKDF PRF);
    each carries `tag` (a random secret) so the segment scan can look for it."""
    keys = [f"k{tag[:6]}{i}" for i in range(4)] + [f"customer-{tag}-{i}@example.com" for i in range(4)]
    out = [{"k": k, "v": f"{tag}-value-{k}-{j}", "h": [["trace", f"t-{tag}-{j}".encode().hex()]]}
           for j in range(3) for k in keys]
    out.append({"k": keys[0], "v": None, "h": []})
    return out, keys


def consume(built, kafka, creds, tmp_path, topic, n, **kv) -> list[dict]:
    cons = props(tmp_path / f"c-{uuid.uuid4().hex[:6]}.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 group_id="g-" + uuid.uuid4().hex[:8], auto_offset_reset="earliest", **kv)
    r = java(built, "dev.kafkae2ee.it.HeadersApp", "consume", str(cons), topic, str(n), "45000", timeout=90)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_java_serializer_tokenizes_keys_and_the_interceptor_restores_them(built, kafka, creds, tmp_path):
    tag = uuid.uuid4().hex[:12]
    topic = f"tok-{tag}"
    compacted_topic(kafka, topic)
    sent, keys = records(tag)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(sent))
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"), e2ee_keys="tokenize",
                 key_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_key_serializer=STRING_SER,
                 value_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_value_serializer=STRING_SER)
    producer = Running(built, "dev.kafkae2ee.it.HeadersApp", "produce", str(prod), topic, str(spec))
    try:
        producer.wait_line("SENT")
        rows = consume(built, kafka, creds, tmp_path, topic, len(sent), key_deserializer=BYTES_DE,
                       value_deserializer=BYTES_DE, interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor")

        assert not [r for r in rows if "error" in r], rows
        assert len(rows) == len(sent), rows
        # Exactly the real keys: no token (same length, other bytes) reaches the application.
        assert {r["k"] for r in rows} == set(keys), sorted({r["k"] for r in rows} - set(keys))[:3]
        # Per key, its values in order, then the tombstone (null value, real key).
        for k in keys:
            got = [r["v"] for r in sorted(rows, key=lambda r: r["o"]) if r["k"] == k]
            want = [s["v"] for s in sent if s["k"] == k]
            assert got == want, (k, got, want)
        # Equal keys landed in one partition (the token is deterministic), and the keys spread.
        partitions = {k: {r["p"] for r in rows if r["k"] == k} for k in keys}
        assert all(len(p) == 1 for p in partitions.values()), partitions
        # Sealed headers came back; kafka-e2ee's own headers did not reach the application.
        for r in rows:
            names = [h[0] for h in r["h"]]
            assert not [n for n in names if n.startswith("e2ee")], r
            if r["v"] is not None:
                assert r["h"] == [["trace", f"t-{tag}-{r['v'][-1]}".encode().hex()]], r

        # The broker never saw a key or value in the clear, only tokens and e2ee.k.
        disk = segments(kafka, topic)
        assert b"e2ee.k" in disk
        leaked = [s for s in keys + [s["v"] for s in sent if s["v"]] if s.encode() in disk]
        assert not leaked, f"{len(leaked)} plaintext keys/values in segment files, e.g. {leaked[:2]}"
        assert tag.encode() not in disk and tag[:6].encode() not in disk

        # A consumer that cannot restore keys (the deserializers) fails each tokenized record,
        # tombstone included, never handing its application a token as key. (The key deserializer
        # guard is needed for the tombstone: Kafka calls no value deserializer for a null value.)
        failed = consume(built, kafka, creds, tmp_path, topic, len(sent),
                         key_deserializer="dev.kafkae2ee.DecryptingDeserializer", e2ee_inner_key_deserializer=BYTES_DE,
                         value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                         e2ee_inner_value_deserializer=BYTES_DE)
        assert len(failed) == len(sent) and all("error" in r for r in failed), failed[:3]
        assert all("E2eeConsumerInterceptor" in r["error"] for r in failed), failed[0]

        # Java to librdkafka: a confluent-kafka consumer with the plugin gets
        # the real keys of the Java producer's records (the same token
        # construction and e2ee.k on both hosts).
        out = tmp_path / "ck.json"
        c = spawn("consume", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic,
                              "partitions": PARTITIONS, "seconds": 60, "out": str(out),
                              "e2ee": {"e2ee.credential": str(creds["reader"]), "e2ee.trust": str(creds["trust"])}})
        got = wait_file(out, c, 90)
        c.wait(timeout=30)
        assert got and not [r for r in got if "error" in r], got[:3]
        by_key: dict[str, set] = {}
        for r in got:
            v = None if r["v"] is None else bytes.fromhex(r["v"]).decode()
            by_key.setdefault(bytes.fromhex(r["k"]).decode(), set()).add(v)
        assert set(by_key) == set(keys), sorted(set(by_key) - set(keys))[:3]
        for k, vs in by_key.items():
            assert vs <= {s["v"] for s in sent if s["k"] == k}, (k, vs)
    finally:
        producer.close()


def test_librdkafka_tokenized_keys_reach_a_java_consumer(built, kafka, creds, tmp_path):
    # librdkafka to Java: the plugin's tokens and e2ee.k, restored by the
    # Java consumer interceptor.
    tag = uuid.uuid4().hex[:12]
    topic = f"tok-rd-{tag}"
    compacted_topic(kafka, topic)
    keys = [f"r{tag[:6]}{i}" for i in range(3)] + [f"rd-{tag}-{i}@example.com" for i in range(3)]
    sent = [{"k": k.encode().hex(), "v": f"{tag}-rd-{k}-{j}"} for j in range(2) for k in keys]
    out, stop = tmp_path / "p.json", tmp_path / "p.stop"
    p = spawn("produce", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic, "records": sent,
                          "out": str(out), "stop": str(stop),
                          "e2ee": {"e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"]),
                                   "e2ee.keys": "tokenize"}})
    try:
        report = wait_file(out, p, 120)
        assert all(r["err"] is None for r in report), report
        rows = consume(built, kafka, creds, tmp_path, topic, len(sent), key_deserializer=BYTES_DE,
                       value_deserializer=BYTES_DE, interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor")
        assert not [r for r in rows if "error" in r], rows
        assert len(rows) == len(sent)
        assert sorted((r["k"], r["v"]) for r in rows) == sorted((bytes.fromhex(s["k"]).decode(), s["v"]) for s in sent)
    finally:
        stop.touch()
        p.wait(timeout=30)
