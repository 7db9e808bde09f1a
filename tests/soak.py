"""Load and soak on a real broker: two producers (Java EncryptingSerializer and
the librdkafka plugin under confluent-kafka) and three consumer groups (Java
DecryptingDeserializer, Java E2eeConsumerInterceptor, librdkafka plugin), with
a key rotation every 5 s. Every record carries its producer and sequence
number, so loss and duplicates are exact.

    scripts/soak --minutes 10 --rate 4000      (documented in docs/PERFORMANCE.md, "Soak")
    python3 tests/soak.py --seconds 50 --rate 1000

It asserts: every producer kept to its rate and had every record acked; every
group got every acked record exactly once, with none undecryptable and none
garbled; the consumer lag stayed bounded; keys rotated; and the RSS of every
client process grew by less than 10% from the end of warm-up (the first 20%
of the run) to the end. Prints a summary; exits 1 if any property fails.
tests/integration/test_soak.py runs a short version in the test command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import broker as test_broker  # noqa: E402

ROOT = test_broker.ROOT
CLI = ROOT / "target" / "release" / "kafka-e2ee"
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
JAR = ROOT / "java-interceptor" / "target" / "kafka-e2ee-0.1.0.jar"
TEST_CLASSES = ROOT / "java-interceptor" / "target" / "test-classes"
LOG4J = ROOT / "scripts" / "kafka" / "soak-log4j2.properties"
CLIENT_PY = Path(__file__).resolve().parent / "soak_client.py"

ROTATION_MS = 5000
# Keys are deleted 2 minutes after their epoch: a long run exercises deletion
# too, and a consumer that fell further behind than that would fail.
RETENTION_MS = 120_000
WARM_UP = 0.2  # of the producing time
RSS_GROWTH_LIMIT = 0.10
LAG_LIMIT_S = 15  # the most a group may fall behind, in seconds of production
DRAIN_S = 120  # after producing ends, to catch up
KEPT_UP_SLACK = 0.05  # a producer may finish its quota at most 5% (+2 s) late


class Client:
    """One client process; keeps the last STATUS line and the SENT/FINAL lines."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name = name
        self.log = log
        self.stderr = open(log, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, cwd=ROOT)
        self.lines: dict[str, dict[str, str]] = {}
        self.rss: list[tuple[float, int]] = []  # (seconds since start of producing, kB)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            what, *kv = line.split()
            self.lines[what] = dict(x.split("=", 1) for x in kv if "=" in x)

    def get(self, what: str, key: str, default: int = 0) -> int:
        try:
            return int(self.lines.get(what, {}).get(key, default))
        except ValueError:
            return default

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def sample_rss(self, t: float) -> None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss.append((t, int(line.split()[1])))
        except OSError:
            pass

    def stop(self, timeout: float = 60) -> None:
        """Closes stdin (the client prints FINAL and exits) and waits."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        self.stderr.close()


def wait_until(cond, timeout: float, what: str, clients: list[Client]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for c in clients:
            if c.proc.poll() is not None:
                raise RuntimeError(f"{c.name} exited with {c.proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Result:
    seconds: int
    rate: int
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)

    def check(self, ok: bool, text: str) -> None:
        if not ok:
            self.failures.append(text)

    def summary(self) -> str:
        verdict = ["PASS"] if not self.failures else ["FAIL: " + f for f in self.failures]
        return "\n".join(self.lines + verdict)


def java_classpath() -> str:
    for f in (JAR, TEST_CLASSES / "dev" / "kafkae2ee" / "it" / "SoakClient.class", CLI, PLUGIN):
        if not f.exists():
            raise RuntimeError(f"{f} is missing: run scripts/test release java first")
    cp = subprocess.run([str(test_broker.TEST_BROKER), "classpath"], capture_output=True, text=True,
                        check=True).stdout.strip()
    return f"{cp}:{JAR}:{TEST_CLASSES}"


def java_argv(cp: str, *args: str) -> list[str]:
    # A fixed, pre-touched heap: the RSS check then sees native and JVM
    # growth, not the heap being committed lazily as the collector pleases.
    return ["java", "-Xms256m", "-Xmx256m", "-XX:+AlwaysPreTouch", "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={LOG4J}", "-cp", cp, "dev.kafkae2ee.it.SoakClient", *args]


def write_props(path: Path, props: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def run(seconds: int, rate: int, work: Path, size: int = 100, partitions: int = 3,
        log=lambda s: print(s, flush=True)) -> Result:
    """Runs the soak for ``seconds`` of producing at ``rate`` records/s in
    total (half per producer) on a broker of its own under ``work``."""
    res = Result(seconds, rate)
    cp = java_classpath()
    work.mkdir(parents=True, exist_ok=True)
    cli = lambda *a: subprocess.run([str(CLI), *a], check=True, capture_output=True, text=True)  # noqa: E731
    cli("authority", "init", "--out", str(work / "authority"))
    for name, grants in (("writer", ("--produce", "*", "--consume", "*")), ("reader", ("--consume", "*"))):
        cli("credential", "issue", "--authority", str(work / "authority"), "--name", name, *grants,
            "--out", str(work / f"{name}.cred"))

    def e2ee(who: str) -> dict[str, str]:
        return {"e2ee.credential": str(work / f"{who}.cred"), "e2ee.trust": str(work / "authority" / "trust"),
                "e2ee.key.rotation.ms": str(ROTATION_MS), "e2ee.key.retention.ms": str(RETENTION_MS)}

    broker = test_broker.start(work / "broker")
    clients: list[Client] = []
    try:
        topic = "soak"
        broker.create_topic(topic, partitions)
        per_producer = rate // 2
        capacity = per_producer * seconds + 1
        string_de = "org.apache.kafka.common.serialization.StringDeserializer"
        base = {"bootstrap.servers": broker.bootstrap, "auto.offset.reset": "earliest"}
        groups = [
            Client("java-deserializer", java_argv(cp, "consume", str(write_props(work / "deser.properties", {
                **base, "group.id": "soak-deserializer", "key.deserializer": string_de,
                "value.deserializer": "dev.kafkae2ee.it.SoakClient$KeyIdCountingDeserializer",
                "e2ee.inner.value.deserializer": string_de, **e2ee("reader")})), topic, "2", str(capacity)),
                work / "java-deserializer.log"),
            Client("java-interceptor", java_argv(cp, "consume", str(write_props(work / "icpt.properties", {
                **base, "group.id": "soak-interceptor", "key.deserializer": string_de,
                "value.deserializer": string_de, "value.deserializer.encoding": "ISO-8859-1",
                "interceptor.classes": "dev.kafkae2ee.E2eeConsumerInterceptor", **e2ee("reader")})),
                topic, "2", str(capacity)), work / "java-interceptor.log"),
            Client("librdkafka-plugin", [sys.executable, str(CLIENT_PY), "consume", json.dumps({
                "topic": topic, "producers": 2, "capacity": capacity,
                "conf": {"bootstrap.servers": broker.bootstrap, "plugin.library.paths": str(PLUGIN),
                         **e2ee("reader"), "group.id": "soak-plugin", "auto.offset.reset": "earliest"}})],
                work / "librdkafka-plugin.log"),
        ]
        clients += groups
        wait_until(lambda: all("STATUS" in g.lines for g in groups), 120, "the consumers to start", clients)
        producers = [
            Client("java-producer", java_argv(cp, "produce", str(write_props(work / "producer.properties", {
                "bootstrap.servers": broker.bootstrap, "linger.ms": "5",
                "key.serializer": "org.apache.kafka.common.serialization.StringSerializer",
                "value.serializer": "dev.kafkae2ee.EncryptingSerializer",
                "e2ee.inner.value.serializer": "org.apache.kafka.common.serialization.StringSerializer",
                **e2ee("writer")})), topic, "0", str(per_producer), str(seconds), str(size)),
                work / "java-producer.log"),
            Client("librdkafka-producer", [sys.executable, str(CLIENT_PY), "produce", json.dumps({
                "topic": topic, "id": 1, "rate": per_producer, "seconds": seconds, "size": size,
                "conf": {"bootstrap.servers": broker.bootstrap, "plugin.library.paths": str(PLUGIN),
                         **e2ee("writer"),
                         # The Java deserializer group cannot see record keys.
                         "e2ee.bind.key": "false",
                         "linger.ms": 5, "enable.idempotence": True}})],
                work / "librdkafka-producer.log"),
        ]
        clients += producers
        # Both producers made: they start sending together, and the run's clock with them.
        wait_until(lambda: all("READY" in p.lines for p in producers), 120, "the producers to start", clients)
        # A consumer that asks a producer for a key before the producer's control plane
        # reads the control topic is answered only at its next retry (backing off up to
        # 30 s): start sending once every Java control plane is running. (The plugin's
        # starts with rd_kafka_new and says nothing; it is quicker than Java's, and if
        # it were late the warm-up would absorb the retry.)
        java = [c for c in clients if c.proc.args[0] == "java"]
        wait_until(lambda: all(c.logged("control plane running") for c in java), 120,
                   "the Java control planes to run", clients)
        for p in producers:
            p.proc.stdin.write("go\n")
            p.proc.stdin.flush()
        t0 = time.monotonic()
        max_lag = {g.name: 0 for g in groups}
        max_behind = {p.name: 0 for p in producers}
        next_log = 0.0
        while not all("SENT" in p.lines for p in producers):
            t = time.monotonic() - t0
            for c in clients:
                if c.proc.poll() is not None:
                    raise RuntimeError(f"{c.name} exited with {c.proc.returncode}; see {work}/{c.name}.log")
                c.sample_rss(t)
            acked = sum(p.get("STATUS", "acked") for p in producers)
            for p in producers:
                max_behind[p.name] = max(max_behind[p.name], p.get("STATUS", "due") - p.get("STATUS", "sent"))
            if t > seconds * WARM_UP:
                for g in groups:
                    max_lag[g.name] = max(max_lag[g.name], acked - g.get("STATUS", "records"))
            if t >= next_log:
                log(f"[{t:5.0f}s] acked {acked}  " + "  ".join(
                    f"{g.name} {g.get('STATUS', 'records')}" for g in groups))
                next_log += max(5.0, seconds / 20)
            if t > seconds * (1 + KEPT_UP_SLACK) + 120:
                raise RuntimeError("the producers did not finish sending")
            time.sleep(1)
        produced_s = time.monotonic() - t0
        for c in clients:
            c.sample_rss(produced_s)
        total = sum(p.get("SENT", "acked") for p in producers)
        drain0 = time.monotonic()
        try:
            wait_until(lambda: all(g.get("STATUS", "records") >= total for g in groups), DRAIN_S,
                       "the consumers to catch up", clients)
        except RuntimeError as e:
            res.check(False, str(e))
        drain_s = time.monotonic() - drain0
        for g in groups:  # the groups first: the producers serve the keys
            g.stop()
        for p in producers:
            p.stop()

        res.say(f"soak: {seconds}s of producing at {rate} records/s ({size}-byte values, {partitions} partitions), "
                f"key rotation every {ROTATION_MS} ms, retention {RETENTION_MS} ms")
        achieved = total / produced_s
        res.say(f"achieved: {total} records acked in {produced_s:.1f}s = {achieved:.0f} records/s; "
                f"all groups caught up {drain_s:.1f}s after the last send")
        # Epochs as the deserializer group saw them: distinct key ids in the e2ee headers.
        epochs_seen = [int(x) for x in groups[0].lines.get("FINAL", {}).get("epochs", "").split(",") if x]
        for i, p in enumerate(producers):
            f = p.lines.get("FINAL", {})
            sent, acked, failed = (int(f.get(k, -1)) for k in ("sent", "acked", "failed"))
            epochs = epochs_seen[i] if i < len(epochs_seen) else -1
            took = float(p.lines.get("SENT", {}).get("seconds", "inf"))
            res.say(f"  {p.name:20} sent {sent} acked {acked} failed {failed} epochs {epochs} "
                    f"in {took:.1f}s (most behind schedule: {max_behind[p.name]} records)")
            res.check(sent == per_producer * seconds, f"{p.name} sent {sent} of {per_producer * seconds}")
            res.check(acked == sent and failed == 0, f"{p.name}: {acked} acked, {failed} failed of {sent}")
            res.check(took <= seconds * (1 + KEPT_UP_SLACK) + 2, f"{p.name} did not keep up: {took:.1f}s")
            # One epoch per rotation period (the first starts at the first record).
            want = int(seconds * 1000 / ROTATION_MS * 0.8)
            res.check(epochs >= want, f"{p.name} used {epochs} epochs, expected at least {want}")
        acked_by = [p.get("FINAL", "acked") for p in producers]
        for g in groups:
            f = g.lines.get("FINAL", {})
            distinct = [int(x) for x in f.get("distinct", "").split(",") if x]
            lost = sum(a - d for a, d in zip(acked_by, distinct)) if len(distinct) == 2 else -1
            dup, undec, garbled = (int(f.get(k, -1)) for k in ("duplicates", "undecryptable", "garbled"))
            res.say(f"  {g.name:20} records {f.get('records')} lost {lost} undecryptable {undec} "
                    f"duplicates {dup} garbled {garbled} (max lag after warm-up: {max_lag[g.name]} records)")
            res.check(lost == 0, f"{g.name} lost {lost} records")
            res.check(undec == 0, f"{g.name}: {undec} undecryptable")
            res.check(garbled == 0, f"{g.name}: {garbled} values that no producer sent")
            res.check(dup == 0, f"{g.name}: {dup} duplicates")
            res.check(max_lag[g.name] <= rate * LAG_LIMIT_S,
                      f"{g.name} fell {max_lag[g.name]} records behind (limit {LAG_LIMIT_S}s of production)")
        with open(work / "rss.csv", "w") as out:
            out.write("client,seconds,rss_kb\n")
            for c in clients:
                out.writelines(f"{c.name},{t:.1f},{kb}\n" for t, kb in c.rss)
        res.say(f"  RSS (kB) at start / after warm-up ({WARM_UP:.0%} = {seconds * WARM_UP:.0f}s) / end, growth:")
        for c in clients:
            if not c.rss:
                res.check(False, f"{c.name}: no RSS samples")
                continue
            start = c.rss[0][1]
            warm = next((kb for t, kb in c.rss if t >= seconds * WARM_UP), c.rss[-1][1])
            end = c.rss[-1][1]
            growth = (end - warm) / warm
            res.say(f"  {c.name:20} {start} / {warm} / {end}  {growth:+.1%}")
            res.check(growth < RSS_GROWTH_LIMIT, f"{c.name} RSS grew {growth:.1%} after warm-up")
        return res
    finally:
        for c in clients:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
        test_broker.stop(work / "broker")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, help="minutes of producing (default 10)")
    ap.add_argument("--seconds", type=int, help="seconds of producing (instead of --minutes)")
    ap.add_argument("--rate", type=int, default=4000, help="records/s in total over both producers")
    ap.add_argument("--size", type=int, default=100, help="value size in bytes")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="work directory (kept; default: a temporary one, removed)")
    a = ap.parse_args()
    seconds = a.seconds or int((a.minutes or 10) * 60)
    if a.dir:
        res = run(seconds, a.rate, a.dir, a.size, a.partitions)
    else:
        with tempfile.TemporaryDirectory(prefix="kafka-e2ee-soak-") as d:
            res = run(seconds, a.rate, Path(d), a.size, a.partitions)
    print(res.summary())
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
