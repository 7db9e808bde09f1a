"""Tokenized record keys (e2ee.keys=tokenize, docs/FORMAT.md section 13,
docs/PROTOCOL.md section 5e) with the librdkafka plugin against a real
broker: the broker sees a token of each key, of the key's length; equal keys
go to one partition whichever producer writes them and across key
rotations; the log cleaner keeps exactly the newest record per key and a
tombstone removes its key's records; consumers (confluent-kafka and kcat
with the plugin) get the real keys back; the segment files hold no key or
value; a key too short to tokenize fails through the delivery report.

Each client runs in its own process (this file is also the client program),
so every client has its own engine and the token secret really travels
between producers through the keys topic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
TOPIC = "tokenized"
PARTITIONS = 3


# ---------------------------------------------------------------- clients


def _conf(args: dict) -> dict:
    c = {"bootstrap.servers": args["bootstrap"]}
    if args.get("plugin"):
        c["plugin.library.paths"] = args["plugin"]
        c.update(args["e2ee"])
    return c


def _produce(args: dict) -> None:
    from confluent_kafka import KafkaException, Producer

    p = Producer(_conf(args) | {"linger.ms": 5})
    report = []

    def dr(err, msg):
        k = msg.key()
        report.append({"k": None if k is None else k.hex(), "p": msg.partition(),
                       "err": None if err is None else str(err)})

    for r in args["records"]:
        key = None if r["k"] is None else bytes.fromhex(r["k"])
        try:
            p.produce(args["topic"], key=key, value=None if r["v"] is None else r["v"].encode(), on_delivery=dr)
        except KafkaException as e:
            # A record the plugin failed closed: produce() raises (or the
            # delivery report says so), the client's usual error paths.
            report.append({"k": r["k"], "p": None, "err": str(e)})
        p.poll(0)
    p.flush(60)
    Path(args["out"]).write_text(json.dumps(report))
    # Stay up (a holder of the token secret) until told to stop.
    stop = Path(args["stop"])
    while not stop.exists():
        p.poll(0.1)


def _consume(args: dict) -> None:
    from confluent_kafka import Consumer, KafkaError

    c = Consumer(_conf(args) | {"group.id": "g-" + uuid.uuid4().hex[:8], "auto.offset.reset": "earliest",
                                "enable.partition.eof": True})
    c.subscribe([args["topic"]])
    rows, eof, deadline = [], set(), time.time() + args["seconds"]
    while time.time() < deadline and len(eof) < args["partitions"]:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            else:
                rows.append({"error": str(m.error())})
            continue
        k, v = m.key(), m.value()
        rows.append({"k": None if k is None else k.hex(), "v": None if v is None else v.hex(),
                     "p": m.partition(), "o": m.offset(), "h": [h[0] for h in (m.headers() or [])]})
    c.close()
    Path(args["out"]).write_text(json.dumps(rows))


def spawn(mode: str, args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, mode, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_file(path: Path, proc: subprocess.Popen, seconds: float) -> list:
    deadline = time.time() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"client exited early:\n{proc.stdout.read()}")
        assert time.time() < deadline, "client timed out"
        time.sleep(0.2)
    return json.loads(path.read_text())


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    import broker as test_broker

    d = tmp_path_factory.mktemp("tok") / "broker"
    # A cleaner that looks every half second, so compaction is observable.
    b = test_broker.start(d, properties={"log.cleaner.backoff.ms": "500"})
    try:
        yield b
    finally:
        test_broker.stop(d)


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    cli = ROOT / "target" / "release" / "kafka-e2ee"
    d = tmp_path_factory.mktemp("tok-creds")
    run = lambda *a: subprocess.run([str(cli), *a], check=True, capture_output=True, text=True)  # noqa: E731
    run("authority", "init", "--out", str(d / "authority"))
    for name, grants in (("writer", ("--produce", "*", "--consume", "*")), ("reader", ("--consume", "*"))):
        run("credential", "issue", "--authority", str(d / "authority"), "--name", name, *grants,
            "--out", str(d / f"{name}.cred"))
    return {"trust": d / "authority" / "trust", "writer": d / "writer.cred", "reader": d / "reader.cred"}


def e2ee(creds, who: str, **extra) -> dict:
    return {"e2ee.credential": str(creds[who]), "e2ee.trust": str(creds["trust"]), **extra}


def segments(b, topic: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(b.data_dir.glob(f"{topic}-*/*.log")))


# ---------------------------------------------------------------- the test


def test_tokenized_keys_keep_partitions_and_compaction_and_stay_off_the_broker(broker, creds, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:6]
    # Keys of both token regimes: 15 bytes (FF1) and over 16 (PRF).
    keys = [f"cust-{tag}-{i:04d}".encode() for i in range(6)]
    keys += [f"{tag}.user{i}@example.com".encode() for i in range(6)]
    tombstoned = keys[3]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1, config={
        "cleanup.policy": "compact", "segment.ms": "1500", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "600000"})]).values():
        f.result(timeout=60)

    tok = e2ee(creds, "writer", **{"e2ee.keys": "tokenize", "e2ee.key.rotation.ms": "2000",
                                   "e2ee.key.retention.ms": "600000"})
    base = {"bootstrap": broker.bootstrap, "plugin": str(PLUGIN), "topic": TOPIC}

    # Producer A: three values per key, and a key too short to tokenize.
    a_out, a_stop = tmp_path / "a.json", tmp_path / "a.stop"
    recs_a = [{"k": k.hex(), "v": f"{tag}-a{j}-{k.decode()}"} for j in range(3) for k in keys]
    recs_a.append({"k": b"ab".hex(), "v": f"{tag}-short"})
    a = spawn("produce", base | {"e2ee": tok, "records": recs_a, "out": str(a_out), "stop": str(a_stop)})
    procs = [a]
    try:
        rep_a = wait_file(a_out, a, 120)
        short = [r for r in rep_a if r["k"] == b"ab".hex()]
        assert len(short) == 1 and short[0]["err"], short  # failed through the delivery report
        ok_a = [r for r in rep_a if r["err"] is None]
        assert len(ok_a) == 3 * len(keys), rep_a
        # The delivery report hands the app its own key back, not the token.
        assert {bytes.fromhex(r["k"]) for r in ok_a} == set(keys)

        # Producer B, another process, after at least one key rotation: the
        # token secret comes from A through the keys topic.
        time.sleep(2.5)
        b_out, b_stop = tmp_path / "b.json", tmp_path / "b.stop"
        recs_b = [{"k": k.hex(), "v": f"{tag}-b{j}-{k.decode()}"} for j in range(2) for k in keys]
        recs_b.append({"k": tombstoned.hex(), "v": None})
        b = spawn("produce", base | {"e2ee": tok, "records": recs_b, "out": str(b_out), "stop": str(b_stop)})
        procs.append(b)
        rep_b = wait_file(b_out, b, 120)
        assert all(r["err"] is None for r in rep_b), rep_b

        # Equal keys, one partition, whoever wrote them and across epochs.
        part: dict[str, set[int]] = {}
        for r in ok_a + rep_b:
            part.setdefault(r["k"], set()).add(r["p"])
        assert all(len(ps) == 1 for ps in part.values()), part
        assert len({next(iter(ps)) for ps in part.values()}) > 1, "keys spread over partitions"

        # Roll the segments (a record after segment.ms) so the cleaner may
        # compact them, then wait until it has: raw reads (no plugin) see
        # exactly one record per token.
        time.sleep(2)
        f_out, f_stop = tmp_path / "f.json", tmp_path / "f.stop"
        fillers = [{"k": f"filler-{tag}-{i}".encode().hex(), "v": f"{tag}-filler-{i}"} for i in range(9)]
        f = spawn("produce", base | {"e2ee": tok, "records": fillers, "out": str(f_out), "stop": str(f_stop)})
        procs.append(f)
        wait_file(f_out, f, 120)
        real_keys = set(keys) | {bytes.fromhex(x["k"]) for x in fillers}
        deadline, raw = time.time() + 90, []
        while time.time() < deadline:
            out = tmp_path / f"raw-{uuid.uuid4().hex[:6]}.json"
            c = spawn("consume", {"bootstrap": broker.bootstrap, "topic": TOPIC, "partitions": PARTITIONS,
                                  "seconds": 30, "out": str(out)})
            raw = wait_file(out, c, 60)
            c.wait(timeout=30)
            tokens = [bytes.fromhex(r["k"]) for r in raw if r.get("k") is not None]
            if len(tokens) == len(set(tokens)) == len(real_keys):
                break
            time.sleep(2)
        tokens = [bytes.fromhex(r["k"]) for r in raw if r.get("k") is not None]
        assert len(tokens) == len(set(tokens)) == len(real_keys), f"not compacted: {len(tokens)} records"
        # The broker saw tokens only: each of its key's length, none a real key.
        assert not set(tokens) & real_keys
        assert sorted(map(len, tokens)) == sorted(map(len, real_keys))
        assert all("e2ee.k" in r["h"] and "e2ee" in r["h"] for r in raw)
        # The tombstone kept its token (and so removed that key's values).
        assert sum(1 for r in raw if r["v"] is None) == 1

        # Consumers with the plugin get the real keys and the newest values.
        out = tmp_path / "plugin.json"
        c = spawn("consume", base | {"e2ee": e2ee(creds, "reader"), "partitions": PARTITIONS, "seconds": 60,
                                     "out": str(out)})
        rows = wait_file(out, c, 90)
        c.wait(timeout=30)
        assert not [r for r in rows if "error" in r], rows
        got = {bytes.fromhex(r["k"]): (None if r["v"] is None else bytes.fromhex(r["v"]).decode()) for r in rows}
        assert len(rows) == len(got) == len(real_keys)
        for k in keys:
            want = None if k == tombstoned else f"{tag}-b1-{k.decode()}"
            assert got[k] == want, (k, got[k])
        assert all("e2ee.k" not in r["h"] for r in rows)

        # kcat with the plugin prints the real keys.
        r = subprocess.run(["kcat", "-b", broker.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
                            "-X", f"e2ee.credential={creds['reader']}", "-X", f"e2ee.trust={creds['trust']}",
                            "-C", "-t", TOPIC, "-o", "beginning", "-e", "-f", "%k\\n"],
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert set(r.stdout.decode(errors="replace").split()) == {k.decode() for k in real_keys}

        # Nothing of a key or value in the broker's files.
        data = segments(broker, TOPIC)
        assert data, "no segment files found"
        leaked = [k for k in real_keys if k in data] + [tag.encode()] * (tag.encode() in data)
        assert not leaked, leaked

        # The operator rotates the token secret (the only way it changes):
        # a producer that starts afterwards (it gets the new generation from
        # a running holder, B) sends the same key under a new token.
        cfg = tmp_path / "rotate.properties"
        cfg.write_text(f"bootstrap.servers={broker.bootstrap}\n"
                       + "".join(f"{k}={v}\n" for k, v in e2ee(creds, "writer").items()))
        r = subprocess.run([str(ROOT / "target" / "release" / "kafka-e2ee"), "rotate-token", "--config", str(cfg),
                            "--topic", TOPIC, "--hold", "4"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "generation 2" in r.stdout, r.stdout
        # The token the broker saw for keys[0]: the raw record at the offset
        # where the plugin consumer read keys[0].
        at = {(x["p"], x["o"]) for x in rows if bytes.fromhex(x["k"]) == keys[0]}
        old_token = {bytes.fromhex(x["k"]) for x in raw if (x["p"], x["o"]) in at}
        assert len(old_token) == 1
        g_out, g_stop = tmp_path / "g.json", tmp_path / "g.stop"
        g = spawn("produce", base | {"e2ee": tok, "records": [{"k": keys[0].hex(), "v": f"{tag}-gen2"}],
                                     "out": str(g_out), "stop": str(g_stop)})
        procs.append(g)
        assert wait_file(g_out, g, 120)[0]["err"] is None
        out = tmp_path / f"raw-{uuid.uuid4().hex[:6]}.json"
        c = spawn("consume", {"bootstrap": broker.bootstrap, "topic": TOPIC, "partitions": PARTITIONS,
                              "seconds": 30, "out": str(out)})
        after = wait_file(out, c, 60)
        c.wait(timeout=30)
        # The new record is the last one of its partition; a consumer gets
        # the real key back from it too.
        out = tmp_path / "plugin2.json"
        c = spawn("consume", base | {"e2ee": e2ee(creds, "reader"), "partitions": PARTITIONS, "seconds": 60,
                                     "out": str(out)})
        rows2 = wait_file(out, c, 90)
        c.wait(timeout=30)
        newest = [x for x in rows2 if x.get("v") == f"{tag}-gen2".encode().hex()]
        assert len(newest) == 1 and bytes.fromhex(newest[0]["k"]) == keys[0], newest
        new_token = {bytes.fromhex(x["k"]) for x in after if (x["p"], x["o"]) == (newest[0]["p"], newest[0]["o"])}
        assert len(new_token) == 1 and new_token != old_token, "a new generation gives new tokens"
        assert len(next(iter(new_token))) == len(keys[0])
    finally:
        for s in (tmp_path / "a.stop", tmp_path / "b.stop", tmp_path / "f.stop", tmp_path / "g.stop"):
            s.touch()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    {"produce": _produce, "consume": _consume}[sys.argv[1]](json.loads(sys.argv[2]))
