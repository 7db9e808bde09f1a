"""scripts/bench --quick --sweep end to end on its own real broker: it yields a
ratio, a cipher-only ceiling, an efficiency and CPU per MB for every client and
direction, latency percentiles for both clients, a rate sweep, its encrypted
and ceiling runs left no plaintext in the broker's segment files, and no
record was lost; the ceiling hooks refuse to load without the bench's switch. No timing thresholds: performance is what the bench measures, not
what a test asserts (docs/PERFORMANCE.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import broker as test_broker

ROOT = test_broker.ROOT
MARKER = b"E2EE-BENCH-PLAINTEXT-MARKER:"
CLIENTS = ("java-interceptor", "java-serializer", "librdkafka")


def segments(data_dir: Path, topic: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob(f"{topic}-*/*.log")))


def test_quick_bench_measures_every_case_and_encrypted_runs_leave_no_plaintext(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick", "--keep-topics", "--sweep",
                        "--sweep-clients", "librdkafka", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    res = json.loads((out / "results.json").read_text())
    assert res["failure"] is None

    ratios = {(e["client"], e["direction"]): e for e in res["summary"]["throughput"].values()}
    assert set(ratios) == {(c, d) for c in CLIENTS for d in ("produce", "consume")}
    for e in ratios.values():
        assert e["size"] == 1024 and e["ratio"]["n"] == 1 and e["ratio"]["median"] > 0, e
        assert e["efficiency"]["n"] == 1 and e["efficiency"]["median"] > 0, e
        assert e["ceiling_records_per_s"]["median"] > 0, e
        for mode in ("plaintext", "ceiling", "encrypted"):
            assert e["cpu_s_per_mb"][mode]["median"] >= 0, e
    latency = {e["client"]: e for e in res["summary"]["latency"].values()}
    assert set(latency) == {"java-serializer", "librdkafka"}
    for e in latency.values():
        for q in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
            assert e[q]["plaintext"]["median"] > 0 and e[q]["encrypted"]["median"] > 0, e

    # Each run's topic, read here from the broker's own segment files (kept by
    # --keep-topics), independently of the bench's own check.
    data_dir = out / "work" / "broker" / "data"
    sweep = res["summary"]["sweep"]
    assert {(r["mode"], r["fraction"]) for r in sweep} == {(m, f) for m in ("plaintext", "encrypted")
                                                           for f in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)}
    assert all(r["p99_ms"] > 0 and r["client"] == "librdkafka" for r in sweep), sweep
    assert len(res["runs"]) == 3 * len(CLIENTS) + 2 * len(latency) + len(sweep)
    for run in res["runs"]:
        if run["kind"] == "sweep":
            continue
        result = run["result"]
        disk = segments(data_dir, result["topic"])
        if run["kind"] == "throughput":
            n = result["records"]
            assert result["consume"]["consumed"] == n, run
            if run["client"] != "java-interceptor":  # ProducerPerformance's count is checked by the bench
                assert result["produce"]["acked"] == n and result["produce"]["failed"] == 0, run
            if run["client"] == "java-serializer":
                assert result["consume"]["corrupt"] == 0, run
            if run["client"] == "librdkafka":
                assert result["consume"]["corrupt"] == 0 and result["consume"]["errors"] == 0, run
        else:
            n = result["sent"]
            assert result["measured"] == result["records"] and result["corrupt"] == 0, run
            assert result["acked"] == n and result["failed"] == 0, run
        if run["mode"] == "encrypted":
            assert MARKER not in disk, f"plaintext on the broker after {run['client']} {run['kind']}"
            assert disk.count(b"e2ee") >= n, "every record is on disk with its e2ee header"
        elif run["mode"] == "ceiling":
            assert MARKER not in disk, f"the ceiling's AEAD left plaintext after {run['client']}"
        else:
            assert disk.count(MARKER) >= n, "the plaintext twin's records are on disk"
    for png in ("throughput.png", "sweep.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "| librdkafka | consume | 1 KiB |" in md
    assert "| ceiling rec/s |" in md and "| efficiency |" in md and "CPU ms/MB" in md and "Rate sweep" in md


def test_ceiling_hooks_refuse_to_load_without_the_bench_switch():
    """The cipher-only ceilings use a fixed key: no client configuration alone may load them."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "KAFKA_E2EE_BENCH_CEILING"}
    so = ROOT / "target" / "perf" / "ceiling" / "release" / "libe2ee_bench_ceiling.so"
    driver = ROOT / "target" / "perf" / "rdkafka_bench"
    assert so.exists() and driver.exists(), "built by the bench test above"
    r = subprocess.run([str(driver), "consume", "--bootstrap", "127.0.0.1:1", "--topic", "t", "--records", "1",
                        "--size", "100", "--config", f"plugin.library.paths={so}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "does NOT encrypt" in r.stderr, r.stderr
