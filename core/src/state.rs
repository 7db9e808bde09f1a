//! The state at rest: how a state directory's files are sealed, and the
//! state blob for tools.
//!
//! The engine hands its [`Storage`](crate::Storage) the state in plaintext
//! (epoch keys, held keys, the mailbox's prekey seed, instance salts); a
//! storage seals it with [`seal`] before it leaves memory and opens it with
//! [`open`]. The host's state directory (`kafka-e2ee-ffi`, `state_dir`) keeps
//! two files next to its lock:
//!
//! - `state`: `"KE2S" 0x02 || nonce (12) || ChaCha20-Poly1305(plain)`, under
//!   HKDF-SHA256(salt = [`Identity::state_key`](crate::trust::Identity::state_key), ikm = file key, info =
//!   `kafka-e2ee/v2/state-file`), with the header and that info string (the
//!   file's role) as associated data. Opening it takes the credential's
//!   private key *and* the file key.
//! - `state.key`: a [`KeyFile`], `"KE2K" 0x01 || slot 0 (32) || slot 1 (32)`.
//!   Every save draws a new random file key into the free slot, renames a new
//!   state file into place, then zeroes the old slot, each write in place
//!   and synced. Once a save is done, no file key of an earlier save is
//!   left in the file, so a copy of an earlier state file (freed blocks,
//!   backups, snapshots) no longer opens, even with the credential.
//!
//! Version 1 state files (before `state.key`) are sealed under
//! [`Identity::state_key`](crate::trust::Identity::state_key) alone; [`open`] still reads them, so a host
//! upgrades a directory by saving it again at once.
//!
//! Key bytes never leave this module's types except to be sealed:
//! [`StoredKey`] describes a key, it does not hold one.

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::exchange::wire::Reader;
use crate::format::{InstanceId, KeyId};

const STATE_MAGIC: &[u8; 4] = b"KE2S";
/// State files sealed under the credential-derived key alone (read only).
const STATE_VERSION_1: u8 = 1;
/// State files sealed under a file key from `state.key` and the credential.
const STATE_VERSION: u8 = 2;
/// HKDF info of the state file's AEAD key, and its role in the AAD.
const STATE_FILE_INFO: &[u8] = b"kafka-e2ee/v2/state-file";
const KEY_MAGIC: &[u8; 4] = b"KE2K";
const KEY_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const HEADER_LEN: usize = 5;

/// The size of a key file: header and two 32-byte slots. It never changes,
/// so each save overwrites the same bytes in place.
pub const KEY_FILE_LEN: usize = HEADER_LEN + 2 * SECRET_LEN;

/// A random 32-byte key a state file is sealed under (with the credential).
pub type FileKey = Zeroizing<[u8; SECRET_LEN]>;

/// A [`Storage`](crate::Storage) in memory, for tests, benchmarks and tools:
/// it keeps the last state it was given (in plaintext, as the engine hands it
/// over) and wipes each state it replaces. Clones share one slot, so a test
/// can restart an engine on the state another left. No `Debug`: it holds keys.
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct MemoryStorage(std::sync::Arc<std::sync::Mutex<Option<Zeroizing<Vec<u8>>>>>);

impl MemoryStorage {
    /// A copy of the state last stored, if any.
    pub fn blob(&self) -> Option<Zeroizing<Vec<u8>>> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Zeroizing<Vec<u8>>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::Storage for MemoryStorage {
    fn load(&mut self) -> Result<Option<Vec<u8>>, String> {
        Ok(self.slot().as_ref().map(|b| b.to_vec()))
    }
    fn store(&mut self, blob: &[u8]) -> Result<(), String> {
        *self.slot() = Some(Zeroizing::new(blob.to_vec()));
        Ok(())
    }
}

/// Draws a new file key (never all zeros: that marks an empty slot).
pub fn new_file_key(rng: &mut dyn CryptoRngCore) -> FileKey {
    let mut key = Zeroizing::new([0u8; SECRET_LEN]);
    while key.iter().all(|b| *b == 0) {
        rng.fill_bytes(&mut key[..]);
    }
    key
}

/// The contents of `state.key`: two slots, each a file key or zeros.
pub struct KeyFile {
    slot0: FileKey,
    slot1: FileKey,
}

impl core::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyFile")
            .field("set", &[self.is_set(0), self.is_set(1)])
            .finish()
    }
}

impl Default for KeyFile {
    fn default() -> Self {
        KeyFile::empty()
    }
}

impl KeyFile {
    /// Both slots empty.
    pub fn empty() -> KeyFile {
        KeyFile {
            slot0: Zeroizing::new([0; SECRET_LEN]),
            slot1: Zeroizing::new([0; SECRET_LEN]),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<KeyFile, Error> {
        let bad = || Error::Storage("the state key file (state.key) is corrupt".into());
        if bytes.len() != KEY_FILE_LEN {
            return Err(bad());
        }
        let mut r = Reader::new(bytes);
        if r.take(4).map_err(|_| bad())? != KEY_MAGIC || r.u8().map_err(|_| bad())? != KEY_VERSION {
            return Err(bad());
        }
        let mut k = KeyFile::empty();
        k.slot0
            .copy_from_slice(r.take(SECRET_LEN).map_err(|_| bad())?);
        k.slot1
            .copy_from_slice(r.take(SECRET_LEN).map_err(|_| bad())?);
        Ok(k)
    }

    /// The whole file (written once, when it is created).
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_FILE_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_FILE_LEN]);
        let src = KEY_MAGIC
            .iter()
            .chain([KEY_VERSION].iter())
            .chain(self.slot0.iter())
            .chain(self.slot1.iter());
        for (o, b) in out.iter_mut().zip(src) {
            *o = *b;
        }
        out
    }

    /// Where slot `i` (0 or 1) sits in the file, for in-place writes.
    pub fn slot_offset(i: usize) -> u64 {
        if i == 0 {
            HEADER_LEN as u64
        } else {
            (HEADER_LEN + SECRET_LEN) as u64
        }
    }

    /// Slot `i`'s bytes (zeros when empty), to write in place.
    pub fn slot(&self, i: usize) -> &[u8; SECRET_LEN] {
        if i == 0 {
            &self.slot0
        } else {
            &self.slot1
        }
    }

    fn slot_mut(&mut self, i: usize) -> &mut [u8; SECRET_LEN] {
        if i == 0 {
            &mut self.slot0
        } else {
            &mut self.slot1
        }
    }

    pub fn is_set(&self, i: usize) -> bool {
        self.slot(i).iter().any(|b| *b != 0)
    }

    pub fn set(&mut self, i: usize, key: &[u8; SECRET_LEN]) {
        self.slot_mut(i).copy_from_slice(key);
    }

    pub fn clear(&mut self, i: usize) {
        self.slot_mut(i).copy_from_slice(&[0; SECRET_LEN]);
    }
}

/// What opened a state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// The file key in this slot of the key file (version 2).
    Slot(usize),
    /// The credential alone: a version 1 file, to be saved again at once.
    Credential,
}

fn header(version: u8) -> [u8; HEADER_LEN] {
    let m = STATE_MAGIC;
    [m[0], m[1], m[2], m[3], version]
}

fn aad(version: u8) -> Zeroizing<Vec<u8>> {
    let mut a = Zeroizing::new(header(version).to_vec());
    if version != STATE_VERSION_1 {
        a.extend_from_slice(STATE_FILE_INFO);
    }
    a
}

fn file_cipher(credential_key: &[u8; SECRET_LEN], file_key: &[u8; SECRET_LEN]) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(&credential_key[..]), &file_key[..]);
    let mut okm = Zeroizing::new([0u8; SECRET_LEN]);
    // 32 bytes is far below HKDF-SHA256's limit: this cannot fail.
    let _cannot_fail = hk.expand(STATE_FILE_INFO, &mut okm[..]);
    ChaCha20Poly1305::new((&*okm).into())
}

fn seal_with(
    cipher: &ChaCha20Poly1305,
    version: u8,
    plain: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = aad(version);
    let payload = chacha20poly1305::aead::Payload {
        msg: plain,
        aad: &aad,
    };
    let sealed = cipher.encrypt((&nonce).into(), payload).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
    out.extend_from_slice(&header(version));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Seals the engine's plaintext state under `file_key` and
/// `credential_key` (the identity's [`Identity::state_key`](crate::trust::Identity::state_key)), with a fresh
/// nonce: the bytes of a version 2 `state` file.
pub fn seal(
    credential_key: &[u8; SECRET_LEN],
    file_key: &[u8; SECRET_LEN],
    plain: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Vec<u8> {
    seal_with(
        &file_cipher(credential_key, file_key),
        STATE_VERSION,
        plain,
        rng,
    )
}

/// A version 1 state file, as hosts wrote them before `state.key`: for
/// upgrade tests only.
#[doc(hidden)]
pub fn seal_version_1(
    credential_key: &[u8; SECRET_LEN],
    plain: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Vec<u8> {
    seal_with(
        &ChaCha20Poly1305::new(credential_key.into()),
        STATE_VERSION_1,
        plain,
        rng,
    )
}

fn corrupt() -> Error {
    Error::Storage(
        "the state file does not open: it is corrupt, belongs to another credential, or \
         its state.key is not the one saved with it"
            .into(),
    )
}

fn open_with(cipher: &ChaCha20Poly1305, version: u8, blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let rest = blob.get(HEADER_LEN..)?;
    let nonce: [u8; NONCE_LEN] = rest.get(..NONCE_LEN)?.try_into().ok()?;
    let aad = aad(version);
    let payload = chacha20poly1305::aead::Payload {
        msg: rest.get(NONCE_LEN..)?,
        aad: &aad,
    };
    cipher
        .decrypt((&nonce).into(), payload)
        .ok()
        .map(Zeroizing::new)
}

/// Opens a state file: a version 2 file with `credential_key` (the
/// identity's [`Identity::state_key`](crate::trust::Identity::state_key)) and a file key of `keys` (both slots
/// are tried), a version 1 file with `credential_key` alone.
pub fn open(
    credential_key: &[u8; SECRET_LEN],
    keys: Option<&KeyFile>,
    blob: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Sealing), Error> {
    match blob.get(..HEADER_LEN) {
        Some(h) if h == header(STATE_VERSION) => {
            let Some(keys) = keys else {
                return Err(Error::Storage(
                    "the state file is sealed under a key kept in state.key, which is missing: \
                     restore state and state.key together (or move the state file away to \
                     start without it)"
                        .into(),
                ));
            };
            for i in 0..2 {
                if !keys.is_set(i) {
                    continue;
                }
                if let Some(plain) = open_with(
                    &file_cipher(credential_key, keys.slot(i)),
                    STATE_VERSION,
                    blob,
                ) {
                    return Ok((plain, Sealing::Slot(i)));
                }
            }
            Err(corrupt())
        }
        Some(h) if h == header(STATE_VERSION_1) => open_with(
            &ChaCha20Poly1305::new(credential_key.into()),
            STATE_VERSION_1,
            blob,
        )
        .map(|plain| (plain, Sealing::Credential))
        .ok_or_else(corrupt),
        _ => Err(corrupt()),
    }
}

/// Whose key a stored key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// An epoch this client produced under (it serves it to consumers).
    Produced,
    /// A key this client received from a producer, for one topic.
    Received,
}

/// What a state directory holds about one key; never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub origin: KeyOrigin,
    pub key_id: KeyId,
    /// The topic a received key opens; `None` for a produced epoch (it
    /// covers every topic the producer wrote in that epoch).
    pub topic: Option<String>,
    pub epoch_started_ms: u64,
    /// When hosts delete it (end of epoch plus `e2ee.key.retention.ms`).
    pub delete_at_ms: u64,
}

struct Entry {
    info: StoredKey,
    secret: Zeroizing<[u8; SECRET_LEN]>,
}

/// A decrypted state blob.
pub struct StateBlob {
    entries: Vec<Entry>,
    /// What follows the keys (key exchange v2: the consumer's mailbox and
    /// prekey chain seed), kept as it is when the blob is written again.
    tail: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for StateBlob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StateBlob")
            .field("keys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl StateBlob {
    /// Parses the engine's plaintext state (what [`open`] returns).
    pub fn parse(plain: &[u8]) -> Result<StateBlob, Error> {
        let mut r = Reader::new(plain);
        let mut entries = Vec::new();
        let n = r.u32().map_err(|_| corrupt())?;
        for _ in 0..n {
            let key_id = read_key_id(&mut r)?;
            let epoch_started_ms = r.u64().map_err(|_| corrupt())?;
            let delete_at_ms = r.u64().map_err(|_| corrupt())?;
            let secret = Zeroizing::new(r.array().map_err(|_| corrupt())?);
            entries.push(Entry {
                info: StoredKey {
                    origin: KeyOrigin::Produced,
                    key_id,
                    topic: None,
                    epoch_started_ms,
                    delete_at_ms,
                },
                secret,
            });
        }
        let n = r.u32().map_err(|_| corrupt())?;
        for _ in 0..n {
            let key_id = read_key_id(&mut r)?;
            let len = usize::from(r.u16().map_err(|_| corrupt())?);
            let topic = String::from_utf8(r.take(len).map_err(|_| corrupt())?.to_vec())
                .map_err(|_| corrupt())?;
            let epoch_started_ms = r.u64().map_err(|_| corrupt())?;
            let delete_at_ms = r.u64().map_err(|_| corrupt())?;
            let secret = Zeroizing::new(r.array().map_err(|_| corrupt())?);
            entries.push(Entry {
                info: StoredKey {
                    origin: KeyOrigin::Received,
                    key_id,
                    topic: Some(topic),
                    epoch_started_ms,
                    delete_at_ms,
                },
                secret,
            });
        }
        let tail = Zeroizing::new(r.rest().to_vec());
        Ok(StateBlob { entries, tail })
    }

    /// The stored keys, produced epochs first, in stored order.
    pub fn keys(&self) -> Vec<StoredKey> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }

    /// Crypto-shredding: drops every key whose epoch started before
    /// `before_ms` (the rule of [`Engine::shred`](crate::Engine::shred)).
    /// Returns how many were dropped; their bytes are zeroized.
    pub fn shred_before(&mut self, before_ms: u64) -> usize {
        let n = self.entries.len();
        self.entries
            .retain(|e| e.info.epoch_started_ms >= before_ms);
        n - self.entries.len()
    }

    /// The plaintext state again, for [`seal`].
    pub fn to_plain(&self) -> Zeroizing<Vec<u8>> {
        let size = 8
            + self.tail.len()
            + self
                .entries
                .iter()
                .map(|e| 12 + 2 + e.info.topic.as_ref().map_or(0, String::len) + 16 + SECRET_LEN)
                .sum::<usize>();
        let mut plain = Zeroizing::new(Vec::with_capacity(size));
        for origin in [KeyOrigin::Produced, KeyOrigin::Received] {
            let of: Vec<&Entry> = self
                .entries
                .iter()
                .filter(|e| e.info.origin == origin)
                .collect();
            plain.extend_from_slice(&u32::try_from(of.len()).unwrap_or(u32::MAX).to_be_bytes());
            for e in of.iter().take(u32::MAX as usize) {
                let i = &e.info;
                plain.extend_from_slice(&i.key_id.producer.0);
                plain.extend_from_slice(&i.key_id.epoch.to_be_bytes());
                if let Some(topic) = &i.topic {
                    // Decoded topics came from a u16 length, so they fit.
                    let len = u16::try_from(topic.len()).unwrap_or(0);
                    plain.extend_from_slice(&len.to_be_bytes());
                    plain.extend_from_slice(
                        topic.as_bytes().get(..usize::from(len)).unwrap_or_default(),
                    );
                }
                plain.extend_from_slice(&i.epoch_started_ms.to_be_bytes());
                plain.extend_from_slice(&i.delete_at_ms.to_be_bytes());
                plain.extend_from_slice(&e.secret[..]);
            }
        }
        plain.extend_from_slice(&self.tail);
        plain
    }
}

fn read_key_id(r: &mut Reader<'_>) -> Result<KeyId, Error> {
    Ok(KeyId {
        producer: InstanceId(r.array().map_err(|_| corrupt())?),
        epoch: r.u32().map_err(|_| corrupt())?,
    })
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::format::KeyBinding;
    use crate::keys::KeyPolicy;
    use crate::trust::{Authority, Identity, TopicPattern, TrustAnchor};
    use crate::{Engine, EngineConfig, Storage};

    const T0: u64 = 1_790_000_000_000;

    fn identity(rng: &mut ChaCha20Rng, authority: &Authority) -> Identity {
        Identity::generate(
            "p",
            vec![TopicPattern::all()],
            vec![TopicPattern::all()],
            T0 - 1000,
            T0 + 86_400_000,
            authority,
            rng,
        )
    }

    fn config() -> EngineConfig {
        EngineConfig {
            key: KeyPolicy {
                rotation_ms: 1000,
                rotation_records: 1000,
                retention_ms: 60_000,
            },
            ..EngineConfig::default()
        }
    }

    #[test]
    fn reads_what_an_engine_wrote_and_an_engine_reads_what_it_wrote() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let authority = Authority::generate(&mut rng);
        let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
        let id = identity(&mut rng, &authority);
        let store = MemoryStorage::default();
        let engine = Engine::new(
            config(),
            Identity::from_file_bytes(&id.to_file_bytes()).unwrap(),
            trust.clone(),
            T0,
            Box::new(ChaCha20Rng::seed_from_u64(1)),
            Some(Box::new(store.clone())),
        )
        .unwrap();
        // Seal in three epochs so the state holds several.
        let mut sealed = Vec::new();
        for step in 0..3u64 {
            engine.handle_timeout(T0 + step * 1500).unwrap();
            let mut v = b"hello".to_vec();
            let h = engine.seal("t", KeyBinding::Bytes(b"k"), &mut v).unwrap();
            sealed.push((h, v));
        }
        let blob = store.blob().unwrap();
        let mut state = StateBlob::parse(&blob).unwrap();
        let keys = state.keys();
        assert!(keys.len() >= 3, "{keys:?}");
        assert!(keys
            .iter()
            .all(|k| k.origin == KeyOrigin::Produced && k.key_id.producer == engine.instance_id()));

        // Shred the first epoch; a new engine restores only the rest.
        let first = keys.iter().map(|k| k.epoch_started_ms).min().unwrap();
        assert_eq!(state.shred_before(first + 1), 1);
        let blob2 = state.to_plain();
        assert_eq!(
            StateBlob::parse(&blob2).unwrap().keys().len(),
            keys.len() - 1
        );
        store.clone().store(&blob2).unwrap();
        drop(engine);
        let restored = Engine::new(
            config(),
            Identity::from_file_bytes(&id.to_file_bytes()).unwrap(),
            trust,
            T0 + 5000,
            Box::new(ChaCha20Rng::seed_from_u64(2)),
            Some(Box::new(store.clone())),
        )
        .unwrap();
        let mut opened = 0;
        for (h, v) in &sealed {
            let mut v = v.clone();
            if restored
                .open("t", Some(&h[..]), KeyBinding::Bytes(b"k"), &mut v)
                .is_ok()
            {
                assert_eq!(v, b"hello");
                opened += 1;
            }
        }
        assert_eq!(opened, 2, "the shredded epoch's record must stay sealed");
    }

    #[test]
    fn a_state_file_opens_with_its_credential_and_a_file_key_of_its_key_file() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let authority = Authority::generate(&mut rng);
        let a = identity(&mut rng, &authority).state_key();
        let b = identity(&mut rng, &authority).state_key();
        let plain = b"the engine's state";
        let k1 = new_file_key(&mut rng);
        let k2 = new_file_key(&mut rng);
        let blob = seal(&a, &k1, plain, &mut rng);
        let mut keys = KeyFile::empty();
        keys.set(1, &k1);
        let (opened, how) = open(&a, Some(&keys), &blob).unwrap();
        assert_eq!(&opened[..], plain);
        assert_eq!(how, Sealing::Slot(1));
        // Both slots are tried; the key file survives its own encoding.
        keys.set(0, &k2);
        let keys = KeyFile::parse(&keys.to_bytes()[..]).unwrap();
        assert_eq!(open(&a, Some(&keys), &blob).unwrap().1, Sealing::Slot(1));
        // Another credential, or a key file without that file key: nothing.
        assert!(open(&b, Some(&keys), &blob).is_err());
        let mut other = KeyFile::empty();
        other.set(0, &k2);
        assert!(open(&a, Some(&other), &blob).is_err());
        assert!(open(&a, Some(&KeyFile::empty()), &blob).is_err());
        let missing = open(&a, None, &blob).unwrap_err().to_string();
        assert!(missing.contains("state.key"), "{missing}");
        // The credential alone does not open a version 2 file, even when
        // its header is rewritten to claim version 1.
        let mut as_v1 = blob.clone();
        as_v1[4] = 1;
        assert!(open(&a, Some(&keys), &as_v1).is_err());
        // Garbage, truncation, bit flips.
        assert!(open(&a, Some(&keys), b"").is_err());
        assert!(open(&a, Some(&keys), &blob[..blob.len() - 1]).is_err());
        let mut flipped = blob.clone();
        flipped[20] ^= 1;
        assert!(open(&a, Some(&keys), &flipped).is_err());
        assert!(KeyFile::parse(&keys.to_bytes()[..KEY_FILE_LEN - 1]).is_err());
        assert!(KeyFile::parse(&[0u8; KEY_FILE_LEN]).is_err());
    }

    #[test]
    fn version_1_files_open_with_the_credential_for_the_upgrade() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let authority = Authority::generate(&mut rng);
        let a = identity(&mut rng, &authority).state_key();
        let b = identity(&mut rng, &authority).state_key();
        let blob = seal_version_1(&a, b"old state", &mut rng);
        let (plain, how) = open(&a, None, &blob).unwrap();
        assert_eq!(&plain[..], b"old state");
        assert_eq!(how, Sealing::Credential);
        assert!(open(&b, None, &blob).is_err());
    }
}
