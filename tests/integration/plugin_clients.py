"""Client processes for the plugin tests (run as scripts, one process per
client, so that every client has its own engine and keys really travel over
the control topic): ``produce`` and ``consume`` with confluent-kafka from
PyPI, whose bundled librdkafka loads the plugin."""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer


PLUGIN = Path(__file__).resolve().parents[2] / "target" / "release" / "libkafka_e2ee.so"


def engine_metrics() -> list[dict]:
    """The counters of every kafka-e2ee engine in this process, read the way
    a librdkafka app reads them: kafka_e2ee_metrics_json from the plugin
    (dlopen of the same path returns the copy librdkafka loaded)."""
    lib = ctypes.CDLL(str(PLUGIN))
    fn = lib.kafka_e2ee_metrics_json
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    fn.restype = ctypes.c_int32
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        written = ctypes.c_size_t(0)
        rc = fn(buf, size, ctypes.byref(written))
        if rc == 2:  # KAFKA_E2EE_ERR_BUFFER_TOO_SMALL
            size *= 4
            continue
        assert rc == 0, f"kafka_e2ee_metrics_json returned {rc}"
        return json.loads(buf.value[: written.value])["engines"]


def conf(args: dict) -> dict:
    # plugin.library.paths must come before the e2ee.* properties.
    c = {"bootstrap.servers": args["bootstrap"], "plugin.library.paths": args["plugin"]}
    c.update(args["e2ee"])
    c.update(args.get("extra", {}))
    return c


def produce(args: dict) -> None:
    p = Producer(conf(args))
    delivered, failed = [], []

    def report(err, msg):
        if err:
            failed.append(str(err))
        else:
            # The delivery report sees the original payload.
            delivered.append(msg.value().decode())

    n, per_s = args["count"], args["rate"]
    start = time.time()
    for i in range(n):
        p.produce(args["topic"], key=f"k{i}", value=f"v{i}-{'x' * (i % 50)}", on_delivery=report)
        p.poll(0)
        delay = start + (i + 1) / per_s - time.time()
        if delay > 0:
            time.sleep(delay)
    p.flush(30)
    Path(args["out"]).write_text(json.dumps({"delivered": delivered, "failed": failed}))
    # Stay up to serve the keys until told to stop.
    stop = Path(args["stop"])
    while not stop.exists():
        p.poll(0.1)


def consume(args: dict) -> None:
    c = Consumer(
        conf(args)
        | {"group.id": args["group"], "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
    )
    c.subscribe([args["topic"]])
    out = open(args["out"], "a", buffering=1)
    deadline = time.time() + args["seconds"]
    stop = Path(args["stop"])
    while time.time() < deadline and not stop.exists():
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                out.write(json.dumps({"error": str(m.error()), "offset": m.offset()}) + "\n")
            continue
        headers = [h[0] for h in (m.headers() or [])]
        out.write(
            json.dumps(
                {"p": m.partition(), "o": m.offset(), "k": m.key().decode(), "v": m.value().decode(), "h": headers}
            )
            + "\n"
        )
    c.close()


if __name__ == "__main__":
    spec = json.loads(sys.argv[2])
    {"produce": produce, "consume": consume}[sys.argv[1]](spec)
