"""Java clients on a real broker: the serde wrappers and the interceptors, with
Java apps and with Kafka's own console and perf tools configured by properties
files alone. Every test that claims "no plaintext on the broker" reads the
broker's segment files from disk."""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest

import broker as test_broker

from java_clients import CLI, STRING_DE, STRING_SER, TOOLS, Running, app, build, e2ee, java, props


@pytest.fixture(scope="module")
def built():
    """The CLI, the jar with its native library, and the test apps."""
    return build()


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    """One broker for the module (each test uses its own topics)."""
    dir = tmp_path_factory.mktemp("java") / "broker"
    b = test_broker.start(dir)
    try:
        yield b
    finally:
        test_broker.stop(dir)


@pytest.fixture(scope="module")
def creds(built, tmp_path_factory):
    """An authority and credentials: writer (produce all), reader (consume
    all), outsider (consume only other.*), noproduce (consume all, produce
    nothing it is asked to), and one from a foreign authority, one expired."""
    d = tmp_path_factory.mktemp("creds")
    cli = lambda *a: subprocess.run([str(CLI), *a], check=True, capture_output=True, text=True)  # noqa: E731
    cli("authority", "init", "--out", str(d / "authority"))
    cli("authority", "init", "--out", str(d / "foreign"))

    def issue(name, *grants, authority="authority", extra=()):
        cli("credential", "issue", "--authority", str(d / authority), "--name", name, *grants, *extra,
            "--out", str(d / f"{name}.cred"))
        return d / f"{name}.cred"

    return {
        "trust": d / "authority" / "trust",
        "writer": issue("writer", "--produce", "*", "--consume", "*"),
        "reader": issue("reader", "--consume", "*"),
        "outsider": issue("outsider", "--consume", "other.*", "--produce", "other.*"),
        "noproduce": issue("noproduce", "--produce", "other.*", "--consume", "*"),
        "foreign": issue("foreign", "--produce", "*", "--consume", "*", authority="foreign"),
        "expired": issue("expired", "--produce", "*", "--consume", "*",
                         extra=("--not-before", "2020-01-01", "--expires", "1d")),
    }


def producing(cp, prod, topic, p, n, type) -> Running:
    """An app producer that has sent its records and stays up."""
    r = Running(cp, "dev.kafkae2ee.it.E2eeApp", "produce", str(prod), topic, p, str(n), type)
    r.wait_line("SENT")
    return r


def tool(cp, name, *args, input=None, timeout=180):
    return java(cp, TOOLS[name], *args, input=input, timeout=timeout)


def segments(b, topic: str | None = None) -> bytes:
    """The bytes of the broker's segment files: of one topic, or of all."""
    pattern = f"{topic}-*/*.log" if topic else "*/*.log"
    return b"".join(p.read_bytes() for p in sorted(b.data_dir.glob(pattern)))


# An e2ee header in a segment file (FORMAT.md section 2): name, length 0x44 =
# 34 as a varint, version 1, flags (key binding, cipher, compression bits:
# at most 0x3f; with HEADERS, section 12: 0x80 to 0xbf), then the producer
# instance id and the epoch.
HEADER_ON_DISK = rb"e2ee\x44\x01[\x00-\x3f\x80-\xbf](.{8})(.{4})"


def epochs_on_disk(b, topic: str) -> dict[bytes, set[bytes]]:
    """Producer instance id -> the epochs its records on disk were sealed
    under, read from the e2ee headers in the topic's segment files
    (HEADER_ON_DISK)."""
    epochs: dict[bytes, set[bytes]] = {}
    for producer, epoch in re.findall(HEADER_ON_DISK, segments(b, topic), re.S):
        epochs.setdefault(producer, set()).add(epoch)
    return epochs


def assert_no_plaintext(b, values: list[str], topic: str | None = None):
    data = segments(b, topic)
    leaked = [v for v in values if v.encode() in data]
    assert not leaked, f"{len(leaked)} plaintext values found in segment files, e.g. {leaked[:3]}"


def prefix() -> str:
    return "secret" + uuid.uuid4().hex[:10]


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_serde_json_round_trip_and_broker_holds_only_ciphertext(built, kafka, creds, tmp_path, protocol):
    topic, p, n = f"orders-json-{protocol}", prefix(), 300
    kafka.create_topic(topic, partitions=3)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer="org.apache.kafka.connect.json.JsonSerializer")
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                 e2ee_inner_value_deserializer="org.apache.kafka.connect.json.JsonDeserializer",
                 group_id=f"g-{protocol}", group_protocol=protocol, auto_offset_reset="earliest")
    with producing(built, prod, topic, p, n, "json") as producer:
        r = app(built, "consume", str(cons), topic, str(n), "60000", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert producer.close().returncode == 0
    # Metrics are visible over JMX (read in the consumer's JVM just before it closed).
    metrics = dict(re.findall(r"^METRIC ([\w-]+)=(\d+)$", r.stderr, re.M))
    assert int(metrics["records-opened"]) == n and int(metrics["keys-received"]) >= 1, r.stderr[-2000:]
    assert "CONTROL-THREADS 0" in r.stderr  # shut down with the last client
    got = sorted(r.stdout.split())
    want = sorted(f'{{"id":{i},"note":"{p}-{i:05d}"}}' for i in range(n))
    assert got == want
    assert_no_plaintext(kafka, [f"{p}-{i:05d}" for i in range(n)], topic)


def test_console_tools_round_trip_1000_records_with_interceptors(built, kafka, creds, tmp_path):
    topic, p, n = "console-orders", prefix(), 1000
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor")
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor")
    values = [f"{p}-{i:05d} order of {i} items" for i in range(n)]
    with Running(built, TOOLS["console-producer"], "--bootstrap-server", kafka.bootstrap, "--topic", topic,
                 "--command-config", str(prod)) as producer:
        producer.write("\n".join(values) + "\n")
        r = tool(built, "console-consumer", "--bootstrap-server", kafka.bootstrap, "--topic", topic,
                 "--command-config", str(cons), "--from-beginning", "--max-messages", str(n),
                 "--timeout-ms", "60000")
        assert r.returncode == 0, r.stderr
        done = producer.close()
        assert done.returncode == 0, done.stderr
    assert r.stdout.splitlines() == values
    assert "dropped" not in r.stderr, r.stderr
    assert_no_plaintext(kafka, values, topic)
    # The scan does see plaintext where there is some: the same records
    # produced without encryption to another topic are readable on disk.
    plain = "console-plain"
    kafka.create_topic(plain)
    r = tool(built, "console-producer", "--bootstrap-server", kafka.bootstrap, "--topic", plain,
             input="\n".join(values) + "\n")
    assert r.returncode == 0, r.stderr
    data = segments(kafka, plain)
    assert all(v.encode() in data for v in values)


def test_perf_tools_run_with_the_interceptor_properties(built, kafka, creds, tmp_path):
    # The perf producer exits when done; its keys stay servable because its
    # state directory is reopened by a process with the same credential.
    topic, n, state = "perf-orders", 5000, tmp_path / "state"
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor", e2ee_state_dir=state)
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor")
    r = tool(built, "producer-perf-test", "--topic", topic, "--num-records", str(n), "--record-size", "200",
             "--throughput", "-1", "--command-config", str(prod))
    assert r.returncode == 0, r.stderr
    assert f"{n} records sent" in r.stdout, r.stdout
    holder = props(tmp_path / "h.properties", kafka.bootstrap, **e2ee(creds, "writer"), e2ee_state_dir=state,
                   interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor", key_serializer=STRING_SER,
                   value_serializer="org.apache.kafka.common.serialization.ByteArraySerializer")
    with producing(built, holder, topic, "unused", 0, "bytes") as h:
        r = tool(built, "consumer-perf-test", "--bootstrap-server", kafka.bootstrap, "--topic", topic,
                 "--messages", str(n), "--command-config", str(cons), "--timeout", "60000")
        assert r.returncode == 0, r.stderr
        assert h.close().returncode == 0
    assert "dropped" not in r.stderr, r.stderr
    # The data row: start, end, MB, MB/s, nMsg, ...
    rows = [line.split(", ") for line in r.stdout.splitlines() if re.match(r"^\d{4}-", line)]
    assert rows and int(rows[-1][4]) == n, r.stdout


def test_interceptors_round_trip_string_values(built, kafka, creds, tmp_path):
    topic, p, n = "string-orders", prefix(), 200
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor", key_serializer=STRING_SER,
                 value_serializer=STRING_SER, value_serializer_encoding="ISO-8859-1")
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor", key_deserializer=STRING_DE,
                 value_deserializer=STRING_DE, value_deserializer_encoding="ISO-8859-1",
                 group_id="g-string", auto_offset_reset="earliest")
    with producing(built, prod, topic, p, n, "string") as producer:
        r = app(built, "consume", str(cons), topic, str(n), "60000", "string")
        assert r.returncode == 0, r.stdout + r.stderr
        assert producer.close().returncode == 0
    assert sorted(r.stdout.splitlines()) == sorted(f"{p}-{i:05d}-\u00e9\u4e2d" for i in range(n))
    assert_no_plaintext(kafka, [f"{p}-{i:05d}" for i in range(n)], topic)


def test_interceptor_that_cannot_encrypt_fails_the_send_and_nothing_reaches_the_broker(
    built, kafka, creds, tmp_path
):
    # "noproduce" may not produce to this topic: sealing fails inside onSend.
    topic, p = "refused-orders", prefix()
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "noproduce"),
                 interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor", key_serializer=STRING_SER,
                 value_serializer="org.apache.kafka.common.serialization.ByteArraySerializer")
    r = app(built, "produce", str(prod), topic, p, "5", "bytes")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "SEND-FAILED org.apache.kafka.common.errors.SerializationException" in r.stdout
    assert "could not encrypt" in r.stderr
    assert_no_plaintext(kafka, [p])  # in no segment file of any topic
    # Kafka's console producer fails the same way.
    r = tool(built, "console-producer", "--bootstrap-server", kafka.bootstrap, "--topic", topic,
             "--command-config", str(prod), input=f"{p}-console\n")
    assert r.returncode != 0
    assert_no_plaintext(kafka, [p])


def test_consumer_without_grant_gets_record_deserialization_exception(built, kafka, creds, tmp_path):
    topic, p = "granted-orders", prefix()
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER)
    producer = producing(built, prod, topic, p, 3, "string")
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "outsider"),
                 key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                 e2ee_inner_value_deserializer=STRING_DE, group_id="g-outsider", auto_offset_reset="earliest")
    r = app(built, "consume", str(cons), topic, "3", "30000", "string")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "DESERIALIZATION-FAILED partition=0 offset=0" in r.stdout
    assert "NOT_AUTHORIZED" in r.stdout
    assert p not in r.stdout.split("DESERIALIZATION-FAILED")[0]  # nothing handed over as data
    # The consumer interceptor drops the records instead: the app sees none.
    cons_i = props(tmp_path / "ci.properties", kafka.bootstrap, **e2ee(creds, "outsider"),
                   interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor", key_deserializer=STRING_DE,
                   value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                   group_id="g-outsider-i", auto_offset_reset="earliest")
    r = app(built, "consume", str(cons_i), topic, "1", "8000", "bytes")
    assert r.returncode == 5 and r.stdout == "", r.stdout
    assert r.stderr.count("kafka-e2ee dropped the record at granted-orders-0 offset") == 3, r.stderr
    assert producer.close().returncode == 0


def test_plaintext_record_on_protected_topic_is_rejected(built, kafka, creds, tmp_path):
    topic = "injected-orders"
    kafka.create_topic(topic)
    r = tool(built, "console-producer", "--bootstrap-server", kafka.bootstrap, "--topic", topic,
             input="forged plaintext\n")
    assert r.returncode == 0, r.stderr
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                 e2ee_inner_value_deserializer=STRING_DE, group_id="g-injected", auto_offset_reset="earliest")
    r = app(built, "consume", str(cons), topic, "1", "30000", "string")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "DESERIALIZATION-FAILED partition=0 offset=0" in r.stdout and "MISSING_HEADER" in r.stdout


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing-credential", "e2ee.credential"),
        ("no-credential", "e2ee.credential is required"),
        ("unreadable-trust", "e2ee.trust"),
        ("foreign-credential", "e2ee.credential"),
        ("expired-credential", "e2ee.credential"),
        ("no-such-inner-serializer", "e2ee.inner.value.serializer"),
        ("typo", "e2ee.key.rotation.msec"),
        ("bad-cipher", "e2ee.cipher: String must be one of: auto, chacha20-poly1305, aes-256-gcm"),
        ("bad-compression", "e2ee.compression: String must be one of: none, zstd, lz4"),
    ],
)
def test_bad_configuration_fails_construction_naming_the_property(built, kafka, creds, tmp_path, case, expect):
    kv = e2ee(creds, "writer", key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
              e2ee_inner_value_serializer=STRING_SER)
    if case == "missing-credential":
        kv["e2ee_credential"] = tmp_path / "nope.cred"
    elif case == "no-credential":
        del kv["e2ee_credential"]
    elif case == "unreadable-trust":
        kv["e2ee_trust"] = tmp_path
    elif case == "foreign-credential":
        kv["e2ee_credential"] = creds["foreign"]
    elif case == "expired-credential":
        kv["e2ee_credential"] = creds["expired"]
    elif case == "no-such-inner-serializer":
        kv["e2ee_inner_value_serializer"] = "com.example.NoSuchSerializer"
    elif case == "typo":
        kv["e2ee_key_rotation_msec"] = "1000"
    elif case == "bad-cipher":
        kv["e2ee_cipher"] = "aes-128-gcm"
    elif case == "bad-compression":
        kv["e2ee_compression"] = "gzip"
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **kv)
    r = app(built, "produce", str(prod), "bad-config", prefix(), "1", "string")
    assert r.returncode != 0
    assert "Failed to construct kafka producer" in r.stderr
    assert expect in r.stderr, r.stderr[-3000:]


def test_two_producers_two_groups_with_members_joining_and_leaving_under_key_rotation(
    built, kafka, creds, tmp_path
):
    """e2ee.key.rotation.ms=2000 while two producers write for ~15 s; group A
    (classic protocol, one member) and group B (consumer protocol, three
    members that join and leave) each receive every record, exactly as
    produced."""
    import time

    topic, n, interval = "rotating-orders", 500, 30
    kafka.create_topic(topic, partitions=6)
    prefixes = [prefix(), prefix()]
    want = {f"{p}-{i:05d}-\u00e9\u4e2d" for p in prefixes for i in range(n)}

    def consumer_props(name, group, protocol):
        return props(tmp_path / f"{name}.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                     key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                     e2ee_inner_value_deserializer=STRING_DE, group_id=group, group_protocol=protocol,
                     auto_offset_reset="earliest", enable_auto_commit="false")

    def member(name, group, protocol):
        out = tmp_path / f"{name}.out"
        return Running(built, "dev.kafkae2ee.it.E2eeApp", "member", str(consumer_props(name, group, protocol)),
                       topic, str(out)), out

    def received(files):
        got = []
        for f in files:
            if f.exists():
                got += f.read_text(encoding="utf-8").splitlines()
        return got

    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"), e2ee_key_rotation_ms=2000,
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER)
    procs = []
    try:
        a, a_out = member("a1", "group-a", "classic")
        b1, b1_out = member("b1", "group-b", "consumer")
        procs += [a, b1]
        producers = [Running(built, "dev.kafkae2ee.it.E2eeApp", "paced", str(prod), topic, p, str(n), str(interval))
                     for p in prefixes]
        procs += producers
        time.sleep(3)
        b2, b2_out = member("b2", "group-b", "consumer")
        procs.append(b2)
        time.sleep(3)
        b3, b3_out = member("b3", "group-b", "consumer")
        procs.append(b3)
        time.sleep(3)
        assert b2.close().returncode == 0  # leaves mid-run
        time.sleep(3)
        assert b3.close().returncode == 0
        for p in producers:
            p.wait_line("SENT", timeout=120)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if want <= set(received([a_out])) and want <= set(received([b1_out, b2_out, b3_out])):
                break
            time.sleep(0.5)
        for proc in [a, b1]:
            done = proc.close()
            assert done.returncode == 0, done.stdout + done.stderr
        for p in producers:
            done = p.close()
            assert "SEND-FAILED" not in done.stdout, done.stdout
        got_a, got_b = received([a_out]), received([b1_out, b2_out, b3_out])
        assert set(got_a) == want, f"group A: missing {len(want - set(got_a))}, extra {set(got_a) - want}"
        assert set(got_b) == want, f"group B: missing {len(want - set(got_b))}, extra {set(got_b) - want}"
        assert len(got_a) == len(want), "group A has duplicates"  # one member, no rebalance after start
    finally:
        for proc in procs:
            proc.__exit__(None, None, None)
    assert_no_plaintext(kafka, sorted(want), topic)
    # The keys did rotate: the e2ee headers on disk name several epochs per producer.
    epochs = epochs_on_disk(kafka, topic)
    assert len(epochs) == 2 and all(len(e) >= 4 for e in epochs.values()), {
        k.hex(): len(v) for k, v in epochs.items()}


@pytest.mark.parametrize("clients", ["3.0.0", "3.9.1", "4.0.0", "4.4.0"])
def test_kafka_clients_versions(built, kafka, creds, tmp_path, clients):
    """The jar is built against kafka-clients 4.4.0; the oldest version it
    claims, 3.0.0, the newest 3.x and the first 4.x run the serde wrappers and
    the consumer interceptor too (fetched from Maven Central when missing)."""
    # Maven copies the jar where we can name it (its local repository may not
    # be under $HOME: Java takes user.home from the password database).
    subprocess.run(["mvn", "-B", "-q", "dependency:copy", f"-Dartifact=org.apache.kafka:kafka-clients:{clients}",
                    f"-DoutputDirectory={tmp_path}"], check=True, capture_output=True, cwd=tmp_path)
    jar = tmp_path / f"kafka-clients-{clients}.jar"
    assert jar.exists(), f"mvn dependency:copy did not produce {jar}"
    cp = ":".join(str(jar) if re.search(r"/kafka-clients-[^/]*\.jar$", e) else e for e in built.split(":"))
    assert str(jar) in cp.split(":")
    topic, p, n = f"clients-{clients}", prefix(), 100
    kafka.create_topic(topic)
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"),
                 key_serializer=STRING_SER, value_serializer="dev.kafkae2ee.EncryptingSerializer",
                 e2ee_inner_value_serializer=STRING_SER)
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                 e2ee_inner_value_deserializer=STRING_DE, group_id="g-serde", auto_offset_reset="earliest")
    cons_i = props(tmp_path / "ci.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                   interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor", key_deserializer=STRING_DE,
                   value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                   group_id="g-interceptor", auto_offset_reset="earliest")
    want = sorted(f"{p}-{i:05d}-\u00e9\u4e2d" for i in range(n))
    with producing(cp, prod, topic, p, n, "string") as producer:
        for c, type in [(cons, "string"), (cons_i, "bytes")]:
            r = app(cp, "consume", str(c), topic, str(n), "60000", type)
            assert r.returncode == 0, r.stdout + r.stderr
            assert sorted(r.stdout.splitlines()) == want
        assert producer.close().returncode == 0
    # The producer interceptor's refusal fails the send on this version too.
    refused = props(tmp_path / "r.properties", kafka.bootstrap, **e2ee(creds, "noproduce"),
                    interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor", key_serializer=STRING_SER,
                    value_serializer="org.apache.kafka.common.serialization.ByteArraySerializer")
    r = app(cp, "produce", str(refused), topic, p + "-refused", "1", "bytes")
    assert r.returncode == 3 and "SerializationException" in r.stdout, r.stdout + r.stderr
    assert_no_plaintext(kafka, want + [p + "-refused"])


@pytest.mark.parametrize("path", ["serde", "interceptor"])
def test_tombstones_and_empty_values_round_trip(built, kafka, creds, tmp_path, path):
    topic, p, n = f"edge-{path}", prefix(), 30
    if path == "serde":
        prod_kv = dict(value_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_value_serializer=STRING_SER)
        cons_kv = dict(value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                       e2ee_inner_value_deserializer=STRING_DE)
        type = "edge-string"
    else:
        prod_kv = dict(interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor",
                       value_serializer="org.apache.kafka.common.serialization.ByteArraySerializer")
        cons_kv = dict(interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                       value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer")
        type = "edge-bytes"
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"), key_serializer=STRING_SER,
                 **prod_kv)
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"), key_deserializer=STRING_DE,
                 group_id="g-edge", auto_offset_reset="earliest", **cons_kv)
    with producing(built, prod, topic, p, n, type) as producer:
        r = app(built, "consume", str(cons), topic, str(n), "60000", type)
        assert r.returncode == 0, r.stdout + r.stderr
        assert producer.close().returncode == 0
    want = ["null" if i % 3 == 0 else "" if i % 3 == 1 else f"{p}-{i:05d}" for i in range(n)]
    assert r.stdout.split("\n")[:-1] == want
    # E2eeApp prints the metrics on stderr (METRIC records-dropped=N): none dropped.
    assert "kafka-e2ee dropped" not in r.stderr, r.stderr
    assert "METRIC records-dropped=" not in r.stderr or "METRIC records-dropped=0\n" in r.stderr, r.stderr


def test_a_key_that_never_comes_fails_the_record_after_key_wait_ms(built, kafka, creds, tmp_path):
    import time

    topic, p = "orphaned-orders", prefix()
    prod = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"), key_serializer=STRING_SER,
                 value_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_value_serializer=STRING_SER)
    with producing(built, prod, topic, p, 2, "string") as producer:
        assert producer.close().returncode == 0  # gone: nobody holds the key any more
    cons = props(tmp_path / "c.properties", kafka.bootstrap, **e2ee(creds, "reader"), key_deserializer=STRING_DE,
                 value_deserializer="dev.kafkae2ee.DecryptingDeserializer", e2ee_inner_value_deserializer=STRING_DE,
                 group_id="g-orphan", auto_offset_reset="earliest", e2ee_key_wait_ms=3000)
    t0 = time.monotonic()
    r = app(built, "consume", str(cons), topic, "2", "60000", "string")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "DESERIALIZATION-FAILED partition=0 offset=0" in r.stdout
    assert "KEY_PENDING" in r.stdout and "e2ee.key.wait.ms=3000" in r.stdout
    assert p not in r.stdout
    assert time.monotonic() - t0 < 30


def test_record_path_allocates_only_its_output(built, kafka, creds, tmp_path):
    # Counted with the JVM's per-thread allocation counter (HotPathCheck): a seal
    # allocates its 34-byte header and nothing else, an open nothing, and the
    # consumer interceptor decrypts and strips in place and hands back the
    # batch itself, instead of copying every record (docs/PERFORMANCE.md).
    cfg = props(tmp_path / "p.properties", kafka.bootstrap, **e2ee(creds, "writer"))
    r = java(built, "dev.kafkae2ee.HotPathCheck", str(cfg), "hot-path")
    assert r.returncode == 0, r.stdout + r.stderr
    got = {k: int(v) for k, v in (line.split() for line in r.stdout.splitlines())}
    assert got["seal-bytes"] <= 64, got  # new byte[34]: 16 bytes of object header, 34 of data, padding
    assert got["open-bytes"] == 0, got
    assert got["consume-same-batch"] == 1, got
    # What is left per record is Kafka's own header list iterator (RecordHeaders.remove);
    # a copy of the value alone would be over 1,000 bytes.
    assert got["consume-bytes"] <= 128, got
