"""The keeper (`kafka-e2ee keeper`, docs/KEEPER.md) on a real broker: a
producer writes and exits; a consumer identity issued afterwards, which never
ran before, reads every record with nothing running but the keeper (restarted
on its state directory in between); a consumer whose credential lacks the
topic still reads nothing; `inspect` names the keeper among the recipients of
the producer's epochs and flags an epoch sealed to nobody."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from java_clients import CLI

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"


@pytest.fixture(scope="module")
def built():
    if not CLI.exists() or not PLUGIN.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-ffi", "-p", "kafka-e2ee-cli"],
                       cwd=ROOT, check=True)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], check=check, capture_output=True, text=True, timeout=120)


def issue(creds: dict, name: str, produce: str | None, consume: str | None) -> Path:
    out = creds["dir"] / f"{name}.cred"
    topics = [*(["--produce", produce] if produce else []), *(["--consume", consume] if consume else [])]
    cli("credential", "issue", "--authority", str(creds["auth"]), "--name", name, *topics, "--out", str(out))
    creds[name] = out
    return out


@pytest.fixture
def creds(built, tmp_path):
    auth = tmp_path / "auth"
    cli("authority", "init", "--out", str(auth))
    creds = {"auth": auth, "trust": auth / "trust", "dir": tmp_path}
    issue(creds, "writer", "*", None)
    issue(creds, "keeper", None, "*")
    issue(creds, "outsider", None, "other.*")
    return creds


def kcat(broker, creds, who: str, *args: str, input: str | None = None, timeout: float = 120,
         extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
         "-X", f"e2ee.credential={creds[who]}", "-X", f"e2ee.trust={creds['trust']}", *extra, *args],
        input=input, capture_output=True, text=True, timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def metric(port: int, name: str) -> int:
    _, text = get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(f"kafka_e2ee_{name} "):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in {text!r}")


class Keeper:
    def __init__(self, config: Path, log: Path):
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [str(CLI), "keeper", "--config", str(config), "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=log.open("a"))

    def wait_healthy(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        last = (0, "")
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            last = get(self.port, "/health")
            if last == (200, "ok\n"):
                return
            time.sleep(0.3)
        raise AssertionError(f"keeper not healthy: {last}; log: {self.log.read_text()[-3000:]}")

    def wait_metric(self, name: str, at_least: int, seconds: float = 60) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            n = metric(self.port, name)
            if n >= at_least:
                return n
            time.sleep(0.3)
        raise AssertionError(f"{name} < {at_least}; log: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def segment_bytes(broker, topic: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(broker.data_dir.glob(f"{topic}-*/*.log")))


def test_a_newcomer_reads_from_the_keeper_after_the_producer_exited(broker, creds, tmp_path):
    # An epoch sealed to nobody: a producer writes while no consumer or
    # keeper ever ran (its client also creates the control and keys topics).
    broker.create_topic("lonely")
    p = kcat(broker, creds, "writer", "-P", "-t", "lonely", input="lonely-secret\n")
    assert p.returncode == 0, p.stderr

    # Topics that do not exist: it waits for them (503 with the reason and
    # how to create them) and still stops cleanly on SIGTERM.
    waiting = tmp_path / "waiting.properties"
    waiting.write_text(f"bootstrap.servers={broker.bootstrap}\ne2ee.credential={creds['keeper']}\n"
                       f"e2ee.trust={creds['trust']}\ne2ee.state.dir={tmp_path / 'waiting-state'}\n"
                       "e2ee.control.topic=_wait_control\ne2ee.keys.topic=_wait_keys\n")
    w = Keeper(waiting, tmp_path / "waiting.log")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "waiting for the topics" not in get(w.port, "/health")[1]:
            time.sleep(0.3)
        status, body = get(w.port, "/health")
        assert status == 503 and "waiting for the topics _wait_control and _wait_keys" in body, body
        assert "cleanup.policy=compact,delete" in body, body
        assert w.stop() == 0
    finally:
        w.kill()

    config = tmp_path / "keeper.properties"
    config.write_text(f"bootstrap.servers={broker.bootstrap}\ne2ee.credential={creds['keeper']}\n"
                      f"e2ee.trust={creds['trust']}\ne2ee.state.dir={tmp_path / 'keeper-state'}\n")
    log = tmp_path / "keeper.log"
    keeper = Keeper(config, log)
    try:
        keeper.wait_healthy()
        keeper.wait_metric("prekeys_published", 1)
        # Let the prekeys record reach the broker before the producer starts.
        time.sleep(1)

        topic = "kept"
        broker.create_topic(topic)
        values = [f"kept-secret-{i:03d}" for i in range(300)]
        p = kcat(broker, creds, "writer", "-P", "-t", topic, input="".join(v + "\n" for v in values))
        assert p.returncode == 0, p.stderr
        assert "not acknowledged" not in p.stderr, p.stderr
        keeper.wait_metric("envelopes_received", 1)
        assert metric(keeper.port, "keys_held") >= 1

        # SIGTERM: clean stop, exit 0; then it comes back on its state
        # directory (nothing else holds the keys now).
        assert keeper.stop() == 0, log.read_text()[-3000:]
        keeper = Keeper(config, log)
        keeper.wait_healthy()
        assert metric(keeper.port, "keys_held") >= 1

        # A brand-new consumer identity, issued after the producer exited.
        issue(creds, "newcomer", None, "*")
        c = kcat(broker, creds, "newcomer", "-C", "-t", topic, "-o", "beginning", "-c", "300", "-f", "%s\\n",
                 timeout=120)
        assert c.returncode == 0, c.stderr[-2000:]
        assert c.stdout.splitlines() == values, c.stderr[-2000:]
        assert b"secret" not in segment_bytes(broker, topic)
        assert keeper.wait_metric("keys_served", 1) > 0

        # A credential without the topic: errors only, never a value.
        c = kcat(broker, creds, "outsider", "-C", "-t", topic, "-o", "beginning", "-c", "1", "-f", "%s\\n",
                 extra=("-X", "e2ee.key.wait.ms=5000"), timeout=90)
        assert "kept-secret" not in c.stdout
        assert f"ERROR: Topic {topic} [0] error: kafka-e2e" in c.stderr, (c.stdout, c.stderr[-2000:])
    finally:
        status = keeper.proc.poll()
        rc = keeper.stop() if status is None else status
        keeper.kill()
    assert status is None and rc == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "secret" not in text
    assert text.count("kafka-e2ee keeper: stopped:") == 2, text

    # inspect: the keeper is among the recipients of the producer's epochs...
    r = cli("--json", "inspect", "--bootstrap", broker.bootstrap, "--topic", "kept")
    out = json.loads(r.stdout)
    assert out["recipients"], out
    for epoch in out["recipients"]:
        assert epoch["keepers"] >= 1, out
        assert "keeper (keeper)" in epoch["names"], out
    text = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "kept").stdout
    assert "keeper (keeper)" in text and "NO RECIPIENT" not in text, text
    # ...and the epoch written when nobody had a mailbox is flagged.
    text = cli("inspect", "--bootstrap", broker.bootstrap, "--topic", "lonely").stdout
    assert "NO RECIPIENT" in text and "nobody will be able to read these records" in text, text


def test_keeper_refuses_a_configuration_without_a_state_dir(built, creds, tmp_path):
    config = tmp_path / "keeper.properties"
    config.write_text(f"bootstrap.servers=127.0.0.1:9\ne2ee.credential={creds['keeper']}\n"
                      f"e2ee.trust={creds['trust']}\n")
    r = cli("keeper", "--config", str(config), check=False)
    assert r.returncode == 1
    assert "e2ee.state.dir" in r.stderr and "required" in r.stderr, r.stderr
    # A producer-only credential: no mailbox, so nothing would be sealed to it.
    config.write_text(f"bootstrap.servers=127.0.0.1:9\ne2ee.credential={creds['writer']}\n"
                      f"e2ee.trust={creds['trust']}\ne2ee.state.dir={tmp_path / 's'}\n")
    r = cli("keeper", "--config", str(config), check=False)
    assert r.returncode == 1
    assert "e2ee.credential" in r.stderr and "consumes nothing" in r.stderr, r.stderr
