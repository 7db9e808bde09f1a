//! Runs the built `kafka-e2ee` binary in a scratch directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

use std::path::{Path, PathBuf};

use kafka_e2ee_core::trust::{fingerprint, Authority, Identity, TrustAnchor, DEFAULT_SKEW_MS};

fn init(t: &Scratch) -> PathBuf {
    let dir = t.path("authority");
    let o = run(&["authority", "init", "--out", s(&dir)]);
    assert!(o.status.success(), "{}", err(&o));
    dir
}

#[test]
fn init_issue_verify() {
    let t = Scratch::new();
    let dir = init(&t);
    let cred = t.path("writer.cred");
    let o = run(&[
        "credential",
        "issue",
        "--authority",
        s(&dir),
        "--name",
        "orders-writer",
        "--produce",
        "orders.*",
        "--consume",
        "audit",
        "--expires",
        "30d",
        "--out",
        s(&cred),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let identity = Identity::from_file_bytes(&std::fs::read(&cred).unwrap()).unwrap();
    let anchor = TrustAnchor::from_file_bytes(&std::fs::read(dir.join("trust")).unwrap()).unwrap();
    let now = now_ms();
    anchor
        .verify(identity.credential(), now, DEFAULT_SKEW_MS)
        .unwrap();
    let c = identity.credential();
    assert_eq!(c.name(), "orders-writer");
    assert!(c.may_produce("orders.eu") && !c.may_produce("audit"));
    assert!(c.may_consume("audit") && !c.may_consume("orders.eu"));
    let days = (c.expires_ms() - c.not_before_ms()) / 86_400_000;
    assert_eq!(days, 30);
    // Version 2: the authority certified the derived signing key.
    assert_eq!(c.version(), 2);
    assert_eq!(c.signing_key(), Some(identity.signing_public_key()));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cred), 0o600);
        assert_eq!(mode(&dir.join("authority.key")), 0o600);
    }

    // `show` prints the public parts and never the private key.
    let o = run(&[
        "credential",
        "show",
        s(&cred),
        "--trust",
        s(&dir.join("trust")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("\"name\":\"orders-writer\"") && out.contains("\"trusted\":true"),
        "{out}"
    );
    let signing_fp = fingerprint(&identity.signing_public_key());
    assert!(
        out.contains("\"version\":2") && out.contains(&format!("\"signing_key\":\"{signing_fp}\"")),
        "{out}"
    );
    let file = std::fs::read_to_string(&cred).unwrap();
    let key = file
        .lines()
        .find_map(|l| l.strip_prefix("private-key: "))
        .unwrap();
    assert!(!out.contains(key));
}

#[test]
fn json_output_of_init() {
    let t = Scratch::new();
    let dir = t.path("a");
    let o = run(&["--json", "authority", "init", "--out", s(&dir)]);
    assert!(o.status.success(), "{}", err(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.trim_start().starts_with('{') && out.contains("\"fingerprint\":"),
        "{out}"
    );
}

#[test]
fn missing_authority_dir() {
    let t = Scratch::new();
    let o = run(&[
        "credential",
        "issue",
        "--authority",
        s(&t.path("nope")),
        "--name",
        "x",
        "--produce",
        "t",
        "--out",
        s(&t.path("x.cred")),
    ]);
    assert!(!o.status.success());
    let e = err(&o);
    assert!(
        e.contains("does not exist") && e.contains("authority init"),
        "{e}"
    );
    assert!(!t.path("x.cred").exists());
}

#[test]
fn bad_pattern_names_the_flag() {
    let t = Scratch::new();
    let dir = init(&t);
    for (flag, pattern) in [("--produce", "orders/eu"), ("--consume", "a*b")] {
        let o = run(&[
            "credential",
            "issue",
            "--authority",
            s(&dir),
            "--name",
            "x",
            flag,
            pattern,
            "--out",
            s(&t.path("x.cred")),
        ]);
        assert!(!o.status.success());
        let e = err(&o);
        assert!(
            e.contains(flag) && e.contains("invalid topic pattern"),
            "{e}"
        );
    }
    assert!(!t.path("x.cred").exists());
}

#[test]
fn topics_required_and_bad_durations() {
    let t = Scratch::new();
    let dir = init(&t);
    let out = t.path("x.cred");
    let o = run(&[
        "credential",
        "issue",
        "--authority",
        s(&dir),
        "--name",
        "x",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert!(err(&o).contains("--produce or --consume"), "{}", err(&o));
    let o = run(&[
        "credential",
        "issue",
        "--authority",
        s(&dir),
        "--name",
        "x",
        "--produce",
        "t",
        "--expires",
        "3 weeks",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert!(err(&o).contains("--expires"), "{}", err(&o));
    let o = run(&[
        "credential",
        "issue",
        "--authority",
        s(&dir),
        "--name",
        "x",
        "--produce",
        "t",
        "--not-before",
        "tomorrow",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert!(err(&o).contains("--not-before"), "{}", err(&o));
    assert!(!out.exists());
}

#[test]
fn existing_files_need_force() {
    let t = Scratch::new();
    let dir = init(&t);
    let key_before = std::fs::read(dir.join("authority.key")).unwrap();
    let o = run(&["authority", "init", "--out", s(&dir)]);
    assert!(!o.status.success());
    assert!(err(&o).contains("already exists") && err(&o).contains("--force"));
    assert_eq!(
        std::fs::read(dir.join("authority.key")).unwrap(),
        key_before
    );

    let cred = t.path("c.cred");
    std::fs::write(&cred, b"keep me").unwrap();
    let issue = |force: bool| {
        let mut args = vec![
            "credential",
            "issue",
            "--authority",
            s(&dir),
            "--name",
            "x",
            "--consume",
            "*",
            "--out",
            s(&cred),
        ];
        if force {
            args.push("--force");
        }
        run(&args)
    };
    let o = issue(false);
    assert!(!o.status.success());
    assert!(err(&o).contains("already exists") && err(&o).contains("--force"));
    assert_eq!(std::fs::read(&cred).unwrap(), b"keep me");
    let o = issue(true);
    assert!(o.status.success(), "{}", err(&o));
    Identity::from_file_bytes(&std::fs::read(&cred).unwrap()).unwrap();

    let o = run(&["authority", "init", "--out", s(&dir), "--force"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_ne!(
        std::fs::read(dir.join("authority.key")).unwrap(),
        key_before
    );
}

#[test]
fn show_rejects_untrusted_and_garbage() {
    let t = Scratch::new();
    let dir = init(&t);
    let other = t.path("other");
    let o = run(&["authority", "init", "--out", s(&other)]);
    assert!(o.status.success());
    let cred = t.path("c.cred");
    let o = run(&[
        "credential",
        "issue",
        "--authority",
        s(&dir),
        "--name",
        "x",
        "--consume",
        "*",
        "--out",
        s(&cred),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(&[
        "credential",
        "show",
        s(&cred),
        "--trust",
        s(&other.join("trust")),
    ]);
    assert!(!o.status.success());
    assert!(err(&o).contains("not trusted"), "{}", err(&o));

    let o = run(&["credential", "show", s(&dir.join("trust"))]);
    assert!(!o.status.success());
    assert!(err(&o).contains("this is a trust file"), "{}", err(&o));
}

#[test]
fn unsigned_issue_is_version_2_and_old_credentials_still_show() {
    let t = Scratch::new();
    let cred = t.path("u.cred");
    let o = run(&[
        "credential",
        "issue",
        "--unsigned",
        "--name",
        "u",
        "--produce",
        "t",
        "--out",
        s(&cred),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let id = Identity::from_file_bytes(&std::fs::read(&cred).unwrap()).unwrap();
    assert_eq!(id.credential().signing_key(), Some(id.signing_public_key()));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "signing key: {}",
            fingerprint(&id.signing_public_key())
        )),
        "{text}"
    );

    // A version 1 credential file, as written before version 2: still read,
    // shown as version 1, trusted, and pinned with a note.
    let dir = init(&t);
    let authority =
        Authority::from_file_bytes(&std::fs::read(dir.join("authority.key")).unwrap()).unwrap();
    let now = now_ms();
    let v1 = authority.issue("old", id.public_key(), vec![], vec![], 0, now + 86_400_000);
    let old = Identity::from_parts(id.private_key_bytes(), v1).unwrap();
    let old_path = t.path("old.cred");
    std::fs::write(&old_path, &*old.to_file_bytes()).unwrap();
    let o = run(&[
        "credential",
        "show",
        s(&old_path),
        "--trust",
        s(&dir.join("trust")),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("version:     1") && text.contains("signing key: none (version 1"),
        "{text}"
    );
    let o = run(&["credential", "show", s(&old_path), "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("\"version\":1") && text.contains("\"signing_key\":null"),
        "{text}"
    );
    let trust = t.path("pinned");
    let o = run(&["trust", "pin", "--out", s(&trust), s(&old_path), s(&cred)]);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(&["trust", "show", s(&trust)]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("old ") && text.contains("(version 1, no signing key)"),
        "{text}"
    );
    assert_eq!(text.matches("version 1").count(), 1, "{text}");
}
