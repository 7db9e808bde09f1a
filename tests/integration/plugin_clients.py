"""Client processes for the plugin tests (run as scripts, one process per
client, so that every client has its own engine and keys really travel over
the control topic): ``produce`` and ``consume`` with confluent-kafka from
PyPI, whose bundled librdkafka loads the plugin. Tests start them with
``spawn``."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


PLUGIN = Path(__file__).resolve().parents[2] / "target" / "release" / "libkafka_e2ee.so"


def spawn(mode: str, spec: dict, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """Runs ``mode`` (produce or consume) with ``spec`` in its own process;
    ``env`` is added to its environment (e.g. LD_PRELOAD and CLOCKSHIFT_MS for clockshift.c). Its
    output goes to a pipe, or to ``log`` (which no unread pipe can stall)."""
    return subprocess.Popen([sys.executable, __file__, mode, json.dumps(spec)],
                            stdout=open(log, "w") if log else subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})


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
    # plugin.library.paths must come before the e2ee.* properties. Without
    # "plugin" the client runs plain (a baseline).
    c = {"bootstrap.servers": args["bootstrap"]}
    if "plugin" in args:
        c["plugin.library.paths"] = args["plugin"]
        c.update(args["e2ee"])
    c.update(args.get("extra", {}))
    return c


def produce(args: dict) -> None:
    """Values are ``v{i}-xx...``, or ``{prefix}-{i:05d}`` for i from ``first``
    with a ``prefix``. With ``acked``, each acknowledged value is appended to
    that file at once (one write per line), so a test that kills this process
    knows which records the broker took. With ``until``, it stops sending
    early once that file exists."""
    p = Producer(conf(args))
    delivered, failed, at = [], [], []
    acked = open(args["acked"], "a", buffering=1) if "acked" in args else None

    def report(err, msg):
        if err:
            failed.append(str(err))
        else:
            # The delivery report sees the original payload.
            delivered.append(msg.value().decode())
            at.append([msg.partition(), msg.offset(), msg.timestamp()[1]])
            if acked:
                acked.write(msg.value().decode() + "\n")

    if "records" in args:
        # Given records with headers (a JSON list in a file): {"k", "v", "h": [[name, hex|null]]}.
        for r in json.loads(Path(args["records"]).read_text()):
            headers = [(n, None if v is None else bytes.fromhex(v)) for n, v in r["h"]]
            p.produce(args["topic"], key=r["k"], value=r["v"], headers=headers, on_delivery=report)
            p.poll(0)
    elif "values" in args:
        # Given values (a JSON list in a file), as fast as the client takes them.
        for i, v in enumerate(json.loads(Path(args["values"]).read_text())):
            p.produce(args["topic"], key=f"k{i}", value=v, on_delivery=report)
            p.poll(0)
    else:
        n, per_s, first = args["count"], args["rate"], args.get("first", 0)
        start = time.time()
        for i in range(first, first + n):
            if "until" in args and Path(args["until"]).exists():
                break
            value = f"{args['prefix']}-{i:05d}" if "prefix" in args else f"v{i}-{'x' * (i % 50)}"
            p.produce(args["topic"], key=f"k{i}", value=value, on_delivery=report)
            p.poll(0)
            delay = start + (i - first + 1) / per_s - time.time()
            if delay > 0:
                time.sleep(delay)
    p.flush(30)
    # "at": partition, offset and timestamp (ms) of each delivered value.
    Path(args["out"]).write_text(json.dumps({"delivered": delivered, "failed": failed, "at": at}))
    # Stay up to serve the keys until told to stop.
    stop = Path(args["stop"])
    while not stop.exists():
        p.poll(0.1)


def consume(args: dict) -> None:
    """Writes one JSON line per record or error. A record the plugin rejects
    comes back as an error until the app moves past it: with
    ``on_error=skip`` this app seeks past it, by default it polls again (the
    record is retried). The error message's offset is one before the
    rejected record's (docs/FFI.md: so that no commit passes it)."""
    c = Consumer(
        conf(args)
        | {"group.id": args["group"], "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
    )
    c.subscribe(args.get("topics") or [args["topic"]])
    out = open(args["out"], "a", buffering=1)
    deadline = time.time() + args["seconds"]
    stop = Path(args["stop"])
    while time.time() < deadline and not stop.exists():
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                row = {"error": str(m.error()), "offset": m.offset(), "t": m.topic(), "p": m.partition()}
                rejected = m.error().code() == KafkaError._VALUE_DESERIALIZATION
                if rejected:
                    # Offset -1 (record 0 failed) comes through as None.
                    row["rejected"] = (-1 if m.offset() is None else m.offset()) + 1
                out.write(json.dumps(row) + "\n")
                if rejected and args.get("on_error") == "skip":
                    c.seek(TopicPartition(m.topic(), m.partition(), row["rejected"] + 1))
            continue
        headers = [h[0] for h in (m.headers() or [])]
        # The headers with their values (hex; null stays null), in order.
        values = [[n, None if v is None else v.hex()] for n, v in (m.headers() or [])]
        out.write(
            json.dumps(
                {"t": m.topic(), "p": m.partition(), "o": m.offset(), "k": m.key().decode(),
                 "v": m.value().decode(), "h": headers, "hv": values}
            )
            + "\n"
        )
    c.close()


if __name__ == "__main__":
    spec = json.loads(sys.argv[2])
    {"produce": produce, "consume": consume}[sys.argv[1]](spec)
