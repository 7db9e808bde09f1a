//! The state directory at rest (docs/PROTOCOL.md, threat model; docs/
//! OPERATIONS.md, "What a state directory keeps"): forward secrecy against
//! old copies of the state file, crash safety of every step of a save, the
//! upgrade from version 1 directories, permissions and the lock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use kafka_e2ee::state_dir::{OpenError, StateDir, Step, KEY_FILE, STATE_FILE, TMP_FILE};
use kafka_e2ee_core::format::{KeyBinding, KeyId, RecordHeader};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::state::{self, KeyFile, StateBlob};
use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Engine, EngineConfig, Storage};
use rand_core::OsRng;

const T0: u64 = 1_790_000_000_000;
const RETENTION_MS: u64 = 60_000;

/// A fresh directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "e2ee-state-at-rest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Party {
    trust: TrustAnchor,
    credential_file: Vec<u8>,
}

impl Party {
    fn new() -> Party {
        let authority = Authority::generate(&mut OsRng);
        let id = Identity::generate(
            "p",
            vec![TopicPattern::all()],
            vec![TopicPattern::all()],
            T0 - 1000,
            T0 + 86_400_000,
            &authority,
            &mut OsRng,
        );
        Party {
            trust: TrustAnchor::from_authorities(vec![authority.public_key()]),
            credential_file: id.to_file_bytes().to_vec(),
        }
    }
    fn identity(&self) -> Identity {
        Identity::from_file_bytes(&self.credential_file).unwrap()
    }
    fn engine(&self, dir: &Path, now: u64) -> Result<Engine, kafka_e2ee_core::Error> {
        let storage = StateDir::open(dir, &self.identity()).unwrap();
        Engine::new(
            EngineConfig {
                key: KeyPolicy {
                    rotation_ms: 1000,
                    rotation_records: 1000,
                    retention_ms: RETENTION_MS,
                },
                ..EngineConfig::default()
            },
            self.identity(),
            self.trust.clone(),
            now,
            Box::new(OsRng),
            Some(Box::new(storage)),
        )
    }
}

fn stored_ids(plain: &[u8]) -> Vec<KeyId> {
    StateBlob::parse(plain)
        .unwrap()
        .keys()
        .into_iter()
        .map(|k| k.key_id)
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn an_old_state_file_with_the_credential_and_the_current_directory_yields_no_deleted_key() {
    let t = Scratch::new();
    let dir = t.path("state");
    let p = Party::new();
    let engine = p.engine(&dir, T0).unwrap();
    let mut record = b"sealed under K".to_vec();
    let h = engine
        .seal("orders", KeyBinding::Bytes(b"k"), &mut record)
        .unwrap();
    let k = RecordHeader::decode(&h).unwrap().key_id;
    // The state file as saved while K was held: what freed blocks, a
    // backup or a snapshot keep.
    engine.handle_timeout(T0 + 1).unwrap();
    let old_state = read(&dir.join(STATE_FILE));
    let old_keys = read(&dir.join(KEY_FILE));
    let key_inode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().ino();
    let cred = p.identity().state_key();
    // (It did hold K: with the key file of its own time it opens.)
    let (plain, _) =
        state::open(&cred, Some(&KeyFile::parse(&old_keys).unwrap()), &old_state).unwrap();
    assert!(stored_ids(&plain).contains(&k));

    // Time passes beyond K's retention: the engine deletes K and saves.
    let mut now = T0;
    while now < T0 + 1000 + RETENTION_MS + 5000 {
        now += 500;
        engine.handle_timeout(now).unwrap();
    }
    drop(engine);
    let current_keys = read(&dir.join(KEY_FILE));
    let current = StateDir::open_read_only(&dir, &p.identity())
        .read()
        .unwrap()
        .unwrap();
    assert!(!stored_ids(&current).contains(&k), "K is past retention");
    // state.key was overwritten in place (same inode), not replaced.
    assert_eq!(
        std::fs::metadata(dir.join(KEY_FILE)).unwrap().ino(),
        key_inode
    );

    // The attacker: the old state file, the credential, the current
    // directory (state.key included).
    let keys = KeyFile::parse(&current_keys).unwrap();
    assert!(state::open(&cred, Some(&keys), &old_state).is_err());
    assert!(state::open(&cred, None, &old_state).is_err());
    assert!(state::open(&cred, Some(&KeyFile::empty()), &old_state).is_err());
    // Neither slot of the current key file is a key of that old save.
    for slot in 0..2 {
        assert!(!old_keys
            .windows(32)
            .any(|w| keys.is_set(slot) && w == &keys.slot(slot)[..]));
    }
    // Nor does an engine started on the current directory with the old
    // state file put back (its clock set back, too) open the record.
    let replay = t.path("replay");
    std::fs::create_dir_all(&replay).unwrap();
    std::fs::write(replay.join(KEY_FILE), &current_keys).unwrap();
    std::fs::write(replay.join(STATE_FILE), &old_state).unwrap();
    match p.engine(&replay, T0 + 2) {
        Err(e) => assert!(e.to_string().contains("does not open"), "{e}"),
        Ok(engine) => {
            let mut v = record.clone();
            assert!(engine
                .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
                .is_err());
            panic!("an engine started on a state it cannot open");
        }
    }
}

fn slots_set(dir: &Path) -> usize {
    let keys = KeyFile::parse(&read(&dir.join(KEY_FILE))).unwrap();
    (0..2).filter(|i| keys.is_set(*i)).count()
}

fn load(dir: &Path, p: &Party) -> Option<Vec<u8>> {
    let mut sd = StateDir::open(dir, &p.identity()).unwrap();
    let loaded = sd.load().unwrap();
    // Loading finished whatever save was interrupted.
    assert!(!dir.join(TMP_FILE).exists());
    if dir.join(KEY_FILE).exists() {
        assert!(slots_set(dir) <= 1);
    }
    loaded
}

#[test]
fn a_crash_at_any_step_of_a_save_leaves_a_state_that_loads() {
    let p = Party::new();
    let steps = [Step::NewKey, Step::WriteTemp, Step::Rename, Step::SyncDir];
    for last in steps {
        // The first save of a directory, interrupted.
        let t = Scratch::new();
        let dir = t.path("state");
        let mut sd = StateDir::open(&dir, &p.identity()).unwrap();
        assert_eq!(sd.load().unwrap(), None);
        sd.write_until(b"A", last).unwrap();
        drop(sd);
        let want = (last >= Step::Rename).then(|| b"A".to_vec());
        assert_eq!(load(&dir, &p), want, "first save, crash after {last:?}");

        // A later save, interrupted: the old state or the new one, whole.
        for before in 0..3 {
            let t = Scratch::new();
            let dir = t.path("state");
            let mut sd = StateDir::open(&dir, &p.identity()).unwrap();
            sd.load().unwrap();
            for i in 0..=before {
                sd.write(format!("old {i}").as_bytes()).unwrap();
            }
            sd.write_until(b"new", last).unwrap();
            drop(sd);
            let want = if last >= Step::Rename {
                b"new".to_vec()
            } else {
                format!("old {before}").into_bytes()
            };
            assert_eq!(load(&dir, &p), Some(want), "crash after {last:?}");
            // And the next save and load work as usual.
            let mut sd = StateDir::open(&dir, &p.identity()).unwrap();
            sd.load().unwrap();
            sd.write(b"next").unwrap();
            drop(sd);
            assert_eq!(load(&dir, &p), Some(b"next".to_vec()));
            assert_eq!(slots_set(&dir), 1);
        }
    }
}

#[test]
fn a_torn_write_of_either_key_slot_leaves_a_state_that_loads() {
    let p = Party::new();
    let t = Scratch::new();
    let dir = t.path("state");
    let mut sd = StateDir::open(&dir, &p.identity()).unwrap();
    sd.load().unwrap();
    sd.write(b"A").unwrap();
    // Step 1 torn: the free slot holds half a key.
    let keys = KeyFile::parse(&read(&dir.join(KEY_FILE))).unwrap();
    let free = usize::from(keys.is_set(0));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(KEY_FILE))
        .unwrap();
    f.write_all_at(&[0x5a; 16], KeyFile::slot_offset(free))
        .unwrap();
    drop(sd);
    assert_eq!(load(&dir, &p), Some(b"A".to_vec()));

    // Step 5 torn: the old slot half zeroed after the new state is in place.
    let mut sd = StateDir::open(&dir, &p.identity()).unwrap();
    sd.load().unwrap();
    let keys = KeyFile::parse(&read(&dir.join(KEY_FILE))).unwrap();
    let old = usize::from(keys.is_set(1));
    sd.write_until(b"B", Step::SyncDir).unwrap();
    f.write_all_at(&[0; 16], KeyFile::slot_offset(old)).unwrap();
    drop(sd);
    assert_eq!(load(&dir, &p), Some(b"B".to_vec()));
}

#[test]
fn a_version_1_directory_loads_once_and_is_saved_again_under_a_key_file() {
    let p = Party::new();
    let t = Scratch::new();
    // What a client left before state.key existed: its state sealed under
    // the credential-derived key alone.
    let src = t.path("src");
    let engine = p.engine(&src, T0).unwrap();
    let mut record = b"before the upgrade".to_vec();
    let h = engine
        .seal("orders", KeyBinding::Bytes(b"k"), &mut record)
        .unwrap();
    drop(engine);
    let plain = StateDir::open_read_only(&src, &p.identity())
        .read()
        .unwrap()
        .unwrap();
    let cred = p.identity().state_key();
    let v1 = state::seal_version_1(&cred, &plain, &mut OsRng);
    let dir = t.path("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(STATE_FILE), &v1).unwrap();

    let engine = p.engine(&dir, T0 + 10).unwrap();
    let mut v = record.clone();
    engine
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"before the upgrade");
    // Saved again at once: version 2, needing state.key; the credential
    // alone opens it no more.
    let now = read(&dir.join(STATE_FILE));
    assert_eq!(now.get(..5), Some(&b"KE2S\x02"[..]));
    assert!(state::open(&cred, None, &now).is_err());
    assert_eq!(slots_set(&dir), 1);
    drop(engine);
    let mut again = StateDir::open(&dir, &p.identity()).unwrap();
    assert!(again.load().unwrap().is_some());
}

#[test]
fn state_files_are_private_and_one_process_holds_a_directory() {
    let p = Party::new();
    let t = Scratch::new();
    let dir = t.path("a/state");
    let mut sd = StateDir::open(&dir, &p.identity()).unwrap();
    sd.load().unwrap();
    sd.write(b"A").unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(KEY_FILE), 0o600);
    assert_eq!(mode(STATE_FILE), 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // A second opener (another process, or this one again) is refused.
    assert!(matches!(
        StateDir::open(&dir, &p.identity()),
        Err(OpenError::InUse)
    ));
    // Readers that do not lock never write.
    let mut ro = StateDir::open_read_only(&dir, &p.identity());
    assert!(ro.write(b"B").is_err());
    assert!(ro.load().is_err());
    assert_eq!(
        ro.read().unwrap().as_deref().map(|v| &v[..]),
        Some(&b"A"[..])
    );
    drop(sd);
    assert!(StateDir::open(&dir, &p.identity()).is_ok());
}
