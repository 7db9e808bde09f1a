//! The state blob at rest, for tools: list the keys a state directory holds
//! and crypto-shred some of them without building an [`Engine`](crate::Engine)
//! (which would create a new instance and epoch). The bytes are the ones
//! `engine::encode_state` writes; `tests` below check both directions against
//! a real engine so the two codecs cannot drift apart unnoticed.
//!
//! Key bytes never leave this module: [`StoredKey`] describes a key, it does
//! not hold one.

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::exchange::wire::Reader;
use crate::format::{InstanceId, KeyId};
use crate::trust::Identity;

const STATE_MAGIC: &[u8; 4] = b"KE2S";
const STATE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const SECRET_LEN: usize = 32;

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

fn aad() -> [u8; 5] {
    let m = STATE_MAGIC;
    [m[0], m[1], m[2], m[3], STATE_VERSION]
}

fn corrupt() -> Error {
    Error::Storage(
        "the state file is corrupt or belongs to another credential (it is encrypted under \
         the credential's private key)"
            .into(),
    )
}

impl StateBlob {
    /// Decrypts and parses a blob written by an engine with `identity`.
    pub fn decode(identity: &Identity, blob: &[u8]) -> Result<StateBlob, Error> {
        let mut r = Reader::new(blob);
        if r.take(5).map_err(|_| corrupt())? != aad() {
            return Err(corrupt());
        }
        let nonce: [u8; NONCE_LEN] = r.array().map_err(|_| corrupt())?;
        let key = identity.state_key();
        let cipher = ChaCha20Poly1305::new((&*key).into());
        let payload = chacha20poly1305::aead::Payload {
            msg: r.rest(),
            aad: &aad(),
        };
        let plain = Zeroizing::new(
            cipher
                .decrypt((&nonce).into(), payload)
                .map_err(|_| corrupt())?,
        );
        let mut r = Reader::new(&plain);
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

    /// Encrypts the blob again under `identity`'s state key with a fresh nonce.
    pub fn encode(&self, identity: &Identity, rng: &mut dyn CryptoRngCore) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::new());
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
        let key = identity.state_key();
        let cipher = ChaCha20Poly1305::new((&*key).into());
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let payload = chacha20poly1305::aead::Payload {
            msg: &plain,
            aad: &aad(),
        };
        let sealed = cipher.encrypt((&nonce).into(), payload).unwrap_or_default();
        let mut out = Vec::with_capacity(5 + NONCE_LEN + sealed.len());
        out.extend_from_slice(&aad());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
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
    use std::sync::{Arc, Mutex};

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::format::KeyBinding;
    use crate::keys::KeyPolicy;
    use crate::trust::{Authority, TopicPattern, TrustAnchor};
    use crate::{Engine, EngineConfig, Storage};

    const T0: u64 = 1_790_000_000_000;

    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<Option<Vec<u8>>>>);
    impl Storage for Mem {
        fn load(&mut self) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn store(&mut self, blob: &[u8]) -> Result<(), String> {
            *self.0.lock().unwrap() = Some(blob.to_vec());
            Ok(())
        }
    }

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
        let store = Mem::default();
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
        let blob = store.0.lock().unwrap().clone().unwrap();
        let mut state = StateBlob::decode(&id, &blob).unwrap();
        let keys = state.keys();
        assert!(keys.len() >= 3, "{keys:?}");
        assert!(keys
            .iter()
            .all(|k| k.origin == KeyOrigin::Produced && k.key_id.producer == engine.instance_id()));

        // Shred the first epoch; a new engine restores only the rest.
        let first = keys.iter().map(|k| k.epoch_started_ms).min().unwrap();
        assert_eq!(state.shred_before(first + 1), 1);
        let blob2 = state.encode(&id, &mut rng);
        assert_eq!(
            StateBlob::decode(&id, &blob2).unwrap().keys().len(),
            keys.len() - 1
        );
        *store.0.lock().unwrap() = Some(blob2);
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
    fn rejects_another_credential_and_garbage() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let authority = Authority::generate(&mut rng);
        let a = identity(&mut rng, &authority);
        let b = identity(&mut rng, &authority);
        let blob = StateBlob {
            entries: Vec::new(),
            tail: Zeroizing::new(Vec::new()),
        }
        .encode(&a, &mut rng);
        assert!(StateBlob::decode(&a, &blob).unwrap().keys().is_empty());
        assert!(StateBlob::decode(&b, &blob).is_err());
        assert!(StateBlob::decode(&a, b"").is_err());
        assert!(StateBlob::decode(&a, &blob[..blob.len() - 1]).is_err());
    }
}
