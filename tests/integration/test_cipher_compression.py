"""e2ee.cipher and e2ee.compression on a real broker, with real clients of
both hosts.

- AES-256-GCM producers (Java serializer; kcat with the plugin) are read by
  consumers of the other host that keep the default cipher setting: values
  byte-equal, every record's header names AES-256-GCM, no plaintext on disk.
- e2ee.compression: 1 KiB JSON-like records produced with batch compression
  (compression.type=zstd) as plaintext, encrypted without and with e2ee
  compression, by a Java producer (Kafka's console producer with the
  interceptor) and by confluent-kafka (the plugin). The broker's segment
  files of the compressed topics are much smaller than without e2ee
  compression; consumers of the other host read every value byte for byte;
  and Kafka's own DumpLogSegments, which decompresses batches, finds every
  plaintext value in the plaintext topic and none in the encrypted ones.

Run with -s to see the disk-size table (docs/PERFORMANCE.md quotes it).
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from test_interop import CLIENTS, PLUGIN, ck, kcat
from test_java import (  # noqa: F401  (pytest fixtures)
    STRING_DE,
    STRING_SER,
    TOOLS,
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

AES_256_GCM = 0x08
COMPRESSION_FLAGS = {"none": 0x00, "zstd": 0x10, "lz4": 0x20}
RECORDS = 2000
RECORD_SIZE = 1024


def raw_records(kafka, topic: str, n: int, timeout: float = 90) -> list[tuple[bytes, dict[str, bytes]]]:
    """(value, headers) of the first n records as the broker holds them: a
    confluent-kafka consumer without the plugin."""
    from confluent_kafka import Consumer, KafkaError

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"raw-{topic}-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    try:
        while len(out) < n and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                continue
            out.append((m.value(), dict(m.headers() or [])))
    finally:
        c.close()
    assert len(out) == n, f"{len(out)} of {n} records"
    return out


def end_offset(kafka, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "offsets"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def wait_for_records(kafka, topic: str, n: int, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if end_offset(kafka, topic) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"{topic}: {end_offset(kafka, topic)} of {n} records after {timeout}s")


NOTES = ["Leave the parcel at the reception.", "Gift wrap, no invoice in the box.",
         "Call before delivery.", "Deliver to the back door.", "Express shipping requested."]


def json_like_records(p: str, n: int) -> list[str]:
    """Realistic 1 KiB JSON order events: repeated field names, enums,
    similar numbers, line items; each with a unique marker (`p-NNNNN`) and
    pseudo-random customer, items and amounts."""
    rng = random.Random(42)
    out = []
    for i in range(n):
        doc = {"event": "order.updated", "order_id": f"{p}-{i:05d}", "customer": {
            "id": f"C{rng.randrange(1_000_000):07d}", "email": f"user{rng.randrange(100_000)}@example.com",
            "country": rng.choice(["DE", "FR", "NL", "SE", "US"])},
            "status": rng.choice(["PENDING", "PAID", "SHIPPED", "DELIVERED"]),
            "created_at": f"2026-11-{rng.randrange(1, 28):02d}T{rng.randrange(24):02d}:"
                          f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
            "currency": "EUR", "items": [], "note": ""}
        while True:
            item = {"sku": f"SKU-{rng.randrange(10_000):05d}", "qty": rng.randrange(1, 5),
                    "price": round(rng.uniform(1, 200), 2), "warehouse": rng.choice(["FRA-1", "AMS-2"])}
            doc["items"].append(item)
            if len(json.dumps(doc, separators=(",", ":"))) > RECORD_SIZE - 120:
                doc["items"].pop()
                break
        text = json.dumps(doc, separators=(",", ":"))
        note = ""
        while len(note) < RECORD_SIZE - len(text):
            note += rng.choice(NOTES) + " "
        doc["note"] = note[: RECORD_SIZE - len(text)]
        text = json.dumps(doc, separators=(",", ":"))
        assert len(text.encode()) == RECORD_SIZE, len(text)
        out.append(text)
    return out


def segment_bytes(kafka, topic: str) -> int:
    return sum(p.stat().st_size for p in kafka.data_dir.glob(f"{topic}-*/*.log"))


def dump_segments(built, kafka, topics: list[str]) -> dict[str, str]:
    """Kafka's DumpLogSegments over the topics' segments (one JVM), decoding
    batches (--deep-iteration) and printing each record's value; its output
    per topic."""
    files = {t: sorted(kafka.data_dir.glob(f"{t}-*/*.log")) for t in topics}
    r = subprocess.run(
        ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", built,
         "org.apache.kafka.tools.DumpLogSegments", "--deep-iteration", "--print-data-log",
         "--files", ",".join(str(f) for fs in files.values() for f in fs)],
        capture_output=True, text=True, errors="replace", timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out, current = {t: "" for t in topics}, None
    for chunk in r.stdout.split("Dumping ")[1:]:
        path = chunk.split("\n", 1)[0].strip()
        current = next(t for t, fs in files.items() if any(str(f) == path for f in fs))
        out[current] += chunk
    assert all(out.values()), {t: len(v) for t, v in out.items()}
    return out


def test_aes_256_gcm_producers_are_read_by_the_other_host(built, kafka, creds, tmp_path):
    # Java producer (serializer) with AES-256-GCM -> kcat consumer with the plugin, default settings.
    topic, p, n = "aes-java-to-rdkafka", prefix(), 200
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER, e2ee_cipher="aes-256-gcm")
    with producing(built, prod, topic, p, n, "string") as producer:
        r = kcat(kafka, creds, "reader", "-C", "-t", topic, "-o", "beginning", "-c", str(n), "-f", "%k=%s\\n")
        assert r.returncode == 0, r.stderr
        assert producer.close().returncode == 0
    expected = [f"key-{i}={p}-{i:05d}-\u00e9\u4e2d" for i in range(n)]
    assert r.stdout.splitlines() == expected
    for value, headers in raw_records(kafka, topic, n):
        assert headers["e2ee"][1] & AES_256_GCM, headers["e2ee"].hex()
        assert len(value) == len(f"{p}-00000-\u00e9\u4e2d".encode())  # length-preserving
    assert_no_plaintext(kafka, [line.split("=", 1)[1] for line in expected], topic)

    # kcat producer (plugin) with AES-256-GCM -> Java consumer interceptor, default settings.
    topic2 = "aes-rdkafka-to-java"
    kafka.create_topic(topic2)
    lines = [f"k{i}:{p}-kcat-{i}" for i in range(150)]
    state = tmp_path / "kcat-state"
    r = kcat(kafka, creds, "writer", "-P", "-t", topic2, "-K:", "-X", "e2ee.cipher=aes-256-gcm",
             "-X", f"e2ee.state.dir={state}", input="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    # kcat -P has exited: a restarted writer with the same state directory serves its keys.
    server = subprocess.Popen(
        ["kcat", "-b", kafka.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
         "-X", f"e2ee.credential={creds['writer']}", "-X", f"e2ee.trust={creds['trust']}",
         "-P", "-t", topic2, "-X", f"e2ee.state.dir={state}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                     key_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                     group_id="java-aes", auto_offset_reset="earliest")
        r = app(built, "consume", str(cons), topic2, str(len(lines)), "90000", "bytes")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert r.stdout.splitlines() == [line.split(":", 1)[1] for line in lines]
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    for _, headers in raw_records(kafka, topic2, len(lines)):
        assert headers["e2ee"][1] & AES_256_GCM, headers["e2ee"].hex()
    assert_no_plaintext(kafka, [line.split(":", 1)[1] for line in lines], topic2)


def java_console_producer(built, kafka, creds, tmp_path, topic, values, name, **kv) -> Running:
    """Kafka's console producer (interceptor path when e2ee is on), kept up
    with stdin open after writing every value, so it serves its keys."""
    cfg = props(tmp_path / f"{name}.properties", kafka.bootstrap, linger_ms="50", batch_size="65536", **kv)
    # The console producer's own --compression-codec (default none) wins
    # over compression.type in the file.
    r = Running(built, TOOLS["console-producer"], "--bootstrap-server", kafka.bootstrap, "--topic", topic,
                "--producer.config", str(cfg), "--compression-codec", kv["compression_type"])
    r.write("".join(v + "\n" for v in values))
    return r


def confluent_producer(kafka, creds, tmp_path, topic, values, name, e2ee_conf: dict | None, extra: dict):
    """confluent-kafka (with the plugin when e2ee_conf is given), kept up
    until its stop file appears."""
    values_file = tmp_path / f"{name}.values.json"
    values_file.write_text(json.dumps(values))
    spec = {"bootstrap": kafka.bootstrap, "topic": topic, "values": str(values_file),
            "extra": extra | {"linger.ms": 50, "batch.size": 65536},
            "out": str(tmp_path / f"{name}.produced.json"), "stop": str(tmp_path / f"{name}.stop")}
    if e2ee_conf is not None:
        spec |= {"plugin": str(PLUGIN), "e2ee": e2ee_conf}
    return ck("produce", spec), tmp_path / f"{name}.stop"


# (name, e2ee on, e2ee.compression, client compression)
CASES = [
    ("plain-zstd", False, None, "zstd"),
    ("e2ee-zstd", True, "none", "zstd"),
    ("e2ee+zstd-zstd", True, "zstd", "zstd"),
    ("plain-lz4", False, None, "lz4"),
    ("e2ee+lz4-lz4", True, "lz4", "lz4"),
]


@pytest.mark.parametrize("host", ["java", "librdkafka"])
def test_e2ee_compression_saves_broker_disk_and_round_trips(built, kafka, creds, tmp_path, host):
    p = prefix()
    values = json_like_records(p, RECORDS)
    sizes, topics = {}, {}
    for name, on, e2ee_compression, batch in CASES:
        topic = topics[name] = f"cmp-{host}-{name}".replace("+", "_")
        kafka.create_topic(topic)
        if host == "java":
            kv = {"compression_type": batch}
            if on:
                kv |= e2ee(creds, "writer", interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor",
                           e2ee_compression=e2ee_compression)
            producer = java_console_producer(built, kafka, creds, tmp_path, topic, values, name, **kv)
            stop = None
        else:
            conf = None
            if on:
                conf = {"e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"]),
                        "e2ee.compression": e2ee_compression}
            producer, stop = confluent_producer(kafka, creds, tmp_path, topic, values, name, conf,
                                                {"compression.type": batch})
        try:
            wait_for_records(kafka, topic, RECORDS)
            if on:
                check_round_trip(built, kafka, creds, tmp_path, host, topic, values, e2ee_compression)
        finally:
            if host == "java":
                # EOF on stdin: the console producer flushes and exits.
                done = producer.close(timeout=60)
                assert done.returncode == 0, done.stderr[-2000:]
            else:
                stop.touch()
                producer.wait(timeout=60)
        sizes[name] = segment_bytes(kafka, topic)
    dumped = dump_segments(built, kafka, list(topics.values()))
    dumps = {name: dumped[topic] for name, topic in topics.items()}

    raw = RECORDS * RECORD_SIZE
    print(f"\n{host} producer, {RECORDS} JSON-like records of {RECORD_SIZE} B ({raw} B of values):")
    print("| case | segment bytes | vs. values | vs. encrypted without e2ee compression |")
    for name, *_ in CASES:
        print(f"| {name} | {sizes[name]} | {sizes[name] / raw:.3f} | {sizes[name] / sizes['e2ee-zstd']:.3f} |")

    # Batch compression cannot shrink ciphertext; e2ee compression gets most of it back.
    assert sizes["e2ee-zstd"] > 0.95 * raw, sizes
    assert sizes["e2ee+zstd-zstd"] < 0.6 * sizes["e2ee-zstd"], sizes
    assert sizes["e2ee+lz4-lz4"] < 0.75 * sizes["e2ee-zstd"], sizes
    # The broker holds no plaintext: Kafka's own decoder decompresses the
    # batches and finds every value of the plaintext topics and none of the
    # encrypted ones (so the check does see through batch compression).
    for name, on, *_ in CASES:
        found = sum(v in dumps[name] for v in values)
        assert found == (0 if on else RECORDS), (name, found)
        markers = sum(f"{p}-{i:05d}" in dumps[name] for i in range(RECORDS))
        assert markers == (0 if on else RECORDS), (name, markers)


def check_round_trip(built, kafka, creds, tmp_path, host, topic, values, e2ee_compression):
    """The other host's consumer reads every value byte for byte; the headers
    say the records were compressed (the JSON-like values always shrink)."""
    flag = COMPRESSION_FLAGS[e2ee_compression]
    for value, headers in raw_records(kafka, topic, RECORDS):
        assert headers["e2ee"][1] & 0x30 == flag, headers["e2ee"].hex()
        assert len(value) == RECORD_SIZE
        if flag:
            # sealed part, marker, zero padding
            assert value.rstrip(b"\x00").endswith(b"\x80"), value[-40:].hex()
    if host == "java":
        r = kcat(kafka, creds, "reader", "-C", "-t", topic, "-o", "beginning", "-c", str(RECORDS),
                 "-f", "%s\\n")
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.splitlines() == values
    else:
        cons = props(tmp_path / f"{topic}.c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                     key_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                     group_id=f"java-{topic}", auto_offset_reset="earliest")
        r = app(built, "consume", str(cons), topic, str(RECORDS), "120000", "bytes")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert r.stdout.splitlines() == values


def cpu_has_aes() -> bool:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return "aes" in flags and "pclmulqdq" in flags


def test_the_default_cipher_is_aes_256_gcm_exactly_where_the_cpu_has_aes_instructions(built, kafka, creds, tmp_path):
    """e2ee.cipher=auto (the default) on both hosts: the headers name
    AES-256-GCM iff this CPU has AES-NI and PCLMULQDQ."""
    want = AES_256_GCM if cpu_has_aes() else 0
    topic, p, n = "auto-cipher-java", prefix(), 20
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER)
    with producing(built, prod, topic, p, n, "string") as producer:
        records = raw_records(kafka, topic, n)
        assert producer.close().returncode == 0
    assert [h["e2ee"][1] & AES_256_GCM for _, h in records] == [want] * n

    topic2 = "auto-cipher-rdkafka"
    kafka.create_topic(topic2)
    r = kcat(kafka, creds, "writer", "-P", "-t", topic2, input="".join(f"{p}-{i}\n" for i in range(n)))
    assert r.returncode == 0, r.stderr
    assert [h["e2ee"][1] & AES_256_GCM for _, h in raw_records(kafka, topic2, n)] == [want] * n
