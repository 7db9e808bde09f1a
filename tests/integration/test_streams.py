"""Kafka Streams on a real broker (issue 16 item 3): a stateful topology (a
groupBy repartition keyed by a word taken from the value, a count and a
reduce) configured by properties alone, with default.value.serde=E2eeSerde and
both interceptors. One app, three runs in fresh processes on fresh state
directories (a new host each time, no e2ee.state.dir):

1. with a keeper running: processes 18 records, then exits;
2. with the keeper stopped: the restore cannot get its keys, so it waits,
   naming the key, and computes nothing (before the fix: "restored 0
   records", a silently wrong state);
3. with the keeper back: the restore gets every changelog record, and one new
   record gives alpha 16 exactly (no loss, no double counting);
4. after a plaintext record was forged onto a changelog: the restore stops
   with an error naming it (the task fails), computing nothing.

Then every segment file of the input, repartition, changelog and output
topics holds no plaintext value, and every changelog record carries an e2ee
header (the count's values are 8-byte longs: counted, not searched). Record
keys (the words) are plaintext by design (docs/QUICKSTART.md, Kafka Streams)."""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import time
from pathlib import Path

from confluent_kafka import Producer

from java_clients import CLI, Running, build, props
from test_keeper import Keeper

APP = "wc"
INPUT, OUTPUT = "wc-input", "wc-output"
INTERNAL = ["wc-words-repartition", "wc-counts-changelog", "wc-sums-changelog"]
# FORMAT.md section 2, as test_java.py reads it: the e2ee header of a sealed record.
HEADER_ON_DISK = rb"e2ee\x44\x01[\x00-\x3f\x80-\xbf].{8}.{4}"


def cli(*args: str) -> None:
    subprocess.run([str(CLI), *args], check=True, capture_output=True, text=True, timeout=120)


def segments(broker, topic: str) -> bytes:
    dirs = sorted(broker.data_dir.glob(f"{topic}-*"))
    assert dirs, f"no partition directory of {topic}"
    return b"".join(p.read_bytes() for d in dirs for p in sorted(d.glob("*.log")))


def record_count(data: bytes) -> int:
    """Records in a segment's batches (format v2, uncompressed: what Streams writes here)."""
    n, pos = 0, 0
    while pos + 61 <= len(data):
        length = struct.unpack_from(">i", data, pos + 8)[0]
        attributes = struct.unpack_from(">h", data, pos + 21)[0]
        assert attributes & 0x07 == 0, "compressed batch: headers cannot be counted"
        if not attributes & 0x20:  # not a control batch
            n += struct.unpack_from(">i", data, pos + 57)[0]
        pos += 12 + length
    return n


def next_lines(app: Running, timeout: float = 1) -> list[str] | None:
    """The complete stdout lines that arrived within ``timeout`` ([] if none,
    None at the end of output). Reads the pipe's descriptor itself: select()
    cannot see lines a buffered readline() already pulled into Python's
    buffer, and those would wait for output that may never come."""
    fd = app.proc.stdout.fileno()
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return []
    chunk = os.read(fd, 65536)
    if not chunk:
        return None
    *lines, app.pending = (getattr(app, "pending", b"") + chunk).split(b"\n")
    return [ln.decode(errors="replace").strip() for ln in lines]


def lines_until(app: Running, wanted: set[str], timeout: float = 120, fail_on_error: bool = True) -> list[str]:
    """Stdout lines until every line of ``wanted`` was seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen):
        assert time.monotonic() < deadline, f"missing {wanted - set(seen)}; got {seen}"
        assert app.proc.poll() is None, f"exited {app.proc.returncode}; got {seen}\n{app.log.read_text()[-4000:]}"
        for line in next_lines(app) or []:
            seen.append(line)
            assert not (fail_on_error and line.startswith("STREAMS-ERROR")), f"{line}\n{app.log.read_text()[-4000:]}"
    return seen


def finish(app: Running) -> list[str]:
    r = app.close(timeout=90)
    assert r.returncode == 0 and "CLOSED" in r.stdout, r.stdout + r.stderr[-4000:]
    return r.stdout.splitlines()


def test_streams_count_and_reduce_restore_in_full_on_a_new_host(broker, tmp_path: Path):
    cp = build()
    auth = tmp_path / "auth"
    cli("authority", "init", "--out", str(auth))
    for name, grants in [("app", ["--produce", "*", "--consume", "*"]), ("keeper", ["--consume", "*"])]:
        cli("credential", "issue", "--authority", str(auth), "--name", name, *grants,
            "--out", str(tmp_path / f"{name}.cred"))
    # The keeper does not create the two kafka-e2ee topics (docs/KEEPER.md).
    broker.create_topics_with_e2ee(INPUT, OUTPUT)

    keeper_config = tmp_path / "keeper.properties"
    keeper_config.write_text(f"bootstrap.servers={broker.bootstrap}\ne2ee.credential={tmp_path / 'keeper.cred'}\n"
                             f"e2ee.trust={auth / 'trust'}\ne2ee.state.dir={tmp_path / 'keeper-state'}\n")
    keeper_log = tmp_path / "keeper.log"
    keeper = Keeper(keeper_config, keeper_log)

    def run(n: int, records: str, **overrides) -> Running:
        # A new host: a state directory of its own, no e2ee.state.dir.
        settings = dict(application_id=APP, state_dir=tmp_path / f"state{n}",
                        default_key_serde="org.apache.kafka.common.serialization.Serdes$StringSerde",
                        default_value_serde="dev.kafkae2ee.E2eeSerde",
                        e2ee_inner_value_serde="org.apache.kafka.common.serialization.Serdes$StringSerde",
                        consumer_interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                        producer_interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor",
                        e2ee_credential=tmp_path / "app.cred", e2ee_trust=auth / "trust",
                        e2ee_key_wait_ms=3000, statestore_cache_max_bytes=0, commit_interval_ms=200,
                        session_timeout_ms=6000)
        settings.update(overrides)
        p = props(tmp_path / f"streams{n}.properties", broker.bootstrap,
                  **{k: v for k, v in settings.items() if v is not None})
        return Running(cp, "dev.kafkae2ee.it.StreamsApp", str(p), INPUT, OUTPUT, records,
                       log=tmp_path / f"streams{n}.log")

    try:
        keeper.wait_healthy()
        keeper.wait_metric("prekeys_published", 1)
        time.sleep(1)  # its prekeys reach the broker before anything is sealed

        # Run 1: 15 alpha (1..15, sum 120) and 3 beta (1..3, sum 6).
        records = [f"alpha:{i}" for i in range(1, 16)] + [f"beta:{i}" for i in range(1, 4)]
        with run(1, ",".join(records)) as app:
            lines_until(app, {"count alpha 15", "count beta 3", "sum alpha VAL-alpha-120", "sum beta VAL-beta-6"})
            finish(app)
            log1 = app.log.read_text(errors="replace")
        assert "WARN kafka-e2ee encrypts record values only: the record keys" in log1, "no plaintext-keys warning"
        keeper.wait_metric("envelopes_received", 1)

        # Run 2: nothing holds the keys. The restore waits, naming the key; no
        # wrong count, no record skipped.
        assert keeper.stop() == 0, keeper_log.read_text()[-3000:]
        with run(2, "-") as app:
            deadline = time.monotonic() + 90
            while "waits for key" not in app.log.read_text(errors="replace"):
                assert time.monotonic() < deadline, app.log.read_text(errors="replace")[-4000:]
                assert app.proc.poll() is None, app.log.read_text(errors="replace")[-4000:]
                time.sleep(0.5)
            time.sleep(2)
            app.proc.kill()
            out, _ = app.proc.communicate(timeout=30)
            log2 = app.log.read_text(errors="replace")
        assert re.search(r"waits for key [0-9a-f]{16}/\d+ of topic wc-(counts|sums)-changelog", log2), log2[-4000:]
        assert "dropped the record" not in log2, log2[-4000:]
        assert not [ln for ln in out.splitlines() if ln.startswith(("count ", "sum ", "RESTORED"))], out

        # Run 3: the keeper is back; a full restore, then one more alpha.
        keeper = Keeper(keeper_config, keeper_log)
        keeper.wait_healthy()
        with run(3, "alpha:100") as app:
            out3 = lines_until(app, {"count alpha 16", "sum alpha VAL-alpha-220"}) + finish(app)
        restored = {ln for ln in out3 if ln.startswith("RESTORED")}
        assert restored == {"RESTORED counts 0 18", "RESTORED sums 0 18"}, out3
        results = [ln for ln in out3 if ln.startswith(("count ", "sum "))]
        assert sorted(results) == ["count alpha 16", "sum alpha VAL-alpha-220"], out3

        # Run 4: a record no key opens (plaintext, written around kafka-e2ee) at
        # the end of a changelog. The restore stops loudly: the interceptor's
        # Error gets through ConsumerInterceptors (it catches Exception only),
        # the task fails, and nothing is computed from a partial state.
        forger = Producer({"bootstrap.servers": broker.bootstrap})
        forger.produce("wc-sums-changelog", key=b"alpha", value=b"forged")
        assert forger.flush(30) == 0
        del forger
        with run(4, "-") as app:
            seen: list[str] = []
            deadline = time.monotonic() + 90
            while not any(ln.startswith(("STREAMS-ERROR", "STATE ERROR")) for ln in seen):
                assert time.monotonic() < deadline, f"{seen}\n{app.log.read_text(errors='replace')[-4000:]}"
                lines = next_lines(app)
                assert lines is not None, f"exited {app.proc.wait()}: {seen}\n{app.log.read_text(errors='replace')[-4000:]}"
                seen += lines
            log4 = app.log.read_text(errors="replace")
        assert "kafka-e2ee stopped" in log4 and "wc-sums-changelog-0 offset 19" in log4, log4[-4000:]
        assert "MISSING_HEADER" in log4, log4[-4000:]
        assert not [ln for ln in seen if ln.startswith(("count ", "sum ", "RESTORED sums"))], seen

        # Run 5, another application without the producer interceptor: E2eeSerde
        # stops it before any record is processed, naming the property.
        with run(5, "-", application_id="nointerceptor", producer_interceptor_classes=None) as app:
            seen = lines_until(app, {"STATE ERROR"}, fail_on_error=False)
        error = next(ln for ln in seen if ln.startswith("STREAMS-ERROR"))
        assert "Failed to initialize value serdes" in error, seen
        assert ("ConfigException: Invalid value (unset) for configuration producer.interceptor.classes: "
                "dev.kafkae2ee.E2eeSerde needs producer.interceptor.classes to include "
                "dev.kafkae2ee.E2eeProducerInterceptor") in app.log.read_text(errors="replace")
    finally:
        keeper.kill()

    # No plaintext value in any segment file; every changelog record sealed.
    for topic in [INPUT, OUTPUT, *INTERNAL]:
        data = segments(broker, topic)
        for plain in (b"VAL-", b"COUNT-"):
            assert plain not in data, f"plaintext {plain!r} in {topic}'s segment files"
        sealed = len(re.findall(HEADER_ON_DISK, data, re.S))
        forged = 1 if topic == "wc-sums-changelog" else 0  # run 4's
        assert sealed + forged == record_count(data) > forged, f"{topic}: {sealed} sealed of {record_count(data)}"


def test_streams_with_tokenized_keys_leaves_no_key_in_any_segment_and_restores(broker, tmp_path: Path):
    """Issue 18 item 3: the same groupBy topology with e2ee.keys=tokenize and
    sealed headers (the default): the words, which groupBy derives from the
    values and uses as keys, travel as tokens on the repartition, changelog
    and output topics; a new host restores both stores in full through a
    keeper (which also hands it the topics' token secrets); no key, value or
    header is in clear in any segment file."""
    from confluent_kafka.admin import AdminClient, NewTopic

    app_id, inp, out = "wct", "wct-input", "wct-output"
    internal = ["wct-words-repartition", "wct-counts-changelog", "wct-sums-changelog"]
    cp = build()
    auth = tmp_path / "auth"
    cli("authority", "init", "--out", str(auth))
    for name, grants in [("app", ["--produce", "*", "--consume", "*"]), ("keeper", ["--consume", "*"])]:
        cli("credential", "issue", "--authority", str(auth), "--name", name, *grants,
            "--out", str(tmp_path / f"{name}.cred"))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    if "_e2ee_keys" in admin.list_topics(timeout=30).topics:  # made by the test before
        for f in admin.create_topics([NewTopic(inp, 1, 1), NewTopic(out, 1, 1)]).values():
            f.result(timeout=60)
    else:
        broker.create_topics_with_e2ee(inp, out)
    keeper_config = tmp_path / "keeper.properties"
    keeper_config.write_text(f"bootstrap.servers={broker.bootstrap}\ne2ee.credential={tmp_path / 'keeper.cred'}\n"
                             f"e2ee.trust={auth / 'trust'}\ne2ee.state.dir={tmp_path / 'keeper-state'}\n")
    keeper = Keeper(keeper_config, tmp_path / "keeper.log")

    def run(n: int, records: str) -> Running:
        settings = dict(application_id=app_id, state_dir=tmp_path / f"state{n}",
                        default_key_serde="org.apache.kafka.common.serialization.Serdes$StringSerde",
                        default_value_serde="dev.kafkae2ee.E2eeSerde",
                        e2ee_inner_value_serde="org.apache.kafka.common.serialization.Serdes$StringSerde",
                        consumer_interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                        producer_interceptor_classes="dev.kafkae2ee.E2eeProducerInterceptor",
                        e2ee_credential=tmp_path / "app.cred", e2ee_trust=auth / "trust", e2ee_keys="tokenize",
                        e2ee_key_wait_ms=30000, statestore_cache_max_bytes=0, commit_interval_ms=200,
                        session_timeout_ms=6000)
        p = props(tmp_path / f"streams{n}.properties", broker.bootstrap, **settings)
        return Running(cp, "dev.kafkae2ee.it.StreamsApp", str(p), inp, out, records,
                       log=tmp_path / f"streams{n}.log")

    try:
        keeper.wait_healthy()
        keeper.wait_metric("prekeys_published", 1)
        time.sleep(1)
        records = [f"alpha:{i}" for i in range(1, 6)] + [f"beta:{i}" for i in range(1, 3)]
        with run(1, ",".join(records)) as app:
            lines_until(app, {"count alpha 5", "count beta 2", "sum alpha VAL-alpha-15", "sum beta VAL-beta-3"})
            finish(app)
            log1 = app.log.read_text(errors="replace")
        assert "kafka-e2ee tokenizes record keys" in log1, "no tokenized-joins warning"
        assert "record keys of every topic this Streams application reads and writes stay plaintext" not in log1
        keeper.wait_metric("envelopes_received", 1)

        # A new host: its stores restore in full from the tokenized changelogs
        # (the consumer interceptor hands Streams the real keys), then one more.
        with run(2, "alpha:100") as app:
            out2 = lines_until(app, {"count alpha 6", "sum alpha VAL-alpha-115"}) + finish(app)
        restored = {ln for ln in out2 if ln.startswith("RESTORED")}
        assert restored == {"RESTORED counts 0 7", "RESTORED sums 0 7"}, out2
    finally:
        keeper.kill()

    for topic in [inp, out, *internal]:
        data = segments(broker, topic)
        assert data, topic
        for plain in (b"alpha", b"beta", b"VAL-", b"TRACE-"):
            assert plain not in data, f"plaintext {plain!r} in {topic}'s segment files"
        # The input's header travels sealed, and so does the copy Streams
        # forwards onto the repartition topic (changelogs carry no
        # application headers).
        if topic in (inp, "wct-words-repartition"):
            assert b"e2ee.h" in data, f"{topic}: no sealed headers"
        if topic != inp:  # the input's keys are null
            assert b"e2ee.k" in data, f"{topic}: no tokenized key"
