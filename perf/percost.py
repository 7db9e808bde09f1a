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

With --ab OLD.so it instead compares two builds of the product plugin in
wall-clock time, in the same run: consumers of one encrypted topic with the
old and the current plugin alternate (each reads the whole topic), and so do
producers to fresh topics; it prints each pair's ratio current / old and
their median. On a busy machine only such ratios mean anything.

    python3 perf/percost.py [--records 2000] [--size 1024] [--whole] [--out DIR]
    python3 perf/percost.py --ab /path/to/old/libkafka_e2ee.so [--records 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
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


def ab(env: bench.Env, old_so: Path, size: int, records: int, repeats: int) -> str:
    """Wall-clock throughput of the old and the current plugin, alternating, as ratios current / old."""
    builds = {"old": old_so, "current": bench.PLUGIN}

    def cfg(so: Path, who: str) -> list[str]:
        kv = {"plugin.library.paths": so, **env.e2ee(who)}
        return [a for k, v in kv.items() for a in ("--config", f"{k}={v}")]

    rates: dict[str, dict[str, list[float]]] = {"produce": {b: [] for b in builds},
                                                "consume": {b: [] for b in builds}}
    held = env.topic("ab", "encrypted", size)
    common = ["--size", str(size), "--bootstrap", env.broker.bootstrap]
    holder = subprocess.Popen(
        [str(bench.C_DRIVER), "produce", *common, "--topic", held, "--records", str(records), "--warmup", "0",
         "--hold", "--config", "acks=1", *cfg(bench.PLUGIN, "writer")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not holder.stdout.readline().startswith("{"):
            raise bench.BenchError("the holding producer failed")
        for rep in range(repeats):
            order = list(builds) if rep % 2 == 0 else list(builds)[::-1]
            for name in order:
                c = bench.check(bench.run([str(bench.C_DRIVER), "consume", *common, "--topic", held, "--records",
                                           str(records), *bench.RDKAFKA_CONSUMER_QUEUE, *cfg(builds[name], "reader")],
                                          timeout=900), f"consume with the {name} plugin")
                rates["consume"][name].append(bench.last_json(c.stdout, "consume")["records_per_s"])
            for name in order:
                t = env.topic("ab-produce", name, size)
                p = bench.check(bench.run([str(bench.C_DRIVER), "produce", *common, "--topic", t, "--records",
                                           str(records), "--warmup", str(records // 10), "--config", "acks=1",
                                           *cfg(builds[name], "writer")], timeout=900),
                                f"produce with the {name} plugin")
                rates["produce"][name].append(bench.last_json(p.stdout, "produce")["records_per_s"])
                env.drop(t)
            bench.log(f"ab repeat {rep + 1}: " + ", ".join(f"{d} {n} {rates[d][n][-1]:,.0f}"
                                                             for d in rates for n in builds))
    finally:
        if holder.poll() is None:
            holder.stdin.close()
        holder.wait(timeout=300)
    lines = [f"Wall clock, {bench.size_label(size)}, {records} records, {repeats} alternating pairs: "
             "records/s median (min-max), ratio current / old per pair", "",
             "| direction | old | current | ratio median | ratios |", "|---|---|---|---|---|"]
    for d, by in rates.items():
        ratios = [c / o for c, o in zip(by["current"], by["old"])]
        lines.append(f"| {d} | {statistics.median(by['old']):,.0f} | {statistics.median(by['current']):,.0f} | "
                     f"**{statistics.median(ratios):.3f}** | {', '.join(f'{r:.3f}' for r in ratios)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="perf/percost.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--whole", action="store_true", help="also whole-process instructions per record")
    ap.add_argument("--out", type=Path, default=bench.ROOT / "target" / "percost")
    ap.add_argument("--ab", type=Path, help="an older build of libkafka_e2ee.so: wall-clock comparison instead")
    ap.add_argument("--repeats", type=int, default=5, help="--ab: alternating pairs")
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
        if a.ab:
            text = ab(env, a.ab.resolve(), a.size, a.records, a.repeats)
            env.admin = None
            (work / "ab.md").write_text(text)
            print(text)
            return 0
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
