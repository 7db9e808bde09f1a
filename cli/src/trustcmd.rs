//! `kafka-e2ee trust pin|deny|show`: pinned-key trust files and revocation.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kafka_e2ee_core::trust::{fingerprint, Credential, Identity, TrustAnchor};

use crate::json::{self, Value};
use crate::{files, Output};

fn read_anchor(path: &Path) -> Result<TrustAnchor, String> {
    TrustAnchor::from_file_bytes(&files::read(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_credential(path: &Path) -> Result<Credential, String> {
    let id = Identity::from_file_bytes(&files::read_secret(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id.credential().clone())
}

/// How a pinned credential is listed: name and fingerprint, and a note when
/// it is version 1 (certifies no signing key).
fn label(c: &Credential) -> String {
    if c.signing_key().is_some() {
        format!("{} {}", c.name(), c.fingerprint())
    } else {
        format!(
            "{} {} (version 1, no signing key)",
            c.name(),
            c.fingerprint()
        )
    }
}

/// Builds (or, with `append`, extends) a trust file that pins credentials.
pub fn pin(
    out: &Path,
    credentials: &[PathBuf],
    append: bool,
    force: bool,
) -> Result<Output, String> {
    if credentials.is_empty() {
        return Err("name at least one credential file to pin".into());
    }
    let creds = credentials
        .iter()
        .map(|p| read_credential(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut anchor, existed) = if append && out.exists() {
        (read_anchor(out)?, true)
    } else {
        if !force && !append {
            files::refuse_existing(out)?;
        }
        (TrustAnchor::pinned(Vec::new()), false)
    };
    let mut names = Vec::new();
    for c in creds {
        if anchor.is_denied(&c.public_key()) {
            return Err(format!(
                "{} ({}) is on this trust file's deny list; pinning it would have no effect",
                c.name(),
                c.fingerprint()
            ));
        }
        names.push(label(&c));
        anchor.add_pinned(c);
    }
    let bytes = anchor.to_file_bytes();
    if existed || (force && out.exists()) {
        files::replace_atomic(out, &bytes, files::Mode::Public)?;
    } else {
        files::write(out, &bytes, files::Mode::Public, false)?;
    }
    let text = format!(
        "{} {} with {} pinned credential(s):\n{}\nSet on every client: e2ee.trust={}\n",
        if existed { "Updated" } else { "Wrote" },
        out.display(),
        anchor.pinned_credentials().len(),
        names.iter().map(|n| format!("  {n}\n")).collect::<String>(),
        out.display()
    );
    Ok(Output {
        text,
        json: json::object(&[
            ("trust", Value::Str(out.display().to_string())),
            ("pinned", Value::List(names)),
            (
                "pinned_total",
                Value::Num(anchor.pinned_credentials().len() as u64),
            ),
        ]),
        failed: false,
    })
}

/// Adds X25519 public keys to the deny list of a trust file.
pub fn deny(
    trust: &Path,
    credentials: &[PathBuf],
    public_keys: &[String],
) -> Result<Output, String> {
    if credentials.is_empty() && public_keys.is_empty() {
        return Err("give --credential FILE or --public-key BASE64 (repeatable)".into());
    }
    let mut anchor = read_anchor(trust)?;
    let mut keys: Vec<([u8; 32], String)> = Vec::new();
    for p in credentials {
        let c = read_credential(p)?;
        keys.push((c.public_key(), c.name().to_owned()));
    }
    for k in public_keys {
        let bytes = STANDARD
            .decode(k.trim())
            .map_err(|_| format!("--public-key '{k}' is not base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("--public-key '{k}' is not 32 bytes (an X25519 public key)"))?;
        keys.push((key, "(public key)".to_owned()));
    }
    let mut lines = Vec::new();
    for (key, name) in &keys {
        anchor.add_deny(*key);
        lines.push(format!("{name} {}", fingerprint(key)));
    }
    files::replace_atomic(trust, &anchor.to_file_bytes(), files::Mode::Public)?;
    let text = format!(
        "Denied in {}:\n{}\nDistribute the updated trust file to every client; a client \
         re-reads it when it restarts.\n",
        trust.display(),
        lines.iter().map(|n| format!("  {n}\n")).collect::<String>()
    );
    Ok(Output {
        text,
        json: json::object(&[
            ("trust", Value::Str(trust.display().to_string())),
            ("denied", Value::List(lines)),
            ("denied_total", Value::Num(anchor.denied().len() as u64)),
        ]),
        failed: false,
    })
}

pub fn show(trust: &Path) -> Result<Output, String> {
    let anchor = read_anchor(trust)?;
    let authorities: Vec<String> = anchor.authorities().iter().map(fingerprint).collect();
    let pinned: Vec<String> = anchor.pinned_credentials().iter().map(label).collect();
    let denied: Vec<String> = anchor.denied().iter().map(fingerprint).collect();
    let section = |title: &str, v: &[String]| {
        let mut s = format!("{title}: {}\n", v.len());
        for x in v {
            s.push_str(&format!("  {x}\n"));
        }
        s
    };
    let text = format!(
        "{}{}{}",
        section("authorities", &authorities),
        section("pinned", &pinned),
        section("denied", &denied)
    );
    Ok(Output {
        text,
        json: json::object(&[
            ("authorities", Value::List(authorities)),
            ("pinned", Value::List(pinned)),
            ("denied", Value::List(denied)),
        ]),
        failed: false,
    })
}
