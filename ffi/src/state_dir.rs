//! A client's state directory (`e2ee.state.dir`): the engine's state sealed
//! at rest with forward secrecy (`kafka_e2ee_core::state` has the formats).
//!
//! Files: `lock` (an exclusive `flock` held while a client runs: two
//! processes never share a directory), `state` (the sealed state) and
//! `state.key` (two slots of random file keys, 0600, created with
//! `O_EXCL`). A save ([`StateDir::write`]) runs these steps, each synced
//! before the next:
//!
//! 1. draw a new file key into the free slot of `state.key`, in place;
//! 2. write `state.tmp` sealed under it (and the credential);
//! 3. rename it over `state`;
//! 4. sync the directory;
//! 5. zero the other slot of `state.key`, in place.
//!
//! Each write to `state.key` changes one slot while the other still opens
//! the `state` on disk, so a crash (or a torn write) at any step leaves a
//! state that opens: the old one up to step 3, the new one after. Loading
//! finishes an interrupted save (removes `state.tmp`, zeroes the slot that
//! does not open `state`). After step 5 the file keys of earlier saves exist
//! nowhere in the file, so an old copy of `state` does not open, with or
//! without the credential. What the medium itself keeps (SSD remapping,
//! copy-on-write filesystems, snapshots, backups) is in docs/OPERATIONS.md.
//!
//! A directory written before `state.key` existed (a version 1 `state`,
//! sealed under a key derived from the credential alone) loads once and is
//! saved again at once under the new scheme.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use kafka_e2ee_core::state::{self, KeyFile, Sealing};
use kafka_e2ee_core::trust::Identity;
use kafka_e2ee_core::Storage;
use zeroize::Zeroizing;

pub const STATE_FILE: &str = "state";
pub const KEY_FILE: &str = "state.key";
pub const TMP_FILE: &str = "state.tmp";
pub const LOCK_FILE: &str = "lock";

/// Why a state directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another process holds its lock.
    InUse,
    Io(String),
}

/// The steps of a save, in order (tests stop after one to play a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    NewKey = 1,
    WriteTemp = 2,
    Rename = 3,
    SyncDir = 4,
    ZeroOldKey = 5,
}

/// A state directory opened for one credential.
pub struct StateDir {
    dir: PathBuf,
    credential_key: Zeroizing<[u8; 32]>,
    lock: Option<File>,
    /// The slot of `state.key` that opens the `state` on disk, once known
    /// (`Some(None)`: there is no version 2 `state`).
    current: Option<Option<usize>>,
}

/// A state file that opened: its plaintext, what opened it, the key file.
type Found = (Zeroizing<Vec<u8>>, Sealing, Option<KeyFile>);

impl core::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StateDir")
            .field("dir", &self.dir)
            .field("locked", &self.lock.is_some())
            .finish_non_exhaustive()
    }
}

fn io<'a>(path: &'a Path, what: &str) -> impl Fn(std::io::Error) -> String + 'a {
    let what = what.to_owned();
    move |e| format!("cannot {what} {}: {e}", path.display())
}

fn message(e: kafka_e2ee_core::Error) -> String {
    match e {
        kafka_e2ee_core::Error::Storage(m) => m,
        other => other.to_string(),
    }
}

/// Syncs a directory, so a rename or a new file in it is durable. A
/// filesystem that cannot sync directories (EINVAL) is taken at its word.
fn sync_dir(dir: &Path) -> Result<(), String> {
    let d = File::open(dir).map_err(io(dir, "open directory"))?;
    match d.sync_all() {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io(dir, "sync directory")(e)),
    }
}

impl StateDir {
    /// Opens `dir` for a client with `identity` (creating it, 0700, if
    /// needed) and takes its lock for as long as the value lives.
    pub fn open(dir: &Path, identity: &Identity) -> Result<StateDir, OpenError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpenError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| OpenError::Io(format!("cannot open {}: {e}", dir.display())))?;
        lock.try_lock().map_err(|_| OpenError::InUse)?;
        Ok(StateDir {
            dir: dir.to_owned(),
            credential_key: identity.state_key(),
            lock: Some(lock),
            current: None,
        })
    }

    /// Reads `dir` without its lock (tools that only look: `keys list`,
    /// `doctor`); such a value never writes.
    pub fn open_read_only(dir: &Path, identity: &Identity) -> StateDir {
        StateDir {
            dir: dir.to_owned(),
            credential_key: identity.state_key(),
            lock: None,
            current: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_keys(&self) -> Result<Option<KeyFile>, String> {
        let path = self.path(KEY_FILE);
        match fs::read(&path) {
            Ok(b) => KeyFile::parse(&Zeroizing::new(b))
                .map(Some)
                .map_err(|e| format!("{}: {}", path.display(), message(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn read_once(&self) -> Result<Option<Found>, String> {
        // The key file first: a save in between makes the state newer than
        // the keys read, which fails and is read again (read-only users).
        let keys = self.read_keys()?;
        let path = self.path(STATE_FILE);
        let blob = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let (plain, how) = state::open(&self.credential_key, keys.as_ref(), &blob)
            .map_err(|e| format!("{}: {}", path.display(), message(e)))?;
        Ok(Some((plain, how, keys)))
    }

    /// The plaintext state, or `None` when there is no state file yet.
    /// Never writes (see [`Storage::load`] for the loader that recovers).
    pub fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        // Without the lock a running client may be saving: try again.
        let attempts = if self.lock.is_some() { 1 } else { 5 };
        let mut n = 0;
        loop {
            n += 1;
            match self.read_once() {
                Err(_) if n < attempts => std::thread::sleep(std::time::Duration::from_millis(20)),
                r => return r.map(|o| o.map(|(plain, _, _)| plain)),
            }
        }
    }

    /// Loads the state and finishes an interrupted save: removes a stale
    /// `state.tmp`, zeroes the slot that does not open `state`, and saves a
    /// version 1 `state` again under the new scheme.
    fn load_and_recover(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        if self.lock.is_none() {
            return Err("a state directory opened read-only cannot be loaded by a client".into());
        }
        let found = self.read_once()?;
        let tmp = self.path(TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", tmp.display())),
        }
        match found {
            None => {
                self.current = Some(None);
                Ok(None)
            }
            Some((plain, Sealing::Credential, _)) => {
                self.current = Some(None);
                self.write(&plain)?;
                Ok(Some(plain))
            }
            Some((plain, Sealing::Slot(i), keys)) => {
                self.current = Some(Some(i));
                if keys.is_some_and(|k| k.is_set(1 - i)) {
                    // The rename may not be durable yet: sync it first.
                    sync_dir(&self.dir)?;
                    self.zero_slot(1 - i)?;
                }
                Ok(Some(plain))
            }
        }
    }

    fn zero_slot(&self, slot: usize) -> Result<(), String> {
        let path = self.path(KEY_FILE);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        f.write_all_at(&[0u8; 32], KeyFile::slot_offset(slot))
            .and_then(|()| f.sync_all())
            .map_err(io(&path, "write"))
    }

    /// Saves `plain` (see the module's steps).
    pub fn write(&mut self, plain: &[u8]) -> Result<(), String> {
        self.write_until(plain, Step::ZeroOldKey)
    }

    /// [`StateDir::write`], stopping after `last` (a crash, for tests).
    #[doc(hidden)]
    pub fn write_until(&mut self, plain: &[u8], last: Step) -> Result<(), String> {
        if self.lock.is_none() {
            return Err("a state directory opened read-only is never written".into());
        }
        let current = match self.current {
            Some(c) => c,
            None => match self.read_once() {
                Ok(Some((_, Sealing::Slot(i), _))) => Some(i),
                _ => None,
            },
        };
        let free = current.map_or(0, |i| 1 - i);
        let file_key = state::new_file_key(&mut rand_core::OsRng);

        // 1. The new key into the free slot, in place (the other slot still
        //    opens the state on disk).
        let key_path = self.path(KEY_FILE);
        match OpenOptions::new().read(true).write(true).open(&key_path) {
            Ok(f) => {
                let mut head = Zeroizing::new([0u8; state::KEY_FILE_LEN]);
                f.read_exact_at(&mut head[..], 0)
                    .map_err(io(&key_path, "read"))?;
                KeyFile::parse(&head[..])
                    .map_err(|e| format!("{}: {}", key_path.display(), message(e)))?;
                f.write_all_at(&file_key[..], KeyFile::slot_offset(free))
                    .and_then(|()| f.sync_all())
                    .map_err(io(&key_path, "write"))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut keys = KeyFile::empty();
                keys.set(free, &file_key);
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .map_err(io(&key_path, "create"))?;
                f.write_all(&keys.to_bytes()[..])
                    .and_then(|()| f.sync_all())
                    .map_err(io(&key_path, "write"))?;
                sync_dir(&self.dir)?;
            }
            Err(e) => return Err(format!("cannot open {}: {e}", key_path.display())),
        }
        if last == Step::NewKey {
            return Ok(());
        }

        // 2. The state under the new key, in a new file.
        let sealed = state::seal(
            &self.credential_key,
            &file_key,
            plain,
            &mut rand_core::OsRng,
        );
        let tmp = self.path(TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", tmp.display())),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create"))?;
        f.write_all(&sealed)
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp, "write"))?;
        drop(f);
        if last == Step::WriteTemp {
            return Ok(());
        }

        // 3, 4. Into place, durably: only then may the old key go.
        let path = self.path(STATE_FILE);
        fs::rename(&tmp, &path).map_err(io(&path, "replace"))?;
        self.current = Some(Some(free));
        if last == Step::Rename {
            return Ok(());
        }
        sync_dir(&self.dir)?;
        if last == Step::SyncDir {
            return Ok(());
        }

        // 5. The old key out of the file, in place.
        self.zero_slot(1 - free)
    }
}

impl Storage for StateDir {
    fn load(&mut self) -> Result<Option<Vec<u8>>, String> {
        // The engine takes the buffer itself (and wipes it).
        Ok(self
            .load_and_recover()?
            .map(|mut plain| std::mem::take(&mut *plain)))
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), String> {
        self.write(blob)
    }
}
