"""Per-record cost of the librdkafka hooks in instructions (valgrind's
callgrind), which a loaded machine does not change: what issue 15's "close
the gap" work is judged by where wall-clock ratios are noise.

For each mode (ceiling: perf/ceiling-plugin, the cipher alone; encrypted: the
product plugin) it runs rdkafka_bench produce and then rdkafka_bench consume
under callgrind on the test broker, counting only what runs inside the hooks
(on_send, on_acknowledgement, on_consume and all they call, librdkafka's
header parsing included), and prints instructions per record and
efficiency = ceiling / encrypted instructions. With --whole it also counts the
whole consumer and producer processes at two record counts and takes the
difference per record (startup cancels), plaintext included.

    python3 perf/percost.py [--records 2000] [--size 1024] [--whole] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (build, credentials, the broker, the drivers)

HOOKS = ["*::on_send", "*::on_acknowledgement", "*::on_consume", "*::on_message"]


def callgrind(out: Path, hooks_only: bool) -> list[str]:
    args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    if hooks_only:
        args += ["--collect-atstart=no", *(f"--toggle-collect={h}" for h in HOOKS)]
    return args


def total_ir(path: Path) -> int:
    m = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.M)
    if not m:
        raise bench.BenchError(f"no callgrind totals in {path}")
    return int(m.group(1))


def measure(env: bench.Env, mode: str, size: int, records: int, work: Path, hooks_only: bool) -> dict:
    """Instructions of one producer and one consumer run of `records` records."""
    topic = env.topic("percost", mode, size)
    common = ["--bootstrap", env.broker.bootstrap, "--topic", topic, "--size", str(size)]
    tag = f"{mode}-{records}-{'hooks' if hooks_only else 'whole'}-{uuid.uuid4().hex[:4]}"
    p_out, c_out = work / f"{tag}.producer.cg", work / f"{tag}.consumer.cg"
    producer = subprocess.Popen(
        [*callgrind(p_out, hooks_only), str(bench.C_DRIVER), "produce", *common, "--records", str(records),
         "--warmup", "0", "--hold", "--config", "acks=1", *bench.rdkafka_config(env, mode, "writer")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bench.mode_env(mode))
    try:
        line = producer.stdout.readline()
        if not line.startswith("{"):
            raise bench.BenchError(f"producer failed: {line}{producer.stderr.read()[-3000:]}")
        c = bench.run([*callgrind(c_out, hooks_only), str(bench.C_DRIVER), "consume", *common, "--records",
                       str(records), *bench.RDKAFKA_CONSUMER_QUEUE, *bench.rdkafka_config(env, mode, "reader")],
                      timeout=1800, env=bench.mode_env(mode))
    finally:
        if producer.poll() is None:
            producer.stdin.close()
        producer.wait(timeout=300)
    bench.check(c, "rdkafka_bench consume under callgrind")
    consumed = bench.last_json(c.stdout, "consume")
    if consumed["consumed"] != records or consumed["corrupt"]:
        raise bench.BenchError(f"{mode}: {consumed}")
    env.check_disk(topic, mode)
    env.drop(topic)
    return {"producer_ir": total_ir(p_out), "consumer_ir": total_ir(c_out)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="perf/percost.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--whole", action="store_true", help="also whole-process instructions per record")
    ap.add_argument("--out", type=Path, default=bench.ROOT / "target" / "percost")
    a = ap.parse_args(argv)
    work = a.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    classpath = bench.build()
    trust, writer, reader = bench.credentials(work)
    b = bench.test_broker.start(work / "broker", env=bench.QUICK_BROKER_ENV)
    result: dict = {"records": a.records, "size": a.size, "hooks": {}, "whole": {}}
    try:
        from confluent_kafka.admin import AdminClient

        env = bench.Env(broker=b, work=work, classpath=classpath, trust=trust, writer=writer, reader=reader,
                        keep_topics=False, log4j=work / "none", jvm=[], latency_jvm=[], warmup_max_ms=0,
                        admin=AdminClient({"bootstrap.servers": b.bootstrap}))
        for mode in ("ceiling", "encrypted"):
            r = measure(env, mode, a.size, a.records, work, hooks_only=True)
            result["hooks"][mode] = {k: v / a.records for k, v in r.items()}
            bench.log(f"hooks {mode}: {result['hooks'][mode]}")
        if a.whole:
            small = max(100, a.records // 4)
            for mode in bench.THROUGHPUT_MODES:
                lo = measure(env, mode, a.size, small, work, hooks_only=False)
                hi = measure(env, mode, a.size, a.records, work, hooks_only=False)
                result["whole"][mode] = {k: (hi[k] - lo[k]) / (a.records - small) for k in hi}
                bench.log(f"whole {mode}: {result['whole'][mode]}")
        env.admin = None
    finally:
        bench.test_broker.stop(work / "broker")
    h = result["hooks"]
    lines = [f"Instructions per {bench.size_label(a.size)} record inside the hooks (callgrind, {a.records} records)",
             "", "| side | ceiling | encrypted | efficiency (ceiling / encrypted) |", "|---|---|---|---|"]
    for side in ("producer_ir", "consumer_ir"):
        lines.append(f"| {side[:-3]} | {h['ceiling'][side]:,.0f} | {h['encrypted'][side]:,.0f} | "
                     f"{h['ceiling'][side] / h['encrypted'][side]:.3f} |")
    if result["whole"]:
        w = result["whole"]
        lines += ["", "Whole process, instructions per record (difference of two record counts)", "",
                  "| side | plaintext | ceiling | encrypted |", "|---|---|---|---|"]
        for side in ("producer_ir", "consumer_ir"):
            lines.append(f"| {side[:-3]} | " + " | ".join(f"{w[m][side]:,.0f}" for m in bench.THROUGHPUT_MODES) + " |")
    text = "\n".join(lines) + "\n"
    (work / "percost.json").write_text(json.dumps(result, indent=1) + "\n")
    (work / "percost.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
