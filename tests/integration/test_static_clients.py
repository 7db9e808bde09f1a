"""The plugin in programs that link librdkafka statically, built the default
way: a confluent-kafka-go program (tests/clients/go, plain ``go build``: the
module's bundled librdkafka, no -rdynamic) and a rust-rdkafka program
(tests/clients/rust, default features: librdkafka built from source and
linked in). The plugin must find librdkafka's functions in the main program.
Both bindings keep properties in a map (no order), so both take their e2ee.*
settings from KAFKA_E2EE_CONFIG and name only plugin.library.paths.

Records round-trip byte for byte to kcat and Java consumers and from kcat,
and the broker's segment files hold none of the plaintext.

The builds are cached in ~/.cache/kafka-e2ee/clients (the Rust target
directory; the Go module and build caches are Go's own, ~/go/pkg/mod and
~/.cache/go-build): the first build of the Rust program compiles librdkafka
and takes minutes, later ones seconds."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from test_java import (  # noqa: F401  (pytest fixtures)
    assert_no_plaintext,
    built,
    creds,
    kafka,
    prefix,
)
from java_clients import app, e2ee, props

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "release" / "libkafka_e2ee.so"
SOURCES = ROOT / "tests" / "clients"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kafka-e2ee" / "clients"
LANGS = ["go", "rust"]


def build_command(lang: str, rdynamic: bool = False) -> tuple[list[str], Path, dict[str, str], Path]:
    """The niced build of one program (the builds run next to a broker on a
    small machine): command, working directory, environment, executable."""
    if lang == "go":
        out = CACHE / ("e2ee-go-rdynamic" if rdynamic else "e2ee-go")
        cmd = ["go", "build", "-mod=readonly", "-o", str(out)]
        if rdynamic:
            cmd += ["-ldflags", "-extldflags -rdynamic"]
        return ["nice", "-n", "10", *cmd, "."], SOURCES / "go", dict(os.environ), out
    assert not rdynamic
    target = CACHE / "rust-target"
    return (["nice", "-n", "10", "cargo", "build", "--release", "--locked", "-q"], SOURCES / "rust",
            {**os.environ, "CARGO_TARGET_DIR": str(target)}, target / "release" / "e2ee-rust")


# Builds started when the session began (start_background_builds).
_background: dict[str, subprocess.Popen] = {}


def start_background_builds() -> None:
    """Called by tests/conftest.py when tests of this file are selected. The
    first build of the Rust program compiles librdkafka: minutes on a 2-core
    machine, which would add to the run if it waited for this file's turn.
    Started with the session, niced, it runs while the test files before this
    one mostly wait on the broker. The fixture below still builds (a no-op
    then) and reports any failure."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        cmd, cwd, env, _ = build_command(lang)
        log = open(CACHE / f"background-build-{lang}.log", "w")
        _background[lang] = subprocess.Popen(["nice", "-n", "9", *cmd], cwd=cwd, env=env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def build(lang: str, *, rdynamic: bool = False) -> Path:
    """Builds (or brings up to date) one test program; returns the executable."""
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if not rdynamic and lang in _background:
        _background.pop(lang).wait(3600)
    waited = time.monotonic() - t0
    cmd, cwd, env, out = build_command(lang, rdynamic)
    subprocess.run(cmd, cwd=cwd, env=env, check=True, timeout=3600)
    print(f"built {out} in {time.monotonic() - t0:.1f}s ({waited:.1f}s of it waiting for the background build)")
    return out


@pytest.fixture(scope="module")
def programs(built):  # noqa: F811  (the plugin is built with the CLI)
    """The two programs, each built the default way. A failed build fails."""
    if not PLUGIN.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kafka-e2ee-ffi"], cwd=ROOT, check=True)
    return {lang: build(lang) for lang in LANGS}


@pytest.fixture(scope="module")
def settings(creds, tmp_path_factory):  # noqa: F811
    """KAFKA_E2EE_CONFIG files: who -> path."""
    d = tmp_path_factory.mktemp("settings")
    out = {}
    for who in ("writer", "reader"):
        f = d / f"{who}.properties"
        f.write_text(f"# {who}\ne2ee.credential={creds[who]}\ne2ee.trust={creds['trust']}\n")
        out[who] = f
    return out


def run(exe: Path, mode: str, kafka, topic: str, *args: str, config: Path | None, input: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_E2EE_CONFIG"}
    if config:
        env["KAFKA_E2EE_CONFIG"] = str(config)
    return subprocess.run([str(exe), mode, "-b", kafka.bootstrap, "-t", topic,
                           "-X", f"plugin.library.paths={PLUGIN}", *args],
                          input=input, capture_output=True, text=True, timeout=timeout, env=env)


def producing(exe: Path, kafka, topic: str, values: list[bytes], config: Path, hold: Path) -> subprocess.Popen:  # noqa: F811
    """A producer that has had every record acknowledged and stays up (it
    serves the keys of what it sealed) until ``hold`` exists."""
    p = subprocess.Popen([str(exe), "produce", "-b", kafka.bootstrap, "-t", topic, "-hold", str(hold),
                          "-X", f"plugin.library.paths={PLUGIN}"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "KAFKA_E2EE_CONFIG": str(config)})
    p.stdin.write("".join(v.hex() + "\n" for v in values))
    p.stdin.close()
    line = p.stdout.readline()
    if line.strip() != f"ACKED {len(values)}":
        hold.touch()
        p.wait(60)
        pytest.fail(f"producer: {line!r} {p.stderr.read()[-3000:]}")
    return p


def kcat_values(kafka, creds, topic: str, n: int) -> list[bytes]:  # noqa: F811
    """n values read by kcat (Debian's librdkafka with the plugin), exactly:
    each is framed by its 32-bit big-endian length (%R)."""
    r = subprocess.run(["kcat", "-b", kafka.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
                        "-X", f"e2ee.credential={creds['reader']}", "-X", f"e2ee.trust={creds['trust']}",
                        "-C", "-t", topic, "-o", "beginning", "-c", str(n), "-e", "-f", "%R%s"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    out, data = [], r.stdout
    while data:
        (size,) = struct.unpack(">i", data[:4])
        out.append(data[4:4 + size])
        data = data[4 + size:]
    return out


def values_for(p: str, who: str, n: int) -> list[bytes]:
    # Non-ASCII, a NUL and a DEL: bytes a text path would mangle. No newline
    # (the Java app prints one value a line).
    return [f"{p}-{who}-{i:05d}-\u00e9\u4e2d\x00\x7f".encode() for i in range(n)]


def test_programs_link_librdkafka_statically_and_export_none_of_it(programs):
    for lang, exe in programs.items():
        dyn = subprocess.run(["nm", "-D", str(exe)], capture_output=True, text=True).stdout
        assert "rd_kafka_" not in dyn, f"{lang}: exports librdkafka symbols"
        needed = subprocess.run(["readelf", "-d", str(exe)], capture_output=True, text=True, check=True).stdout
        assert "rdkafka" not in needed, f"{lang}: links librdkafka dynamically"
        version = subprocess.run([str(exe), "version"], capture_output=True, text=True, check=True).stdout
        print(f"{lang}: librdkafka {version.strip()}")


@pytest.mark.parametrize("lang", LANGS)
def test_records_round_trip_to_kcat_and_java_and_from_kcat(programs, kafka, creds, settings, built,  # noqa: F811
                                                           lang, tmp_path):
    exe = programs[lang]
    p = prefix()
    # The program produces; kcat and a Java consumer read.
    topic = f"static-{lang}-out"
    kafka.create_topic(topic)
    values = values_for(p, lang, 50)
    hold = tmp_path / "stop"
    prod = producing(exe, kafka, topic, values, settings["writer"], hold)
    try:
        assert kcat_values(kafka, creds, topic, len(values)) == values
        cons = props(tmp_path / "java.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                     key_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     value_deserializer="org.apache.kafka.common.serialization.ByteArrayDeserializer",
                     interceptor_classes="dev.kafkae2ee.E2eeConsumerInterceptor",
                     group_id=f"java-{lang}", auto_offset_reset="earliest")
        r = app(built, "consume", str(cons), topic, str(len(values)), "90000", "bytes")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert [line.encode() for line in r.stdout.split("\n")[: len(values)]] == values
    finally:
        hold.touch()
        prod.wait(60)
    err = prod.stderr.read()
    assert prod.returncode == 0, err[-3000:]
    assert "CONFWARN" not in err, err[-3000:]  # likewise for its control consumer
    assert_no_plaintext(kafka, [v.decode() for v in values], topic)

    # kcat produces and exits; a kcat on the same state directory stays up to
    # serve its keys; the program reads.
    topic = f"static-kcat-to-{lang}"
    kafka.create_topic(topic)
    values = values_for(p, f"kcat-{lang}", 50)
    kcat = ["kcat", "-b", kafka.bootstrap, "-X", f"plugin.library.paths={PLUGIN}",
            "-X", f"e2ee.credential={creds['writer']}", "-X", f"e2ee.trust={creds['trust']}",
            "-X", f"e2ee.state.dir={tmp_path / 'kcat-state'}", "-P", "-t", topic, "-p", "0"]
    r = subprocess.run(kcat, input=b"".join(v + b"\n" for v in values), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    kcat = subprocess.Popen(kcat, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        r = run(exe, "consume", kafka, topic, "-n", str(len(values)), config=settings["reader"])
        assert r.returncode == 0, r.stderr[-3000:]
        assert [bytes.fromhex(line) for line in r.stdout.split()] == values
        # The plugin's control producer is a copy of this consumer's
        # configuration: it must not warn about the consumer's group.id,
        # enable.auto.commit, ... ("is a consumer property and will be ignored").
        assert "CONFWARN" not in r.stderr, r.stderr[-3000:]
    finally:
        kcat.stdin.close()
        kcat.wait(60)
    assert kcat.returncode == 0, kcat.stderr.read()[-2000:]
    assert_no_plaintext(kafka, [v.decode() for v in values], topic)


def test_rust_program_creates_its_clients_20_times_in_a_row(programs, kafka, creds, settings):  # noqa: F811
    """rust-rdkafka's ClientConfig is a HashMap: its properties reach
    librdkafka in a different order each time. With the e2ee.* settings in
    KAFKA_E2EE_CONFIG, 20 producers and 20 consumers in a row are made, and
    each producer's record is sealed (kcat opens all 20)."""
    topic = "static-rust-create"
    kafka.create_topic(topic)
    extra = [a for kv in ("acks=all", "linger.ms=5", "client.id=e2ee-rust", "socket.keepalive.enable=true",
                          "message.timeout.ms=60000", "statistics.interval.ms=0")
             for a in ("-X", kv)]
    r = run(programs["rust"], "create", kafka, topic, "-n", "20", *extra, config=settings["writer"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("clients ") == 20 and "clients 19 made" in r.stderr, r.stderr[-3000:]
    # Each producer had its record acknowledged (a client the plugin could not
    # set up fails every delivery), and sealed: no plaintext on disk.
    assert_no_plaintext(kafka, [f"create-{i}" for i in range(20)], topic)

    # The same properties with the e2ee.* ones among them: the order problem
    # this replaces (librdkafka refuses an e2ee.* property set before the
    # plugin is loaded). 20 tries all ordered right would be (1/3)^20.
    r = run(programs["rust"], "create", kafka, topic, "-n", "20", *extra,
            "-X", f"e2ee.credential={creds['writer']}", "-X", f"e2ee.trust={creds['trust']}",
            config=None, timeout=300)
    assert r.returncode != 0 and "No such configuration property" in r.stderr, r.stderr[-3000:]


def test_stripped_program_fails_naming_rdynamic_and_rdynamic_works_stripped(programs, kafka, creds,  # noqa: F811
                                                                             settings, tmp_path):
    """A stripped static program exports nothing and has no symbol table: client
    creation fails naming the fix. Linked with -rdynamic, even stripped, it
    exports librdkafka's functions and the plugin uses them."""
    stripped = tmp_path / "e2ee-go-stripped"
    shutil.copy(programs["go"], stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    r = run(stripped, "produce", kafka, "static-stripped", config=settings["writer"], input="00\n")
    assert r.returncode != 0
    assert "link this program with -rdynamic, or do not strip it" in r.stderr, r.stderr

    exported = tmp_path / "e2ee-go-rdynamic-stripped"
    shutil.copy(build("go", rdynamic=True), exported)
    subprocess.run(["strip", str(exported)], check=True)
    assert " T rd_kafka_version" in subprocess.run(["nm", "-D", str(exported)], capture_output=True,
                                                   text=True).stdout
    topic = "static-rdynamic"
    kafka.create_topic(topic)
    values = values_for(prefix(), "rdynamic", 3)
    hold = tmp_path / "stop"
    prod = producing(exported, kafka, topic, values, settings["writer"], hold)
    try:
        assert kcat_values(kafka, creds, topic, len(values)) == values
    finally:
        hold.touch()
        prod.wait(60)


@pytest.mark.parametrize("content, expect", [
    (None, "KAFKA_E2EE_CONFIG: cannot read"),
    ("e2ee.credentials=/x\n", "line 1: e2ee.credentials: unknown property"),
    ("bootstrap.servers=x\n", "'bootstrap.servers' is not an e2ee.* property"),
    ("e2ee.credential=/nonexistent\n", "e2ee.credential: cannot read '/nonexistent'"),
])
def test_a_bad_kafka_e2ee_config_fails_client_creation_naming_it(programs, kafka, tmp_path, content, expect):  # noqa: F811
    f = tmp_path / "e2ee.properties"
    if content is not None:
        f.write_text(content)
    for lang, exe in programs.items():
        r = run(exe, "produce", kafka, "static-bad", config=f, input="")
        assert r.returncode != 0, f"{lang}: {r.stdout} {r.stderr}"
        assert "kafka-e2ee: KAFKA_E2EE_CONFIG: " in r.stderr and expect in r.stderr, f"{lang}: {r.stderr}"
