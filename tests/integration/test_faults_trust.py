"""Faults of the control plane, of clocks and of credentials, on a real broker
with real clients: Java kafka-clients (serde wrappers, and the consumer
interceptor where its error path differs) and confluent-kafka with the
librdkafka plugin, each client in a process of its own so that keys really
travel over the control topic. Every test checks the three properties that
matter: no plaintext in the broker's segment files, no ciphertext handed to
an app as data, and every record accounted for (delivered, or failed on the
app's normal error path).

docs/PROTOCOL.md ("Faults: control plane, clocks, credentials") names these
tests for each claim."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import broker as test_broker
import plugin_clients
from test_java import (  # noqa: F401  (built is a pytest fixture)
    HEADER_ON_DISK,
    STRING_DE,
    STRING_SER,
    Running,
    assert_no_plaintext,
    built,
    prefix,
    props,
    segments,
)

ROOT = test_broker.ROOT
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
CLI = ROOT / "target" / "release" / "kafka-e2ee"
APP = "dev.kafkae2ee.it.E2eeApp"
# e2ee.control.topic's default (core/src/settings.rs); the clients here keep it.
CONTROL_TOPIC = "_e2ee_control"
KEYS_TOPIC = "_e2ee_keys"
# With an authorizer an ACL can take the control topic away; without ACLs
# everyone may do everything, so the other tests' clients are unaffected.
AUTHORIZER = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}
# On the PLAINTEXT listener every client is this principal.
PRINCIPAL = "User:ANONYMOUS"
CLOCKSHIFT_C = Path(__file__).resolve().parent / "clockshift.c"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory, built):
    dir = tmp_path_factory.mktemp("faults-trust") / "broker"
    b = test_broker.start(dir, properties=AUTHORIZER)
    try:
        yield b
    finally:
        test_broker.stop(dir)


def cli(*args: str) -> str:
    return subprocess.run([str(CLI), *args], check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def pki(tmp_path):
    """An authority; ``issue(name, *args)`` writes a credential signed by it."""
    auth = tmp_path / "authority"
    cli("authority", "init", "--out", str(auth))

    def issue(name: str, *args: str) -> Path:
        out = tmp_path / f"{name}.cred"
        cli("credential", "issue", "--authority", str(auth), "--name", name, *args, "--out", str(out))
        return out

    return {"trust": auth / "trust", "issue": issue}


@pytest.fixture(scope="module")
def skewed_clock(tmp_path_factory):
    """``skewed_clock(ms)`` is the environment that moves a process's wall
    clock by ``ms`` milliseconds (monotonic clocks and waits stay real), via
    the LD_PRELOAD library built here from clockshift.c (which says why not
    libfaketime)."""
    lib = tmp_path_factory.mktemp("clockshift") / "libclockshift.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(lib), str(CLOCKSHIFT_C)],
                   check=True, timeout=120)
    return lambda ms: {"LD_PRELOAD": str(lib), "CLOCKSHIFT_MS": str(ms)}


# ---- clients ---------------------------------------------------------------


def java_values(p: str, n: int) -> list[str]:
    """What E2eeApp's paced producer sends, in order."""
    return [f"{p}-{i:05d}-\u00e9\u4e2d" for i in range(n)]


class JavaWriter:
    """E2eeApp paced: the serializer path, sealing ``n`` records one per
    ``interval_ms``, then staying up to serve its keys."""

    def __init__(self, cp, kafka, dir: Path, cred, trust, topic, n, interval_ms, rotation_ms, env=None,
                 retention_ms=None):
        self.prefix, self.topic = prefix(), topic
        self.values = java_values(self.prefix, n)
        kv = {"e2ee_key_retention_ms": retention_ms} if retention_ms else {}
        conf = props(dir / f"{topic}-writer.properties", kafka.bootstrap, e2ee_credential=cred, e2ee_trust=trust,
                     e2ee_key_rotation_ms=rotation_ms, key_serializer=STRING_SER,
                     value_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_value_serializer=STRING_SER,
                     **kv)
        self.run = Running(cp, APP, "paced", str(conf), topic, self.prefix, str(n), str(interval_ms), env=env,
                           log=dir / f"{topic}-writer.log")
        self.sent = False

    def wait_sent(self, timeout: float) -> None:
        """Until every record is acknowledged; the producer stays up."""
        if not self.sent:
            self.run.wait_line("SENT", timeout=timeout)
            self.sent = True

    def finish(self, timeout: float) -> subprocess.CompletedProcess:
        """Waits for SENT, then closes the producer: nobody can get its keys
        from it any more (it has no state directory)."""
        self.wait_sent(timeout)
        done = self.run.close()
        assert done.returncode == 0 and "SEND-FAILED" not in done.stdout, done.stdout + done.stderr[-3000:]
        return done


class CkWriter:
    """confluent-kafka with the plugin: ``n`` records at ``rate`` per second,
    key binding off so that Java's deserializer can open them too."""

    def __init__(self, kafka, dir: Path, cred, trust, topic, n, rate, rotation_ms, env=None, retention_ms=None):
        self.prefix, self.topic, self.dir = prefix(), topic, dir
        self.stop, self.out = dir / f"{topic}-writer.stop", dir / f"{topic}-writer.json"
        e2ee = {"e2ee.credential": str(cred), "e2ee.trust": str(trust), "e2ee.key.rotation.ms": str(rotation_ms),
                "e2ee.bind.key": "false"}
        if retention_ms:
            e2ee["e2ee.key.retention.ms"] = str(retention_ms)
        self.proc = plugin_clients.spawn(
            "produce", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic, "e2ee": e2ee,
                        "count": n, "rate": rate, "prefix": self.prefix, "out": str(self.out),
                        "stop": str(self.stop)}, env=env, log=dir / f"{topic}-writer.log")
        self.values: list[str] = []
        self.at: list[list[int]] = []

    def finish(self, timeout: float) -> None:
        wait_for(lambda: self.out.exists() or self.proc.poll() is not None, timeout, f"{self.topic} writer's report")
        assert self.out.exists(), (self.dir / f"{self.topic}-writer.log").read_text(errors="replace")[-3000:]
        report = json.loads(self.out.read_text())
        assert report["failed"] == [], report["failed"][:3]
        self.values, self.at = report["delivered"], report["at"]
        assert [o for _, o, _ in self.at] == list(range(len(self.values))), "one partition, in order"

    def close(self) -> None:
        self.stop.touch()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class Reader:
    """A consumer process subscribed to ``topics``, that writes what its app
    sees; ``rows()`` returns {topic: {offset: value}} for records and
    {topic: [(offset, reason)]} for errors. on_error: retry (poll again; the
    record comes back) or skip (seek past it)."""

    def records(self) -> dict[str, dict[int, str]]:
        return self.rows()[0]

    def count(self, topic: str) -> int:
        return len(self.records().get(topic, {}))


class JavaReader(Reader):
    def __init__(self, cp, kafka, dir: Path, name, cred, trust, topics, on_error, wait_ms, env=None,
                 interceptor=False):
        self.out, self.log = dir / f"{name}.out", dir / f"{name}.log"
        kv = dict(e2ee_credential=cred, e2ee_trust=trust, e2ee_key_wait_ms=wait_ms, key_deserializer=STRING_DE,
                  group_id=f"g-{name}", auto_offset_reset="earliest")
        if interceptor:
            kv |= dict(interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                       value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer")
        else:
            kv |= dict(value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                       e2ee_inner_value_deserializer=STRING_DE)
        conf = props(dir / f"{name}.properties", kafka.bootstrap, **kv)
        self.run = Running(cp, APP, "reader", str(conf), ",".join(topics), str(self.out), on_error, env=env,
                           log=self.log)

    def rows(self):
        records: dict[str, dict[int, str]] = {}
        errors: dict[str, list[tuple[int, str]]] = {}
        if self.out.exists():
            for line in self.out.read_text(encoding="utf-8").splitlines():
                kind, topic, _partition, offset, rest = (line.split(" ", 4) + [""])[:5]
                if kind == "R":
                    assert int(offset) not in records.setdefault(topic, {}), f"duplicate: {line}"
                    records[topic][int(offset)] = rest
                elif kind == "E":
                    errors.setdefault(topic, []).append((int(offset), rest))
        return records, errors

    def close(self) -> dict[str, int]:
        """Stops it; returns its kafka-e2ee metrics (from JMX, printed at exit)."""
        done = self.run.close()
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        return {k: int(v) for k, v in re.findall(r"^METRIC ([\w-]+)=(\d+)$", done.stderr, re.M)}


class CkReader(Reader):
    def __init__(self, kafka, dir: Path, name, cred, trust, topics, on_error, wait_ms, env=None):
        self.out, self.stop = dir / f"{name}.jsonl", dir / f"{name}.stop"
        e2ee = {"e2ee.credential": str(cred), "e2ee.trust": str(trust), "e2ee.key.wait.ms": str(wait_ms)}
        self.proc = plugin_clients.spawn(
            "consume", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topics": topics, "group": f"g-{name}",
                        "e2ee": e2ee, "seconds": 600, "out": str(self.out), "stop": str(self.stop),
                        "on_error": on_error}, env=env, log=dir / f"{name}.log")

    def rows(self):
        records: dict[str, dict[int, str]] = {}
        errors: dict[str, list[tuple[int, str]]] = {}
        if self.out.exists():
            for line in self.out.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                if "error" in r:
                    assert "rejected" in r, f"not an e2ee rejection: {r}"
                    errors.setdefault(r["t"], []).append((r["rejected"], r["error"]))
                else:
                    assert "e2ee" not in r["h"], r
                    assert r["o"] not in records.setdefault(r["t"], {}), f"duplicate: {r}"
                    records[r["t"]][r["o"]] = r["v"]
        return records, errors

    def close(self) -> dict[str, int]:
        self.stop.touch()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return {}


def wait_for(cond, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def assert_delivered_exactly(reader: Reader, topic: str, values: list[str]):
    """Every record of ``topic`` reached the app once, as its plaintext."""
    got = reader.records().get(topic, {})
    assert got == dict(enumerate(values)), (
        f"{topic}: {len(got)} of {len(values)} delivered; "
        f"wrong or ciphertext: {[(o, v) for o, v in got.items() if o >= len(values) or values[o] != v][:3]}")


def assert_accounted(reader: Reader, topic: str, values: list[str]) -> tuple[set[int], set[int]]:
    """Skip mode: each record either reached the app as its plaintext, or
    failed on the error path, never both, never neither. Returns (delivered,
    failed) offsets."""
    records, errors = reader.rows()
    got = records.get(topic, {})
    failed = {o for o, _ in errors.get(topic, [])}
    wrong = [(o, v) for o, v in got.items() if o >= len(values) or values[o] != v]
    assert not wrong, f"{topic}: handed over as data but not the plaintext: {wrong[:3]}"
    assert not set(got) & failed, f"{topic}: both delivered and failed: {sorted(set(got) & failed)[:5]}"
    assert set(got) | failed == set(range(len(values))), (
        f"{topic}: unaccounted offsets {sorted(set(range(len(values))) - set(got) - failed)[:10]}")
    return set(got), failed


def epochs_on_disk(kafka, topic: str) -> list[int]:
    """The epoch number in each record's e2ee header, in offset order (one
    partition, one producer)."""
    return [int.from_bytes(e, "big") for _, e in
            re.findall(HEADER_ON_DISK, segments(kafka, topic), re.S)]


def acl(kafka, deny: bool):
    """Denies the clients every operation on the control plane's topics, the
    control topic and the keys topic (key exchange v2: either carries keys),
    or lifts that."""
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                       AdminClient, ResourcePatternType, ResourceType)

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for topic in (CONTROL_TOPIC, KEYS_TOPIC):
        if deny:
            b = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, PRINCIPAL, "*",
                           AclOperation.ALL, AclPermissionType.DENY)
            admin.create_acls([b])[b].result(timeout=30)
        else:
            f = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, PRINCIPAL, None,
                                 AclOperation.ANY, AclPermissionType.ANY)
            for fut in admin.delete_acls([f]).values():
                fut.result(timeout=30)
        # The broker applies ACLs from its metadata log: check it took effect.
        any_acl = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, None, None,
                                   AclOperation.ANY, AclPermissionType.ANY)
        wait_for(lambda f=any_acl: bool(admin.describe_acls(f).result(timeout=30)) == deny, 30,
                 "the ACL change")


def close_all(parties):
    for p in parties:
        try:
            if isinstance(p, (JavaWriter,)):
                p.run.__exit__(None, None, None)
            elif isinstance(p, CkWriter):
                p.close()
            elif isinstance(p, JavaReader):
                p.run.__exit__(None, None, None)
            elif isinstance(p, CkReader):
                p.close()
        except Exception:  # noqa: BLE001  (cleanup after a failure: keep closing the rest)
            pass


# ---- 1. the control topic unreachable for 60 s ----------------------------


def test_control_topic_unreachable_for_60s_records_keep_flowing_then_everything_recovers(
    built, kafka, pki, tmp_path
):
    """A DENY ACL takes the control plane (the control topic and the keys
    topic) away from every client for 60 s.
    What happens (core/src/exchange, PROTOCOL.md §5): producers never wait
    and rotate on time (e2ee.key.rotation.ms=15000: several epoch boundaries
    fall inside the outage and after it); consumers keep opening records
    under the keys they hold, the current epoch and the next one pushed
    ahead, so data keeps flowing into the outage; records of a later epoch
    wait e2ee.key.wait.ms and fail on the normal error path (Java:
    RecordDeserializationException; librdkafka: an error message), and an
    app that polls again gets them once the control topic is back: the
    requests are retried, new epochs are exchanged, nothing is lost."""
    rotation, outage = 15_000, 60
    writer, reader = pki["issue"]("writer", "--produce", "*"), pki["issue"]("reader", "--consume", "*")
    trust, topics = pki["trust"], ["outage-java", "outage-rdkafka"]
    for t in topics:
        kafka.create_topic(t)
    parties = []
    try:
        jw = JavaWriter(built, kafka, tmp_path, writer, trust, topics[0], 500, 200, rotation)
        cw = CkWriter(kafka, tmp_path, writer, trust, topics[1], 500, 5, rotation)
        jr = JavaReader(built, kafka, tmp_path, "java-reader", reader, trust, topics, "retry", 3000)
        cr = CkReader(kafka, tmp_path, "ck-reader", reader, trust, topics, "retry", 3000)
        parties += [jw, cw, jr, cr]
        readers = {"java": jr, "librdkafka": cr}
        wait_for(lambda: all(r.count(t) >= 25 for r in readers.values() for t in topics), 120,
                 "every reader to read from both writers")

        acl(kafka, deny=True)
        t_deny = time.monotonic()
        before = {(n, t): r.count(t) for n, r in readers.items() for t in topics}
        wait_for(lambda: time.monotonic() - t_deny >= outage, outage + 5, "the end of the outage", every=1)
        during = {(n, t): r.count(t) - before[(n, t)] for n, r in readers.items() for t in topics}
        errors_during = {n: sum(len(e) for e in r.rows()[1].values()) for n, r in readers.items()}
        acl(kafka, deny=False)

        # Records under keys already held kept flowing into the outage...
        assert all(d >= 20 for d in during.values()), f"records delivered during the outage: {during}"
        # ...and those of the epoch after that waited and failed visibly.
        assert all(e >= 1 for e in errors_during.values()), f"errors seen during the outage: {errors_during}"

        jw.wait_sent(timeout=180)
        cw.finish(timeout=180)
        # Both producers stay up: the keys of epochs that began in the
        # outage exist nowhere else (no state directory, no other holder).
        for r in readers.values():
            wait_for(lambda r=r: r.count(topics[0]) == len(jw.values) and r.count(topics[1]) == len(cw.values),
                     120, "every record after the outage")
        jw.finish(timeout=60)
        for name, r in readers.items():
            assert_delivered_exactly(r, topics[0], jw.values)
            assert_delivered_exactly(r, topics[1], cw.values)
            for t, errs in r.rows()[1].items():
                assert all("KEY_PENDING" in e or name == "librdkafka" for _, e in errs), errs[:3]
        metrics = jr.close()
        assert metrics["records-failed"] >= 1 and metrics["records-opened"] >= 1000, metrics
        # The Java control plane said so, without a warning per poll.
        log = jr.log.read_text(errors="replace")
        assert 1 <= log.count("kafka-e2ee cannot read control topic") <= 4, log[-3000:]
        # Nor does its control consumer spin on the failing poll: the Kafka
        # consumer logs each failed fetch, so the lines count the polls.
        for name in ("java-reader.log", f"{topics[0]}-writer.log"):
            fetches = (tmp_path / name).read_text(errors="replace").count("Not authorized to read from partition")
            assert 1 <= fetches <= 3 * outage, f"{name}: {fetches} failed control-topic fetches in a {outage} s outage"
    finally:
        close_all(parties)
    for t in topics:
        epochs = epochs_on_disk(kafka, t)
        assert len(epochs) == 500 and len(set(epochs)) >= 5, (t, sorted(set(epochs)))
    assert_no_plaintext(kafka, jw.values + cw.values)


# ---- 2. clocks skewed by 5 minutes ----------------------------------------


def end_offsets(kafka, topic: str = CONTROL_TOPIC) -> dict[int, int]:
    """A topic's end offset per partition, now ({} while it does not exist)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "control-reader"})
    try:
        md = c.list_topics(topic, timeout=30).topics.get(topic)
        if md is None or md.error is not None:
            return {}
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in md.partitions}
    finally:
        c.close()


def control_end_offsets(kafka) -> dict[int, int]:
    """The control topic's end offset per partition, now."""
    return end_offsets(kafka, CONTROL_TOPIC)


def stamps(kafka, topic: str, since: dict[int, int], kind: int) -> list[float]:
    """The CreateTime (Unix s) of every control message of ``kind`` on
    ``topic`` after the offsets ``since`` (partitions missing there: from 0)."""
    from confluent_kafka import Consumer, TopicPartition

    end = end_offsets(kafka, topic)
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "control-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, since.get(p, 0)) for p in end])
    left = sum(end[p] - since.get(p, 0) for p in end)
    out: list[float] = []

    def read() -> bool:
        nonlocal left
        m = c.poll(0.5)
        if m is not None and not m.error():
            left -= 1
            # Envelope: magic (4), version (1), kind (1).
            if m.value() is not None and len(m.value()) > 5 and m.value()[5] == kind:
                out.append(m.timestamp()[1] / 1000)
        return left <= 0

    try:
        if left > 0:
            wait_for(read, 60, f"topic {topic}", every=0)
    finally:
        c.close()
    return out


def hello_stamps(kafka, since: dict[int, int]) -> list[float]:
    """The CreateTime (Unix s) of every Hello (kind 1) on the control topic
    after the offsets ``since``. Only a consumer starts a handshake (it asks
    for the keys it lacks; holders never open sessions), so these are the
    consumers' clocks (PROTOCOL.md sections 3 and 5)."""
    return stamps(kafka, CONTROL_TOPIC, since, 1)


def prekey_stamps(kafka, since: dict[int, int]) -> list[float]:
    """The CreateTime of every prekeys record (kind 7) on the keys topic after
    ``since``: only consumers publish them (PROTOCOL.md section 5a)."""
    return stamps(kafka, KEYS_TOPIC, since, 7)


def test_clocks_skewed_by_5_minutes_between_parties_everything_flows(built, kafka, pki, skewed_clock, tmp_path):
    """Each client's wall clock is moved by 5 minutes (clockshift.c): the
    Java producer +5 min, the librdkafka producer -5 min, the Java consumer
    -5 min, the librdkafka consumer +5 min. Parties are up to 10 minutes
    apart, and each is 5 minutes off the authority that issued the
    credentials just now: the edge of the 5-minute clock-skew tolerance of
    credential validity, which is inclusive. Keys rotate every 3 s and are
    kept 4 minutes, less than the gap between the librdkafka producer and
    consumer: a key delivery carries the time left, which each holder counts
    down on its own clock (PROTOCOL.md section 5, item 6), so the consumer
    10 minutes ahead does not drop every key of that producer as deleted.
    Every record opens for both consumers, none fails, the broker holds no
    plaintext, and the clocks really were moved (record timestamps, and the
    consumers' Hellos and prekeys)."""
    skew, rotation, retention, n = 5 * 60, 3000, 240_000, 100
    writer, reader = pki["issue"]("writer", "--produce", "*"), pki["issue"]("reader", "--consume", "*")
    trust, topics = pki["trust"], ["skew-java", "skew-rdkafka"]
    for t in topics:
        kafka.create_topic(t)
    control_start = control_end_offsets(kafka)
    keys_start = end_offsets(kafka, KEYS_TOPIC)
    ahead, behind = skewed_clock(skew * 1000), skewed_clock(-skew * 1000)
    parties = []
    try:
        t_start = time.time()
        jw = JavaWriter(built, kafka, tmp_path, writer, trust, topics[0], n, 100, rotation, env=ahead,
                        retention_ms=retention)
        cw = CkWriter(kafka, tmp_path, writer, trust, topics[1], n, 10, rotation, env=behind, retention_ms=retention)
        jr = JavaReader(built, kafka, tmp_path, "java-reader", reader, trust, topics, "skip", 30_000, env=behind)
        cr = CkReader(kafka, tmp_path, "ck-reader", reader, trust, topics, "skip", 30_000, env=ahead)
        parties += [jw, cw, jr, cr]
        cw.finish(timeout=120)
        for r in (jr, cr):
            # Stop at the first failed record (each waits e2ee.key.wait.ms): it is reported below.
            wait_for(lambda r=r: bool(r.rows()[1]) or all(r.count(t) == n for t in topics), 120, "every record")
        # The Java producer served its keys until now (it holds them alone).
        jw.finish(timeout=60)
        for r in (jr, cr):
            assert r.rows()[1] == {}, r.rows()[1]
            assert_delivered_exactly(r, topics[0], jw.values)
            assert_delivered_exactly(r, topics[1], cw.values)
        metrics = jr.close()
        assert metrics["records-failed"] == 0 and metrics["records-opened"] == 2 * n, metrics
        t_end = time.time()
    finally:
        close_all(parties)
    # The clocks really were moved. The librdkafka producer stamped its
    # records 5 minutes early...
    stamps = [ts / 1000 for _, _, ts in cw.at]
    assert all(t_start - skew - 1 <= s <= t_end - skew + 1 for s in stamps), (t_start, stamps[:3])
    # ...and the Java producer 5 minutes late (CreateTime, read from the broker)...
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "skew-stamps", "auto.offset.reset": "earliest"})
    c.subscribe([topics[0]])
    java_stamps: list[float] = []

    def read_all() -> bool:
        m = c.poll(0.5)
        if m is not None and not m.error():
            java_stamps.append(m.timestamp()[1] / 1000)
        return len(java_stamps) == n

    try:
        wait_for(read_all, 60, "the Java producer's records", every=0)
    finally:
        c.close()
    assert all(t_start + skew - 1 <= s <= t_end + skew + 1 for s in java_stamps), (t_start, java_stamps[:3])
    # ...and the consumers' key exchange (their Hellos on the control topic,
    # their prekeys on the keys topic: a consumer may get every key from the
    # envelopes and never need a handshake) came from one clock 5 minutes
    # ahead and one 5 minutes behind, none from a true clock.
    def clock(s: float) -> int | None:
        """-1, 0 or 1: stamped by a clock behind, true or ahead (None: neither)."""
        return next((k for k in (-1, 0, 1) if t_start + k * skew - 1 <= s <= t_end + k * skew + 1), None)

    exchanged = hello_stamps(kafka, control_start) + prekey_stamps(kafka, keys_start)
    assert {clock(s) for s in exchanged} == {-1, 1}, [round(s - t_start) for s in exchanged][:10]
    for t in topics:
        assert len(set(epochs_on_disk(kafka, t))) >= 3, (t, sorted(set(epochs_on_disk(kafka, t))))
    assert_no_plaintext(kafka, jw.values + cw.values)


# ---- 3. a credential expiring mid-stream -----------------------------------


def test_credential_expiring_mid_stream_reads_nothing_after_the_next_rotation(built, kafka, pki, tmp_path):
    """A consumer credential valid for 25 s: its holder opens every record
    produced before the expiry, and nothing of an epoch that starts after it
    (the producer refuses those keys, even pushed ahead), so it reads nothing
    produced more than one rotation after the expiry; those records fail on
    its normal error path and are counted. A valid consumer reads on."""
    # Few records after the expiry: a librdkafka app that seeks past each
    # failed record moves on about one per second on a loaded machine.
    rotation, valid_s, n = 3000, 25, 165
    writer, reader = pki["issue"]("writer", "--produce", "*"), pki["issue"]("reader", "--consume", "*")
    trust, topic = pki["trust"], "expiring"
    kafka.create_topic(topic)
    parties = []
    try:
        short = pki["issue"]("short", "--consume", "*", "--expires", f"{valid_s}s")
        expires_ms = int(json.loads(cli("credential", "show", "--json", str(short)))["expires_ms"])
        cw = CkWriter(kafka, tmp_path, writer, trust, topic, n, 5, rotation)
        # A refused key fails at once; the long wait only spares a slow start a timeout.
        jr = JavaReader(built, kafka, tmp_path, "java-short", short, trust, [topic], "skip", 20_000)
        cr = CkReader(kafka, tmp_path, "ck-short", short, trust, [topic], "skip", 20_000)
        valid = CkReader(kafka, tmp_path, "ck-valid", reader, trust, [topic], "retry", 30_000)
        parties += [cw, jr, cr, valid]
        cw.finish(timeout=150)
        assert len(cw.values) == n and cw.at[-1][2] > expires_ms + 2 * rotation + 1000, "the stream outlived the credential"
        wait_for(lambda: valid.count(topic) == n, 120, "the valid consumer to read everything")
        assert_delivered_exactly(valid, topic, cw.values)
        for r in (jr, cr):
            wait_for(lambda r=r: len(r.records().get(topic, {})) + len(r.rows()[1].get(topic, [])) >= n, 240,
                     "the expired consumer to account for every record")
            delivered, failed = assert_accounted(r, topic, cw.values)
            stamp = {o: ts for _, o, ts in cw.at}
            # Everything produced before the expiry opened...
            assert all(o in delivered for o in range(n) if stamp[o] < expires_ms), sorted(failed)[:5]
            # ...nothing produced a rotation (and a little scheduling slack) after it did...
            late = [o for o in delivered if stamp[o] >= expires_ms + rotation + 2000]
            assert not late, f"opened {len(late)} records produced after the next rotation, e.g. {late[:3]}"
            # ...and the cut is clean: once refused, never again a key.
            assert failed == set(range(min(failed), n)), sorted(failed)[:5]
        metrics = jr.close()
        assert metrics["records-failed"] == len(assert_accounted(jr, topic, cw.values)[1]), metrics
        for _, reason in jr.rows()[1][topic]:
            assert "could not decrypt" in reason, reason
    finally:
        close_all(parties)
    epochs = epochs_on_disk(kafka, topic)
    assert len(set(epochs)) >= 9, sorted(set(epochs))
    assert_no_plaintext(kafka, cw.values)


# ---- 4. a deny-listed consumer ----------------------------------------------


def test_deny_listed_consumer_gets_no_keys_and_sees_only_errors(built, kafka, pki, tmp_path):
    """`kafka-e2ee trust deny` puts a consumer on the deny list of the
    producer's and the other consumers' trust file; the denied consumer still
    runs with the old trust file (a stolen or revoked credential). Nobody
    serves it a key: the Java deserializer fails every record
    (RecordDeserializationException), the Java interceptor drops and counts
    them, librdkafka delivers error messages; never ciphertext as data. A
    valid consumer is unaffected."""
    n = 6
    writer, reader = pki["issue"]("writer", "--produce", "*"), pki["issue"]("reader", "--consume", "*")
    denied = pki["issue"]("denied", "--consume", "*")
    old_trust = pki["trust"]
    trust = tmp_path / "trust-with-deny"
    shutil.copy(old_trust, trust)
    cli("trust", "deny", "--trust", str(trust), "--credential", str(denied))
    assert "deny" in trust.read_text()
    topic = "denied"
    kafka.create_topic(topic)
    parties = []
    try:
        cw = CkWriter(kafka, tmp_path, writer, trust, topic, n, 20, 900_000)
        valid = CkReader(kafka, tmp_path, "ck-valid", reader, trust, [topic], "retry", 30_000)
        parties += [cw, valid]
        cw.finish(timeout=60)
        wait_for(lambda: valid.count(topic) == n, 60, "the valid consumer")
        assert_delivered_exactly(valid, topic, cw.values)
        # The valid consumer holds the keys now: as a holder it must refuse the denied one too.
        jd = JavaReader(built, kafka, tmp_path, "java-denied", denied, old_trust, [topic], "skip", 2000)
        ji = JavaReader(built, kafka, tmp_path, "java-denied-interceptor", denied, old_trust, [topic], "skip", 2000,
                        interceptor=True)
        cd = CkReader(kafka, tmp_path, "ck-denied", denied, old_trust, [topic], "skip", 2000)
        parties += [jd, ji, cd]
        for r in (jd, cd):
            wait_for(lambda r=r: len(r.rows()[1].get(topic, [])) >= n, 90, "an error for every record")
            delivered, failed = assert_accounted(r, topic, cw.values)
            assert delivered == set() and failed == set(range(n))
        for _, reason in jd.rows()[1][topic]:
            assert "RecordDeserializationException" in reason and "KEY_PENDING" in reason, reason
        wait_for(lambda: ji.log.read_text(errors="replace").count("kafka-e2ee dropped the record at denied-0") >= n,
                 90, "the interceptor to drop every record")
        jd_metrics, ji_metrics = jd.close(), ji.close()
        assert ji.records() == {}, ji.records()  # nothing reached the app, not even ciphertext
        assert ji_metrics["records-dropped"] == n and ji_metrics["keys-received"] == 0, ji_metrics
        assert jd_metrics["records-failed"] == n and jd_metrics["keys-received"] == 0, jd_metrics
        assert valid.count(topic) == n and valid.rows()[1] == {}
    finally:
        close_all(parties)
    assert_no_plaintext(kafka, cw.values)
