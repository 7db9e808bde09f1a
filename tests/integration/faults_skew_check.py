"""NOT PART OF THE TEST COMMAND (yet): clocks skewed by 5 minutes between
parties, with libfaketime, on a real broker. Run it explicitly:

    python3 -m pytest -q tests/integration/faults_skew_check.py

It does not pass yet: under libfaketime the skewed consumers never got their
keys (the Java consumer at -5 min timed out with KEY_PENDING; the
confluent-kafka consumer at +5 min delivered nothing at all), on a machine
with a load average of ~30. Whether libfaketime (which here must fake the
monotonic clock too: FAKETIME_DONT_FAKE_MONOTONIC=1 hangs a JVM running the
engine and breaks Python's time.sleep) or the product is at fault is not
yet known. See docs/PROTOCOL.md, "Faults: control plane, clocks,
credentials"."""

from __future__ import annotations

import time

from test_faults_trust import (  # noqa: F401  (built and kafka are pytest fixtures)
    CkReader,
    CkWriter,
    JavaReader,
    JavaWriter,
    assert_delivered_exactly,
    assert_no_plaintext,
    built,
    close_all,
    epochs_on_disk,
    faketime,
    kafka,
    pki,
    wait_for,
)


def test_clocks_skewed_by_5_minutes_between_parties_everything_flows(built, kafka, pki, tmp_path):
    """libfaketime moves each client's wall clock: the Java producer +5 min,
    the librdkafka producer -5 min, the Java consumer -5 min, the librdkafka
    consumer +5 min (so parties are up to 10 minutes apart, and each is up
    to 5 minutes off the authority that issued the credentials just now).
    Credential validity allows e2ee's 5-minute clock-skew tolerance; key
    exchange has no timestamps to check; keys rotate every 3 s."""
    writer, reader = pki["issue"]("writer", "--produce", "*"), pki["issue"]("reader", "--consume", "*")
    trust, topics = pki["trust"], ["skew-java", "skew-rdkafka"]
    for t in topics:
        kafka.create_topic(t)
    ahead, behind = faketime("+5m"), faketime("-5m")
    parties = []
    try:
        t_start = time.time()
        jw = JavaWriter(built, kafka, tmp_path, writer, trust, topics[0], 100, 100, 3000, env=ahead)
        cw = CkWriter(kafka, tmp_path, writer, trust, topics[1], 100, 10, 3000, env=behind)
        jr = JavaReader(built, kafka, tmp_path, "java-reader", reader, trust, topics, "skip", 30_000, env=behind)
        cr = CkReader(kafka, tmp_path, "ck-reader", reader, trust, topics, "skip", 30_000, env=ahead)
        parties += [jw, cw, jr, cr]
        jw.finish(timeout=120)
        cw.finish(timeout=120)
        for r in (jr, cr):
            wait_for(lambda r=r: r.count(topics[0]) == 100 and r.count(topics[1]) == 100, 120, "every record")
            assert_delivered_exactly(r, topics[0], jw.values)
            assert_delivered_exactly(r, topics[1], cw.values)
            assert r.rows()[1] == {}, r.rows()[1]
        jr.close()
        # The clocks really were moved: the librdkafka producer stamped its
        # records 5 minutes early.
        stamps = [ts / 1000 - t_start for _, _, ts in cw.at]
        assert all(-330 < s < -270 for s in stamps), stamps[:3]
    finally:
        close_all(parties)
    # ...and the Java producer 5 minutes late (CreateTime, read from the broker).
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "skew-stamps", "auto.offset.reset": "earliest"})
    c.subscribe([topics[0]])
    java_stamps: list[float] = []

    def read_one() -> bool:
        m = c.poll(0.5)
        if m is not None and not m.error():
            java_stamps.append(m.timestamp()[1] / 1000 - t_start)
        return bool(java_stamps)

    wait_for(read_one, 60, "a record of the Java producer")
    c.close()
    assert 270 < java_stamps[0] < 420, java_stamps
    epochs = epochs_on_disk(kafka, topics[1])
    assert len(set(epochs)) >= 3, sorted(set(epochs))
    assert_no_plaintext(kafka, jw.values + cw.values)


