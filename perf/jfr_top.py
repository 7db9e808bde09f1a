#!/usr/bin/env python3
"""Where a Java client's CPU went: a summary of a Flight Recorder file that
`scripts/bench --jfr` wrote (one per Java client run).

    python3 perf/jfr_top.py target/bench/jfr/004-throughput-encrypted.jfr [--top 25]

For each thread group (threads named alike, numbers dropped) it prints the
share of execution samples, then the methods most often on top of the stack
(self) and the share of samples with a frame of each hot-path class on the
stack (inclusive): the product's hooks and JNI calls (dev.kafkae2ee), the
ceiling hooks (dev.kafkae2ee.perf.Ceiling) and the JDK's AES-GCM
(com.sun.crypto.provider). Samples are of Java frames only: time in native
code (the product's Rust engine) is not in them; a thread inside one of
the product's native methods (Engine.open0, Engine.seal0, ...) is counted
from jdk.NativeMethodSample, whose period differs: compare those counts
between runs, not with the shares.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys

# Classes whose inclusive share is reported (prefix match on the frame's class).
WATCH = (
    "dev.kafkae2ee.Engine",
    "dev.kafkae2ee.E2eeProducerInterceptor",
    "dev.kafkae2ee.E2eeConsumerInterceptor",
    "dev.kafkae2ee.EncryptingSerializer",
    "dev.kafkae2ee.DecryptingDeserializer",
    "dev.kafkae2ee.RecordCrypto",
    "dev.kafkae2ee.perf.Ceiling",
    "com.sun.crypto.provider",
    "org.apache.kafka.common.record",
    "org.apache.kafka.common.header",
    "java.util.zip",
)


def samples(path: str, event: str) -> list[dict]:
    out = subprocess.run(["jfr", "print", "--json", "--events", event, path],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["recording"]["events"]


def frame_name(f: dict) -> str:
    m = f["method"]
    return f"{m['type']['name'].replace('/', '.')}.{m['name']}"


def stacks_by_thread(events: list[dict]) -> dict[str, list[list[str]]]:
    groups: dict[str, list[list[str]]] = collections.defaultdict(list)
    for e in events:
        v = e["values"]
        thread = re.sub(r"\d+", "N", (v.get("sampledThread") or {}).get("javaName") or "?")
        groups[thread].append([frame_name(f) for f in ((v.get("stackTrace") or {}).get("frames") or [])])
    return groups


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jfr", nargs="+")
    ap.add_argument("--top", type=int, default=20, help="methods listed per thread group")
    ap.add_argument("--min-share", type=float, default=0.05, help="thread groups below this share are skipped")
    a = ap.parse_args(argv)
    for path in a.jfr:
        groups = stacks_by_thread(samples(path, "jdk.ExecutionSample"))
        # Threads in native code are not in ExecutionSample; the JNI calls into the engine are
        # counted from NativeMethodSample (its own period), only where our native method is on top.
        native = {t: [s for s in st if s and s[0].startswith("dev.kafkae2ee.")]
                  for t, st in stacks_by_thread(samples(path, "jdk.NativeMethodSample")).items()}
        total = sum(len(s) for s in groups.values())
        print(f"== {path}: {total} samples")
        for thread, stacks in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            share = len(stacks) / max(1, total)
            if share < a.min_share:
                continue
            print(f"\n-- thread {thread}: {len(stacks)} samples ({share:.0%})")
            top = collections.Counter(s[0] for s in stacks if s)
            for name, n in top.most_common(a.top):
                print(f"  self {n / len(stacks):6.1%}  {name}")
            for cls in WATCH:
                n = sum(1 for s in stacks if any(f.startswith(cls) for f in s))
                if n:
                    print(f"  incl {n / len(stacks):6.1%}  {cls}*")
            for name, n in collections.Counter(s[0] for s in native.get(thread, [])).most_common(5):
                print(f"  native samples {n:5d}  {name} (jdk.NativeMethodSample, its own period)")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
