"""Client processes for the plugin tests (run as scripts, one process per
client, so that every client has its own engine and keys really travel over
the control topic): ``produce`` and ``consume`` with confluent-kafka from
PyPI, whose bundled librdkafka loads the plugin. Tests start them with
``spawn``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer

PLUGIN = Path(__file__).resolve().parents[2] / "target" / "release" / "libkafka_e2ee.so"


def spawn(mode: str, spec: dict, log: Path | None = None) -> subprocess.Popen:
    """Runs ``mode`` (produce or consume) with ``spec`` in its own process;
    its output goes to a pipe, or to ``log`` (which no unread pipe can stall)."""
    return subprocess.Popen([sys.executable, __file__, mode, json.dumps(spec)],
                            stdout=open(log, "w") if log else subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def conf(args: dict) -> dict:
    # plugin.library.paths must come before the e2ee.* properties.
    c = {"bootstrap.servers": args["bootstrap"], "plugin.library.paths": args["plugin"]}
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
    delivered, failed = [], []
    acked = open(args["acked"], "a", buffering=1) if "acked" in args else None

    def report(err, msg):
        if err:
            failed.append(str(err))
        else:
            # The delivery report sees the original payload.
            delivered.append(msg.value().decode())
            if acked:
                acked.write(msg.value().decode() + "\n")

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
