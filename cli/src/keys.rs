//! `kafka-e2ee keys list|shred`: the keys a client's state directory holds,
//! and crypto-shredding. Key bytes are never printed.

use std::fs::OpenOptions;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use kafka_e2ee::state_dir::{OpenError, StateDir, LOCK_FILE};
use kafka_e2ee_core::state::{KeyOrigin, StateBlob, StoredKey};
use kafka_e2ee_core::trust::Identity;

use crate::json::{self, Value};
use crate::{files, timefmt, Output};

struct Opened {
    dir: PathBuf,
    identity: Identity,
    /// `None` when the directory has no state file yet.
    blob: Option<StateBlob>,
}

/// Opens `dir` read-only (`lock` false) or locked for writing.
fn open(dir: &Path, credential: &Path, lock: bool) -> Result<(Opened, StateDir), String> {
    if !dir.is_dir() {
        return Err(format!(
            "state directory {} does not exist (it is the client's e2ee.state.dir)",
            dir.display()
        ));
    }
    let identity = Identity::from_file_bytes(&files::read_secret(credential)?)
        .map_err(|e| format!("{}: {e}", credential.display()))?;
    let state_dir = if lock {
        StateDir::open(dir, &identity).map_err(|e| match e {
            OpenError::InUse => format!(
                "{} is in use by a running client. Stop that client first: it holds its keys \
                 in memory and would write them back",
                dir.display()
            ),
            OpenError::Io(m) => m,
        })?
    } else {
        StateDir::open_read_only(dir, &identity)
    };
    let blob = match state_dir.read() {
        Ok(Some(plain)) => Some(StateBlob::parse(&plain).map_err(|e| e.to_string())?),
        Ok(None) => None,
        Err(e) => {
            return Err(format!(
                "{e}. It cannot be opened with {}: it belongs to another credential or is \
                 corrupt. Give the credential file of the client that uses this state directory",
                credential.display()
            ))
        }
    };
    Ok((
        Opened {
            dir: dir.to_owned(),
            identity,
            blob,
        },
        state_dir,
    ))
}

fn in_use(dir: &Path) -> bool {
    let path = dir.join(LOCK_FILE);
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => f.try_lock().is_err(),
        Err(_) => false,
    }
}

fn origin_name(o: KeyOrigin) -> &'static str {
    match o {
        KeyOrigin::Produced => "produced",
        KeyOrigin::Received => "received",
    }
}

fn describe(keys: &[StoredKey], now: u64) -> (String, String) {
    let mut text = String::new();
    let mut items = Vec::new();
    for k in keys {
        let expired = k.delete_at_ms <= now;
        text.push_str(&format!(
            "  {:<8}  {:<27}  {:<24}  started {}  delete at {}{}\n",
            origin_name(k.origin),
            k.key_id.to_string(),
            k.topic.as_deref().unwrap_or("(all its topics)"),
            timefmt::format_instant(k.epoch_started_ms),
            timefmt::format_instant(k.delete_at_ms),
            if expired { "  (expired)" } else { "" },
        ));
        items.push(json::object(&[
            ("origin", Value::Str(origin_name(k.origin).to_owned())),
            ("key_id", Value::Str(k.key_id.to_string())),
            ("producer", Value::Str(k.key_id.producer.to_string())),
            ("epoch", Value::Num(u64::from(k.key_id.epoch))),
            ("topic", json::opt_str(k.topic.as_deref())),
            ("epoch_started_ms", Value::Num(k.epoch_started_ms)),
            ("delete_at_ms", Value::Num(k.delete_at_ms)),
            ("expired", Value::Bool(expired)),
        ]));
    }
    (text, json::array(&items))
}

pub fn list(dir: &Path, credential: &Path, now: u64) -> Result<Output, String> {
    let (state, _) = open(dir, credential, false)?;
    let keys = state.blob.as_ref().map(StateBlob::keys).unwrap_or_default();
    let busy = in_use(dir);
    let (table, items) = describe(&keys, now);
    let mut text = match &state.blob {
        None => format!(
            "{}: no state file yet, so no stored keys\n",
            state.dir.display()
        ),
        Some(_) => format!(
            "{}: {} stored key(s) of {}\n{table}",
            state.dir.display(),
            keys.len(),
            state.identity.credential().name()
        ),
    };
    if busy {
        text.push_str(
            "note: a running client holds this directory; its keys in memory may differ\n",
        );
    }
    let json = json::object(&[
        ("state_dir", Value::Str(dir.display().to_string())),
        ("in_use", Value::Bool(busy)),
        ("keys", Value::Raw(items)),
    ]);
    Ok(Output {
        text,
        json,
        failed: false,
    })
}

pub fn shred(
    dir: &Path,
    credential: &Path,
    before: Option<u64>,
    yes: bool,
    now: u64,
) -> Result<Output, String> {
    let (mut state, mut state_dir) = open(dir, credential, true)?;
    let cutoff = before.unwrap_or(u64::MAX);
    let Some(blob) = state.blob.as_mut() else {
        return Ok(Output {
            text: format!("{}: no state file, nothing to shred\n", dir.display()),
            json: json::object(&[("shredded", Value::Num(0)), ("kept", Value::Num(0))]),
            failed: false,
        });
    };
    let doomed: Vec<StoredKey> = blob
        .keys()
        .into_iter()
        .filter(|k| k.epoch_started_ms < cutoff)
        .collect();
    let kept = blob.keys().len() - doomed.len();
    if doomed.is_empty() {
        return Ok(Output {
            text: format!("no stored key is older than the cutoff; {kept} kept\n"),
            json: json::object(&[
                ("shredded", Value::Num(0)),
                ("kept", Value::Num(kept as u64)),
            ]),
            failed: false,
        });
    }
    if !yes {
        confirm(&doomed, now)?;
    }
    let n = blob.shred_before(cutoff);
    state_dir.write(&blob.to_plain())?;
    let (table, items) = describe(&doomed, now);
    let text = format!(
        "Shredded {n} key(s); {kept} kept. Records sealed under these keys can no longer be \
         decrypted with this client's state:\n{table}\
         Other holders (the producer, other consumers) keep their copies until their own \
         retention ends or they are shredded too.\n"
    );
    let json = json::object(&[
        ("shredded", Value::Num(n as u64)),
        ("kept", Value::Num(kept as u64)),
        ("keys", Value::Raw(items)),
    ]);
    Ok(Output {
        text,
        json,
        failed: false,
    })
}

fn confirm(doomed: &[StoredKey], now: u64) -> Result<(), String> {
    let (table, _) = describe(doomed, now);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "About to delete {} key(s) for good:\n{table}Type 'yes' to continue: ",
        doomed.len()
    );
    let _ = err.flush();
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    if !interactive {
        let _ = writeln!(err);
    }
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err("not confirmed; nothing was deleted (pass --yes to skip the question)".into())
    }
}
