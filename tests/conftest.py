"""Shared pytest fixtures: ``broker`` is a real single-node Kafka broker that is
started in a temporary directory for the test and always stopped afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import broker as test_broker  # noqa: E402


@pytest.fixture
def broker(tmp_path: Path):
    started = None
    try:
        started = test_broker.start(tmp_path / "broker")
        yield started
    finally:
        # Stop even if start failed half-way or the test raised.
        if (tmp_path / "broker" / "broker.pid").exists():
            test_broker.stop(tmp_path / "broker")
        leftover = test_broker.java_processes_mentioning(str(tmp_path / "broker"))
        assert not leftover, f"broker processes left behind: {leftover}"


def pytest_collection_finish(session):
    """Lets a selected test file start slow builds with the session (see
    tests/integration/test_static_clients.py: start_background_builds)."""
    started = set()
    for item in session.items:
        module = getattr(item, "module", None)
        start = getattr(module, "start_background_builds", None)
        if start and module not in started:
            started.add(module)
            start()
