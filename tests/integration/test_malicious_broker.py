"""The broker's operator is the adversary. A plain client with raw access to
the topics (confluent-kafka without the plugin) copies, splices, bit-flips,
injects and replays data records, and forges, replays, re-addresses and
reorders control messages, against the real broker. Three consumers read the
result: Java with the DecryptingDeserializer, Java with the
E2eeConsumerInterceptor, and confluent-kafka with the plugin. Each tampered
record must be rejected, counted exactly once in that consumer's metrics and
never handed to the app as data; every legit record must arrive exactly; the
key exchange must stay healthy. docs/PROTOCOL.md ("A malicious broker") names
these tests."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

import broker as test_broker
from java_clients import CLI, STRING_DE, Running, build, e2ee, props
from plugin_clients import PLUGIN, engine_metrics

TOPIC_A, TOPIC_B, CONTROL = "mal-a", "mal-b", "_e2ee_control"
KEY_WAIT_MS = 10000  # generous for legit keys on a loaded machine; unknown keys cost this once


@pytest.fixture(scope="module")
def cp():
    built = build()
    if not PLUGIN.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-ffi"], cwd=test_broker.ROOT,
                       check=True)
    return built


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    """One broker for the module: its control topic holds only this module's traffic."""
    dir = tmp_path_factory.mktemp("malice") / "broker"
    b = test_broker.start(dir)
    try:
        yield b
    finally:
        test_broker.stop(dir)


@pytest.fixture(scope="module")
def creds(cp, tmp_path_factory):
    d = tmp_path_factory.mktemp("creds")

    def cli(*a):
        subprocess.run([str(CLI), *a], check=True, capture_output=True, text=True)

    cli("authority", "init", "--out", str(d / "authority"))
    out = {"trust": d / "authority" / "trust"}
    for name, produce in [("writer", "*"), ("reader", "none"), ("short-writer", "*"), ("short-reader", "none")]:
        cli("credential", "issue", "--authority", str(d / "authority"), "--name", name, "--produce", produce,
            "--consume", "*", "--out", str(d / f"{name}.cred"))
        out[name] = d / f"{name}.cred"
    return out


def wait_until(cond, timeout: float, what: str, step=None):
    """Waits for cond() to hold (calling step() between tries); fails naming what."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if step:
            step()
        else:
            time.sleep(0.2)


# ---- the attacker: a plain client, no plugin ------------------------------------------------


def raw_read(bootstrap: str, topic: str, count: int | None = None, timeout: float = 60) -> list[dict]:
    """Every record of partition 0 of ``topic`` as stored (up to the high
    watermark, or ``count`` records): offset, key, value, headers."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "attacker-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        want = high if count is None else count
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append({"offset": m.offset(), "key": m.key(), "value": m.value(),
                        "headers": list(m.headers() or [])})
        assert len(out) == want, f"read {len(out)} of {want} records of {topic}"
        return out
    finally:
        c.close()


def high_watermark(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "attacker-" + uuid.uuid4().hex})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def raw_write(bootstrap: str, records: list[dict]) -> list[int]:
    """Produces records exactly as given (no plugin) and returns their offsets, in order."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    offsets: list[int | None] = [None] * len(records)

    def report(i):
        def cb(err, msg):
            assert err is None, err
            offsets[i] = msg.offset()
        return cb

    for i, r in enumerate(records):
        p.produce(r["topic"], key=r.get("key"), value=r.get("value"), headers=r.get("headers") or None,
                  on_delivery=report(i))
    assert p.flush(30) == 0
    assert None not in offsets
    return offsets


def e2ee_header(r: dict) -> bytes:
    return [v for k, v in r["headers"] if k == "e2ee"][-1]


def with_header(r: dict, header: bytes) -> list:
    return [(k, v) for k, v in r["headers"] if k != "e2ee"] + [("e2ee", header)]


def flip(b: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(b)
    out[index] ^= mask
    return bytes(out)


def tampered_records(legit: list[dict]) -> list[dict]:
    """The data attacks, each with what it must become for each consumer:
    rejected (the AEAD or the strict header decode: records_rejected),
    missing (no header on a protected topic: records_missing_header), or a
    key that cannot be had (key_unavailable); the Java deserializer refuses a
    record that claims a bound key before opening it ('bound')."""
    L = legit
    h = e2ee_header

    def rec(name, src, *, topic=TOPIC_A, key=None, value=None, headers=None, outcome="rejected", serde=None):
        return {"name": name, "topic": topic, "key": src["key"] if key is None else key,
                "value": src["value"] if value is None else value,
                "headers": src["headers"] if headers is None else headers,
                "outcome": {"plugin": outcome, "interceptor": outcome, "serde": serde or outcome}}

    return [
        # 1. a whole record (value, every header, key) copied to another protected topic
        rec("copied-to-b", L[0], topic=TOPIC_B),
        # 2. headers swapped between two records; the value of one with the header of another
        rec("header-swap-1", L[1], headers=with_header(L[1], h(L[2]))),
        rec("header-swap-2", L[2], headers=with_header(L[2], h(L[1]))),
        rec("value-of-3-header-of-4", L[4], value=L[3]["value"]),
        # 3. one bit of the value, and one bit in each region of the e2ee header
        rec("value-bit", L[5], value=flip(L[5]["value"], 0)),
        rec("version-bit", L[6], headers=with_header(L[6], flip(h(L[6]), 0))),
        rec("flags-bound-bit", L[8], headers=with_header(L[8], flip(h(L[8]), 1, 0x01)), serde="bound"),
        rec("flags-reserved-bit", L[9], headers=with_header(L[9], flip(h(L[9]), 1, 0x80))),
        rec("producer-bit", L[10], headers=with_header(L[10], flip(h(L[10]), 2)), outcome="key"),
        rec("epoch-bit", L[11], headers=with_header(L[11], flip(h(L[11]), 10, 0x80)), outcome="key"),
        rec("counter-bit", L[12], headers=with_header(L[12], flip(h(L[12]), 17))),
        rec("tag-bit", L[13], headers=with_header(L[13], flip(h(L[13]), 33))),
        rec("header-truncated", L[14], headers=with_header(L[14], h(L[14])[:33])),
        # 4. plaintext into a protected topic; a ciphertext with its header stripped
        rec("plaintext", L[15], value=b"injected-plaintext", headers=[], outcome="missing"),
        rec("header-stripped", L[16], headers=[], outcome="missing"),
        # 5. a second e2ee header: its own again, or another record's before its own. Which one
        # the producer wrote cannot be told, so neither is taken (docs/FORMAT.md section 9).
        rec("two-headers-same", L[17], headers=L[17]["headers"] + [("e2ee", h(L[17]))]),
        rec("two-headers-other-first", L[18], headers=[("e2ee", h(L[19]))] + L[18]["headers"]),
    ]


# ---- the three consumers --------------------------------------------------------------------


class JavaReader:
    """E2eeApp audit: a Java app reading both topics from the start that moves
    past a record it cannot read; its output file and its JMX metrics."""

    def __init__(self, cp: str, bootstrap: str, creds, dir: Path, path: str):
        self.path, self.out = path, dir / f"{path}.out"
        if path == "serde":
            hooks = dict(value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                         e2ee_inner_value_deserializer=STRING_DE)
        else:
            hooks = dict(interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                         value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer")
        conf = props(dir / f"{path}.properties", bootstrap, **e2ee(creds, "reader"), key_deserializer=STRING_DE,
                     e2ee_key_wait_ms=KEY_WAIT_MS, **hooks)
        self.proc = Running(cp, "dev.kafkae2ee.it.E2eeApp", "audit", str(conf), str(self.out), TOPIC_A, TOPIC_B)
        self.asked = 0

    def lines(self) -> list[str]:
        return self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []

    def position(self, topic: str) -> int:
        at = [int(l.split()[3]) for l in self.lines() if l.startswith(f"AT {topic} 0 ")]
        return at[-1] if at else 0

    def alive(self):
        assert self.proc.proc.poll() is None, f"{self.path} reader exited: {self.proc.close().stderr[-3000:]}"

    def metrics(self) -> tuple[str, dict]:
        self.alive()
        self.asked += 1
        self.proc.write("metrics\n")
        wait_until(lambda: f"METRICS-DONE {self.asked}" in self.lines(), 60, f"{self.path} metrics")
        lines = self.lines()
        end = lines.index(f"METRICS-DONE {self.asked}")
        start = max((i for i, l in enumerate(lines[:end]) if l.startswith("METRICS-DONE")), default=-1)
        found = [l.split() for l in lines[start + 1:end] if l.startswith("METRIC ")]
        instances = {f[1] for f in found}
        assert len(instances) == 1, instances
        return instances.pop(), {f[2]: int(float(f[3])) for f in found}

    def stop(self) -> str:
        done = self.proc.close()
        return done.stderr


class PluginReader:
    """confluent-kafka with the plugin, in this process: reads both topics
    from the start and, like an app, seeks past a record reported as an error."""

    def __init__(self, bootstrap: str, creds, who: str = "reader", topics=(TOPIC_A, TOPIC_B)):
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "plugin.library.paths": str(PLUGIN),
            "e2ee.credential": str(creds[who]), "e2ee.trust": str(creds["trust"]),
            "e2ee.key.wait.ms": str(KEY_WAIT_MS), "group.id": "plugin-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
        })
        self.c.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
        self.credential = creds[who].stem
        self.records: list[dict] = []
        self.errors: list[dict] = []
        self.pos: dict[str, int] = {}

    def pump(self, seconds: float = 0.2):
        m = self.c.poll(seconds)
        if m is None:
            return
        if m.error():
            assert m.error().code() == KafkaError._VALUE_DESERIALIZATION, m.error()
            text = str(m.error())
            # The plugin moves the error's offset back by one (so that librdkafka's
            # offset store stays at the record): the record is at offset() + 1
            # (confluent-kafka shows offset -1 as None).
            offset = (-1 if m.offset() is None else m.offset()) + 1
            said = re.search(r"record at offset (\d+)", text)
            assert said is None or int(said.group(1)) == offset, text
            self.errors.append({"topic": m.topic(), "offset": offset, "text": text, "value": m.value()})
            self.c.seek(TopicPartition(m.topic(), m.partition(), offset + 1))
            self.pos[m.topic()] = offset + 1
            return
        self.records.append({"topic": m.topic(), "offset": m.offset(), "key": m.key(), "value": m.value(),
                             "headers": [k for k, _ in (m.headers() or [])]})
        self.pos[m.topic()] = m.offset() + 1

    def position(self, topic: str) -> int:
        return self.pos.get(topic, 0)

    def metrics(self) -> tuple[str, dict]:
        [mine] = [e for e in engine_metrics() if e["credential"] == self.credential]
        return mine["instance"], mine


def in_process_engine(credential: str) -> dict:
    [e] = [e for e in engine_metrics() if e["credential"] == credential]
    return e


# ---- control messages -----------------------------------------------------------------------


def envelope(m: bytes) -> dict | None:
    if len(m) < 22 or m[:5] != b"KE2X\x01":
        return None
    e = {"kind": m[5], "from": m[6:14].hex(), "to": m[14:22].hex(), "bytes": m}
    if e["kind"] in (1, 2, 3, 4, 9, 10, 11):  # the handshake kinds, classical and hybrid
        e["session"] = m[22:30]
    return e


def readdress(m: bytes, *, sender: str | None = None, to: str | None = None) -> bytes:
    out = bytearray(m)
    if sender:
        out[6:14] = bytes.fromhex(sender)
    if to:
        out[14:22] = bytes.fromhex(to)
    return bytes(out)


def control_attack(captured: list[dict], live: set[str]) -> tuple[list[bytes], Counter]:
    """Forged, truncated, replayed (in reverse order: a reordered handshake),
    re-addressed and bit-damaged control messages, and how many each live
    engine must reject. Replayed Want/Have broadcasts are sent too; they are
    unauthenticated by design and answered at most once per window, so they
    are not counted as rejections."""
    rng = os.urandom
    expect: Counter = Counter()
    out: list[bytes] = []

    def every_engine(m: bytes):
        out.append(m)
        for i in live:
            expect[i] += 1

    for n in (1, 7, 40, 300):
        every_engine(b"\x00" + rng(n - 1))  # random bytes, not even the magic
    for e in captured[:3]:
        every_engine(e["bytes"][:21])  # truncated inside the envelope
    completed = {e["session"] for e in captured if e["kind"] == 3}
    ours = [e for e in captured if e["from"] in live and e["to"] in live]
    # Hello and reply are kinds 1 and 2, or 9 and 10 in a hybrid session (docs/PROTOCOL.md 4a).
    kinds = {e["kind"] for e in ours}
    assert kinds & {1, 9} and kinds & {2, 10} and kinds >= {3, 4}, f"no complete handshake was captured: {kinds}"
    for e in reversed(ours):  # every message replayed, the handshakes backwards
        if e["kind"] in (2, 10, 3, 4) or (e["kind"] in (1, 9) and e["session"] in completed):
            out.append(e["bytes"])
            expect[e["to"]] += 1
    out += [e["bytes"] for e in captured if e["kind"] in (5, 6)]
    sealed = [e for e in ours if e["kind"] == 4]
    for e in sealed[:2]:
        for other in sorted(live - {e["from"], e["to"]}):
            out.append(readdress(e["bytes"], to=other))  # a valid envelope to another party
            expect[other] += 1
            out.append(readdress(e["bytes"], sender=other))  # from a party not in the session
            expect[e["to"]] += 1
        forged = bytearray(e["bytes"])
        forged[30:38] = (int.from_bytes(forged[30:38], "big") + 1_000_000).to_bytes(8, "big")
        forged[38:] = rng(len(forged) - 38)
        out.append(bytes(forged))  # right session, fresh nonce, forged ciphertext
        expect[e["to"]] += 1
        out.append(e["bytes"][:-1])  # truncated ciphertext
        expect[e["to"]] += 1
        out.append(flip(e["bytes"], len(e["bytes"]) - 1))  # one bit of the tag
        expect[e["to"]] += 1
    return out, expect


# ---- the test -------------------------------------------------------------------------------


def test_tampered_records_and_control_messages_are_rejected_counted_once_and_never_data(
    cp, kafka, creds, tmp_path
):
    secret = "secret-" + uuid.uuid4().hex[:8]
    kafka.create_topic(TOPIC_A)
    kafka.create_topic(TOPIC_B)
    producer = Producer({
        "bootstrap.servers": kafka.bootstrap, "plugin.library.paths": str(PLUGIN),
        "e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"]),
        # Unbound, so that the Java deserializer (which cannot see keys) reads these too.
        "e2ee.bind.key": "false", "e2ee.key.rotation.ms": "3000",
    })

    def produce(topic, keys):
        failed = []
        for k in keys:
            producer.produce(topic, key=k, value=f"{secret}-{topic}-{k}".encode(),
                             on_delivery=lambda err, msg: failed.append(err) if err else None)
        assert producer.flush(30) == 0 and failed == []
        return [f"{secret}-{topic}-{k}" for k in keys]

    legit = produce(TOPIC_A, [f"a{i}" for i in range(20)]) + produce(TOPIC_B, [f"b{i}" for i in range(3)])

    # The attacker reads what the broker stores and writes its forgeries.
    stored = raw_read(kafka.bootstrap, TOPIC_A, 20)
    assert all(secret.encode() not in r["value"] for r in stored)
    attacks = tampered_records(stored)
    replay = {"name": "replay", "topic": TOPIC_A, "key": stored[7]["key"], "value": stored[7]["value"],
              "headers": stored[7]["headers"]}
    offsets = raw_write(kafka.bootstrap, attacks + [replay])
    for a, o in zip(attacks, offsets):
        a["offset"] = o
    bad = {(a["topic"], a["offset"]): a for a in attacks}
    legit.append(f"{secret}-{TOPIC_A}-a7")  # the replay opens: a duplicate
    end = {t: high_watermark(kafka.bootstrap, t) for t in (TOPIC_A, TOPIC_B)}

    plugin = PluginReader(kafka.bootstrap, creds)
    readers = [JavaReader(cp, kafka.bootstrap, creds, tmp_path, "serde"),
               JavaReader(cp, kafka.bootstrap, creds, tmp_path, "interceptor")]
    try:
        def caught_up(ends):
            for r in readers:
                r.alive()
            return all(r.position(t) >= ends[t] for r in [plugin, *readers] for t in ends)

        wait_until(lambda: caught_up(end), 150, "every reader past the tampered records", step=plugin.pump)

        # Control plane: capture what went over the control topic, then attack it.
        live = {in_process_engine("writer")["instance"], plugin.metrics()[0]} | {r.metrics()[0] for r in readers}
        assert len(live) == 4, live
        captured = [e for e in (envelope(r["value"]) for r in raw_read(kafka.bootstrap, CONTROL)) if e]
        forged, expect_control = control_attack(captured, live)
        raw_write(kafka.bootstrap, [{"topic": CONTROL, "value": m} for m in forged])

        def control_rejected():
            got = {in_process_engine("writer")["instance"]: in_process_engine("writer")["control_rejected"],
                   plugin.metrics()[0]: plugin.metrics()[1]["control_rejected"]}
            for r in readers:
                i, m = r.metrics()
                got[i] = m["control-messages-rejected"]
            return got

        wait_until(lambda: all(control_rejected()[i] >= expect_control[i] for i in live), 90,
                   "every engine to read the forged control messages", step=lambda: plugin.pump(1.0))

        # The key exchange stayed healthy: new records (under a new epoch) open everywhere.
        legit += produce(TOPIC_A, [f"late{i}" for i in range(10)])
        end2 = {TOPIC_A: end[TOPIC_A] + 10}
        wait_until(lambda: caught_up(end2), 120, "every reader to read the records sent after the attack",
                   step=plugin.pump)

        assert control_rejected() == {i: expect_control[i] for i in live}, expect_control
        results = {"plugin": plugin_result(plugin), "serde": java_result(readers[0]),
                   "interceptor": java_result(readers[1])}
    finally:
        logs = {r.path: r.stop() for r in readers}
        plugin.c.close()
        del producer
        gc.collect()

    for path, res in results.items():
        # Every legit record exactly once (the replay is the one duplicate), nothing else as data.
        assert Counter(res["values"]) == Counter(legit), path
        # Every tampered record on the error path exactly once, no other record there.
        if path == "interceptor":
            dropped = re.findall(r"kafka-e2ee dropped the record at (\S+)-0 offset (\d+)", logs[path])
            failed = [(t, int(o)) for t, o in dropped]
        else:
            failed = res["failed"]
        assert sorted(failed) == sorted(bad), (path, failed)
        m = res["metrics"]
        outcomes = Counter(a["outcome"][path] for a in attacks)
        assert m["records_opened"] == len(legit), (path, m)
        assert m["records_rejected"] == outcomes["rejected"], (path, m, outcomes)
        assert m["records_missing_header"] == outcomes["missing"], (path, m)
        assert m["failed_or_dropped"] == len(attacks), (path, m)
    # Which verdicts, as the app's error path names them.
    serde_text = {(l.split()[1], int(l.split()[3])): l for l in results["serde"]["lines"] if l.startswith("FAILED")}
    for key, a in bad.items():
        want = {"rejected": "BAD_RECORD", "missing": "MISSING_HEADER", "key": "KEY_", "bound": "bound the record key"}
        assert want[a["outcome"]["serde"]] in serde_text[key], serde_text[key]
    # No ciphertext (nor anything else of the record) in the plugin's error messages.
    for e in results["plugin"]["errors"]:
        a = bad[(e["topic"], e["offset"])]
        assert e["value"] is None or a["value"][:16] not in e["value"], e
    data = b"".join(p.read_bytes() for p in kafka.data_dir.glob("mal-*/*.log"))
    assert secret.encode() not in data


def plugin_result(r: PluginReader) -> dict:
    _, m = r.metrics()
    return {"values": [x["value"].decode() for x in r.records],
            "failed": [(e["topic"], e["offset"]) for e in r.errors], "errors": r.errors,
            "metrics": {"records_opened": m["records_opened"], "records_rejected": m["records_rejected"],
                        "records_missing_header": m["records_missing_header"],
                        "failed_or_dropped": m["records_failed"]}}


def java_result(r: JavaReader) -> dict:
    _, m = r.metrics()
    lines = r.lines()
    return {"values": [l.split(" ")[5] for l in lines if l.startswith("RECORD ")],
            "failed": [(l.split()[1], int(l.split()[3])) for l in lines if l.startswith("FAILED ")],
            "lines": lines,
            "metrics": {"records_opened": m["records-opened"], "records_rejected": m["records-rejected"],
                        "records_missing_header": m["records-missing-header"],
                        "failed_or_dropped": m["records-failed"] + m["records-dropped"]}}


def test_replay_in_its_own_topic_opens_as_a_duplicate_until_its_key_is_deleted(kafka, creds):
    """A data record replayed into its own topic is one of Kafka's
    at-least-once duplicates: it opens, to the same key and value (the same
    producer instance, epoch and counter), and the e2ee header that names them
    is not handed to the app. Once the key's retention has passed, the
    original and every replay fail on the error path, counted."""
    topic, secret = "mal-replay", "secret-" + uuid.uuid4().hex[:8]
    kafka.create_topic(topic)
    # The reader is up first: the record's key lives only ~8 s (one rotation + retention).
    reader = PluginReader(kafka.bootstrap, creds, "short-reader", topics=(topic,))
    producer = Producer({
        "bootstrap.servers": kafka.bootstrap, "plugin.library.paths": str(PLUGIN),
        "e2ee.credential": str(creds["short-writer"]), "e2ee.trust": str(creds["trust"]),
        "e2ee.key.rotation.ms": "2000", "e2ee.key.retention.ms": "6000",
    })
    value = (secret + "-" + "r" * 300).encode()  # long enough for the whole error text
    producer.produce(topic, key=b"r", value=value)
    assert producer.flush(30) == 0
    [stored] = raw_read(kafka.bootstrap, topic, 1)
    copy = {"topic": topic, "key": stored["key"], "value": stored["value"], "headers": stored["headers"]}
    raw_write(kafka.bootstrap, [copy])
    try:
        wait_until(lambda: len(reader.records) + len(reader.errors) >= 2, 60, "the record and its replay",
                   step=reader.pump)
        assert reader.errors == []
        assert [(r["offset"], r["key"], r["value"]) for r in reader.records] == [(0, b"r", value), (1, b"r", value)]
        assert all("e2ee" not in r["headers"] for r in reader.records)  # the id is not exposed
        _, m = reader.metrics()
        assert (m["records_opened"], m["records_failed"]) == (2, 0)

        # After retention: both sides deleted the key (the producer its epoch, the reader its copy).
        epoch = int.from_bytes(e2ee_header(stored)[10:14], "big")
        wait_until(lambda: in_process_engine("short-writer")["keys_deleted"] > epoch
                   and reader.metrics()[1]["keys_deleted"] >= 1, 60, "the key's retention to pass",
                   step=reader.pump)
        [late] = raw_write(kafka.bootstrap, [copy])
        wait_until(lambda: reader.errors, 60, "the late replay", step=reader.pump)
        [e] = reader.errors
        assert e["offset"] == late and "deleted after its retention" in e["text"], e
        assert secret.encode() not in (e["value"] or b"") and stored["value"][:16] not in (e["value"] or b"")
        _, m = reader.metrics()
        assert (m["records_opened"], m["records_failed"], m["records_rejected"]) == (2, 1, 0), m
    finally:
        reader.c.close()
        del producer
        gc.collect()
