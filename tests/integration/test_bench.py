"""scripts/bench --quick end to end on its own real broker: it yields a ratio
for every client and direction and latency percentiles for both clients, its
encrypted runs left no plaintext in the broker's segment files, and no record
was lost. No timing thresholds: performance is what the bench measures, not
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
    r = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick", "--keep-topics", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    res = json.loads((out / "results.json").read_text())
    assert res["failure"] is None

    ratios = {(e["client"], e["direction"]): e for e in res["summary"]["throughput"].values()}
    assert set(ratios) == {(c, d) for c in CLIENTS for d in ("produce", "consume")}
    for e in ratios.values():
        assert e["size"] == 1024 and e["ratio"]["n"] == 1 and e["ratio"]["median"] > 0, e
    latency = {e["client"]: e for e in res["summary"]["latency"].values()}
    assert set(latency) == {"java-serializer", "librdkafka"}
    for e in latency.values():
        for q in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
            assert e[q]["plaintext"]["median"] > 0 and e[q]["encrypted"]["median"] > 0, e

    # Each run's topic, read here from the broker's own segment files (kept by
    # --keep-topics), independently of the bench's own check.
    data_dir = out / "work" / "broker" / "data"
    assert len(res["runs"]) == 2 * (len(CLIENTS) + len(latency))
    for run in res["runs"]:
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
        else:
            assert disk.count(MARKER) >= n, "the plaintext twin's records are on disk"
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| librdkafka | consume | 1 KiB |" in (out / "results.md").read_text()
