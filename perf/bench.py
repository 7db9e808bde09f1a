"""The published client benchmark: plaintext and encrypted side by side, on the
project's test broker, with real clients (see docs/PERFORMANCE.md).

Run through scripts/bench. For every repeat, record size and client case it
runs the plaintext and the encrypted variant back to back with identical
settings, alternating which goes first, so load drift on a shared machine hits
both alike. Every encrypted run is checked: the broker's segment files of its
topic must not hold the plaintext marker that every value carries (and those of
its plaintext twin must, or the check itself is broken), and every record must
have been acknowledged and consumed. Any failure fails the bench.

Cases (client x direction):
  java-interceptor  Kafka's ProducerPerformance / ConsumerPerformance, which
                    force byte-array serdes: E2eeProducerInterceptor /
                    E2eeConsumerInterceptor.
  java-serializer   perf/java JavaBench: EncryptingSerializer /
                    DecryptingDeserializer around ByteArray serdes.
  librdkafka        perf/rdkafka_bench.c on Debian's librdkafka, the plugin
                    loaded by plugin.library.paths.
Latency (p50/p99/p99.9/max at a fixed rate): java-serializer and librdkafka.

Three modes per throughput case, alternating: plaintext, ceiling and
encrypted. The ceiling is the same client with a bench-only hook at the
product's hook points that does nothing but AES-256-GCM over each value with a
fixed key (perf/ceiling-plugin for librdkafka, perf/java Ceiling for Java):
what encryption at that place costs at the least. It is not encryption and
loads only with KAFKA_E2EE_BENCH_CEILING=not-encryption, which only its runs
get. efficiency = encrypted / ceiling.

--sweep: produce-to-consume latency and client CPU per MB at rates from 10%
to 100% of the plaintext throughput ceiling, plaintext against encrypted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import broker as test_broker  # noqa: E402  (the project's broker helper)

PERF = ROOT / "perf"
BUILD = ROOT / "target" / "perf"
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
CLI = ROOT / "target" / "release" / "kafka-e2ee"
JAVA_DIR = ROOT / "java-interceptor"
NATIVE_VERSION = "0.1.0"
JAR = JAVA_DIR / "target" / f"kafka-e2ee-{NATIVE_VERSION}.jar"
C_DRIVER = BUILD / "rdkafka_bench"
CEILING_CRATE = PERF / "ceiling-plugin"
CEILING_PLUGIN = BUILD / "ceiling" / "release" / "libe2ee_bench_ceiling.so"
# Only the ceiling runs get this: without it the ceiling hooks refuse to load.
CEILING_ENV = {"KAFKA_E2EE_BENCH_CEILING": "not-encryption"}
CEILING_JAVA = "dev.kafkae2ee.perf.Ceiling$"
JAVA_CLASSES = BUILD / "java"
MARKER = b"E2EE-BENCH-PLAINTEXT-MARKER:"  # the drivers use the same one

SIZES = [100, 1024, 10240, 102400]
# Records per run: enough that each timed window lasts seconds on a loaded
# 2-core machine; the same for plaintext and encrypted.
RECORDS = {100: 200_000, 1024: 100_000, 10240: 20_000, 102400: 3_000}
QUICK_RECORDS = 5_000
# Client JVMs (perf tools and JavaBench alike): full JIT, a fixed heap.
CLIENT_JVM = ["-XX:+UseSerialGC", "-Xms512m", "-Xmx1g", "-Xss1m", "-Xshare:auto"]
# Latency JVMs (both sides of every pair alike): no collector at all (Epsilon)
# in a heap that holds a whole run's garbage, so p99 measures the clients and
# not a young-generation pause (with SerialGC, p99 was 10-21 ms either way:
# GC noise larger than the cost). A run allocates well under 4 GB.
LATENCY_JVM = ["-XX:+UnlockExperimentalVMOptions", "-XX:+UseEpsilonGC", "-Xms1g", "-Xmx8g", "-Xss1m",
               "-Xshare:auto"]
# The sweep's Java runs: G1, the JVM's default collector, in a fixed heap.
# Epsilon (LATENCY_JVM) never collects, and near the throughput ceiling a run
# allocates more than its heap (JavaBench latency at 99,000 records/s of 1 KiB
# ran out of 8 GB, 2026-12-05); the sweep's p99 therefore includes G1's pauses,
# as a production client's would.
SWEEP_JVM = ["-XX:+UseG1GC", "-Xms2g", "-Xmx2g", "-Xss1m", "-Xshare:auto"]
# The broker's segment files live in memory (a directory in /dev/shm, removed
# at the end; --broker-disk keeps them on disk): what is measured is the
# clients, and this VM's disk is not. On disk, with 2 GB of dirty pages from
# the runs before, writeback throttled the broker and made produce rates
# bimodal (librdkafka 10 KiB: 9,300 against 75,500 records/s for the same
# case, 2026-12-05). Deleted topics' files go after 1 s, not 60.
BROKER_TMPFS = Path("/dev/shm")
# The broker: full JIT (test-broker defaults to C1 only for fast test startup).
BROKER_ENV = {"KAFKA_BROKER_HEAP": "1g", "KAFKA_BROKER_JVM_OPTS": "-XX:TieredStopAtLevel=4"}
# --quick is a smoke test of the whole pipeline, not a measurement: C1 only,
# which starts the many short JVMs faster.
QUICK_JVM = ["-XX:TieredStopAtLevel=1"]
QUICK_BROKER_ENV = {"KAFKA_BROKER_HEAP": "512m"}
# A latency consumer that cannot get within 50 ms of its producer gets this
# much more warm-up before measuring starts anyway (the result says caught_up).
WARMUP_MAX_MS = 30_000
QUICK_WARMUP_MAX_MS = 5_000
BYTES = "org.apache.kafka.common.serialization.ByteArraySerializer"
BYTES_DE = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
MODES = ("plaintext", "encrypted")  # latency pairs
THROUGHPUT_MODES = ("plaintext", "ceiling", "encrypted")
SWEEP_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


class BenchError(RuntimeError):
    """A run failed, lost records, or an encrypted run left plaintext on the broker."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def mode_env(mode: str) -> dict:
    """The environment of a client of this mode: only ceiling runs may load the ceiling hooks."""
    return {**os.environ, **CEILING_ENV} if mode == "ceiling" else dict(os.environ)


def children_cpu() -> float:
    """CPU seconds of every child reaped so far (the kernel's accounting, as /proc reports it)."""
    import resource

    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def per_mb(cpu_s: float, records: float, size: int) -> float | None:
    mb = records * size / 1048576.0
    return cpu_s / mb if cpu_s is not None and cpu_s >= 0 and mb > 0 else None


def check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise BenchError(f"{what} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def last_json(out: str, what: str) -> dict:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"{what} printed no JSON result:\n{out[-2000:]}")


# ---- building ---------------------------------------------------------------


def newer(target: Path, *sources: Path) -> bool:
    """True if target exists and is at least as new as every source."""
    if not target.exists():
        return False
    t = target.stat().st_mtime
    return all(s.stat().st_mtime <= t for s in sources)


def ensure_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("installing matplotlib with pip (for the plot)")
        check(run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
                  env={**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}), "pip install matplotlib")


def build() -> str:
    """Builds what the bench runs; returns the Java classpath (Kafka, the jar, JavaBench)."""
    log("building the plugin and the jar (no-ops when up to date)")
    # Built alone, as scripts/build-native does: building the ffi crate together
    # with the CLI unifies other features and recompiles it each time they alternate.
    if not CLI.exists():
        check(run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-cli"], timeout=3600, cwd=ROOT),
              "cargo build --release -p kafka-e2ee-cli")
    staged = Path(check(run([str(ROOT / "scripts" / "build-native")], timeout=3600, cwd=ROOT),
                        "scripts/build-native").stdout.strip().splitlines()[-1])
    java_sources = list((JAVA_DIR / "src" / "main").rglob("*.java")) + [JAVA_DIR / "pom.xml"]
    if not newer(JAR, ROOT / staged, *java_sources):
        check(run(["mvn", "-B", "-q", "-f", str(JAVA_DIR / "pom.xml"), "package", "-DskipTests"], timeout=3600,
                  cwd=ROOT), "mvn package")
    BUILD.mkdir(parents=True, exist_ok=True)
    c_src = PERF / "rdkafka_bench.c"
    if not newer(C_DRIVER, c_src):
        check(run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(C_DRIVER), str(c_src),
                   "-lrdkafka", "-lpthread"]), "gcc rdkafka_bench.c (needs librdkafka-dev)")
    ceiling_src = [CEILING_CRATE / "Cargo.toml", CEILING_CRATE / "Cargo.lock", *(CEILING_CRATE / "src").rglob("*.rs")]
    if not newer(CEILING_PLUGIN, *ceiling_src):
        check(run(["cargo", "build", "--release", "-q", "--manifest-path", str(CEILING_CRATE / "Cargo.toml"),
                   "--target-dir", str(BUILD / "ceiling")], timeout=3600, cwd=ROOT),
              "cargo build perf/ceiling-plugin (needs librdkafka-dev)")
    kafka_cp = check(run([str(test_broker.TEST_BROKER), "classpath"]), "test-broker classpath").stdout.strip()
    java_dir = PERF / "java" / "dev" / "kafkae2ee" / "perf"
    java_src = [java_dir / "JavaBench.java", java_dir / "Ceiling.java"]
    if not all(newer(JAVA_CLASSES / "dev" / "kafkae2ee" / "perf" / f"{f.stem}.class", f) for f in java_src):
        check(run(["javac", "-Xlint:all", "-Werror", "-cp", kafka_cp, "-d", str(JAVA_CLASSES),
                   *map(str, java_src)]), "javac JavaBench.java Ceiling.java")
    return f"{kafka_cp}:{JAR}:{JAVA_CLASSES}"


# ---- the run's environment --------------------------------------------------


@dataclass
class Env:
    broker: test_broker.Broker
    work: Path
    classpath: str
    trust: Path
    writer: Path
    reader: Path
    keep_topics: bool
    log4j: Path
    jvm: list
    latency_jvm: list
    warmup_max_ms: int
    kex_hybrid: str = "prefer"
    jfr: Path | None = None
    data_dir: Path | None = None  # the broker's log.dirs
    admin: object = None
    topics: list = field(default_factory=list)

    def topic(self, case: str, mode: str, size: int) -> str:
        t = f"bench-{case}-{size}-{mode}-{uuid.uuid4().hex[:6]}"
        from confluent_kafka.admin import NewTopic

        for f in self.admin.create_topics([NewTopic(t, 1, 1)]).values():
            f.result(timeout=60)
        self.topics.append(t)
        return t

    def drop(self, topic: str) -> None:
        """Deletes a checked topic so a long run does not fill the disk."""
        if not self.keep_topics:
            for f in self.admin.delete_topics([topic]).values():
                f.result(timeout=60)

    def props(self, name: str, **kv) -> Path:
        lines = [f"bootstrap.servers={self.broker.bootstrap}"] + [f"{k}={v}" for k, v in kv.items()]
        path = self.work / f"{name}-{uuid.uuid4().hex[:6]}.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def e2ee(self, who: str, **kv) -> dict:
        return {"e2ee.credential": self.writer if who == "writer" else self.reader, "e2ee.trust": self.trust,
                "e2ee.kex.hybrid": self.kex_hybrid, **kv}

    def java(self, main: str, *args: str, timeout: float = 900, mode: str = "plaintext",
             jvm: list | None = None) -> subprocess.CompletedProcess:
        return run(["java", *(self.jvm if jvm is None else jvm), *self.recording(main, args, mode),
                    f"-Dlog4j2.configurationFile={self.log4j}", "-cp", self.classpath, main, *args],
                   timeout=timeout, env=mode_env(mode))

    def recording(self, main: str, args: tuple, mode: str) -> list:
        """With --jfr: a Flight Recorder profile of this JVM (perf/jfr_top.py reads it)."""
        if self.jfr is None:
            return []
        what = args[0] if main.endswith("JavaBench") else main.rsplit(".", 1)[-1]
        name = f"{len(list(self.jfr.glob('*.jfr'))):03d}-{what}-{mode}.jfr"
        return [f"-XX:StartFlightRecording=filename={self.jfr / name},settings=profile,method-profiling=max",
                "-XX:FlightRecorderOptions=stackdepth=128"]

    def segment_files(self, topic: str) -> list[Path]:
        return sorted((self.data_dir or self.broker.data_dir).glob(f"{topic}-*/*.log"))

    def check_disk(self, topic: str, mode: str) -> dict:
        """The broker's own segment files: no marker after an encrypted run;
        the marker present after a plaintext run (so the check can see it).
        Read in chunks: a sweep point's topic can hold gigabytes."""
        found = size = 0
        for path in self.segment_files(topic):
            found += count_in_file(path, MARKER)
            size += path.stat().st_size
        if mode != "plaintext" and found:
            raise BenchError(f"PLAINTEXT ON THE BROKER: {found} markers in the segment files of {topic}")
        if mode == "plaintext" and not found:
            raise BenchError(f"the plaintext run's marker is not in the segment files of {topic}: the check is blind")
        return {"segment_bytes": size, "markers_on_disk": found}


def count_in_file(path: Path, needle: bytes, chunk: int = 64 << 20) -> int:
    """Occurrences of needle in the file, without holding it in memory: chunks
    overlap by len(needle) - 1 bytes, so none is missed or counted twice."""
    found, tail = 0, b""
    with path.open("rb") as f:
        while block := f.read(chunk):
            data = tail + block
            found += data.count(needle)
            tail = data[-(len(needle) - 1):] if len(needle) > 1 else b""
    return found


def credentials(work: Path) -> tuple[Path, Path, Path]:
    auth = work / "authority"
    check(run([str(CLI), "authority", "init", "--out", str(auth)]), "kafka-e2ee authority init")
    for name, produce in (("writer", "*"), ("reader", "none")):
        check(run([str(CLI), "credential", "issue", "--authority", str(auth), "--name", f"bench-{name}",
                   "--produce", produce, "--consume", "*", "--out", str(work / f"{name}.cred")]),
              "kafka-e2ee credential issue")
    return auth / "trust", work / "writer.cred", work / "reader.cred"


# ---- the cases --------------------------------------------------------------


def payload_file(work: Path, size: int) -> Path:
    """Values for ProducerPerformance (--payload-file: text lines): marker + filler, exactly size bytes."""
    path = work / f"payload-{size}.txt"
    if not path.exists():
        filler = "".join(chr(ord("a") + i % 26) for i in range(size))
        path.write_bytes((MARKER.decode() + filler)[:size].encode() + b"\n")
    return path


def warmup_of(records: int) -> int:
    return max(1, records // 10)


def case_java_interceptor(env: Env, mode: str, size: int, records: int) -> dict:
    """Kafka's perf tools with the interceptors: the producer's steady-state
    line, then the consumer's fetch figures (which exclude the group join).
    Before the timed consumer, a priming consumer with the same e2ee.state.dir
    gets the key (from a key holder reopening the exited producer's state), so
    the timed window holds no key fetch; its log is checked for a key wait."""
    topic = env.topic("java-interceptor", mode, size)
    total = records + warmup_of(records)
    state = env.work / f"state-{topic}"

    def hooks(side: str) -> dict:
        if mode == "encrypted":
            cls = "E2eeProducerInterceptor" if side == "p" else "E2eeConsumerInterceptor"
            return env.e2ee("writer" if side == "p" else "reader",
                            **{"interceptor.classes": f"dev.kafkae2ee.{cls}", "e2ee.state.dir": state / side})
        if mode == "ceiling":
            return {"interceptor.classes": CEILING_JAVA + ("ProducerHook" if side == "p" else "ConsumerHook")}
        return {}

    producer = env.props("perf-producer", acks=1, **hooks("p"))
    consumer = env.props("perf-consumer", **hooks("c"))
    holder = env.props("holder", **{"key.serializer": BYTES, "value.serializer": BYTES}, **hooks("p"))
    prime_consumer = env.props("prime", **{"key.deserializer": BYTES_DE, "value.deserializer": BYTES_DE},
                               **hooks("c"))

    # Whole-process CPU of each perf tool (JVM start and warm-up included: the
    # tools cannot be instrumented), from the kernel's accounting of reaped children.
    cpu0 = children_cpu()
    p = check(env.java("org.apache.kafka.tools.ProducerPerformance", "--bootstrap-server", env.broker.bootstrap,
                       "--topic", topic, "--num-records", str(total), "--warmup-records", str(total - records),
                       "--payload-file", str(payload_file(env.work, size)), "--throughput", "-1",
                       "--command-config", str(producer), mode=mode), "ProducerPerformance")
    produce_cpu = children_cpu() - cpu0
    steady = re.search(r"(\d+) steady state records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", p.stdout)
    whole = re.search(r"^(\d+) records sent, .* 50th", p.stdout, re.M)  # the summary, not a progress line
    if not steady or not whole or int(whole.group(1)) != total:
        raise BenchError(f"ProducerPerformance did not send {total} records:\n{p.stdout[-2000:]}")
    if "ERROR" in p.stderr:
        raise BenchError(f"ProducerPerformance logged errors:\n{p.stderr[-2000:]}")

    pr = last_json(check(env.java("dev.kafkae2ee.perf.JavaBench", "prime", str(holder), str(prime_consumer), topic,
                                  mode=mode), "JavaBench prime").stdout, "JavaBench prime")
    cpu0 = children_cpu()
    c = check(env.java("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", env.broker.bootstrap,
                       "--topic", topic, "--num-records", str(total), "--timeout", "60000",
                       "--command-config", str(consumer), mode=mode), "ConsumerPerformance")
    consume_cpu = children_cpu() - cpu0
    rows = [line.split(", ") for line in c.stdout.splitlines() if re.match(r"^\d{4}-", line)]
    if not rows or int(rows[-1][4]) != total:
        raise BenchError(f"ConsumerPerformance did not consume {total} records:\n{c.stdout[-2000:]}\n{c.stderr[-2000:]}")
    if "dropped" in c.stderr or "ERROR" in c.stderr:
        raise BenchError(f"ConsumerPerformance logged errors (a dropped record?):\n{c.stderr[-2000:]}")
    waited = c.stderr.count("waiting up to")
    if waited:
        raise BenchError(f"the timed ConsumerPerformance run waited for a key ({waited} times) despite priming")
    row = rows[-1]
    disk = env.check_disk(topic, mode)
    env.drop(topic)
    return {
        "topic": topic, "records": total, "timed_produce_records": int(steady.group(1)),
        "produce": {"records_per_s": float(steady.group(2)), "mb_per_s": float(steady.group(3)),
                    "cpu_s": round(produce_cpu, 3), "cpu_s_per_mb": per_mb(produce_cpu, total, size),
                    "cpu_scope": "process"},
        "consume": {"records_per_s": float(row[9]), "mb_per_s": float(row[8]), "rebalance_ms": int(row[6]),
                    "fetch_ms": int(row[7]), "consumed": int(row[4]), "cpu_s": round(consume_cpu, 3),
                    "cpu_s_per_mb": per_mb(consume_cpu, total, size), "cpu_scope": "process"},
        "prime": pr, "disk": disk,
    }


def serializer_props(env: Env, mode: str, **extra) -> tuple[Path, Path]:
    if mode == "ceiling":
        p = env.props("ser-producer", acks=1, **{"key.serializer": BYTES,
                      "value.serializer": CEILING_JAVA + "SerializerHook"}, **extra)
        c = env.props("ser-consumer", **{"key.deserializer": BYTES_DE,
                      "value.deserializer": CEILING_JAVA + "DeserializerHook"})
    elif mode == "encrypted":
        p = env.props("ser-producer", acks=1, **{"key.serializer": BYTES,
                      "value.serializer": "dev.kafkae2ee.EncryptingSerializer",
                      "e2ee.inner.value.serializer": BYTES}, **env.e2ee("writer"), **extra)
        c = env.props("ser-consumer", **{"key.deserializer": BYTES_DE,
                      "value.deserializer": "dev.kafkae2ee.DecryptingDeserializer",
                      "e2ee.inner.value.deserializer": BYTES_DE}, **env.e2ee("reader"))
    else:
        p = env.props("ser-producer", acks=1, **{"key.serializer": BYTES, "value.serializer": BYTES}, **extra)
        c = env.props("ser-consumer", **{"key.deserializer": BYTES_DE, "value.deserializer": BYTES_DE})
    return p, c


def case_java_serializer(env: Env, mode: str, size: int, records: int) -> dict:
    topic = env.topic("java-serializer", mode, size)
    p, c = serializer_props(env, mode)
    what = "JavaBench throughput"
    r = last_json(check(env.java("dev.kafkae2ee.perf.JavaBench", "throughput", str(p), str(c), topic, str(records),
                                 str(size), str(warmup_of(records)), mode=mode), what).stdout, what)
    disk = env.check_disk(topic, mode)
    env.drop(topic)
    return {"topic": topic, "records": records + warmup_of(records), "produce": window_cpu(r["produce"]),
            "consume": window_cpu(r["consume"]), "disk": disk}


def window_cpu(side: dict) -> dict:
    """CPU per MB of a driver's timed window (JavaBench, rdkafka_bench: /proc/self/stat)."""
    mb = side["mb_per_s"] * side["seconds"]
    cpu = side.get("cpu_s", -1)
    return {**side, "cpu_s_per_mb": cpu / mb if cpu >= 0 and mb > 0 else None, "cpu_scope": "window"}


def rdkafka_config(env: Env, mode: str, who: str) -> list[str]:
    if mode == "ceiling":
        return ["--config", f"plugin.library.paths={CEILING_PLUGIN}"]
    if mode != "encrypted":
        return []
    # plugin.library.paths must come before the e2ee.* properties.
    kv = {"plugin.library.paths": PLUGIN, **env.e2ee(who)}
    return [a for k, v in kv.items() for a in ("--config", f"{k}={v}")]


# Both modes' consumers may queue the whole run. With librdkafka's defaults
# (queued.min.messages 100,000, queued.max.messages.kbytes 65,536) a consumer
# that drains its queue more slowly than the fetcher fills it (any consumer
# that does work per record, encrypted or not) crosses the threshold and
# librdkafka pauses fetching for about a second: the window then measured that
# timer, not the per-record cost (100 B: 1.07 s encrypted against 0.12 s
# plaintext; 0.30 s encrypted with these settings). docs/PERFORMANCE.md.
RDKAFKA_CONSUMER_QUEUE = ["--config", "queued.min.messages=10000000",
                          "--config", "queued.max.messages.kbytes=2097151"]


def case_librdkafka(env: Env, mode: str, size: int, records: int) -> dict:
    """rdkafka_bench produce, which then stays up (--hold) to serve its keys,
    and rdkafka_bench consume in a second process."""
    topic = env.topic("librdkafka", mode, size)
    warmup = warmup_of(records)
    common = ["--bootstrap", env.broker.bootstrap, "--topic", topic, "--size", str(size)]
    producer = subprocess.Popen(
        [str(C_DRIVER), "produce", *common, "--records", str(records), "--warmup", str(warmup), "--hold",
         "--config", "acks=1", *rdkafka_config(env, mode, "writer")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mode_env(mode))
    try:
        line = producer.stdout.readline()  # its result; then it holds
        if not line.startswith("{"):
            producer.kill()
            out, err = producer.communicate(timeout=60)
            raise BenchError(f"rdkafka_bench produce failed:\n{line}{out}\n{err[-3000:]}")
        produced = json.loads(line)
        c = run([str(C_DRIVER), "consume", *common, "--records", str(records + warmup),
                 *RDKAFKA_CONSUMER_QUEUE, *rdkafka_config(env, mode, "reader")], timeout=900, env=mode_env(mode))
    finally:
        if producer.poll() is None:
            producer.stdin.close()
        try:
            producer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()
    consumed = last_json(c.stdout, "rdkafka_bench consume")
    if producer.returncode != 0:
        raise BenchError(f"rdkafka_bench produce: not every record was acknowledged: {produced}")
    check(c, "rdkafka_bench consume")
    disk = env.check_disk(topic, mode)
    env.drop(topic)
    return {"topic": topic, "records": records + warmup, "produce": window_cpu(produced),
            "consume": window_cpu(consumed), "disk": disk}


def latency_java(env: Env, mode: str, size: int, records: int, rate: int) -> dict:
    topic = env.topic("latency-java", mode, size)
    p, c = serializer_props(env, mode)
    what = "JavaBench latency"
    r = last_json(check(env.java("dev.kafkae2ee.perf.JavaBench", "latency", str(p), str(c), topic, str(records),
                                 str(size), str(rate), str(rate), str(env.warmup_max_ms), jvm=env.latency_jvm),
                        what).stdout, what)
    disk = env.check_disk(topic, mode)
    env.drop(topic)
    return {"topic": topic, **r, "cpu_s_per_mb": per_mb(r.get("cpu_s", -1), records, size), "disk": disk}


def latency_rdkafka(env: Env, mode: str, size: int, records: int, rate: int) -> dict:
    topic = env.topic("latency-librdkafka", mode, size)
    args = ["--bootstrap", env.broker.bootstrap, "--topic", topic, "--size", str(size), "--records", str(records),
            "--warmup", str(rate), "--rate", str(rate), "--warmup-max-ms", str(env.warmup_max_ms),
            "--producer-config", "acks=1"]
    if mode == "encrypted":
        args += ["--config", f"plugin.library.paths={PLUGIN}", "--config", f"e2ee.trust={env.trust}",
                 "--config", f"e2ee.kex.hybrid={env.kex_hybrid}",
                 "--producer-config", f"e2ee.credential={env.writer}",
                 "--consumer-config", f"e2ee.credential={env.reader}"]
    r = last_json(check(run([str(C_DRIVER), "latency", *args], timeout=900), "rdkafka_bench latency").stdout,
                  "rdkafka_bench latency")
    disk = env.check_disk(topic, mode)
    env.drop(topic)
    return {"topic": topic, **r, "cpu_s_per_mb": per_mb(r.get("cpu_s", -1), records, size), "disk": disk}


THROUGHPUT_CASES = {
    "java-interceptor": case_java_interceptor,
    "java-serializer": case_java_serializer,
    "librdkafka": case_librdkafka,
}
LATENCY_CASES = {"java-serializer": latency_java, "librdkafka": latency_rdkafka}


# ---- summary ----------------------------------------------------------------


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(runs: list[dict]) -> dict:
    """Per repeat (each group ran back to back): ratio = encrypted / plaintext and
    efficiency = encrypted / ceiling; then median and min-max over repeats.
    CPU seconds per MB per mode and side (producer and consumer processes apart)."""
    groups: dict[tuple, dict] = {}
    for r in runs:
        if r["kind"] in ("throughput", "latency"):
            groups.setdefault((r["kind"], r["client"], r["size"], r["repeat"]), {})[r["mode"]] = r["result"]
    throughput, latency = {}, {}
    for (kind, client, size, _), group in sorted(groups.items()):
        if kind == "throughput":
            if set(group) != set(THROUGHPUT_MODES):
                continue
            plain, ceil, enc = group["plaintext"], group["ceiling"], group["encrypted"]
            for direction in ("produce", "consume"):
                e = throughput.setdefault(f"{client}|{direction}|{size}", {
                    "ratios": [], "efficiencies": [], **{m: [] for m in THROUGHPUT_MODES},
                    **{f"cpu_{m}": [] for m in THROUGHPUT_MODES}})
                for m in THROUGHPUT_MODES:
                    e[m].append(group[m][direction]["records_per_s"])
                    cpu = group[m][direction].get("cpu_s_per_mb")
                    if cpu is not None:
                        e[f"cpu_{m}"].append(cpu)
                e["cpu_scope"] = enc[direction].get("cpu_scope", "window")
                e["ratios"].append(enc[direction]["records_per_s"] / plain[direction]["records_per_s"])
                e["efficiencies"].append(enc[direction]["records_per_s"] / ceil[direction]["records_per_s"])
                # The same question in cores: the ceiling's CPU per MB over the product's, per group.
                cpu_c, cpu_e = ceil[direction].get("cpu_s_per_mb"), enc[direction].get("cpu_s_per_mb")
                if cpu_c and cpu_e:
                    e.setdefault("cpu_efficiencies", []).append(cpu_c / cpu_e)
        else:
            if set(group) != set(MODES):
                continue
            plain, enc = group["plaintext"], group["encrypted"]
            e = latency.setdefault(f"{client}|{size}", {"caught_up": True})
            e["caught_up"] &= bool(plain.get("caught_up")) and bool(enc.get("caught_up"))
            for m in MODES:
                if group[m].get("cpu_s_per_mb") is not None:
                    e.setdefault("cpu", {}).setdefault(m, []).append(group[m]["cpu_s_per_mb"])
            for q in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
                d = e.setdefault(q, {"plaintext": [], "encrypted": [], "added": []})
                d["plaintext"].append(plain[q])
                d["encrypted"].append(enc[q])
                d["added"].append(enc[q] - plain[q])
    out_t = {}
    for key, e in throughput.items():
        client, direction, size = key.split("|")
        out_t[key] = {"client": client, "direction": direction, "size": int(size),
                      "plaintext_records_per_s": spread(e["plaintext"]),
                      "ceiling_records_per_s": spread(e["ceiling"]),
                      "encrypted_records_per_s": spread(e["encrypted"]),
                      "ratio": spread(e["ratios"]), "ratios": e["ratios"],
                      "efficiency": spread(e["efficiencies"]), "efficiencies": e["efficiencies"],
                      "cpu_efficiency": spread(e["cpu_efficiencies"]) if e.get("cpu_efficiencies") else None,
                      "cpu_s_per_mb": {m: spread(e[f"cpu_{m}"]) if e[f"cpu_{m}"] else None
                                       for m in THROUGHPUT_MODES},
                      "cpu_scope": e["cpu_scope"]}
    out_l = {}
    for key, e in latency.items():
        client, size = key.split("|")
        cpu = e.pop("cpu", {})
        out_l[key] = {"client": client, "size": int(size), "caught_up": e.pop("caught_up"),
                      "cpu_s_per_mb": {m: spread(cpu[m]) if cpu.get(m) else None for m in MODES},
                      **{q: {m: spread(v) for m, v in d.items()} for q, d in e.items()}}
    return {"throughput": out_t, "latency": out_l, "sweep": summarize_sweep(runs)}


def summarize_sweep(runs: list[dict]) -> list[dict]:
    """One row per client, mode and rate of --sweep (one run each)."""
    rows = []
    for r in runs:
        if r["kind"] != "sweep":
            continue
        res = r["result"]
        rows.append({"client": r["client"], "mode": r["mode"], "size": r["size"], "fraction": r["fraction"],
                     "rate": res["rate"], "mb_per_s": res["rate"] * r["size"] / 1048576.0,
                     "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "caught_up": res.get("caught_up"),
                     "cpu_s_per_mb": res.get("cpu_s_per_mb")})
    return sorted(rows, key=lambda x: (x["client"], x["mode"], x["rate"]))


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def cpu_cell(d: dict | None) -> str:
    if d is None:
        return "–"
    ms = d["median"] * 1000
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def cpu_eff_cell(d: dict | None) -> str:
    return "–" if d is None else f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})"


def table(summary: dict, repeats: int) -> str:
    lines = [f"Throughput, records/s (median of {repeats}); per back-to-back group, median (min-max): "
             "ratio = encrypted / plaintext, efficiency = encrypted / ceiling (the cipher alone at the same "
             "hook points). CPU ms per MB of values (plaintext / ceiling / encrypted), the side's own process: "
             "over the timed window, or (p) the whole process (Kafka's perf tools); CPU efficiency = ceiling CPU "
             "per MB / encrypted CPU per MB, per group, median", "",
             "| client | direction | size | plaintext rec/s | ceiling rec/s | encrypted rec/s | ratio | efficiency "
             "| efficiency spread | CPU ms/MB p / c / e | CPU efficiency |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(summary["throughput"].values(), key=lambda e: (e["client"], e["direction"] != "produce",
                                                                    e["size"])):
        cpu = " / ".join(cpu_cell(e["cpu_s_per_mb"][m]) for m in THROUGHPUT_MODES)
        scope = " (p)" if e["cpu_scope"] == "process" else ""
        lines.append(f"| {e['client']} | {e['direction']} | {size_label(e['size'])} | "
                     f"{e['plaintext_records_per_s']['median']:,.0f} | {e['ceiling_records_per_s']['median']:,.0f} | "
                     f"{e['encrypted_records_per_s']['median']:,.0f} | {e['ratio']['median']:.3f}x | "
                     f"**{e['efficiency']['median']:.3f}** | {e['efficiency']['min']:.3f}-{e['efficiency']['max']:.3f} "
                     f"| {cpu}{scope} | {cpu_eff_cell(e.get('cpu_efficiency'))} |")
    if summary.get("sweep"):
        lines += ["", "Rate sweep (--sweep): produce-to-consume latency and the client process's CPU per MB "
                  "(producer and consumer in one process) at fractions of the plaintext throughput ceiling", "",
                  "| client | mode | rate rec/s | MB/s | p50 ms | p99 ms | CPU ms/MB | caught up |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in summary["sweep"]:
            cpu = "–" if r["cpu_s_per_mb"] is None else f"{r['cpu_s_per_mb'] * 1000:.0f}"
            lines.append(f"| {r['client']} | {r['mode']} | {r['rate']:,} | {r['mb_per_s']:.1f} | {r['p50_ms']:.3f} | "
                         f"{r['p99_ms']:.3f} | {cpu} | {'yes' if r['caught_up'] else 'no'} |")
    if summary["latency"]:
        lines += ["", "Produce-to-consume latency, ms (median over repeats); added = encrypted - plaintext per pair, "
                  "median (min-max)", "",
                  "| client | size | percentile | plaintext | encrypted | added |", "|---|---|---|---|---|---|"]
        cpu_rows = []
        lagging = False
        for e in sorted(summary["latency"].values(), key=lambda e: (e["client"], e["size"])):
            mark = "" if e["caught_up"] else " (*)"
            lagging |= not e["caught_up"]
            cpu_rows.append(f"| {e['client']} | {size_label(e['size'])} | "
                            + " | ".join(cpu_cell(e["cpu_s_per_mb"][m]) for m in MODES) + " |")
            for q, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"), ("max_ms", "max")):
                d = e[q]
                lines.append(f"| {e['client']}{mark} | {size_label(e['size'])} | {name} | {d['plaintext']['median']:.3f} | "
                             f"{d['encrypted']['median']:.3f} | {d['added']['median']:+.3f} "
                             f"({d['added']['min']:+.3f} to {d['added']['max']:+.3f}) |")
        lines += ["", "Client CPU during the measured latency records, ms per MB of values (producer and consumer "
                  "in one process; median over repeats)", "", "| client | size | plaintext | encrypted |",
                  "|---|---|---|---|", *cpu_rows]
        if lagging:
            lines += ["", "(*) in some run the consumer was still more than 50 ms behind its producer when "
                      "measuring began (the warm-up limit was reached): the machine could not sustain the rate."]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colors = {"java-interceptor": "tab:blue", "java-serializer": "tab:green", "librdkafka": "tab:red"}
    for ax, direction in zip(axes, ("produce", "consume")):
        for client, color in colors.items():
            for mode, style in (("plaintext", "-"), ("ceiling", ":"), ("encrypted", "--")):
                by_size: dict[int, list[float]] = {}
                for r in runs:
                    if r["kind"] == "throughput" and r["client"] == client and r["mode"] == mode:
                        by_size.setdefault(r["size"], []).append(r["result"][direction]["mb_per_s"])
                if not by_size:
                    continue
                xs = sorted(by_size)
                med = [statistics.median(by_size[x]) for x in xs]
                err = [[m - min(by_size[x]) for m, x in zip(med, xs)], [max(by_size[x]) - m for m, x in zip(med, xs)]]
                ax.errorbar(xs, med, yerr=err, color=color, linestyle=style, marker="o", capsize=3,
                            label=f"{client} {mode}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["size"] for r in runs}))
        ax.set_xticklabels([size_label(s) for s in sorted({r["size"] for r in runs})])
        ax.set_xlabel("record value size")
        ax.set_title(f"{direction} throughput (median, min-max bars)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MB/s (MiB of values per second)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("kafka-e2ee: plaintext (solid), cipher-only ceiling (dotted), encrypted (dashed); loopback, acks=1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(rows: list[dict], path: Path) -> None:
    """The rate sweep in one figure: p50 and p99 against offered MB/s, and CPU per MB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"java-serializer": "tab:green", "librdkafka": "tab:red", "kroxylicious": "tab:purple"}
    for (client, mode) in sorted({(r["client"], r["mode"]) for r in rows}):
        pts = [r for r in rows if r["client"] == client and r["mode"] == mode]
        xs = [r["mb_per_s"] for r in pts]
        style = "-" if mode == "plaintext" else "--"
        c = colors.get(client, "tab:gray")
        lat.plot(xs, [r["p99_ms"] for r in pts], color=c, linestyle=style, marker="o", label=f"{client} {mode} p99")
        lat.plot(xs, [r["p50_ms"] for r in pts], color=c, linestyle=style, marker=".", alpha=0.5,
                 label=f"{client} {mode} p50")
        cpu.plot(xs, [(r["cpu_s_per_mb"] or 0) * 1000 for r in pts], color=c, linestyle=style, marker="o",
                 label=f"{client} {mode}")
    lat.set_yscale("log")
    lat.set_xlabel("offered load, MB/s of values")
    lat.set_ylabel("produce-to-consume latency, ms")
    lat.set_title("latency per rate (p99 large dots, p50 small)")
    cpu.set_xlabel("offered load, MB/s of values")
    cpu.set_ylabel("client CPU ms per MB (producer + consumer process)")
    cpu.set_title("CPU cost per MB")
    for ax in (lat, cpu):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("kafka-e2ee rate sweep: plaintext (solid) vs encrypted (dashed), 10-100% of the plaintext ceiling")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(env: Env, runs: list[dict], clients: list[str], size: int, seconds: float, ceiling_rate: int | None) -> None:
    """--sweep: each client's latency run at fractions of its plaintext throughput ceiling, plaintext and
    encrypted alternating. The ceiling is this run's median plaintext rate of the slower direction at this
    size, or, without throughput runs of that client, --sweep-max."""
    env = dataclasses.replace(env, latency_jvm=SWEEP_JVM + env.jvm[len(CLIENT_JVM):])  # + QUICK_JVM with --quick
    for client in clients:
        top = ceiling_rate
        if top is None:
            rates = [min(r["result"]["produce"]["records_per_s"], r["result"]["consume"]["records_per_s"])
                     for r in runs if r["kind"] == "throughput" and r["client"] == client and r["size"] == size
                     and r["mode"] == "plaintext"]
            if not rates:
                raise BenchError(f"--sweep of {client} needs --sweep-max or a throughput run of it at {size} B")
            top = int(statistics.median(rates))
        for k, fraction in enumerate(SWEEP_FRACTIONS):
            rate = max(1, int(top * fraction))
            records = max(1000, int(rate * seconds))
            for mode in (MODES if k % 2 == 0 else MODES[::-1]):
                t0 = time.monotonic()
                result = LATENCY_CASES[client](env, mode, size, records, rate)
                runs.append({"kind": "sweep", "client": client, "size": size, "fraction": fraction, "mode": mode,
                             "seconds": round(time.monotonic() - t0, 1), "loadavg": loadavg(), "result": result})
                log(f"sweep {client} {mode} {rate:,} rec/s ({fraction:.0%}): p50 {result['p50_ms']:.2f} ms, "
                    f"p99 {result['p99_ms']:.2f} ms, caught up {result.get('caught_up')}")


# ---- main -------------------------------------------------------------------


def report(out: Path) -> int:
    """--report: results.md and the plots of a finished run, from its results.json."""
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    results["summary"] = summarize(runs)
    write_results(out, results)
    return 1 if results.get("failure") else 0


def write_results(out: Path, results: dict) -> None:
    """results.json, results.md (printed too) and the plots of a run."""
    runs, summary = results["runs"], results["summary"]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = table(summary, results["meta"]["repeats"])
    (out / "results.md").write_text(text)
    if any(r["kind"] == "throughput" for r in runs):
        plot(runs, out / "throughput.png")
    if summary["sweep"]:
        plot_sweep(summary["sweep"], out / "sweep.png")
    print(text)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"one size (1 KiB), {QUICK_RECORDS} records, 1 repeat, a short latency run: a smoke test")
    ap.add_argument("--sizes", help="comma-separated record sizes in bytes (default: 100,1024,10240,102400)")
    ap.add_argument("--repeats", type=int, help="plaintext/encrypted pairs per case (default 3; --quick: 1)")
    ap.add_argument("--records", type=int, help="records per throughput run, every size (default: by size)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the default records per size (e.g. 0.25 on a busy machine)")
    ap.add_argument("--latency-sizes", default="1024", help="sizes of the latency runs (default 1024)")
    ap.add_argument("--latency-records", type=int, help="measured records per latency run (default 50000)")
    ap.add_argument("--rate", type=int, default=10_000, help="records/s of the latency runs (default 10000)")
    ap.add_argument("--cases", default="java-interceptor,java-serializer,librdkafka,latency",
                    help="which cases to run (default: all)")
    ap.add_argument("--sweep", action="store_true",
                    help="also sweep latency and CPU/MB over 10-100%% of the plaintext ceiling (librdkafka and "
                         "java-serializer; see --sweep-clients)")
    ap.add_argument("--sweep-clients", default="librdkafka,java-serializer", help="clients of --sweep")
    ap.add_argument("--sweep-max", type=int,
                    help="records/s taken as 100%% (default: this run's median plaintext rate of the slower "
                         "direction at 1 KiB, or at the first size without 1 KiB)")
    ap.add_argument("--sweep-seconds", type=float, default=10.0,
                    help="measured seconds per sweep point (default 10; --quick: 0.5)")
    ap.add_argument("--kex-hybrid", choices=("prefer", "require", "off"), default="prefer",
                    help="e2ee.kex.hybrid of every encrypted client (default prefer, the product's default): "
                         "compare runs with off to see what hybrid key exchange costs a client (issue 17)")
    ap.add_argument("--broker-disk", action="store_true",
                    help="keep the broker's segment files on disk (default: in /dev/shm, see BROKER_TMPFS)")
    ap.add_argument("--jfr", action="store_true",
                    help="record a Java Flight Recorder profile of every Java client into OUT/jfr "
                         "(summarize one with perf/jfr_top.py); it perturbs the timings")
    ap.add_argument("--report", type=Path, metavar="DIR",
                    help="only render DIR/results.json again (tables and plots), e.g. after a change to them")
    ap.add_argument("--keep-topics", action="store_true", help="keep every run's topic (and the broker's data)")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench", help="results directory")
    a = ap.parse_args(argv)

    if a.report:
        return report(a.report.resolve())
    sizes = [1024] if a.quick else [int(s) for s in (a.sizes or ",".join(map(str, SIZES))).split(",")]
    repeats = a.repeats or (1 if a.quick else 3)
    lat_sizes = [int(s) for s in a.latency_sizes.split(",") if s] if not a.quick else [1024]
    lat_records = a.latency_records or (5_000 if a.quick else 50_000)
    cases = a.cases.split(",")
    unknown = set(cases) - set(THROUGHPUT_CASES) - {"latency"}
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}")
    if any(s < len(MARKER) + 24 for s in sizes + lat_sizes):
        ap.error(f"sizes must be at least {len(MARKER) + 24} bytes")

    out = a.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    work = out / "work"
    work.mkdir(parents=True)
    if a.jfr:
        (out / "jfr").mkdir()
    ensure_matplotlib()
    classpath = build()
    trust, writer, reader = credentials(work)
    log4j = work / "log4j2.properties"
    # Warnings on stderr, plus the consumer's "waiting up to ... for key" (DEBUG):
    # a timed run that waited for a key is caught.
    log4j.write_text((ROOT / "scripts" / "kafka" / "tools-log4j2.properties").read_text()
                     + "logger.keywait.name = dev.kafkae2ee.RecordCrypto\nlogger.keywait.level = debug\n")

    meta = {
        "command": "scripts/bench " + " ".join(argv),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "loadavg_start": loadavg()},
        "sizes": sizes, "repeats": repeats, "kex_hybrid": a.kex_hybrid, "latency_sizes": lat_sizes, "rate": a.rate,
        "client_jvm": CLIENT_JVM + (QUICK_JVM if a.quick else []),
        "latency_jvm": LATENCY_JVM + (QUICK_JVM if a.quick else []),
        "sweep_jvm": SWEEP_JVM + (QUICK_JVM if a.quick else []),
        "broker_env": QUICK_BROKER_ENV if a.quick else BROKER_ENV,
        "git": run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip(),
    }
    runs: list[dict] = []
    log(f"starting the broker (load average {meta['host']['loadavg_start']})")
    data_dir = None
    if not a.broker_disk and BROKER_TMPFS.is_dir() and os.access(BROKER_TMPFS, os.W_OK):
        data_dir = Path(tempfile.mkdtemp(prefix="kafka-e2ee-bench-", dir=BROKER_TMPFS))
    meta["broker_data"] = str(data_dir or work / "broker" / "data")
    b = test_broker.start(work / "broker", env=QUICK_BROKER_ENV if a.quick else BROKER_ENV,
                          properties={"log.dirs": str(data_dir), "file.delete.delay.ms": "1000"}
                          if data_dir else None)
    failure = None
    env = None
    try:
        from confluent_kafka.admin import AdminClient

        env = Env(broker=b, work=work, classpath=classpath, trust=trust, writer=writer, reader=reader,
                  keep_topics=a.keep_topics, log4j=log4j, jvm=CLIENT_JVM + (QUICK_JVM if a.quick else []),
                  latency_jvm=LATENCY_JVM + (QUICK_JVM if a.quick else []),
                  warmup_max_ms=QUICK_WARMUP_MAX_MS if a.quick else WARMUP_MAX_MS, kex_hybrid=a.kex_hybrid,
                  jfr=(out / "jfr") if a.jfr else None, data_dir=data_dir,
                  admin=AdminClient({"bootstrap.servers": b.bootstrap}))
        meta["kafka"] = run([str(test_broker.TEST_BROKER), "version"]).stdout.strip()
        step = 0
        for rep in range(repeats):
            for size in sizes:
                records = a.records or (QUICK_RECORDS if a.quick else
                                        max(100, int(RECORDS.get(size, 20_000) * a.scale)))
                plan = [("throughput", c, THROUGHPUT_CASES[c]) for c in THROUGHPUT_CASES if c in cases]
                if "latency" in cases and size in lat_sizes:
                    plan += [("latency", c, f) for c, f in LATENCY_CASES.items()]
                for kind, client, fn in plan:
                    # Rotate which mode goes first, so drift and warm caches favour none.
                    if kind == "throughput":
                        k = step % len(THROUGHPUT_MODES)
                        order = THROUGHPUT_MODES[k:] + THROUGHPUT_MODES[:k]
                    else:
                        order = MODES if step % 2 == 0 else MODES[::-1]
                    step += 1
                    for mode in order:
                        t0 = time.monotonic()
                        if kind == "throughput":
                            result = fn(env, mode, size, records)
                        else:
                            result = fn(env, mode, size, lat_records, a.rate)
                        secs = time.monotonic() - t0
                        runs.append({"kind": kind, "client": client, "size": size, "repeat": rep, "mode": mode,
                                     "seconds": round(secs, 1), "loadavg": loadavg(), "result": result})
                        brief = (f"produce {result['produce']['records_per_s']:,.0f} rec/s, consume "
                                 f"{result['consume']['records_per_s']:,.0f} rec/s" if kind == "throughput" else
                                 f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")
                        log(f"repeat {rep + 1}/{repeats} {kind} {client} {size_label(size)} {mode}: {brief} "
                            f"({secs:.0f} s, load {loadavg()[0]:.1f})")
        if a.sweep:
            # At 1 KiB when it was measured (issue 15 and the published peers sweep at 1 KB).
            sweep(env, runs, [c for c in a.sweep_clients.split(",") if c], 1024 if 1024 in sizes else sizes[0],
                  0.5 if a.quick and a.sweep_seconds == 10.0 else a.sweep_seconds, a.sweep_max)
    except BenchError as e:
        failure = str(e)
        log(f"FAILED: {e}")
    finally:
        if env is not None:
            env.admin = None  # closed before the broker goes, or it logs the refused reconnects
        test_broker.stop(work / "broker")
        if not a.keep_topics:
            shutil.rmtree(work / "broker" / "data", ignore_errors=True)
        if data_dir is not None:
            if a.keep_topics:  # kept where the tests and the reader look for them
                shutil.copytree(data_dir, work / "broker" / "data", dirs_exist_ok=True)
            shutil.rmtree(data_dir, ignore_errors=True)

    meta["host"]["loadavg_end"] = loadavg()
    meta["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_results(out, {"meta": meta, "failure": failure, "summary": summarize(runs), "runs": runs})
    log(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / 'throughput.png'}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
