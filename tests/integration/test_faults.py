"""Process and broker faults on a real broker, for the Java host (the serde
wrappers) and the librdkafka plugin (confluent-kafka from PyPI): a producer
killed with SIGKILL mid-epoch and restarted on its state directory; every
producer gone while another group still holds the keys; a consumer killed
and restarted mid-stream; the broker stopped and started again under
running clients. docs/PROTOCOL.md section 6, "Faults: processes and broker",
names these tests.

Every test accounts for every record by partition and offset: each offset
below the end offset reaches the app as a value some producer sent, every
value the broker acknowledged is among them, nothing else reaches the app
(no ciphertext, no garbage, no undecryptable record), repeated deliveries
are counted, and no segment file of any topic holds the plaintext marker."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from plugin_clients import PLUGIN, spawn
from test_java import (  # noqa: F401  (pytest fixtures)
    STRING_DE,
    STRING_SER,
    Running,
    assert_no_plaintext,
    built,
    creds,
    e2ee,
    epochs_on_disk,
    kafka,
    prefix,
    props,
)

# Short epochs, so that every test crosses several of them.
ROTATION_MS = 1000
PARTITIONS = 2


@pytest.fixture(scope="module", autouse=True)
def plugin_built():
    assert PLUGIN.exists(), f"{PLUGIN} is missing: run scripts/test release first"


def wait_for(what: str, cond, timeout: float = 120, every: float = 0.2):
    """Polls ``cond`` until it returns something true; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def whole_lines(path: Path) -> list[str]:
    """The complete lines of a file that a killed process may have been writing."""
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").split("\n")[:-1]


class Client:
    """A client process of either host: ``close`` ends it the way the app
    would, ``kill`` with SIGKILL."""

    def __init__(self, proc, log: Path, stop: Path | None = None, running: Running | None = None,
                 report: Path | None = None):
        self.proc, self.log, self.stop = proc, log, stop
        self.running, self.report = running, report  # how a producer says it has sent all

    def wait_sent(self, timeout: float = 180) -> int:
        """For a producer: waits until it has sent (and flushed) all it will send; how many."""
        if self.running:
            return int(self.running.wait_line("SENT", timeout=timeout).split()[1])
        wait_for("the producer's report", lambda: self.check_running("producer") or self.report.exists(),
                 timeout=timeout)
        report = json.loads(self.report.read_text())
        assert report["failed"] == [], report["failed"][:3]
        return len(report["delivered"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.communicate(timeout=30)

    def close(self, timeout: float = 90) -> int:
        if self.stop:
            self.stop.touch()
            self.proc.communicate(timeout=timeout)
        else:
            self.proc.communicate(input="", timeout=timeout)  # stdin closes: the Java app leaves
        return self.proc.returncode

    def check_running(self, what: str) -> None:
        if self.alive():
            return
        # The Java app says on stdout why it stopped (DESERIALIZATION-FAILED, SEND-FAILED).
        stdout = self.proc.stdout.read()[-3000:] if self.proc.stdout else ""
        raise AssertionError(f"{what} exited with {self.proc.returncode}:\n{stdout}\n{self.output()}")


@dataclass
class Host:
    """Makes producers and consumers of one host; values differ per host."""

    name: str
    bootstrap: str
    creds: dict
    dir: Path
    cp: str

    def value(self, p: str, i: int) -> str:
        return f"{p}-{i:05d}-\u00e9\u4e2d" if self.name == "java" else f"{p}-{i:05d}"

    def producer(self, name: str, topic: str, p: str, first: int, count: int, interval_ms: int,
                 state: Path | None = None, until: Path | None = None) -> tuple[Client, Path]:
        """A producer that sends ``count`` values at a pace (fewer if ``until``
        appears), appends each one the broker acknowledged to the returned
        file, then stays up (it serves its keys) until closed."""
        acked, log = self.dir / f"{name}.acked", self.dir / f"{name}.log"
        if self.name == "java":
            kv = e2ee(self.creds, "writer", e2ee_key_rotation_ms=ROTATION_MS, key_serializer=STRING_SER,
                      value_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_value_serializer=STRING_SER)
            if state:
                kv["e2ee_state_dir"] = state
            conf = props(self.dir / f"{name}.properties", self.bootstrap, **kv)
            r = Running(self.cp, "dev.kafkae2ee.it.E2eeApp", "acked", str(conf), topic, p, str(first), str(count),
                        str(interval_ms), str(acked), *([str(until)] if until else []), log=log)
            return Client(r.proc, log, running=r), acked
        e2ee_conf = {"e2ee.credential": str(self.creds["writer"]), "e2ee.trust": str(self.creds["trust"]),
                     "e2ee.key.rotation.ms": str(ROTATION_MS)}
        if state:
            e2ee_conf["e2ee.state.dir"] = str(state)
        stop = self.dir / f"{name}.stop"
        spec = {"bootstrap": self.bootstrap, "plugin": str(PLUGIN), "topic": topic, "e2ee": e2ee_conf,
                "prefix": p, "first": first, "count": count, "rate": 1000 / interval_ms,
                "out": str(self.dir / f"{name}.json"), "acked": str(acked), "stop": str(stop)}
        if until:
            spec["until"] = str(until)
        return Client(spawn("produce", spec, log=log), log, stop, report=self.dir / f"{name}.json"), acked

    def consumer(self, name: str, topic: str, group: str) -> tuple[Client, Path]:
        """A group member that reads from the beginning and writes one line
        per record it hands to the app."""
        out, log = self.dir / f"{name}.out", self.dir / f"{name}.log"
        if self.name == "java":
            # The classic protocol with the shortest session the broker allows: a
            # killed member's partitions move on after 6 s, not 45.
            conf = props(self.dir / f"{name}.properties", self.bootstrap, **e2ee(self.creds, "reader"),
                         key_deserializer=STRING_DE, value_deserializer="dev.kafkae2ee.DecryptingDeserializer",
                         e2ee_inner_value_deserializer=STRING_DE, group_id=group, group_protocol="classic",
                         session_timeout_ms=6000, auto_offset_reset="earliest", enable_auto_commit="false")
            r = Running(self.cp, "dev.kafkae2ee.it.E2eeApp", "member", str(conf), topic, str(out), "offsets", log=log)
            return Client(r.proc, log), out
        stop = self.dir / f"{name}.stop"
        spec = {"bootstrap": self.bootstrap, "plugin": str(PLUGIN), "topic": topic, "group": group,
                "e2ee": {"e2ee.credential": str(self.creds["reader"]), "e2ee.trust": str(self.creds["trust"])},
                "seconds": 600, "out": str(out), "stop": str(stop)}
        return Client(spawn("consume", spec, log=log), log, stop), out

    def delivered(self, out: Path) -> list[tuple[int, int, str]]:
        """(partition, offset, value) of each record the app got, in order.
        Fails at once on a record that reached the app as an error."""
        rows = []
        for line in whole_lines(out):
            if self.name == "java":
                part, offset, value = line.split(" ", 2)
                rows.append((int(part), int(offset), value))
                continue
            r = json.loads(line)
            assert "error" not in r, f"a record reached the app as an error: {r}"
            assert "e2ee" not in r["h"], f"a record reached the app still sealed: {r}"
            rows.append((r["p"], r["o"], r["v"]))
        return rows


@pytest.fixture(params=["java", "rdkafka"])
def host(request, built, kafka, creds, tmp_path):
    return Host(request.param, kafka.bootstrap, creds, tmp_path, built)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition, asked of the broker by a client without the plugin."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-accounting"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
    finally:
        c.close()


def records_since(bootstrap: str, topic: str, wall_ms: int) -> int:
    """How many records on the broker were created (producer timestamps, same
    machine clock) at or after ``wall_ms``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-accounting"})
    try:
        found = c.offsets_for_times([TopicPartition(topic, p, wall_ms) for p in range(PARTITIONS)], timeout=30)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
    finally:
        c.close()
    return sum(ends[tp.partition] - tp.offset for tp in found if tp.offset >= 0)


def covers(rows, ends: dict[int, int]) -> bool:
    seen = {(p, o) for p, o, _ in rows}
    return all((p, o) in seen for p, end in ends.items() for o in range(end))


@dataclass
class Tally:
    records: int  # records on the broker (offsets below the end offsets)
    deliveries: int  # records handed to the app, counting repeats
    repeats: int  # deliveries of an offset already delivered (at least once)


def account(rows, ends: dict[int, int], sent: set[str], acked: set[str]) -> Tally:
    """Every record on the broker reached the app as a value a producer sent;
    every acknowledged value is on the broker; nothing else reached the app."""
    by_offset: dict[tuple[int, int], str] = {}
    for p, o, v in rows:
        assert v in sent, f"the app got a value no producer sent (ciphertext? garbage?) at {p}/{o}: {v[:60]!r}"
        assert by_offset.setdefault((p, o), v) == v, f"offset {p}/{o} reached the app as two different values"
    want = {(p, o) for p, end in ends.items() for o in range(end)}
    missing = sorted(want - by_offset.keys())
    assert not missing, f"{len(missing)} of {len(want)} records never reached the app, e.g. {missing[:5]}"
    assert by_offset.keys() == want, f"offsets beyond the end: {sorted(by_offset.keys() - want)[:5]}"
    unacked = acked - set(by_offset.values())
    assert not unacked, f"{len(unacked)} acknowledged records are not on the broker, e.g. {sorted(unacked)[:3]}"
    return Tally(records=len(want), deliveries=len(rows), repeats=len(rows) - len(by_offset))


def test_producer_killed_mid_epoch_restarts_on_its_state_dir_and_every_record_opens(host, kafka, tmp_path):
    """SIGKILL a producer after it has sealed under several epochs, start it
    again on the same e2ee.state.dir, and only then start a consumer: the
    killed instance's keys can come from nowhere but the restarted producer."""
    topic, p, state = f"fault-producer-kill-{host.name}", prefix(), tmp_path / "state"
    kafka.create_topic(topic, partitions=PARTITIONS)
    first, acked1 = host.producer("p1", topic, p, 0, 1000, 20, state=state)
    # At 50 records/s and one epoch a second, 150 acknowledgements span 3 epochs or more.
    wait_for("150 acknowledged records", lambda: first.check_running("producer") or len(whole_lines(acked1)) >= 150)
    first.kill()
    killed_acked = set(whole_lines(acked1))

    second, acked2 = host.producer("p2", topic, p, 5000, 100, 20, state=state)
    consumer = None
    try:
        wait_for("the restarted producer's 100 acknowledgements",
                 lambda: second.check_running("restarted producer") or len(whole_lines(acked2)) >= 100)
        ends = end_offsets(kafka.bootstrap, topic)
        consumer, out = host.consumer("c", topic, "after-restart")
        wait_for("every record", lambda: consumer.check_running("consumer") or covers(host.delivered(out), ends))
        rows = host.delivered(out)
        assert consumer.close() == 0, consumer.output()
    finally:
        for c in (second, consumer):
            if c and c.alive():
                c.kill()
    sent = {host.value(p, i) for i in [*range(0, 1000), *range(5000, 5100)]}
    tally = account(rows, ends, sent, killed_acked | set(whole_lines(acked2)))
    print(f"{host.name}: {tally}, {len(killed_acked)} acknowledged before the kill")
    assert tally.repeats == 0  # one consumer, no rebalance
    # The killed instance sealed under several epochs, all of which opened.
    epochs = epochs_on_disk(kafka, topic)
    assert len(epochs) == 2 and max(len(e) for e in epochs.values()) >= 3, {
        k.hex(): len(v) for k, v in epochs.items()}
    assert_no_plaintext(kafka, [p])


def test_every_producer_gone_a_new_group_gets_the_keys_from_another_group(host, kafka, tmp_path):
    """Two producers without state directories write under several epochs and
    exit; a consumer of another group that read everything still runs. A new
    group then reads the topic from the beginning: only that consumer holds
    the keys."""
    topic, p = f"fault-holders-{host.name}", prefix()
    kafka.create_topic(topic, partitions=PARTITIONS)
    holder, holder_out = host.consumer("holder", topic, "holders")
    producers = [host.producer(f"p{n}", topic, p, n * 1000, 150, 20) for n in range(2)]
    late = None
    try:
        for n, (prod, acked) in enumerate(producers):
            wait_for(f"producer {n}'s 150 acknowledgements",
                     lambda: prod.check_running("producer") or len(whole_lines(acked)) >= 150)
        acked = {v for _, a in producers for v in whole_lines(a)}
        ends = end_offsets(kafka.bootstrap, topic)
        wait_for("the holder group to read every record",
                 lambda: holder.check_running("holder") or covers(host.delivered(holder_out), ends))
        for prod, _ in producers:
            assert prod.close() == 0, prod.output()
        late, late_out = host.consumer("late", topic, "latecomers")
        wait_for("the new group to read every record",
                 lambda: late.check_running("new group's consumer") or covers(host.delivered(late_out), ends))
        late_rows, holder_rows = host.delivered(late_out), host.delivered(holder_out)
        assert late.close() == 0, late.output()
        assert holder.close() == 0, holder.output()
    finally:
        for c in (holder, late, *(prod for prod, _ in producers)):
            if c and c.alive():
                c.kill()
    sent = {host.value(p, n * 1000 + i) for n in range(2) for i in range(150)}
    tally = account(late_rows, ends, sent, acked)
    account(holder_rows, ends, sent, acked)
    print(f"{host.name}: new group {tally}")
    epochs = epochs_on_disk(kafka, topic)
    assert len(epochs) == 2 and all(len(e) >= 2 for e in epochs.values()), {
        k.hex(): len(v) for k, v in epochs.items()}
    assert_no_plaintext(kafka, [p])


def test_consumer_killed_mid_stream_restarts_and_loses_nothing(host, kafka, tmp_path):
    """SIGKILL a group's only consumer while records flow and epochs rotate;
    its restart (a new process, new engine, no keys) continues from the
    group's committed offsets. Repeats are at-least-once and are counted."""
    topic, p = f"fault-consumer-kill-{host.name}", prefix()
    kafka.create_topic(topic, partitions=PARTITIONS)
    prod, acked = host.producer("p", topic, p, 0, 300, 20)
    first, out1 = host.consumer("c1", topic, "killed")
    second = None
    try:
        wait_for("the first consumer's 80 records",
                 lambda: first.check_running("consumer") or len(host.delivered(out1)) >= 80)
        first.kill()
        second, out2 = host.consumer("c2", topic, "killed")
        wait_for("300 acknowledgements", lambda: prod.check_running("producer") or len(whole_lines(acked)) >= 300)
        ends = end_offsets(kafka.bootstrap, topic)
        wait_for("every record", lambda: second.check_running("restarted consumer")
                 or covers(host.delivered(out1) + host.delivered(out2), ends))
        rows = host.delivered(out1) + host.delivered(out2)
        assert second.close() == 0, second.output()
        assert prod.close() == 0, prod.output()
    finally:
        for c in (prod, first, second):
            if c and c.alive():
                c.kill()
    tally = account(rows, ends, {host.value(p, i) for i in range(300)}, set(whole_lines(acked)))
    print(f"{host.name}: {tally}, {len(host.delivered(out1))} before the kill")
    assert_no_plaintext(kafka, [p])


def test_broker_restart_mid_stream_loses_nothing_on_either_host(built, kafka, creds, tmp_path):
    """Java and librdkafka producers and consumers run while the broker is
    stopped and started again on the same data directory and port; they
    carry on (data and control topic alike) and nothing is lost. The
    producers keep sending until the broker holds 50 records of each created
    after it was back (two seconds: two rotations). It restarts the module's
    broker, so it runs last."""
    p, interval_ms, until = prefix(), 40, tmp_path / "until"
    hosts = [Host(name, kafka.bootstrap, creds, tmp_path, built) for name in ("java", "rdkafka")]
    runs = []
    try:
        for h in hosts:
            topic = f"fault-broker-restart-{h.name}"
            kafka.create_topic(topic, partitions=PARTITIONS)
            consumer, out = h.consumer(f"{h.name}-c", topic, "through-restart")
            prod, acked = h.producer(f"{h.name}-p", topic, p, 0, 99_999, interval_ms, until=until)
            runs.append((h, topic, prod, acked, consumer, out))
        for h, _, prod, _, consumer, out in runs:
            wait_for(f"{h.name}: 60 records through", lambda: prod.check_running("producer")
                     or consumer.check_running("consumer") or len(h.delivered(out)) >= 60)
        at_stop = {h.name: len(whole_lines(acked)) for h, _, _, acked, _, _ in runs}
        kafka.stop()
        kafka.restart()
        back_ms = int(time.time() * 1000)
        for h, topic, prod, _, _, _ in runs:
            wait_for(f"{h.name}: 50 records created after the restart on the broker",
                     lambda: prod.check_running("producer") or records_since(kafka.bootstrap, topic, back_ms) >= 50,
                     timeout=180, every=1)
        until.touch()
        results = []
        for h, topic, prod, acked, consumer, out in runs:
            sent = prod.wait_sent()
            wait_for(f"{h.name}: {sent} acknowledgements", lambda: len(whole_lines(acked)) >= sent)
            ends = end_offsets(kafka.bootstrap, topic)
            wait_for(f"{h.name}: every record", lambda: consumer.check_running("consumer")
                     or covers(h.delivered(out), ends))
            results.append((h, sent, ends, h.delivered(out), set(whole_lines(acked))))
        for _, _, prod, _, consumer, _ in runs:
            assert consumer.close() == 0, consumer.output()
            assert prod.close() == 0, prod.output()
    finally:
        for _, _, prod, _, consumer, _ in runs:
            for c in (prod, consumer):
                if c.alive():
                    c.kill()
    for h, sent, ends, rows, acked in results:
        tally = account(rows, ends, {h.value(p, i) for i in range(sent)}, acked)
        assert len(acked) == sent, f"{h.name}: {sent - len(acked)} records sent were never acknowledged"
        print(f"{h.name}: {tally}, {sent} sent, {at_stop[h.name]} acknowledged when the broker stopped")
    assert_no_plaintext(kafka, [p])
