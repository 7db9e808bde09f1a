"""MirrorMaker 2 (issue 16 item 5), on two real brokers: MM2 4.x in dedicated
mode (org.apache.kafka.connect.mirror.MirrorMaker, resolved from Maven
Central by ``scripts/test-broker mirror-classpath``) copies cluster A to
cluster B, once with the default replication policy (``orders`` on A becomes
``A.orders`` on B) and once with the identity policy (``orders`` stays
``orders``), with ``topics = .*`` minus the exclusion docs/QUICKSTART.md
(MirrorMaker 2) gives for the key-exchange topics.

The design (docs/PROTOCOL.md, section 5c): a consumer on B opens mirrored
records under their source topic's name, mapped by its own
``e2ee.topic.source.prefix`` (never by anything the broker says), and
exchanges keys with A's deployment (``e2ee.control.bootstrap.servers``): it
publishes its prekeys on A's keys topic and reads the envelopes there.

Checked, for a librdkafka reader (kcat) and for two Java readers
(java_clients.py): a reader that ran once on B before (its prekeys on A's
keys topic), after the producer on A has written and exited and with nothing
else running, reads every mirrored record on B; its credential names the
source topic (``orders``) only. With the default policy, a credential for the
mirrored name only (``A.*``) opens nothing, and a plaintext record written
into ``A.orders`` is refused by a reader whose ``e2ee.topics`` is ``A.*``.
The Java readers, with both policies: E2eeConsumerInterceptor reads orders
(key-bound, as kcat wrote it), DecryptingDeserializer reads payments (written
with ``e2ee.bind.key=false``: a deserializer cannot see keys; with the
default policy its ``e2ee.topics`` is ``A.*``); each gets every value exactly
as produced, and the plaintext injected after them is refused (the
deserializer fails it, the interceptor drops it). B's segment files hold no
plaintext, and neither the control nor the keys topic reached B (not
mirrored, and the reader's control plane never wrote to B)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import broker as test_broker
import java_clients
from java_clients import STRING_DE, Running

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
CLI = ROOT / "target" / "release" / "kafka-e2ee"
N = 50

# MM2 at WARN (INFO for its own classes would fill the log with task
# reconfigurations); the log is the process's stderr, kept in a file.
LOG4J = """status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
"""


def cli(*args: str) -> None:
    subprocess.run([str(CLI), *args], check=True, capture_output=True, timeout=60)


def kcat(bootstrap: str, cred: Path, trust: Path, *args: str, extra: tuple[str, ...] = (),
         input: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kcat", "-b", bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
         "-X", f"e2ee.credential={cred}", "-X", f"e2ee.trust={trust}", *extra, *args],
        input=input, capture_output=True, text=True, timeout=timeout)


def topics_of(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    return set(admin.list_topics(timeout=30).topics)


def end_offset(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    except Exception:
        return -1
    finally:
        c.close()


def record_keys(bootstrap: str, topic: str) -> set[bytes]:
    """The distinct record keys of partition 0 of ``topic``, read up to its end."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "record-keys", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    try:
        end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        c.assign([TopicPartition(topic, 0, 0)])
        keys: set[bytes] = set()
        offset = 0
        deadline = time.monotonic() + 30
        while offset < end and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            offset = m.offset() + 1
            keys.add(m.key() or b"")
        return keys
    except Exception:
        return set()
    finally:
        c.close()


# The Java readers on B: the recommended deserializer and the interceptor, each
# a process with its own state directory (its own prekeys on A's keys topic).
# The interceptor reads orders (sealed by kcat with the record key bound, as
# the kcat reader reads it); the deserializer cannot see record keys, so it
# reads payments, sealed with e2ee.bind.key=false.
JAVA_TOPIC = {"deserializer": "payments", "interceptor": "orders"}
JAVA_HOOKS = {
    "deserializer": dict(key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                         e2ee_inner_value_deserializer=STRING_DE),
    "interceptor": dict(key_deserializer=STRING_DE, value_deserializer=STRING_DE,
                        value_deserializer_encoding="ISO-8859-1",
                        interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor"),
}


def java_reader(cp: str, tmp_path: Path, hook: str, run: str, bootstrap: str, mirrored: str,
                **e2ee) -> tuple[Running, Path, Path]:
    """A Java consumer (E2eeApp reader) of ``mirrored`` on B from the beginning,
    until its stdin closes: its output file (R/E lines) and stderr log."""
    props = java_clients.props(tmp_path / f"java-{hook}-{run}.properties", bootstrap, **JAVA_HOOKS[hook],
                               group_id=f"java-{hook}-{run}", auto_offset_reset="earliest",
                               **{k: v for k, v in e2ee.items() if v is not None})
    out = tmp_path / f"java-{hook}-{run}.out"
    log = tmp_path / f"java-{hook}-{run}.log"
    return (Running(cp, "dev.kafkae2ee.it.E2eeApp", "reader", str(props), mirrored, str(out), "skip", log=log),
            out, log)


@pytest.fixture
def two_brokers(tmp_path):
    dirs = [tmp_path / "A", tmp_path / "B"]
    try:
        yield [test_broker.start(d) for d in dirs]
    finally:
        for d in dirs:
            if (d / "broker.pid").exists():
                test_broker.stop(d)


# (replication policy, the mirrored topic's name on B, the reader's prefix)
POLICIES = {
    "default": ("org.apache.kafka.connect.mirror.DefaultReplicationPolicy", "A.orders", "A."),
    "identity": ("org.apache.kafka.connect.mirror.IdentityReplicationPolicy", "orders", None),
}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_consumer_on_the_target_cluster_reads_mirrored_records_after_the_producer_exited(
        two_brokers, tmp_path, policy):
    a, b = two_brokers
    policy_class, mirrored, prefix = POLICIES[policy]
    for p in (PLUGIN, CLI):
        assert p.exists(), f"{p} missing: cargo build --release -p kafka-e2ee-ffi -p kafka-e2ee-cli"
    mirror_cp = subprocess.run([str(test_broker.TEST_BROKER), "mirror-classpath"], check=True,
                               capture_output=True, text=True, timeout=600).stdout.strip()
    auth = tmp_path / "auth"
    cli("authority", "init", "--out", str(auth))
    trust = auth / "trust"
    creds = {}
    # The reader's grant names the SOURCE topic: that is what a mirrored
    # record is bound to and authorized as. "mirror-only" may consume the
    # mirrored names only, which must open nothing.
    for name, produce, consume in (("writer", "*", "none"), ("reader", "none", "orders"),
                                   ("mirror-only", "none", "A.*")):
        creds[name] = tmp_path / f"{name}.cred"
        cli("credential", "issue", "--authority", str(auth), "--name", name, "--produce", produce,
            "--consume", consume, "--out", str(creds[name]))
    # The Java readers' credential: the source names too.
    creds["java-reader"] = tmp_path / "java-reader.cred"
    cli("credential", "issue", "--authority", str(auth), "--name", "java-reader", "--produce", "none",
        "--consume", "orders", "--consume", "payments", "--out", str(creds["java-reader"]))
    a.create_topics_with_e2ee("orders", "payments")
    from confluent_kafka.admin import AdminClient, NewTopic

    # MM2 would create it at its first sync; made here so the reader's first
    # run has a topic to subscribe to.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    on_target = {topic: f"{prefix or ''}{topic}" for topic in ("orders", "payments")}
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in on_target.values()]).values():
        f.result(timeout=60)

    # The identity policy keeps the name: no mapping, only the key exchange
    # on A.
    on_b = ("-X", f"e2ee.control.bootstrap.servers={a.bootstrap}",
            *(("-X", f"e2ee.topic.source.prefix={prefix}") if prefix else ()))
    state = tmp_path / "reader-state"
    # The Java readers: the same settings, as Java properties; a state
    # directory each (one per process).
    java_cp = java_clients.build()
    java_e2ee = {hook: dict(e2ee_credential=creds["java-reader"], e2ee_trust=trust,
                            e2ee_control_bootstrap_servers=a.bootstrap, e2ee_topic_source_prefix=prefix,
                            e2ee_state_dir=tmp_path / f"java-{hook}-state", e2ee_key_wait_ms=20000)
                 for hook in JAVA_HOOKS}
    # 1. The readers run once on B until their control planes, on A, have
    # published their prekeys to A's keys topic (the only writers there: the
    # writer's credential may not consume, so it has no mailbox); then they
    # stop as a user would stop them (SIGTERM: kcat closes its client; the
    # Java apps close their consumers when stdin closes).
    first = subprocess.Popen(
        ["kcat", "-b", b.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
         "-X", f"e2ee.credential={creds['reader']}", "-X", f"e2ee.trust={trust}", *on_b,
         "-X", f"e2ee.state.dir={state}", "-C", "-t", mirrored, "-o", "beginning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    java_first = {hook: java_reader(java_cp, tmp_path, hook, "first", b.bootstrap, on_target[JAVA_TOPIC[hook]],
                                    **java_e2ee[hook])
                  for hook in JAVA_HOOKS}
    try:
        deadline = time.monotonic() + 120
        # One mailbox each: kcat's and the two Java readers' prekeys.
        while len(record_keys(a.bootstrap, "_e2ee_keys")) < 1 + len(JAVA_HOOKS):
            assert first.poll() is None, first.stderr.read()[-2000:]
            for hook, (proc, _, log) in java_first.items():
                assert proc.proc.poll() is None, f"{hook}: " + log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the readers published no prekeys on A's keys topic"
            time.sleep(0.5)
    finally:
        first.terminate()
        first.wait(timeout=60)
        for hook, (proc, _, _) in java_first.items():
            with proc:
                done = proc.close(timeout=90)
                assert done.returncode == 0, f"{hook}: " + done.stderr[-3000:]

    # 2. The writer produces on A and exits: its close seals the keys to the
    # reader's prekeys on A's keys topic. Nothing holding the keys runs after.
    values = [f"mirrored-secret-{i:03d}" for i in range(N)]
    w = kcat(a.bootstrap, creds["writer"], trust, "-P", "-t", "orders",
             input="".join(v + "\n" for v in values))
    assert w.returncode == 0 and "not acknowledged" not in w.stderr, w.stderr[-2000:]
    # For the Java deserializer, which cannot check a bound record key.
    payments = [f"mirrored-payment-{i:03d}" for i in range(N)]
    w = kcat(a.bootstrap, creds["writer"], trust, "-P", "-t", "payments",
             input="".join(v + "\n" for v in payments), extra=("-X", "e2ee.bind.key=false"))
    assert w.returncode == 0 and "not acknowledged" not in w.stderr, w.stderr[-2000:]
    java_values = {"deserializer": payments, "interceptor": values}

    # 3. MM2 copies A to B: every topic but the documented exclusion.
    props = tmp_path / "mm2.properties"
    props.write_text(f"""clusters = A, B
A.bootstrap.servers = {a.bootstrap}
B.bootstrap.servers = {b.bootstrap}
A->B.enabled = true
A->B.topics = .*
replication.policy.class = {policy_class}
A->B.topics.exclude = .*[\\-\\.]internal, .*\\.replica, __.*, _e2ee_.*
B->A.enabled = false
A->B.emit.checkpoints.enabled = false
A->B.emit.heartbeats.enabled = false
A->B.sync.group.offsets.enabled = false
refresh.topics.interval.seconds = 1
replication.factor = 1
offset-syncs.topic.replication.factor = 1
checkpoints.topic.replication.factor = 1
heartbeats.topic.replication.factor = 1
offset.storage.replication.factor = 1
status.storage.replication.factor = 1
config.storage.replication.factor = 1
""")
    log4j = tmp_path / "mm2-log4j2.properties"
    log4j.write_text(LOG4J)
    log = tmp_path / "mm2.log"
    mm2 = subprocess.Popen(
        ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
         f"-Dlog4j2.configurationFile={log4j}", "-cp", mirror_cp,
         "org.apache.kafka.connect.mirror.MirrorMaker", str(props), "--clusters", "B"],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        # Seconds here; the deadline is for a CI machine under load.
        deadline = time.monotonic() + 120
        while min(end_offset(b.bootstrap, t) for t in on_target.values()) < N:
            assert mm2.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "MM2 did not mirror orders:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        mm2.terminate()
        try:
            mm2.wait(timeout=30)
        except subprocess.TimeoutExpired:
            mm2.kill()
            mm2.wait()

    # 4. The reader comes back on B: every mirrored record, keys from A's
    # keys topic alone (the writer is gone), opened as topic "orders".
    r = kcat(b.bootstrap, creds["reader"], trust, "-C", "-t", mirrored, "-o", "beginning",
             "-c", str(N), "-f", "%s\\n",
             extra=(*on_b, "-X", f"e2ee.state.dir={state}", "-X", "e2ee.key.wait.ms=20000"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == values, r.stderr[-2000:]

    # 5. A grant for the mirrored name opens nothing: the record is bound
    # to, and authorized as, its source topic.
    if prefix:
        m = kcat(b.bootstrap, creds["mirror-only"], trust, "-C", "-t", "A.orders", "-o", "beginning",
                 "-c", "1", "-e", "-f", "%s\\n",
                 extra=(*on_b, "-X", "e2ee.key.wait.ms=2000"), timeout=60)
        assert "mirrored-secret" not in m.stdout, m.stdout
        assert "may not consume topic 'orders'" in m.stderr, m.stderr[-2000:]

    # 6. Plaintext written straight into the mirrored topic is refused, also
    # where e2ee.topics names the mirrored topics (A.*) and not the source
    # name the record is opened under.
    if prefix:
        from confluent_kafka import Producer

        plain = Producer({"bootstrap.servers": b.bootstrap})
        plain.produce(mirrored, value=b"injected-plaintext")
        assert plain.flush(30) == 0
        x = kcat(b.bootstrap, creds["reader"], trust, "-C", "-t", mirrored, "-o", str(N),
                 "-c", "1", "-e", "-f", "%s\\n", extra=(*on_b, "-X", f"e2ee.topics={prefix}*"),
                 timeout=60)
        assert "injected-plaintext" not in x.stdout, x.stdout
        assert f"record on protected topic '{mirrored}' has no e2ee header" in x.stderr, x.stderr[-2000:]

    # 6b. The Java readers come back on B (the writer still gone): every
    # mirrored value exactly as produced, opened under the source topic's
    # name with keys from A's keys topic, and the plaintext at offset N
    # refused (on orders injected by step 6 with the default policy): the
    # deserializer fails it (RecordDeserializationException, skipped by the
    # app), the interceptor drops it. With the default policy the
    # deserializer's e2ee.topics names the mirrored topics only (A.*).
    from confluent_kafka import Producer

    plain = Producer({"bootstrap.servers": b.bootstrap})
    for topic in ("payments",) if prefix else ("orders", "payments"):
        plain.produce(on_target[topic], value=b"injected-plaintext")
    assert plain.flush(30) == 0
    assert all(end_offset(b.bootstrap, t) == N + 1 for t in on_target.values())
    if prefix:
        java_e2ee["deserializer"]["e2ee_topics"] = f"{prefix}*"
    readers = {hook: java_reader(java_cp, tmp_path, hook, "again", b.bootstrap, on_target[JAVA_TOPIC[hook]],
                                 **java_e2ee[hook])
               for hook in JAVA_HOOKS}
    dropped = f"dropped the record at {on_target['orders']}-0 offset {N}"

    def done(hook: str, out: Path, log: Path) -> bool:
        text = out.read_text(errors="replace") if out.exists() else ""
        lines = text.splitlines()
        if hook == "deserializer":
            return sum(1 for line in lines if line.startswith("R ")) >= N and any(
                line.startswith(f"E {on_target['payments']} 0 {N} ") for line in lines)
        return sum(1 for line in lines if line.startswith("R ")) >= N and dropped in log.read_text(errors="replace")

    try:
        deadline = time.monotonic() + 120
        while not all(done(hook, out, log) for hook, (_, out, log) in readers.items()):
            for hook, (proc, out, log) in readers.items():
                assert proc.proc.poll() is None, f"{hook}: " + log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the Java readers did not read the mirror:\n" + "\n".join(
                f"{hook}: {out.read_text(errors='replace')[-1500:] if out.exists() else ''}\n"
                f"{log.read_text(errors='replace')[-3000:]}" for hook, (_, out, log) in readers.items())
            time.sleep(0.5)
        time.sleep(1)  # anything after the plaintext would show up now
    finally:
        results = {}
        for hook, (proc, _, _) in readers.items():
            with proc:
                results[hook] = proc.close(timeout=90)
    for hook, (_, out, log) in readers.items():
        assert results[hook].returncode == 0, f"{hook}: " + results[hook].stderr[-3000:]
        topic = on_target[JAVA_TOPIC[hook]]
        lines = out.read_text(errors="replace").splitlines()
        got = [line.split(" ", 4) for line in lines if line.startswith("R ")]
        assert [(t, int(o)) for _, t, _, o, _ in got] == [(topic, i) for i in range(N)], lines[-5:]
        assert [v for *_, v in got] == java_values[hook], f"{hook}: not the produced values: {lines[:3]}"
        errors = [line for line in lines if line.startswith("E ")]
        if hook == "deserializer":
            assert len(errors) == 1 and errors[0].startswith(f"E {topic} 0 {N} "), errors
            assert "MISSING_HEADER" in errors[0] and "has no e2ee header" in errors[0], errors
        else:
            assert not errors, errors
            assert dropped in log.read_text(errors="replace") and "MISSING_HEADER" in log.read_text(
                errors="replace"), log.read_text(errors="replace")[-3000:]
        assert "injected-plaintext" not in out.read_text(errors="replace")

    # 7. B holds ciphertext only, and no key-exchange topic.
    on_disk = b"".join(p.read_bytes() for p in sorted(b.data_dir.glob(f"{mirrored}-*/*.log")))
    assert on_disk.count(b"e2ee") >= N, "the mirrored records lost their e2ee header"
    assert b"mirrored-secret" not in on_disk
    on_disk = b"".join(p.read_bytes() for p in sorted(b.data_dir.glob(f"{on_target['payments']}-*/*.log")))
    assert on_disk.count(b"e2ee") >= N and b"mirrored-payment" not in on_disk
    leaked = {t for t in topics_of(b.bootstrap) if "_e2ee_" in t}
    assert not leaked, f"key-exchange topics on the target cluster: {leaked}"
