"""The README's main command runs to the end on this machine: scripts/demo
starts a real broker, encrypts with Kafka's console tools and proves from the
segment files that the broker holds no plaintext of the encrypted topic; the
consumer reads after the producer has exited (keys from the keys topic)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_to_the_end():
    p = subprocess.run([str(ROOT / "scripts" / "demo")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "demo-orders:               0 of 3 records readable" in p.stdout
    assert "demo-orders-unencrypted:   3 of 3 records readable" in p.stdout
    assert "consumed: order-1003" in p.stdout
    # The records were read after their producer had exited.
    assert p.stdout.index("the producer has exited") < p.stdout.index("consumed: order-1001")
    assert "broker stopped" in p.stdout
