"""A short soak (tests/soak.py, the same properties as scripts/soak): two
producers (Java serializer, librdkafka plugin) and three consumer groups (Java
deserializer, Java interceptor, librdkafka plugin) on a real broker with a key
rotation every 5 s: no record lost, duplicated or undecryptable, producers on
schedule, lag bounded, RSS flat after warm-up."""

from __future__ import annotations

import soak

# 60 s at a rate a loaded 2-core machine holds with room to spare (the
# 10-minute figures in docs/PERFORMANCE.md are at a higher rate).
SECONDS = 60
RATE = 1000


def test_short_soak(tmp_path):
    result = soak.run(SECONDS, RATE, tmp_path / "soak", log=lambda s: None)
    print(result.summary())
    assert not result.failures, result.summary()
