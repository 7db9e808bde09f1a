//! Asynchronous key delivery (key exchange v2): keys that outlive their
//! producers.
//!
//! Every engine whose credential may consume has a **mailbox**: an 8-byte id
//! and a chain of X25519 **prekeys**, one per period (`prekey_period_ms`,
//! aligned on Unix time). It publishes the public halves of the prekeys of
//! the coming periods, signed with its credential's signing key, on the keys
//! topic (compacted by mailbox). A producer reads that directory, and for
//! each of its epochs and topics seals the topic keys to each authorized
//! recipient's prekey of the current period (Noise `X`: one message, the
//! producer's static key authenticated, a fresh ephemeral each time) and
//! writes the envelope to the keys topic, which keeps it for the key
//! retention. A consumer reads its envelopes whenever it runs: the producer
//! need not be alive then, and the consumer need not have been alive when
//! the record was written, only within the retention before it.
//!
//! Forward secrecy: prekey private keys come from a hash chain (each
//! period's seed is derived from the previous one), and the mailbox keeps
//! only the seed of the oldest period that may still be needed: once every
//! key sealed in a period is past its retention, that seed is replaced by
//! the next and nothing can derive the old private key again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::ControlError;
use crate::format::{DataKey, InstanceId, KeyId};
use crate::trust::Credential;

use super::hybrid::{self, KemKey};

use super::statement::{mailbox_id, owns_mailbox, Salt, Statement};
use super::wire::{put_topic, Envelope, Reader, MAGIC, ROUTE_LEN, VERSION};

/// The kind bytes of the two keys-topic messages (after the v1 kinds 1-6).
pub const KIND_PREKEYS: u8 = 7;
pub const KIND_ENVELOPE: u8 = 8;
/// Their hybrid post-quantum forms (issue 17, after the hybrid session
/// kinds 9-11): a prekeys record that also lists ML-KEM-768 encapsulation
/// keys, and an envelope whose Noise message mixes in an ML-KEM secret.
pub const KIND_PREKEYS_HYBRID: u8 = 12;
pub const KIND_ENVELOPE_HYBRID: u8 = 13;

/// Domain separation for what a mailbox signs.
pub const PREKEYS_CONTEXT: &[u8] = b"kafka-e2ee/v2/prekeys";
const SEED_INFO: &[u8] = b"kafka-e2ee/v2/prekey-seed";
const PRIVATE_INFO: &[u8] = b"kafka-e2ee/v2/prekey";
const KEM_SEED_INFO: &[u8] = b"kafka-e2ee/v3/kem-prekey-seed";
const KEM_PRIVATE_INFO: &[u8] = b"kafka-e2ee/v3/kem-prekey";
pub const ENVELOPE_PROLOGUE: &[u8] = b"kafka-e2ee/v2/envelope";
pub const ENVELOPE_NOISE: &str = "Noise_X_25519_ChaChaPoly_SHA256";
/// The hybrid envelope: Noise `X` with the ML-KEM secret as pre-shared key,
/// mixed in at the end of its one message (`psk1`), so the payload (the
/// topic keys) is encrypted under a key that depends on es, ss and the KEM.
pub const ENVELOPE_NOISE_HYBRID: &str = "Noise_Xpsk1_25519_ChaChaPoly_SHA256";
/// Where the KEM secret goes in the pattern above.
pub const ENVELOPE_PSK_LOCATION: usize = 1;

/// Prekey periods per ML-KEM prekey. An encapsulation key is 1,184 bytes
/// against X25519's 32: one per period would make a prekeys record about
/// 200 KB (170 periods) and every producer keep that much per recipient.
/// One per 24 periods (a day with the default hour) lists 8 or 9 of them,
/// about 10 KB; the price is that the ML-KEM private key of a span is
/// deleted when the span's last period is, up to 23 periods after the
/// X25519 prekey of its first (docs/PROTOCOL.md, section 5d).
pub const KEM_SPAN: u64 = 24;

/// Most prekeys one directory record lists (a week of hours is 168).
pub const MAX_PREKEYS: usize = 512;
/// Most ML-KEM keys one hybrid record lists (enough for MAX_PREKEYS).
pub const MAX_KEM_PREKEYS: usize = MAX_PREKEYS / KEM_SPAN as usize + 2;
/// Most topic keys in one envelope; more go into further envelopes. Keeps
/// every envelope well inside a Noise message (65,535 bytes).
pub const MAX_ENVELOPE_ITEMS: usize = 128;
/// Most mailboxes a producer seals to: a flood of signed directory records
/// (one per credential and mailbox id) cannot grow it without bound.
pub const MAX_RECIPIENTS: usize = 16_384;

pub type MailboxId = InstanceId;

fn hkdf32(ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit: cannot fail.
    let _cannot_fail = hk.expand(info, out.as_mut_slice());
    out
}

fn x25519_prekey(seed: &[u8; 32]) -> StaticSecret {
    StaticSecret::from(*hkdf32(&seed[..], PRIVATE_INFO))
}

/// FIPS 203's 64-byte key generation seed (d ‖ z) of a span's chain seed.
fn kem_prekey(seed: &[u8; 32]) -> Arc<KemKey> {
    let mut d_z = Zeroizing::new([0u8; 64]);
    // 64 bytes is far below HKDF-SHA256's output limit: cannot fail.
    let _cannot_fail = Hkdf::<Sha256>::new(None, &seed[..]).expand(KEM_PRIVATE_INFO, &mut *d_z);
    Arc::new(KemKey::from_seed(&d_z))
}

/// A hash chain of private keys, one per index (a period, or a span of
/// them): it stores only the seed of index `first`, so an index it has
/// moved past can never be derived again (forward secrecy at rest).
pub(crate) struct Chain<K> {
    pub first: u64,
    seed: Zeroizing<[u8; 32]>,
    /// Keys derived so far, by index (a cache of the chain).
    cache: BTreeMap<u64, K>,
    seed_info: &'static [u8],
    derive: fn(&[u8; 32]) -> K,
}

impl<K: Clone> Chain<K> {
    /// The key of `index`, if the chain still reaches it (indexes before
    /// `first` are gone for good) and it is within `horizon` of `first`.
    fn get(&mut self, index: u64, horizon: u64) -> Option<K> {
        if index < self.first || index - self.first > horizon {
            return None;
        }
        if let Some(k) = self.cache.get(&index) {
            return Some(k.clone());
        }
        let mut seed = self.seed.clone();
        for _ in self.first..index {
            seed = hkdf32(&seed[..], self.seed_info);
        }
        let key = (self.derive)(&seed);
        self.cache.insert(index, key.clone());
        Some(key)
    }

    /// Forgets every index before `keep_from`: the seed moves forward and
    /// the old keys are dropped (both zeroize on drop).
    fn advance(&mut self, keep_from: u64) -> bool {
        let mut moved = false;
        while self.first < keep_from {
            self.seed = hkdf32(&self.seed[..], self.seed_info);
            self.cache.remove(&self.first);
            self.first += 1;
            moved = true;
        }
        moved
    }

    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }
}

/// A consumer's mailbox: its id, the X25519 prekey chain from period
/// `first` on, and (hybrid) the ML-KEM prekey chain, one key per span of
/// KEM_SPAN periods.
pub(crate) struct Mailbox {
    pub id: MailboxId,
    /// Derives `id` from the credential's signing key (`mailbox_id`).
    pub salt: Salt,
    prekeys: Chain<StaticSecret>,
    /// None with `e2ee.kex.hybrid=off` (and in a state saved so).
    kem: Option<Chain<Arc<KemKey>>>,
    /// The first period of the last published record, and when.
    pub published: Option<(u64, u64)>,
}

impl core::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.id)
            .field("first", &self.prekeys.first)
            .field("kem_first", &self.kem.as_ref().map(|c| c.first))
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    pub fn new(id: MailboxId, salt: Salt, first: u64, seed: Zeroizing<[u8; 32]>) -> Self {
        Mailbox {
            id,
            salt,
            prekeys: Chain {
                first,
                seed,
                cache: BTreeMap::new(),
                seed_info: SEED_INFO,
                derive: x25519_prekey,
            },
            kem: None,
            published: None,
        }
    }

    /// Adds (or replaces) the ML-KEM chain from span `first` on.
    pub fn set_kem(&mut self, first: u64, seed: Zeroizing<[u8; 32]>) {
        self.kem = Some(Chain {
            first,
            seed,
            cache: BTreeMap::new(),
            seed_info: KEM_SEED_INFO,
            derive: kem_prekey,
        });
    }

    pub fn drop_kem(&mut self) {
        self.kem = None;
    }

    /// The oldest period whose private key may still be needed.
    pub fn first(&self) -> u64 {
        self.prekeys.first
    }

    /// The chain seed of period `first`.
    pub fn seed(&self) -> &[u8; 32] {
        self.prekeys.seed()
    }

    /// The ML-KEM chain's oldest span and its seed, if hybrid.
    pub fn kem(&self) -> Option<(u64, &[u8; 32])> {
        self.kem.as_ref().map(|c| (c.first, c.seed()))
    }

    /// The private key of `period`, if the chain still reaches it (periods
    /// before `first` are gone for good) and it is within `horizon` periods.
    pub fn private(&mut self, period: u64, horizon: u64) -> Option<StaticSecret> {
        self.prekeys.get(period, horizon)
    }

    /// The ML-KEM private key for `period` (that of its span).
    pub fn kem_private(&mut self, period: u64, horizon: u64) -> Option<Arc<KemKey>> {
        self.kem
            .as_mut()?
            .get(period / KEM_SPAN, horizon / KEM_SPAN + 1)
    }

    /// Forgets every period before `keep_from` (and every ML-KEM span that
    /// ends before it).
    pub fn advance(&mut self, keep_from: u64) -> bool {
        let moved = self.prekeys.advance(keep_from);
        let kem_moved = self
            .kem
            .as_mut()
            .is_some_and(|c| c.advance(keep_from / KEM_SPAN));
        moved || kem_moved
    }

    /// The public keys of periods `from .. from + count`.
    pub fn publics(&mut self, from: u64, count: u64, horizon: u64) -> Vec<[u8; 32]> {
        (from..from.saturating_add(count))
            .filter_map(|p| self.private(p, horizon))
            .map(|s| PublicKey::from(&s).to_bytes())
            .collect()
    }

    /// The ML-KEM encapsulation keys of the spans that periods `from ..
    /// from + count` fall in, as a record lists them.
    pub fn kem_publics(&mut self, from: u64, count: u64, horizon: u64) -> Option<KemPrekeys> {
        let first = from / KEM_SPAN;
        let last = from.saturating_add(count.max(1) - 1) / KEM_SPAN;
        let keys: Vec<Vec<u8>> = (first..=last)
            .filter_map(|q| self.kem_private(q.saturating_mul(KEM_SPAN), horizon))
            .map(|k| k.public())
            .collect();
        (!keys.is_empty()).then_some(KemPrekeys { first, keys })
    }
}

/// The ML-KEM-768 encapsulation keys of a hybrid prekeys record: one per
/// span of KEM_SPAN periods, from span `first` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KemPrekeys {
    pub first: u64,
    pub keys: Vec<Vec<u8>>,
}

/// A mailbox's published prekeys, as read from the keys topic.
#[derive(Debug, Clone)]
pub struct Prekeys {
    pub mailbox: MailboxId,
    /// Published by a keeper. Carried in the first byte of the route's
    /// recipient field (0x01; a consumer's is 0x00, the other 7 bytes are
    /// always zero), so it is covered by the mailbox's signature.
    pub keeper: bool,
    pub published_ms: u64,
    pub first_period: u64,
    /// Derives the mailbox id from the credential's signing key: only the
    /// owner of a mailbox can publish its prekeys.
    pub salt: Salt,
    pub keys: Vec<[u8; 32]>,
    /// A hybrid record's ML-KEM keys (kind 12; None: kind 7).
    pub kem: Option<KemPrekeys>,
    pub credential: Vec<u8>,
    pub signature: [u8; 64],
}

impl Prekeys {
    pub fn kind(&self) -> u8 {
        if self.kem.is_some() {
            KIND_PREKEYS_HYBRID
        } else {
            KIND_PREKEYS
        }
    }

    /// Everything the signature covers: the whole record but the signature.
    pub fn signed_part(&self) -> Vec<u8> {
        let kem_len = self
            .kem
            .as_ref()
            .map_or(0, |k| 10 + k.keys.len() * hybrid::EK_LEN);
        let mut out =
            Vec::with_capacity(64 + self.keys.len() * 32 + kem_len + self.credential.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.kind());
        out.extend_from_slice(&self.mailbox.0);
        out.extend_from_slice(&[u8::from(self.keeper), 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&self.published_ms.to_be_bytes());
        out.extend_from_slice(&self.first_period.to_be_bytes());
        out.extend_from_slice(&self.salt);
        // Bounded by MAX_PREKEYS when built or decoded.
        out.extend_from_slice(&u16::try_from(self.keys.len()).unwrap_or(0).to_be_bytes());
        for k in &self.keys {
            out.extend_from_slice(k);
        }
        if let Some(kem) = &self.kem {
            out.extend_from_slice(&kem.first.to_be_bytes());
            // Bounded by MAX_KEM_PREKEYS when built or decoded.
            out.extend_from_slice(&u16::try_from(kem.keys.len()).unwrap_or(0).to_be_bytes());
            for k in &kem.keys {
                out.extend_from_slice(k);
            }
        }
        out.extend_from_slice(
            &u16::try_from(self.credential.len())
                .unwrap_or(0)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.credential);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Prekeys, ControlError> {
        let mut r = Reader::new(bytes);
        let (kind, mailbox, to) = Envelope::read_route(&mut r)?;
        // The recipient field is the keeper flag: 0 or 1, then 7 zero bytes.
        let keeper = match to.0 {
            [0, 0, 0, 0, 0, 0, 0, 0] => false,
            [1, 0, 0, 0, 0, 0, 0, 0] => true,
            _ => return Err(ControlError::Malformed),
        };
        if kind != KIND_PREKEYS && kind != KIND_PREKEYS_HYBRID {
            return Err(ControlError::Malformed);
        }
        let published_ms = r.u64()?;
        let first_period = r.u64()?;
        let salt = r.array()?;
        let n = usize::from(r.u16()?);
        if n == 0 || n > MAX_PREKEYS {
            return Err(ControlError::Malformed);
        }
        let mut keys = Vec::with_capacity(n.min(r.remaining() / 32));
        for _ in 0..n {
            keys.push(r.array()?);
        }
        let kem = if kind == KIND_PREKEYS_HYBRID {
            let first = r.u64()?;
            let m = usize::from(r.u16()?);
            if m == 0 || m > MAX_KEM_PREKEYS {
                return Err(ControlError::Malformed);
            }
            let mut kem_keys = Vec::with_capacity(m.min(r.remaining() / hybrid::EK_LEN));
            for _ in 0..m {
                kem_keys.push(r.take(hybrid::EK_LEN)?.to_vec());
            }
            Some(KemPrekeys {
                first,
                keys: kem_keys,
            })
        } else {
            None
        };
        let len = usize::from(r.u16()?);
        let credential = r.take(len)?.to_vec();
        let signature = r.array()?;
        r.finish()?;
        Ok(Prekeys {
            mailbox,
            keeper,
            published_ms,
            first_period,
            salt,
            keys,
            kem,
            credential,
            signature,
        })
    }

    /// The prekey of `period`, if this record lists it.
    pub fn key_for(&self, period: u64) -> Option<[u8; 32]> {
        let i = usize::try_from(period.checked_sub(self.first_period)?).ok()?;
        self.keys.get(i).copied()
    }

    /// A hybrid record's ML-KEM key for `period` (that of its span).
    pub fn kem_key_for(&self, period: u64) -> Option<&[u8]> {
        let kem = self.kem.as_ref()?;
        let i = usize::try_from((period / KEM_SPAN).checked_sub(kem.first)?).ok()?;
        kem.keys.get(i).map(Vec::as_slice)
    }
}

/// A sealed envelope as it travels: route (producer instance to mailbox),
/// its id, the epoch, the prekey period, (hybrid) the ML-KEM ciphertext to
/// the mailbox's key of that period's span, and one Noise message.
#[derive(Debug, Clone)]
pub struct SealedEnvelope {
    pub producer: InstanceId,
    pub mailbox: MailboxId,
    pub id: [u8; 8],
    pub epoch: u32,
    pub period: u64,
    /// Kind 13: `CT_LEN` bytes. None: kind 8.
    pub kem_ct: Option<Vec<u8>>,
    pub noise: Vec<u8>,
}

/// Route, envelope id, epoch and period: what the Noise prologue binds.
const ENVELOPE_HEADER_LEN: usize = ROUTE_LEN + 8 + 4 + 8;

impl SealedEnvelope {
    pub fn kind(&self) -> u8 {
        if self.kem_ct.is_some() {
            KIND_ENVELOPE_HYBRID
        } else {
            KIND_ENVELOPE
        }
    }

    /// Everything before the Noise message (the prologue binds all of it,
    /// the ML-KEM ciphertext included).
    pub fn header(&self) -> Vec<u8> {
        let ct = self.kem_ct.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + ct.len() + self.noise.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.kind());
        out.extend_from_slice(&self.producer.0);
        out.extend_from_slice(&self.mailbox.0);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.period.to_be_bytes());
        out.extend_from_slice(ct);
        out
    }

    pub fn prologue(&self) -> Vec<u8> {
        let mut p = ENVELOPE_PROLOGUE.to_vec();
        p.extend_from_slice(&self.header());
        p
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.noise);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SealedEnvelope, ControlError> {
        let mut r = Reader::new(bytes);
        let (kind, producer, mailbox) = Envelope::read_route(&mut r)?;
        if (kind != KIND_ENVELOPE && kind != KIND_ENVELOPE_HYBRID) || mailbox == InstanceId([0; 8])
        {
            return Err(ControlError::Malformed);
        }
        let id = r.array()?;
        let epoch = r.u32()?;
        let period = r.u64()?;
        let kem_ct = if kind == KIND_ENVELOPE_HYBRID {
            Some(r.take(hybrid::CT_LEN)?.to_vec())
        } else {
            None
        };
        let noise = r.rest().to_vec();
        if noise.is_empty() {
            return Err(ControlError::Malformed);
        }
        Ok(SealedEnvelope {
            producer,
            mailbox,
            id,
            epoch,
            period,
            kem_ct,
            noise,
        })
    }
}

/// The record key of a keys-topic message: a prekey record's route (so
/// compaction keeps the newest per mailbox), an envelope's route and id.
pub fn record_key(payload: &[u8]) -> Vec<u8> {
    let len = match payload.get(5) {
        Some(&KIND_ENVELOPE | &KIND_ENVELOPE_HYBRID | &super::tokens::KIND_TOKEN_ENVELOPE) => {
            ROUTE_LEN + 8
        }
        Some(&super::tokens::KIND_TOKEN_CLAIM) => return super::tokens::claim_record_key(payload),
        _ => ROUTE_LEN,
    };
    payload.get(..len).unwrap_or(payload).to_vec()
}

/// Which mailboxes on the keys topic publish a hybrid prekeys record
/// (`kafka-e2ee doctor`): a mailbox seen only with classical records gets
/// classical envelopes. Advisory, as `hybrid::census` is: the signatures
/// are not checked here.
pub fn census<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
) -> BTreeMap<MailboxId, hybrid::Speaks> {
    let mut out = BTreeMap::new();
    for bytes in records {
        let Ok(p) = Prekeys::decode(bytes) else {
            continue;
        };
        if p.kem.is_some() {
            out.insert(p.mailbox, hybrid::Speaks::Hybrid);
        } else {
            out.entry(p.mailbox)
                .or_insert(hybrid::Speaks::ClassicalOnly);
        }
    }
    out
}

/// One topic key inside an envelope. `Debug` leaves the key out.
pub struct EnvelopeItem {
    pub topic: String,
    pub key: DataKey,
    pub epoch_started_ms: u64,
    /// When the producer deletes the key, on its clock (an upper bound while
    /// the epoch runs). An instant, not a duration: an envelope may be read
    /// days after it was written.
    pub delete_by_ms: u64,
    /// The producer's statement signature (statement.rs) over this item.
    pub signature: [u8; 64],
}

impl core::fmt::Debug for EnvelopeItem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnvelopeItem")
            .field("topic", &self.topic)
            .field("epoch_started_ms", &self.epoch_started_ms)
            .field("delete_by_ms", &self.delete_by_ms)
            .finish_non_exhaustive()
    }
}

/// What the Noise message of an envelope carries: the producer's credential,
/// its clock when it sealed, and the topic keys.
pub fn encode_payload(
    credential: &[u8],
    salt: &Salt,
    sealed_ms: u64,
    items: &[EnvelopeItem],
) -> Zeroizing<Vec<u8>> {
    // Sized exactly: a buffer that grows leaves copies of the keys.
    let n = items.len().min(MAX_ENVELOPE_ITEMS);
    let len = 2
        + credential.len()
        + salt.len()
        + 8
        + 2
        + items
            .iter()
            .take(n)
            .map(|i| 2 + i.topic.len() + i.key.as_bytes().len() + 16 + i.signature.len())
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.extend_from_slice(&u16::try_from(credential.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(credential);
    out.extend_from_slice(salt);
    out.extend_from_slice(&sealed_ms.to_be_bytes());
    out.extend_from_slice(&u16::try_from(n).unwrap_or(0).to_be_bytes());
    for item in items.iter().take(n) {
        put_topic(&mut out, &item.topic);
        out.extend_from_slice(item.key.as_bytes());
        out.extend_from_slice(&item.epoch_started_ms.to_be_bytes());
        out.extend_from_slice(&item.delete_by_ms.to_be_bytes());
        out.extend_from_slice(&item.signature);
    }
    out
}

/// An envelope's contents: the producer's credential (encoded and decoded),
/// its instance salt, its clock when it sealed, the topic keys.
#[derive(Debug)]
pub struct Payload {
    pub credential_bytes: Vec<u8>,
    pub credential: Credential,
    pub salt: Salt,
    pub sealed_ms: u64,
    pub items: Vec<EnvelopeItem>,
}

pub fn decode_payload(bytes: &[u8]) -> Result<Payload, ControlError> {
    let mut r = Reader::new(bytes);
    let len = usize::from(r.u16()?);
    let credential_bytes = r.take(len)?.to_vec();
    let credential = Credential::decode(&credential_bytes).map_err(ControlError::Untrusted)?;
    let salt = r.array()?;
    let sealed_ms = r.u64()?;
    let n = usize::from(r.u16()?);
    if n > MAX_ENVELOPE_ITEMS {
        return Err(ControlError::Malformed);
    }
    let mut items = Vec::with_capacity(n.min(r.remaining() / 115));
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let topic = r.topic()?;
        if !seen.insert(topic.clone()) {
            return Err(ControlError::Malformed);
        }
        items.push(EnvelopeItem {
            topic,
            key: DataKey::from_bytes(r.array()?),
            epoch_started_ms: r.u64()?,
            delete_by_ms: r.u64()?,
            signature: r.array()?,
        });
    }
    r.finish()?;
    Ok(Payload {
        credential_bytes,
        credential,
        salt,
        sealed_ms,
        items,
    })
}

/// A recipient as a producer knows it: its newest verified prekeys.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub credential: Credential,
    pub prekeys: Prekeys,
    /// When this producer first saw the mailbox: it seals to it the epochs
    /// that had not ended by then.
    pub first_seen_ms: u64,
}

/// Per epoch, the (mailbox, topic) pairs already sealed to.
#[derive(Debug, Default)]
pub struct EpochSeals {
    pub done: BTreeSet<(MailboxId, String)>,
    /// The statement signature of each topic key, by the deletion instant
    /// it states: one signature serves every recipient (it names none).
    pub signatures: BTreeMap<String, (u64, [u8; 64])>,
}

/// Convenience: the key id an envelope's keys belong to.
pub fn key_id(env: &SealedEnvelope) -> KeyId {
    KeyId {
        producer: env.producer,
        epoch: env.epoch,
    }
}

// ---- the engine's side -------------------------------------------------------

use crate::engine::{Channel, ControlMessage, Shared};
use crate::error::Error;
use crate::exchange::wire::valid_topic;
use crate::keys::HeldKey;

use super::hybrid::HybridMode;
use super::session::{one_way, MAX_NOISE};
use super::Exchange;

/// One recipient's share of an epoch: mailbox, X25519 prekey, ML-KEM key
/// (hybrid), topics.
type SealTo = (MailboxId, [u8; 32], Option<Vec<u8>>, Vec<String>);

/// An opened envelope's payload and its sender's static key.
pub(crate) type Opened = (Zeroizing<Vec<u8>>, [u8; 32]);

/// Derived prekeys a mailbox may be asked for beyond its oldest period:
/// bounds the hash-chain walk a forged period number can cost.
const MAX_CHAIN: u64 = 2 * MAX_PREKEYS as u64 + 8;

impl Exchange {
    fn period_ms(sh: &Shared) -> u64 {
        sh.config.prekey_period_ms.max(1)
    }

    /// How long after its period a prekey's private key must stay: every key
    /// sealed to it belongs to an epoch that was current or next then, so it
    /// is deleted at most two rotations plus the retention later (and the
    /// clock-skew tolerance, since the producer's clock chose the period).
    fn prekey_keep_ms(sh: &Shared) -> u64 {
        let k = &sh.config.key;
        k.rotation_ms
            .saturating_mul(2)
            .saturating_add(k.retention_ms)
            .saturating_add(sh.config.clock_skew_ms)
    }

    /// How many periods ahead a mailbox publishes: a consumer that ran within
    /// the retention before a record was written has a prekey for it.
    fn prekeys_ahead(sh: &Shared) -> u64 {
        let p = Self::period_ms(sh);
        let span = sh
            .config
            .key
            .retention_ms
            .saturating_add(sh.config.key.rotation_ms.saturating_mul(2));
        (span / p + 2).min(MAX_PREKEYS as u64)
    }

    /// A new mailbox for a consumer credential, or for a producer that
    /// tokenizes keys (it receives the topics' token secrets in it).
    pub(crate) fn new_mailbox(&mut self, sh: &Shared, now_ms: u64) -> Option<Mailbox> {
        if !sh.wants_mailbox() {
            return None;
        }
        // Bound to the signing key (a version 1 credential has none: its
        // mailbox publishes nothing, so any id will do).
        let signing = sh
            .identity
            .has_signing_key()
            .then(|| sh.identity.signing_public_key());
        let (id, salt) = loop {
            let mut salt = [0u8; 16];
            self.rng.fill_bytes(&mut salt);
            let id = match &signing {
                Some(k) => mailbox_id(k, &salt),
                None => InstanceId(salt[..8].try_into().unwrap_or([0; 8])),
            };
            if id.0 != [0; 8] {
                break (id, salt);
            }
        };
        let mut seed = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut seed[..]);
        let mut mb = Mailbox::new(id, salt, now_ms / Self::period_ms(sh), seed);
        self.hybrid_mailbox(sh, &mut mb);
        Some(mb)
    }

    /// Gives a mailbox its ML-KEM chain (a new one, or one restored from a
    /// state saved before issue 17), or takes it away with hybrid `off`
    /// (whose state the previous version can read).
    pub(crate) fn hybrid_mailbox(&mut self, sh: &Shared, mb: &mut Mailbox) {
        if sh.config.hybrid == HybridMode::Off {
            mb.drop_kem();
        } else if mb.kem().is_none() {
            let mut seed = Zeroizing::new([0u8; 32]);
            self.rng.fill_bytes(&mut seed[..]);
            mb.set_kem(mb.first() / KEM_SPAN, seed);
            self.state_dirty = true;
        }
    }

    pub(crate) fn mailbox(&self) -> Option<&Mailbox> {
        self.mailbox.as_ref()
    }

    /// Consumer role: forget prekeys nothing may still need (forward
    /// secrecy), and publish the coming ones once per period.
    pub(crate) fn mailbox_tick(&mut self, sh: &Shared, now_ms: u64) {
        let period = Self::period_ms(sh);
        let keep_from = now_ms.saturating_sub(Self::prekey_keep_ms(sh)) / period;
        let ahead = Self::prekeys_ahead(sh);
        let Some(mb) = self.mailbox.as_mut() else {
            return;
        };
        if keep_from.saturating_sub(mb.first()) > MAX_CHAIN {
            // A clock jump far ahead: every period still in the chain is
            // past keeping, so a fresh seed loses nothing and spares a walk
            // down a hash chain of any length.
            let mut seed = Zeroizing::new([0u8; 32]);
            self.rng.fill_bytes(&mut seed[..]);
            let hybrid = mb.kem().is_some();
            *mb = Mailbox::new(mb.id, mb.salt, keep_from, seed);
            if hybrid {
                let mut seed = Zeroizing::new([0u8; 32]);
                self.rng.fill_bytes(&mut seed[..]);
                mb.set_kem(keep_from / KEM_SPAN, seed);
            }
            self.state_dirty = true;
        } else if mb.advance(keep_from) {
            self.state_dirty = true;
        }
        let current = now_ms / period;
        if mb.published.is_some_and(|(first, _)| first >= current) {
            return;
        }
        if !sh.identity.has_signing_key() {
            // A version 1 credential cannot sign prekeys: this consumer gets
            // keys from live producers and holders only.
            return;
        }
        let keys = mb.publics(current, ahead, MAX_CHAIN);
        if keys.is_empty() {
            return;
        }
        let kem = mb.kem_publics(current, ahead, MAX_CHAIN);
        mb.published = Some((current, now_ms));
        // The classical record for producers of earlier versions (and with
        // `off`); the hybrid one for every producer that reads it. Their
        // record keys differ (the kind is in the route), so compaction keeps
        // the newest of each.
        let mut records = Vec::with_capacity(2);
        if sh.config.hybrid != HybridMode::Require {
            records.push(None);
        }
        if kem.is_some() && sh.config.hybrid != HybridMode::Off {
            records.push(kem);
        }
        for kem in records {
            let mut record = Prekeys {
                mailbox: mb.id,
                keeper: sh.config.keeper,
                published_ms: now_ms,
                first_period: current,
                salt: mb.salt,
                keys: keys.clone(),
                kem,
                credential: sh.identity.credential().encode(),
                signature: [0; 64],
            };
            record.signature = sh
                .identity
                .sign_statement(PREKEYS_CONTEXT, &record.signed_part());
            sh.metrics.add_prekeys_published();
            self.outbox.push_back(ControlMessage {
                channel: Channel::Keys,
                to: None,
                payload: record.encode(),
            });
        }
    }

    /// Producer role: a mailbox's prekeys, read from the keys topic.
    pub(crate) fn on_prekeys(&mut self, sh: &Shared, bytes: &[u8]) -> Result<(), Error> {
        // Producers seal epoch keys to mailboxes; every party may hold a
        // token secret and seal it on (tokens.rs), so every engine keeps
        // the directory.
        let record = Prekeys::decode(bytes)?;
        if self
            .mailbox
            .as_ref()
            .is_some_and(|m| m.id == record.mailbox)
        {
            return Ok(()); // our own
        }
        if record.kem.is_none() && sh.config.hybrid == HybridMode::Require {
            return Ok(()); // never sealed to classically
        }
        let now = self.now_ms;
        let period = Self::period_ms(sh);
        let last = record.first_period.saturating_add(record.keys.len() as u64);
        if last.saturating_mul(period) <= now {
            return Ok(()); // every prekey it lists is in the past: stale
        }
        if let Some(r) = self.recipients.get(&record.mailbox) {
            // Once a mailbox showed a hybrid record, its classical ones are
            // only for producers of earlier versions: a broker that later
            // serves only those cannot make this producer seal classically
            // to it. A hybrid record replaces a classical one of the same
            // instant (a mailbox publishes both at once).
            let (had, has) = (r.prekeys.kem.is_some(), record.kem.is_some());
            if (had && !has)
                || (had == has && r.prekeys.published_ms >= record.published_ms)
                || (!had && has && r.prekeys.published_ms > record.published_ms)
            {
                return Ok(()); // a replay, or older than what we have
            }
        } else if record.kem.is_none() && self.seen_hybrid.contains(&record.mailbox) {
            // Seen hybrid before a restart (the state directory keeps the
            // mark): a broker that now serves only its classical records
            // gets nothing sealed to them; the hybrid one is published again
            // within a period.
            return Ok(());
        }
        let cred = Credential::decode(&record.credential).map_err(ControlError::Untrusted)?;
        sh.trust
            .verify(&cred, now, sh.config.clock_skew_ms)
            .map_err(ControlError::Untrusted)?;
        // A producer-only credential has a mailbox only to receive token
        // secrets; `seal_envelopes` seals epoch keys by `may_consume`.
        if (cred.consume().is_empty() && cred.produce().is_empty())
            || !owns_mailbox(&cred, record.mailbox, &record.salt)
            || !cred.verify_statement(PREKEYS_CONTEXT, &record.signed_part(), &record.signature)
        {
            return Err(ControlError::Unauthorized.into());
        }
        let first_seen_ms = match self.recipients.get(&record.mailbox) {
            // A mailbox belongs to the credential that first published it: a
            // newer record for it from another credential (an insider that
            // read the mailbox id on the keys topic) would otherwise replace
            // its prekeys here, and this producer would seal that mailbox's
            // keys to the insider's prekeys instead, so the consumer would
            // get no envelope (found by tests/simulation.rs, seed 1 and
            // others with the insider's forged prekeys records).
            Some(r) if r.credential.public_key() != cred.public_key() => {
                return Err(ControlError::Unauthorized.into());
            }
            Some(r) => r.first_seen_ms,
            None if self.recipients.len() >= MAX_RECIPIENTS => {
                return Err(ControlError::Busy.into());
            }
            None => now,
        };
        if record.kem.is_some()
            && sh.config.hybrid != HybridMode::Off
            && self.seen_hybrid.len() < MAX_RECIPIENTS
            && self.seen_hybrid.insert(record.mailbox)
        {
            self.state_dirty = true;
        }
        self.recipients.insert(
            record.mailbox,
            Recipient {
                credential: cred,
                prekeys: record,
                first_seen_ms,
            },
        );
        Ok(())
    }

    /// Producer role: seal every topic key of this instance's live epochs
    /// that an authorized mailbox lacks. Runs at every tick, so a topic first
    /// written mid-epoch, and a mailbox that appears, are covered within one.
    pub(crate) fn seal_envelopes(&mut self, sh: &Shared, now_ms: u64) {
        if sh.identity.credential().produce().is_empty() || !sh.identity.has_signing_key() {
            // (A version 1 credential cannot sign the key statements that
            // envelopes carry: such a producer delivers live only.)
            return;
        }
        // Forget what belongs to deleted epochs.
        self.seals.retain(|id, _| sh.producer.get(id).is_some());
        self.sealed_final.retain(|id| sh.producer.get(id).is_some());
        self.recipients.retain(|_, r| {
            let last = r
                .prekeys
                .first_period
                .saturating_add(r.prekeys.keys.len() as u64);
            last.saturating_mul(Self::period_ms(sh)) > now_ms
        });
        // Next epoch: its keys for the topics in use go out ahead of use.
        if let (Some(cur), Some(next)) = (sh.producer.current(), sh.producer.next()) {
            for t in cur.topics() {
                let _ = next.topic_key(&t);
            }
        }
        let period = now_ms / Self::period_ms(sh);
        let epochs: Vec<_> = sh
            .producer
            .all()
            .into_iter()
            .filter(|e| e.key_id.producer == sh.me && !self.sealed_final.contains(&e.key_id))
            .collect();
        for epoch in epochs {
            let ended = epoch.ended_ms();
            let topics = epoch.topics();
            let mut batches: Vec<SealTo> = Vec::new();
            let seals = self.seals.entry(epoch.key_id).or_default();
            for (mb, r) in &self.recipients {
                if r.first_seen_ms > ended {
                    continue; // appeared after this epoch ended
                }
                if epoch.started_ms >= r.credential.expires_ms() {
                    // As in live delivery: no key of an epoch that starts at
                    // or after the recipient's credential expires, not even
                    // ahead of use.
                    continue;
                }
                let Some(prekey) = r.prekeys.key_for(period) else {
                    continue;
                };
                // A hybrid record is sealed to hybrid or not at all.
                let kem = match &r.prekeys.kem {
                    Some(_) => match r.prekeys.kem_key_for(period) {
                        Some(k) => Some(k.to_vec()),
                        None => continue,
                    },
                    None => None,
                };
                let wanted: Vec<String> = topics
                    .iter()
                    .filter(|t| {
                        r.credential.may_consume(t) && !seals.done.contains(&(*mb, (*t).clone()))
                    })
                    .cloned()
                    .collect();
                if !wanted.is_empty() {
                    batches.push((*mb, prekey, kem, wanted));
                }
            }
            for (mb, prekey, kem, topics) in batches {
                // Checked when sealing, not only when the prekeys arrived:
                // a credential may have expired or been denied since.
                let ok = self.recipients.get(&mb).is_some_and(|r| {
                    sh.trust
                        .verify(&r.credential, now_ms, sh.config.clock_skew_ms)
                        .is_ok()
                });
                if !ok {
                    continue;
                }
                for chunk in topics.chunks(MAX_ENVELOPE_ITEMS) {
                    if self
                        .seal_one(sh, &epoch, mb, period, (&prekey, kem.as_deref()), chunk)
                        .is_ok()
                    {
                        let seals = self.seals.entry(epoch.key_id).or_default();
                        for t in chunk {
                            seals.done.insert((mb, t.clone()));
                        }
                    }
                }
            }
            if ended <= now_ms {
                // Its topic set is final and later mailboxes do not qualify.
                self.seals.remove(&epoch.key_id);
                self.sealed_final.insert(epoch.key_id);
            }
        }
    }

    /// Hybrid: encapsulates to a mailbox's ML-KEM key of the period's span
    /// (the ciphertext goes in the message header, so in the prologue; the
    /// secret is the Noise psk). Classical: nothing.
    #[allow(clippy::type_complexity)]
    pub(crate) fn encapsulate_to(
        &mut self,
        kem_key: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, Option<Zeroizing<[u8; 32]>>), ControlError> {
        match kem_key {
            Some(ek) => {
                let mut m = Zeroizing::new([0u8; 32]);
                self.rng.fill_bytes(&mut *m);
                let (ct, secret) = hybrid::encapsulate(ek, &m)?;
                Ok((Some(ct), Some(secret)))
            }
            None => Ok((None, None)),
        }
    }

    /// One Noise `X` (or, with a psk, `Xpsk1`) message from this engine's
    /// credential key to a mailbox's prekey: what every keys-topic envelope
    /// carries.
    pub(crate) fn noise_seal(
        &mut self,
        sh: &Shared,
        prekey: &[u8; 32],
        prologue: &[u8],
        psk: Option<&[u8; 32]>,
        payload: &[u8],
    ) -> Result<Vec<u8>, ControlError> {
        let seed = self.seed();
        let mut hs = one_way(
            true,
            &sh.identity.private_key_bytes(),
            Some(prekey),
            prologue,
            seed,
            psk,
        )?;
        let mut msg = vec![0u8; (payload.len() + 128).min(MAX_NOISE)];
        let n = hs
            .write_message(payload, &mut msg)
            .map_err(|_| ControlError::Malformed)?;
        msg.truncate(n);
        Ok(msg)
    }

    /// Opens an envelope sealed to this engine's mailbox by
    /// [`Exchange::noise_seal`]: the payload and the sender's static key.
    /// `None` if the prekey (or the span's ML-KEM key) of that period is
    /// gone or was never published: nothing to open.
    pub(crate) fn noise_open(
        &mut self,
        period: u64,
        kem_ct: Option<&[u8]>,
        prologue: &[u8],
        noise: &[u8],
    ) -> Result<Option<Opened>, Error> {
        let Some(mb) = self.mailbox.as_mut() else {
            return Ok(None);
        };
        let Some(private) = mb.private(period, MAX_CHAIN) else {
            return Ok(None);
        };
        let psk = match kem_ct {
            Some(ct) => {
                let Some(kem) = mb.kem_private(period, MAX_CHAIN) else {
                    return Ok(None);
                };
                Some(kem.decapsulate(ct)?)
            }
            None => None,
        };
        let private = Zeroizing::new(private.to_bytes());
        let seed = self.seed();
        let mut hs = one_way(false, &private, None, prologue, seed, psk.as_deref())?;
        let mut payload = Zeroizing::new(vec![0u8; noise.len()]);
        let n = hs
            .read_message(noise, &mut payload)
            .map_err(|_| ControlError::Decrypt)?;
        payload.truncate(n);
        let remote: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or(ControlError::Unauthorized)?;
        Ok(Some((payload, remote)))
    }

    fn seal_one(
        &mut self,
        sh: &Shared,
        epoch: &crate::keys::ProducerEpoch,
        mailbox: MailboxId,
        period: u64,
        (prekey, kem_key): (&[u8; 32], Option<&[u8]>),
        topics: &[String],
    ) -> Result<(), ControlError> {
        let delete_by_ms = epoch.delete_at_ms(&sh.config.key);
        let salt = sh
            .salt_of(epoch.key_id.producer)
            .ok_or(ControlError::Unauthorized)?;
        let items: Vec<EnvelopeItem> = topics
            .iter()
            .map(|t| {
                let key = epoch.topic_key(t).as_ref().clone();
                let seals = self.seals.entry(epoch.key_id).or_default();
                let signature = match seals.signatures.get(t) {
                    Some((at, sig)) if *at == delete_by_ms => *sig,
                    _ => {
                        let sig = Statement::sign(
                            &sh.identity,
                            salt,
                            &epoch.key_id,
                            t,
                            &key,
                            epoch.started_ms,
                            delete_by_ms,
                        )
                        .signature;
                        seals.signatures.insert(t.clone(), (delete_by_ms, sig));
                        sig
                    }
                };
                EnvelopeItem {
                    topic: t.clone(),
                    key,
                    epoch_started_ms: epoch.started_ms,
                    delete_by_ms,
                    signature,
                }
            })
            .collect();
        let payload = encode_payload(
            &sh.identity.credential().encode(),
            &salt,
            self.now_ms,
            &items,
        );
        let mut id = [0u8; 8];
        self.rng.fill_bytes(&mut id);
        let (kem_ct, psk) = self.encapsulate_to(kem_key)?;
        let mut env = SealedEnvelope {
            producer: sh.me,
            mailbox,
            id,
            epoch: epoch.key_id.epoch,
            period,
            kem_ct,
            noise: Vec::new(),
        };
        env.noise = self.noise_seal(sh, prekey, &env.prologue(), psk.as_deref(), &payload)?;
        sh.metrics.add_envelope_sealed();
        self.outbox.push_back(ControlMessage {
            channel: Channel::Keys,
            to: None,
            payload: env.encode(),
        });
        Ok(())
    }

    /// Consumer role: an envelope from the keys topic. Others' envelopes are
    /// skipped after reading their route.
    pub(crate) fn on_envelope(&mut self, sh: &Shared, bytes: &[u8]) -> Result<(), Error> {
        let to = bytes
            .get(14..22)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(InstanceId);
        let Some(mb) = self.mailbox.as_ref() else {
            return Ok(());
        };
        if to != Some(mb.id) {
            return Ok(());
        }
        let env = SealedEnvelope::decode(bytes)?;
        if env.kem_ct.is_none() && sh.config.hybrid == HybridMode::Require {
            return Err(ControlError::ClassicalRefused.into());
        }
        // Sealed to a prekey already deleted (its keys are past their
        // retention), or to one never published: nothing to open.
        let Some((payload, remote)) = self.noise_open(
            env.period,
            env.kem_ct.as_deref(),
            &env.prologue(),
            &env.noise,
        )?
        else {
            return Ok(());
        };
        let Payload {
            credential_bytes,
            credential: cred,
            salt,
            sealed_ms,
            items,
        } = decode_payload(&payload)?;
        if remote != cred.public_key() {
            return Err(ControlError::Unauthorized.into());
        }
        let now = self.now_ms;
        sh.trust
            .verify(&cred, now, sh.config.clock_skew_ms)
            .map_err(ControlError::Untrusted)?;
        let key_id = key_id(&env);
        let policy = &sh.config.key;
        let cap = now
            .saturating_add(policy.retention_ms)
            .saturating_add(policy.rotation_ms.saturating_mul(2));
        let mut rejected = false;
        for item in items {
            let statement = Statement {
                credential: credential_bytes.clone(),
                salt,
                epoch_started_ms: item.epoch_started_ms,
                delete_by_ms: item.delete_by_ms,
                signature: item.signature,
            };
            // The statement proves the producer owns the instance the
            // envelope names and minted this key for this topic.
            if !valid_topic(&item.topic)
                || !sh.identity.credential().may_consume(&item.topic)
                || item.epoch_started_ms >= cred.expires_ms()
                || statement
                    .verify(
                        &sh.trust,
                        now,
                        sh.config.clock_skew_ms,
                        &key_id,
                        &item.topic,
                        &item.key,
                    )
                    .is_err()
            {
                rejected = true;
                continue;
            }
            // Read at once, the time left counts down on our clock, as a
            // live delivery's does (clocks may differ by minutes); read days
            // later, the producer's deletion instant plus the clock-skew
            // tolerance bounds it, so a late reader keeps nothing longer.
            let left = item.delete_by_ms.saturating_sub(sealed_ms);
            let delete_at_ms = now
                .saturating_add(left)
                .min(item.delete_by_ms.saturating_add(sh.config.clock_skew_ms))
                .min(cap);
            if delete_at_ms <= now {
                continue;
            }
            let held = HeldKey {
                key: Arc::new(item.key),
                epoch_started_ms: item.epoch_started_ms,
                delete_at_ms,
                statement: Some(Arc::new(statement)),
            };
            if sh.keyring.insert(key_id, &item.topic, held) {
                sh.metrics.add_key_received();
                self.state_dirty = true;
                sh.notify_key_arrived();
            }
            self.wants.remove(&(key_id, item.topic));
        }
        sh.metrics.add_envelope_received();
        if rejected {
            return Err(ControlError::Unauthorized.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(keeper: bool) -> Prekeys {
        Prekeys {
            mailbox: InstanceId([7; 8]),
            keeper,
            published_ms: 1_000,
            first_period: 3,
            salt: [4; 16],
            keys: vec![[9; 32], [8; 32]],
            kem: None,
            credential: b"cred".to_vec(),
            signature: [5; 64],
        }
    }

    #[test]
    fn an_envelope_payload_is_encoded_into_a_buffer_of_its_exact_size() {
        let item = |topic: &str| EnvelopeItem {
            topic: topic.to_owned(),
            key: DataKey::from_bytes([1; 32]),
            epoch_started_ms: 2,
            delete_by_ms: 3,
            signature: [4; 64],
        };
        let items = [item("a"), item(&"b".repeat(249)), item("orders")];
        for n in 0..=items.len() {
            let payload = encode_payload(&[5; 321], &[6; 16], 7, &items[..n]);
            assert_eq!(payload.len(), payload.capacity(), "{n} items");
        }
    }

    #[test]
    fn keeper_flag_round_trips_and_is_signed() {
        for keeper in [false, true] {
            let bytes = record(keeper).encode();
            // The route's recipient field: the flag, then seven zero bytes.
            assert_eq!(bytes[14], u8::from(keeper));
            assert_eq!(&bytes[15..22], &[0; 7]);
            let back = Prekeys::decode(&bytes).unwrap();
            assert_eq!(back.keeper, keeper);
            assert_eq!(back.mailbox, InstanceId([7; 8]));
            assert_eq!(back.keys, vec![[9; 32], [8; 32]]);
            assert_eq!(back.encode(), bytes);
        }
        // The flag is inside what the mailbox signs.
        assert_ne!(record(true).signed_part(), record(false).signed_part());
    }

    #[test]
    fn other_recipient_bytes_are_rejected() {
        let good = record(true).encode();
        for (at, value) in [(14, 2u8), (14, 0xff), (15, 1), (21, 1)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert!(Prekeys::decode(&bad).is_err(), "byte {at} = {value}");
        }
    }

    #[test]
    fn the_kem_chain_forgets_a_span_once_its_last_period_is_past_keeping() {
        let mut mb = Mailbox::new(InstanceId([1; 8]), [2; 16], 48, Zeroizing::new([3; 32]));
        mb.set_kem(2, Zeroizing::new([4; 32]));
        let span2 = mb.kem_private(48, 100).unwrap().public();
        assert_eq!(mb.kem_private(71, 100).unwrap().public(), span2);
        let span3 = mb.kem_private(72, 100).unwrap().public();
        assert_ne!(span3, span2);
        // Periods 48-70 are gone; span 2 stays for period 71.
        mb.advance(71);
        assert!(mb.private(70, 100).is_none());
        assert_eq!(mb.kem_private(71, 100).unwrap().public(), span2);
        mb.advance(72);
        assert!(mb.kem_private(71, 100).is_none());
        assert_eq!(mb.kem().unwrap().0, 3);
        // What the state keeps (span and seed) derives the same keys.
        let (first, seed) = mb.kem().map(|(f, s)| (f, Zeroizing::new(*s))).unwrap();
        let mut restored = Mailbox::new(mb.id, mb.salt, mb.first(), Zeroizing::new(*mb.seed()));
        restored.set_kem(first, seed);
        assert_eq!(restored.kem_private(72, 100).unwrap().public(), span3);
    }

    #[test]
    fn a_hybrid_record_round_trips_and_the_census_tells_the_kinds_apart() {
        let mut hybrid = record(false);
        hybrid.mailbox = InstanceId([8; 8]);
        hybrid.kem = Some(KemPrekeys {
            first: 0,
            keys: vec![vec![6; hybrid::EK_LEN]],
        });
        let bytes = hybrid.encode();
        assert_eq!(bytes[5], KIND_PREKEYS_HYBRID);
        let back = Prekeys::decode(&bytes).unwrap();
        assert_eq!(back.kem, hybrid.kem);
        assert_eq!(back.kem_key_for(3), Some(&[6; hybrid::EK_LEN][..]));
        assert_eq!(back.kem_key_for(KEM_SPAN), None);
        // The ML-KEM keys are under the signature.
        assert_ne!(hybrid.signed_part(), record(false).signed_part());
        let classical = record(false).encode();
        let census = census([&classical[..], &bytes[..]]);
        assert_eq!(census[&InstanceId([7; 8])], hybrid::Speaks::ClassicalOnly);
        assert_eq!(census[&InstanceId([8; 8])], hybrid::Speaks::Hybrid);
    }
}
