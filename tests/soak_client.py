"""The librdkafka clients of the soak run (tests/soak.py), with confluent-kafka
from PyPI whose bundled librdkafka loads the plugin. The same protocol as the
Java SoakClient: values ``"<producer>:<seq>:"`` padded with 'x', keys
``"<seq>"``; ``STATUS k=v ...`` lines once a second and a ``FINAL k=v ...``
line once stdin closes.

    python3 soak_client.py produce SPEC_JSON   (topic, id, rate, seconds, size, conf)
    python3 soak_client.py consume SPEC_JSON   (topic, producers, capacity, conf)
"""

from __future__ import annotations

import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer


def status(what: str, **kv) -> None:
    print(what, " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def watch_stdin() -> tuple[threading.Event, threading.Event]:
    """(go, stop): a line on stdin says go, EOF says stop."""
    go, stop = threading.Event(), threading.Event()

    def watch():
        for _ in sys.stdin:
            go.set()
        stop.set()
        go.set()

    threading.Thread(target=watch, daemon=True).start()
    return go, stop


def value(pid: int, seq: int, size: int) -> bytes:
    head = f"{pid}:{seq}:".encode()
    return head + b"x" * max(0, size - len(head))


def produce(spec: dict, go: threading.Event, stop: threading.Event) -> None:
    p = Producer(spec["conf"])
    acked = failed = 0
    status("READY")
    go.wait()

    def report(err, msg):
        nonlocal acked, failed
        if err:
            failed += 1
            if failed <= 5:
                print("SEND-FAILED", err, file=sys.stderr, flush=True)
            return
        acked += 1

    pid, rate, size, topic = spec["id"], spec["rate"], spec["size"], spec["topic"]
    total = rate * spec["seconds"]
    sent = 0
    start = time.monotonic()
    next_status = start
    while sent < total and not stop.is_set():
        now = time.monotonic()
        due = min(total, int((now - start) * rate))
        while sent < due:
            try:
                p.produce(topic, key=str(sent).encode(), value=value(pid, sent, size), on_delivery=report)
            except BufferError:
                p.poll(0.01)  # the local queue is full: the producer is not keeping up
                continue
            sent += 1
        p.poll(0)
        if now >= next_status:
            status("STATUS", sent=sent, due=due, acked=acked, failed=failed)
            next_status += 1
        time.sleep(0.002)
    p.flush(120)
    status("SENT", sent=sent, acked=acked, failed=failed, seconds=round(time.monotonic() - start, 3))
    # The producer serves the keys of what it sealed: stay up until told to stop.
    while not stop.is_set():
        p.poll(0.1)
    status("FINAL", sent=sent, acked=acked, failed=failed)


def parse(v: bytes | None, k: bytes | None, producers: int, capacity: int) -> tuple[int, int] | None:
    if v is None:
        return None
    parts = v.split(b":", 2)
    if len(parts) != 3 or parts[2].strip(b"x") or parts[1] != k:
        return None
    try:
        pid, seq = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if not (0 <= pid < producers and 0 <= seq < capacity):
        return None
    return pid, seq


def consume(spec: dict, go: threading.Event, stop: threading.Event) -> None:
    producers, capacity = spec["producers"], spec["capacity"]
    seen = [bytearray(capacity) for _ in range(producers)]  # up front: RSS must not see it grow
    records = duplicates = undecryptable = garbled = 0
    undecryptable_offsets: set[tuple[int, int]] = set()
    c = Consumer(spec["conf"])
    c.subscribe([spec["topic"]])
    next_status = time.monotonic()
    while not stop.is_set():
        for m in c.consume(num_messages=1000, timeout=0.1):
            err = m.error()
            if err:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.code() == KafkaError._VALUE_DESERIALIZATION:
                    # The plugin seeks back to the record and retries it: count it once.
                    if (m.partition(), m.offset()) not in undecryptable_offsets:
                        undecryptable_offsets.add((m.partition(), m.offset()))
                        undecryptable += 1
                        print("UNDECRYPTABLE", m.partition(), m.offset(), err.str(), file=sys.stderr, flush=True)
                else:
                    print("CONSUME-ERROR", err.str(), file=sys.stderr, flush=True)
                continue
            records += 1
            ps = parse(m.value(), m.key(), producers, capacity)
            if ps is None:
                garbled += 1
                if garbled <= 5:
                    print("GARBLED", m.partition(), m.offset(), file=sys.stderr, flush=True)
            elif seen[ps[0]][ps[1]]:
                duplicates += 1
            else:
                seen[ps[0]][ps[1]] = 1
        now = time.monotonic()
        if now >= next_status:
            status("STATUS", records=records)
            next_status = now + 1
    distinct = ",".join(str(s.count(1)) for s in seen)
    status("FINAL", records=records, distinct=distinct, duplicates=duplicates,
           undecryptable=undecryptable, garbled=garbled)
    c.close()


if __name__ == "__main__":
    spec = json.loads(sys.argv[2])
    {"produce": produce, "consume": consume}[sys.argv[1]](spec, *watch_stdin())
