"""The librdkafka plugin against the real broker: kcat (Debian's librdkafka)
and confluent-kafka (PyPI wheel, bundled librdkafka under a renamed soname).
The proof that the broker holds no plaintext is read from its segment files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
CLI = ROOT / "target" / "release" / "kafka-e2ee"
CLIENTS = Path(__file__).with_name("plugin_clients.py")

@pytest.fixture(scope="module", autouse=True)
def built():
    """The plugin and the CLI, built if missing: a missing build fails, never skips."""
    if not PLUGIN.exists() or not CLI.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-ffi", "-p", "kafka-e2ee-cli"],
                       cwd=Path(__file__).resolve().parents[2], check=True)


def cli(*args: str) -> None:
    subprocess.run([str(CLI), *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def creds(tmp_path):
    """An authority, a writer (produce+consume all) and a reader (consume all)."""
    auth = tmp_path / "auth"
    cli("authority", "init", "--out", str(auth))
    out = {"trust": auth / "trust", "dir": tmp_path}
    for name, produce in (("writer", "*"), ("reader", "none")):
        cli("credential", "issue", "--authority", str(auth), "--name", name, "--produce", produce,
            "--consume", "*", "--out", str(tmp_path / f"{name}.cred"))
        out[name] = tmp_path / f"{name}.cred"
    return out


def kcat_args(b, creds, who: str, *extra: str) -> list[str]:
    return [
        "kcat", "-b", b.bootstrap,
        "-X", f"plugin.library.paths={PLUGIN}",
        "-X", f"e2ee.credential={creds[who]}",
        "-X", f"e2ee.trust={creds['trust']}",
        *extra,
    ]


def segment_bytes(b, topic: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(b.data_dir.glob(f"{topic}-*/*.log")))


def test_no_dt_needed_on_librdkafka():
    out = subprocess.run(["readelf", "-d", str(PLUGIN)], capture_output=True, text=True, check=True)
    needed = [l for l in out.stdout.splitlines() if "(NEEDED)" in l]
    assert needed and not any("rdkafka" in l for l in needed), needed
    syms = subprocess.run(["nm", "-D", "--defined-only", str(PLUGIN)], capture_output=True, text=True)
    assert " T conf_init" in syms.stdout


def test_kcat_1000_records_round_trip_and_no_plaintext_on_disk(broker, creds):
    topic = "kcat-orders"
    broker.create_topic(topic)
    values = [f"secret-value-{i:05d}" for i in range(1000)]
    records = "".join(f"key{i}:{v}\n" for i, v in enumerate(values))
    state = creds["dir"] / "writer-state"
    p = subprocess.run(
        kcat_args(broker, creds, "writer", "-P", "-t", topic, "-K:", "-X", f"e2ee.state.dir={state}"),
        input=records, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    # kcat -P exits after its flush; the writer's keys are served by a
    # restarted writer with the same state directory (an idle kcat -P).
    server = subprocess.Popen(
        kcat_args(broker, creds, "writer", "-P", "-t", topic, "-X", f"e2ee.state.dir={state}"),
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        c = subprocess.run(
            kcat_args(broker, creds, "reader", "-C", "-t", topic, "-o", "beginning", "-c", "1000",
                      "-f", "%k:%s\\n"),
            capture_output=True, text=True, timeout=90,
        )
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert c.returncode == 0, c.stderr
    assert c.stdout.splitlines() == [f"key{i}:{v}" for i, v in enumerate(values)]
    disk = segment_bytes(broker, topic)
    assert disk.count(b"key0") >= 1  # keys stay readable; records are there
    assert b"secret-value" not in disk
    assert b"e2ee" in disk  # the header travels with each record
    # A consumer without the plugin sees only ciphertext of the same length.
    plain = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", "1000",
         "-f", "%S %h|%s\\n"],
        capture_output=True, timeout=60,
    )
    assert plain.returncode == 0
    assert b"secret-value" not in plain.stdout
    sizes = [l.split(b" ")[0] for l in plain.stdout.split(b"\n") if l.split(b" ")[0].isdigit()]
    assert sizes.count(str(len(values[0])).encode()) >= 1000  # length-preserving
    # The plugin created the control topic itself (admin API), with the
    # settings of the shared contract, not the broker's auto-create defaults.
    from confluent_kafka.admin import AdminClient, ConfigResource
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    assert len(md.topics["_e2ee_control"].partitions) == 1
    res = ConfigResource(ConfigResource.Type.TOPIC, "_e2ee_control")
    cfg = admin.describe_configs([res])[res].result(timeout=10)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["cleanup.policy"].value == "delete"


def test_bad_config_fails_client_creation_naming_the_property(broker, creds, tmp_path):
    other = tmp_path / "other"
    cli("authority", "init", "--out", str(other))
    cli("credential", "issue", "--authority", str(other), "--name", "x", "--produce", "*",
        "--consume", "*", "--out", str(tmp_path / "x.cred"))
    cases = {
        "e2ee.credential": ["-X", f"e2ee.credential={tmp_path / 'missing.cred'}", "-X", f"e2ee.trust={creds['trust']}"],
        # a credential from another authority
        "e2ee.credential ": ["-X", f"e2ee.trust={creds['trust']}", "-X", f"e2ee.credential={tmp_path / 'x.cred'}"],
        "e2ee.no.such": ["-X", "e2ee.no.such=1"],
        "e2ee.key.rotation.ms": ["-X", "e2ee.key.rotation.ms=soon"],
    }
    for prop, args in cases.items():
        p = subprocess.run(
            ["kcat", "-b", broker.bootstrap, "-P", "-t", "never", "-X", f"plugin.library.paths={PLUGIN}", *args],
            input="x\n", capture_output=True, text=True, timeout=30,
        )
        assert p.returncode != 0, (prop, p.stderr)
        assert prop.strip() in p.stderr, (prop, p.stderr)
    # A bad cipher or compression names the property and the values it takes.
    for setting, fix in [("e2ee.cipher=aes-128-gcm", "e2ee.cipher: must be auto, chacha20-poly1305 or aes-256-gcm"),
                         ("e2ee.compression=gzip", "e2ee.compression: must be none, zstd or lz4")]:
        p = subprocess.run(
            ["kcat", "-b", broker.bootstrap, "-P", "-t", "never", "-X", f"plugin.library.paths={PLUGIN}",
             "-X", setting, "-X", f"e2ee.credential={creds['writer']}", "-X", f"e2ee.trust={creds['trust']}"],
            input="x\n", capture_output=True, text=True, timeout=30,
        )
        assert p.returncode != 0, (setting, p.stderr)
        assert fix in p.stderr, (setting, p.stderr)
    # And through confluent-kafka: construction raises.
    from confluent_kafka import KafkaException, Producer

    with pytest.raises(KafkaException, match="e2ee.credential"):
        Producer({"bootstrap.servers": broker.bootstrap, "plugin.library.paths": str(PLUGIN),
                  "e2ee.trust": str(creds["trust"]), "e2ee.credential": str(tmp_path / "x.cred")})
    with pytest.raises(KafkaException, match="e2ee.no.such"):
        Producer({"bootstrap.servers": broker.bootstrap, "plugin.library.paths": str(PLUGIN),
                  "e2ee.no.such": "1"})


def spawn(mode: str, spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CLIENTS), mode, json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_confluent_kafka_group_of_three_joining_and_leaving_with_rotation(broker, creds, tmp_path):
    topic = "ck-orders"
    broker.create_topic(topic, partitions=3)
    e2ee = {"e2ee.trust": str(creds["trust"]), "e2ee.key.rotation.ms": "2000"}
    base = {"bootstrap": broker.bootstrap, "plugin": str(PLUGIN), "topic": topic}
    stop = tmp_path / "stop"
    count = 600
    # acks (topic-level) and linger.ms (global) are producer properties, and
    # the consumers' auto.offset.reset (topic-level) and group.id (global)
    # consumer ones: the plugin's control clients, copies of each client's
    # configuration, must not warn about the other kind's (CONFWARN, below).
    prod = spawn("produce", base | {"e2ee": e2ee | {"e2ee.credential": str(creds["writer"])},
                                   "count": count, "rate": 50, "out": str(tmp_path / "produced.json"),
                                   "stop": str(stop), "extra": {"acks": "all", "linger.ms": "5"}})
    members = []

    def member(name: str, seconds: float):
        spec = base | {"e2ee": e2ee | {"e2ee.credential": str(creds["reader"])}, "group": "g1",
                       "seconds": seconds, "out": str(tmp_path / f"{name}.jsonl"), "stop": str(stop)}
        members.append(spawn("consume", spec))

    try:
        member("a", 60)          # the whole run
        time.sleep(3)
        member("b", 5)           # joins, then leaves while records flow
        time.sleep(3)
        member("c", 60)          # joins later, stays
        time.sleep(4)
        member("d", 4)           # a short-lived fourth
        # Wait for the producer's report, then for every record to arrive.
        deadline = time.time() + 90
        while not (tmp_path / "produced.json").exists() and time.time() < deadline:
            time.sleep(0.5)
        produced = json.loads((tmp_path / "produced.json").read_text())
        assert produced["failed"] == []
        want = {f"v{i}-{'x' * (i % 50)}" for i in range(count)}
        assert set(produced["delivered"]) == want
        got: set[str] = set()
        while time.time() < deadline:
            got = set()
            for f in tmp_path.glob("*.jsonl"):
                for line in f.read_text().splitlines():
                    r = json.loads(line)
                    assert "error" not in r, r
                    assert r["v"] == f"v{r['k'][1:]}-{'x' * (int(r['k'][1:]) % 50)}"
                    assert "e2ee" not in r["h"]
                    got.add(r["v"])
            if got >= want:
                break
            time.sleep(1)
        assert got == want, f"missing {len(want - got)} of {count}"
        busy = [f for f in tmp_path.glob("*.jsonl") if f.read_text().strip()]
        assert len(busy) >= 2, "the work was not shared by the group"
    finally:
        stop.write_text("")
        outputs = []
        for p in [prod, *members]:
            try:
                outputs.append(p.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outputs.append(p.communicate()[0])
    disk = segment_bytes(broker, topic)
    assert b"v1-x" not in disk and b"xxxxxxxxxx" not in disk
    for out in outputs:
        assert "CONFWARN" not in out, out[-3000:]


MISSING_HEADER_REASON = (
    "kafka-e2ee: record at offset {offset} rejected: record on protected topic '{topic}' has no e2ee "
    "header: plaintext was written by a client without kafka-e2ee, or the header was stripped"
)


def test_kcat_shows_the_whole_rejection_reason(broker, creds):
    """kcat prints a record the plugin rejects through rd_kafka_message_errstr:
    the whole reason arrives, not one cut to the record's length (it was
    "kafka-e2ee: record at offset 0 rejec" for a 36-byte record)."""
    topic = "kcat-injected"
    broker.create_topic(topic)
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", topic],
                   input=b"plaintext-without-e2ee-header-0123\n", check=True, timeout=60)
    r = subprocess.run(
        kcat_args(broker, creds, "reader", "-C", "-t", topic, "-o", "beginning", "-c", "1", "-e",
                  "-X", "e2ee.key.wait.ms=0"),
        capture_output=True, timeout=60)
    err = r.stderr.decode(errors="replace")
    assert MISSING_HEADER_REASON.format(offset=0, topic=topic) in err, err
    assert b"plaintext-without" not in r.stdout + r.stderr


def test_plaintext_injection_is_an_error_and_is_not_committed_past(broker, creds):
    """A record without the e2ee header on a protected topic reaches the app
    as an error (never as data), and the group's committed offset stays at
    it: librdkafka's auto offset store would otherwise store offset + 1."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = "injected"
    broker.create_topic(topic)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        plain.produce(topic, value=f"injected-plaintext-{i}".encode())
    plain.flush(10)
    c = Consumer({
        "bootstrap.servers": broker.bootstrap, "plugin.library.paths": str(PLUGIN),
        "e2ee.credential": str(creds["reader"]), "e2ee.trust": str(creds["trust"]),
        "group.id": "inj", "auto.offset.reset": "earliest", "auto.commit.interval.ms": 200,
    })
    c.subscribe([topic])
    errors, data = [], []
    deadline = time.time() + 15
    while time.time() < deadline and len(errors) < 3:
        m = c.poll(0.5)
        if m is None:
            continue
        (errors if m.error() else data).append(m)
    assert data == []
    assert len(errors) >= 3, "the same record is reported again until the app seeks past it"
    for m in errors:
        assert "rejected" in str(m.error()) or m.value() is None or b"injected" not in (m.value() or b"")
        assert b"injected-plaintext" not in (m.value() or b"")
        # The whole reason, longer than the 20-byte record, as librdkafka's
        # own errors carry theirs: KafkaError.str(), and the value is the text.
        assert m.error().str() == MISSING_HEADER_REASON.format(offset=0, topic=topic), m.error().str()
        assert m.value() == m.error().str().encode()
    time.sleep(1)  # let an auto commit run
    c.close()
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "inj"})
    committed = check.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    check.close()
    assert committed <= 0, f"committed past the rejected record: {committed}"
