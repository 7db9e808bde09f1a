//! trust pin/deny/show, keys list/shred, doctor (offline and with an
//! unreachable broker), config docs: the built binary in a scratch directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

use kafka_e2ee::state_dir::StateDir;
use kafka_e2ee_core::format::KeyBinding;
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::state::{StateBlob, StoredKey};
use kafka_e2ee_core::trust::{Identity, TopicPattern, TrustAnchor, DEFAULT_SKEW_MS};
use kafka_e2ee_core::{Engine, EngineConfig};

fn ok(o: &Output) {
    assert!(o.status.success(), "stdout: {}\nstderr: {}", out(o), err(o));
}

fn fails(o: &Output, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        out(o),
        err(o)
    );
    let all = format!("{}{}", out(o), err(o));
    assert!(all.contains(needle), "expected '{needle}' in:\n{all}");
}

fn authority(t: &Scratch, name: &str) -> PathBuf {
    let dir = t.path(name);
    ok(&run(&["authority", "init", "--out", s(&dir)]));
    dir
}

fn issue(t: &Scratch, authority: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let cred = t.path(&format!("{name}.cred"));
    let mut args = vec![
        "credential",
        "issue",
        "--authority",
        s(authority),
        "--name",
        name,
        "--out",
        s(&cred),
    ];
    args.extend_from_slice(extra);
    ok(&run(&args));
    cred
}

fn unsigned(t: &Scratch, name: &str) -> PathBuf {
    let cred = t.path(&format!("{name}.cred"));
    ok(&run(&[
        "credential",
        "issue",
        "--unsigned",
        "--name",
        name,
        "--produce",
        "orders",
        "--consume",
        "orders",
        "--out",
        s(&cred),
    ]));
    cred
}

fn identity(p: &Path) -> Identity {
    Identity::from_file_bytes(&std::fs::read(p).unwrap()).unwrap()
}

fn anchor(p: &Path) -> TrustAnchor {
    TrustAnchor::from_file_bytes(&std::fs::read(p).unwrap()).unwrap()
}

// ---- trust ------------------------------------------------------------------

#[test]
fn pin_builds_a_trust_file_that_accepts_exactly_the_pinned() {
    let t = Scratch::new();
    let a = unsigned(&t, "alice");
    let b = unsigned(&t, "bob");
    let c = unsigned(&t, "carol");
    let trust = t.path("trust");
    ok(&run(&["trust", "pin", "--out", s(&trust), s(&a), s(&b)]));
    let anchor_ab = anchor(&trust);
    let now = now_ms();
    for p in [&a, &b] {
        anchor_ab
            .verify(identity(p).credential(), now, DEFAULT_SKEW_MS)
            .unwrap();
    }
    assert!(anchor_ab
        .verify(identity(&c).credential(), now, DEFAULT_SKEW_MS)
        .is_err());
    // The trust file is public: it holds no private key.
    let text = std::fs::read_to_string(&trust).unwrap();
    assert!(!text.contains("private-key"));
    let key_line = std::fs::read_to_string(&a).unwrap();
    let key = key_line
        .lines()
        .find_map(|l| l.strip_prefix("private-key: "))
        .unwrap();
    assert!(!text.contains(key));

    // Existing file: refused without --append/--force; --append adds.
    fails(
        &run(&["trust", "pin", "--out", s(&trust), s(&c)]),
        "already exists",
    );
    ok(&run(&[
        "trust",
        "pin",
        "--append",
        "--out",
        s(&trust),
        s(&c),
    ]));
    assert_eq!(anchor(&trust).pinned_credentials().len(), 3);
    let o = run(&["trust", "show", s(&trust), "--json"]);
    ok(&o);
    assert!(out(&o).contains("\"pinned\":[\"alice "), "{}", out(&o));

    // --append onto an authority's trust file keeps the authority.
    let auth = authority(&t, "auth");
    ok(&run(&[
        "trust",
        "pin",
        "--append",
        "--out",
        s(&auth.join("trust")),
        s(&a),
    ]));
    let merged = anchor(&auth.join("trust"));
    assert_eq!(
        (
            merged.authorities().len(),
            merged.pinned_credentials().len()
        ),
        (1, 1)
    );
}

#[test]
fn pin_bad_input() {
    let t = Scratch::new();
    let trust = t.path("trust");
    fails(
        &run(&[
            "trust",
            "pin",
            "--out",
            s(&trust),
            s(&t.path("missing.cred")),
        ]),
        "cannot read",
    );
    // A trust file is not a credential.
    let auth = authority(&t, "auth");
    fails(
        &run(&["trust", "pin", "--out", s(&trust), s(&auth.join("trust"))]),
        "credential file",
    );
    assert!(!trust.exists(), "nothing written on failure");
    // No credential at all: clap refuses (exit 2).
    assert_eq!(
        run(&["trust", "pin", "--out", s(&trust)]).status.code(),
        Some(2)
    );
}

#[test]
fn deny_revokes_a_signed_credential() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let w = issue(&t, &auth, "writer", &["--produce", "orders"]);
    let other = issue(&t, &auth, "other", &["--produce", "orders"]);
    let trust = auth.join("trust");
    let now = now_ms();
    anchor(&trust)
        .verify(identity(&w).credential(), now, DEFAULT_SKEW_MS)
        .unwrap();
    let o = run(&["trust", "deny", "--trust", s(&trust), "--credential", s(&w)]);
    ok(&o);
    assert!(out(&o).contains("writer"), "{}", out(&o));
    let a = anchor(&trust);
    assert!(a
        .verify(identity(&w).credential(), now, DEFAULT_SKEW_MS)
        .is_err());
    a.verify(identity(&other).credential(), now, DEFAULT_SKEW_MS)
        .unwrap();
    // credential show --trust now says so, and fails.
    fails(
        &run(&["credential", "show", s(&w), "--trust", s(&trust)]),
        "not trusted",
    );
    // Deny by raw public key (base64), JSON output.
    use base64::Engine as _;
    let pk = base64::engine::general_purpose::STANDARD.encode(identity(&other).public_key());
    let o = run(&[
        "trust",
        "deny",
        "--trust",
        s(&trust),
        "--public-key",
        &pk,
        "--json",
    ]);
    ok(&o);
    assert!(out(&o).contains("\"denied_total\":2"), "{}", out(&o));
    // Pinning a denied credential is refused.
    fails(
        &run(&["trust", "pin", "--append", "--out", s(&trust), s(&w)]),
        "deny list",
    );
}

#[test]
fn deny_bad_input() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let trust = auth.join("trust");
    let before = std::fs::read(&trust).unwrap();
    fails(
        &run(&["trust", "deny", "--trust", s(&trust)]),
        "--credential",
    );
    fails(
        &run(&["trust", "deny", "--trust", s(&trust), "--public-key", "!!"]),
        "not base64",
    );
    fails(
        &run(&[
            "trust",
            "deny",
            "--trust",
            s(&trust),
            "--public-key",
            "AAAA",
        ]),
        "not 32 bytes",
    );
    fails(
        &run(&[
            "trust",
            "deny",
            "--trust",
            s(&t.path("nope")),
            "--public-key",
            "AAAA",
        ]),
        "cannot read",
    );
    assert_eq!(
        std::fs::read(&trust).unwrap(),
        before,
        "unchanged on failure"
    );
}

// ---- keys -------------------------------------------------------------------

fn state_dir(dir: &Path, cred: &Path) -> Box<StateDir> {
    Box::new(StateDir::open(dir, &identity(cred)).unwrap())
}

/// The keys a state directory holds, read as `keys list` reads them.
fn stored_keys(dir: &Path, cred: &Path) -> Vec<StoredKey> {
    let plain = StateDir::open_read_only(dir, &identity(cred))
        .read()
        .unwrap()
        .unwrap();
    StateBlob::parse(&plain).unwrap().keys()
}

/// A state directory as a client leaves it: an engine that sealed under
/// three epochs, 1.5 s apart. Returns the sealed records.
fn client_state(cred: &Path, trust: &Path, dir: &Path) -> Vec<([u8; 34], Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let config = EngineConfig {
        key: KeyPolicy {
            rotation_ms: 1000,
            rotation_records: 1000,
            retention_ms: 3_600_000,
        },
        protected_topics: vec![TopicPattern::all()],
        ..EngineConfig::default()
    };
    let t0 = now_ms() - 10_000;
    let engine = Engine::new(
        config,
        identity(cred),
        anchor(trust),
        t0,
        Box::new(rand_core::OsRng),
        Some(state_dir(dir, cred)),
    )
    .unwrap();
    let mut sealed = Vec::new();
    for step in 0..3 {
        engine.handle_timeout(t0 + step * 1500).unwrap();
        let mut v = b"secret order".to_vec();
        let h = engine.seal("orders", KeyBinding::Unbound, &mut v).unwrap();
        sealed.push((h, v));
    }
    sealed
}

#[test]
fn keys_list_and_shred() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "writer", &["--produce", "orders"]);
    let dir = t.path("state");
    client_state(&cred, &auth.join("trust"), &dir);
    let blob_before = std::fs::read(dir.join("state")).unwrap();
    let keys = stored_keys(&dir, &cred);
    assert!(keys.len() >= 3, "{keys:?}");

    let o = run(&[
        "keys",
        "list",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
        "--json",
    ]);
    ok(&o);
    let listed = out(&o);
    assert_eq!(
        listed.matches("\"origin\":\"produced\"").count(),
        keys.len()
    );
    for k in &keys {
        assert!(listed.contains(&k.key_id.to_string()), "{listed}");
    }
    let text = out(&run(&[
        "keys",
        "list",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
    ]));
    assert!(
        text.contains(&format!("{} stored key(s)", keys.len())),
        "{text}"
    );

    // Shred without --yes asks; anything but "yes" aborts and changes nothing.
    let base = [
        "keys",
        "shred",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
    ];
    let cutoff = keys.iter().map(|k| k.epoch_started_ms).min().unwrap() + 1;
    let cutoff_s = cutoff.to_string();
    let mut with_before = base.to_vec();
    with_before.extend_from_slice(&["--before", &cutoff_s]);
    fails(&run_with_input(&with_before, "no\n"), "not confirmed");
    fails(&run_with_input(&with_before, ""), "not confirmed");
    assert_eq!(std::fs::read(dir.join("state")).unwrap(), blob_before);

    // "yes" on stdin confirms: exactly the oldest epoch goes.
    let o = run_with_input(&with_before, "yes\n");
    ok(&o);
    assert!(err(&o).contains("About to delete 1 key(s)"), "{}", err(&o));
    let left = stored_keys(&dir, &cred);
    assert_eq!(left.len(), keys.len() - 1);
    assert!(left.iter().all(|k| k.epoch_started_ms >= cutoff));
    assert!(!dir.join("state.tmp").exists());

    // --yes, no --before: everything.
    let mut all = base.to_vec();
    all.extend_from_slice(&["--yes", "--json"]);
    let o = run(&all);
    ok(&o);
    assert!(
        out(&o).contains(&format!("\"shredded\":{}", keys.len() - 1)),
        "{}",
        out(&o)
    );
    let left = stored_keys(&dir, &cred);
    assert!(left.is_empty());
    // Never prints key bytes: the only secrets are inside the blob; check the
    // output has no base64 of 32 bytes (44 chars ending in '=').
    assert!(!out(&o).contains("=\""));
}

#[test]
fn shredded_keys_no_longer_open_records() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(
        &t,
        &auth,
        "writer",
        &["--produce", "orders", "--consume", "orders"],
    );
    let trust = auth.join("trust");
    let dir = t.path("state");
    let sealed = client_state(&cred, &trust, &dir);
    ok(&run(&[
        "keys",
        "shred",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
        "--yes",
    ]));
    // A restarted client with the same state directory cannot open them.
    let engine = Engine::new(
        EngineConfig::default(),
        identity(&cred),
        anchor(&trust),
        now_ms(),
        Box::new(rand_core::OsRng),
        Some(state_dir(&dir, &cred)),
    )
    .unwrap();
    for (h, v) in sealed {
        let mut v = v.clone();
        assert!(engine
            .open("orders", Some(&h[..]), KeyBinding::Unbound, &mut v)
            .is_err());
        assert_ne!(v, b"secret order");
    }
}

#[test]
fn keys_bad_input() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "writer", &["--produce", "orders"]);
    let other = issue(&t, &auth, "other", &["--produce", "orders"]);
    let dir = t.path("state");
    client_state(&cred, &auth.join("trust"), &dir);
    let list =
        |d: &Path, c: &Path| run(&["keys", "list", "--state-dir", s(d), "--credential", s(c)]);
    fails(&list(&t.path("nope"), &cred), "does not exist");
    fails(&list(&dir, &t.path("nope.cred")), "cannot read");
    // Another credential's file cannot open the state (wrong key).
    fails(&list(&dir, &other), "another credential");
    // Corrupt state.
    let corrupt = t.path("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("state"), b"KE2S\x01garbage").unwrap();
    fails(&list(&corrupt, &cred), "corrupt");
    // Empty directory: no keys, not an error.
    let empty = t.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = list(&empty, &cred);
    ok(&o);
    assert!(out(&o).contains("no state file"), "{}", out(&o));
    // Bad --before.
    let o = run(&[
        "keys",
        "shred",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
        "--before",
        "yesterday-ish",
        "--yes",
    ]);
    fails(&o, "--before");
}

#[test]
fn shred_refuses_a_directory_a_running_client_holds() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "writer", &["--produce", "orders"]);
    let dir = t.path("state");
    client_state(&cred, &auth.join("trust"), &dir);
    let before = std::fs::read(dir.join("state")).unwrap();
    // Hold the lock the way a host does (flock on DIR/lock).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let o = run(&[
        "keys",
        "shred",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
        "--yes",
    ]);
    fails(&o, "in use by a running client");
    assert_eq!(std::fs::read(dir.join("state")).unwrap(), before);
    // list still works, and says so.
    let o = run(&[
        "keys",
        "list",
        "--state-dir",
        s(&dir),
        "--credential",
        s(&cred),
    ]);
    ok(&o);
    assert!(out(&o).contains("running client"), "{}", out(&o));
    drop(lock);
}

// ---- doctor -----------------------------------------------------------------

fn write(t: &Scratch, name: &str, text: &str) -> PathBuf {
    let p = t.path(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn doctor_accepts_a_good_java_producer_config() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "writer", &["--produce", "orders.*"]);
    let cfg = write(
        &t,
        "producer.properties",
        &format!(
            "bootstrap.servers=127.0.0.1:9\n\
             value.serializer=dev.kafkae2ee.EncryptingSerializer\n\
             e2ee.inner.value.serializer=org.apache.kafka.common.serialization.StringSerializer\n\
             e2ee.credential={}\ne2ee.trust={}\ne2ee.topics=orders.eu,orders.us.*\n\
             e2ee.state.dir={}\n",
            s(&cred),
            s(&auth.join("trust")),
            s(&t.path("state"))
        ),
    );
    let o = run(&["doctor", "--config", s(&cfg), "--offline"]);
    ok(&o);
    let text = out(&o);
    assert!(text.contains("0 problem(s)"), "{text}");
    assert!(text.contains("topic orders.eu: may produce"), "{text}");
    let o = run(&["doctor", "--config", s(&cfg), "--offline", "--json"]);
    ok(&o);
    assert!(out(&o).contains("\"problems\":0"), "{}", out(&o));
}

#[test]
fn doctor_names_each_problem_and_its_fix() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let other = authority(&t, "other-auth");
    // Issued by another authority, may only consume, and denied nothing.
    let cred = issue(&t, &other, "reader", &["--consume", "audit"]);
    let cfg = write(
        &t,
        "client.properties",
        &format!(
            "e2ee.credentail=/x\n\
             value.serializer=dev.kafkae2ee.EncryptingSerializer\n\
             e2ee.credential={}\ne2ee.trust={}\ne2ee.topics=orders,bad topic\n\
             e2ee.key.rotation.ms=ten\ne2ee.key.retention.ms=10\ne2ee.key.rotation.records=0\n\
             e2ee.keys.topic=_e2ee_control\ne2ee.close.timeout.ms=-5\n",
            s(&cred),
            s(&auth.join("trust")),
        ),
    );
    let o = run(&["doctor", "--config", s(&cfg), "--offline"]);
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    for needle in [
        "e2ee.credentail: unknown property",
        "did you mean e2ee.credential?",
        "EncryptingSerializer wraps another serializer",
        "'ten' is not a whole number",
        "e2ee.key.rotation.records: must be greater than 0",
        "'bad topic'",
        "the trust file does not accept this credential",
        "topic orders: the credential may not produce to it",
        "e2ee.state.dir: not set",
        "e2ee.keys.topic: is the control topic",
        "e2ee.close.timeout.ms: '-5' is not a whole number",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    assert!(text.matches("fix: ").count() >= 10, "{text}");
}

/// A trust file or credential that group or others may write fails doctor,
/// naming the file and the chmod that fixes it.
#[cfg(unix)]
#[test]
fn doctor_fails_a_trust_file_or_credential_others_may_write() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "writer", &["--produce", "orders"]);
    let trust = auth.join("trust");
    let cfg = write(
        &t,
        "producer.properties",
        &format!(
            "bootstrap.servers=127.0.0.1:9\n\
             value.serializer=dev.kafkae2ee.EncryptingSerializer\n\
             e2ee.inner.value.serializer=org.apache.kafka.common.serialization.StringSerializer\n\
             e2ee.credential={}\ne2ee.trust={}\ne2ee.topics=orders\ne2ee.state.dir={}\n",
            s(&cred),
            s(&trust),
            s(&t.path("state"))
        ),
    );
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(&trust, 0o644);
    chmod(&cred, 0o600);
    let o = run(&["doctor", "--config", s(&cfg), "--offline"]);
    ok(&o);
    assert!(out(&o).contains("0 problem(s)"), "{}", out(&o));
    for (file, mode, who) in [
        (&trust, 0o664, "its group may write it"),
        (&trust, 0o646, "others may write it"),
        (&cred, 0o620, "its group may write it"),
        (&cred, 0o622, "group and others may write it"),
    ] {
        chmod(file, mode);
        let o = run(&["doctor", "--config", s(&cfg), "--offline"]);
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        let text = out(&o);
        let want = format!("{} has mode {mode:03o}: {who}", s(file));
        assert!(text.contains(&want), "missing '{want}' in:\n{text}");
        let fix = format!(
            "chmod {} {}",
            if file == &trust { "644" } else { "600" },
            s(file)
        );
        assert!(text.contains(&fix), "missing '{fix}' in:\n{text}");
        chmod(&trust, 0o644);
        chmod(&cred, 0o600);
    }
}

#[test]
fn doctor_missing_files_and_librdkafka_order() {
    let t = Scratch::new();
    let cfg = write(
        &t,
        "rdkafka.conf",
        "e2ee.credential=/no/such.cred\n\
         plugin.library.paths=/no/such/libkafka_e2ee.so\n\
         e2ee.trust=/no/such/trust\n",
    );
    let o = run(&["doctor", "--config", s(&cfg), "--offline", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j = out(&o);
    for needle in [
        "/no/such/libkafka_e2ee.so does not exist",
        "e2ee.credential (line 1) come(s) before plugin.library.paths",
        "cannot read /no/such.cred",
        "cannot read /no/such/trust",
    ] {
        assert!(j.contains(needle), "missing '{needle}' in:\n{j}");
    }
    // No hook at all; missing config file.
    let cfg = write(&t, "plain.properties", "bootstrap.servers=127.0.0.1:9\n");
    let o = run(&["doctor", "--config", s(&cfg), "--offline"]);
    fails(&o, "no kafka-e2ee hook is configured");
    fails(
        &run(&["doctor", "--config", s(&t.path("nope.properties"))]),
        "cannot read",
    );
}

/// A mirrored cluster's consumer: doctor checks the key-exchange topics on
/// the cluster e2ee.control.bootstrap.servers names, not on its own.
#[test]
fn doctor_checks_the_key_exchange_on_the_control_cluster() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "reader", &["--consume", "orders"]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = write(
        &t,
        "c.properties",
        &format!(
            "bootstrap.servers=127.0.0.1:1\n\
             plugin.library.paths=libkafka_e2ee.so\n\
             e2ee.control.bootstrap.servers=127.0.0.1:{port}\n\
             e2ee.topic.source.prefix=A.\n\
             e2ee.credential={}\ne2ee.trust={}\ne2ee.state.dir={}\n",
            s(&cred),
            s(&auth.join("trust")),
            s(&t.path("st"))
        ),
    );
    let o = run(&["doctor", "--config", s(&cfg), "--timeout", "2"]);
    fails(&o, "cannot reach the cluster");
    assert!(
        err(&o).contains(&format!("connecting to 127.0.0.1:{port} ")),
        "{}",
        err(&o)
    );
}

#[test]
fn doctor_reports_an_unreachable_broker() {
    let t = Scratch::new();
    let auth = authority(&t, "auth");
    let cred = issue(&t, &auth, "writer", &["--produce", "*"]);
    // A loopback port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = write(
        &t,
        "p.properties",
        &format!(
            "bootstrap.servers=127.0.0.1:{port}\n\
             interceptor.classes=dev.kafkae2ee.E2eeProducerInterceptor\n\
             e2ee.credential={}\ne2ee.trust={}\ne2ee.state.dir={}\n",
            s(&cred),
            s(&auth.join("trust")),
            s(&t.path("st"))
        ),
    );
    let started = std::time::Instant::now();
    let o = run(&["doctor", "--config", s(&cfg), "--timeout", "2"]);
    assert!(started.elapsed().as_secs() < 20);
    fails(&o, "cannot reach the cluster");
    assert!(out(&o).contains("1 problem(s)"), "{}", out(&o));
    assert!(
        err(&o).contains("connecting to"),
        "progress on stderr: {}",
        err(&o)
    );
    // inspect says the same.
    let o = run(&[
        "inspect",
        "--bootstrap",
        &format!("127.0.0.1:{port}"),
        "--topic",
        "orders",
        "--timeout",
        "2",
    ]);
    fails(&o, "cannot reach the cluster");
    // What the build cannot do (Kerberos) is refused plainly rather than tried.
    let cfg = write(
        &t,
        "ssl.properties",
        "bootstrap.servers=h:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\n",
    );
    fails(
        &run(&["inspect", "--config", s(&cfg), "--topic", "t"]),
        "not supported",
    );
}

// ---- config docs ------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn configuration_doc_is_generated() {
    let o = run(&["config", "docs"]);
    ok(&o);
    let committed = std::fs::read_to_string(repo().join("docs/CONFIGURATION.md")).unwrap();
    // The native part comes first; the Java ConfigDef's section follows
    // (checked by tests/integration/test_config_docs.py).
    let native = committed.split("\n## Java clients").next().unwrap();
    assert_eq!(
        native,
        out(&o),
        "docs/CONFIGURATION.md is stale: run scripts/gen-config-docs"
    );
}
