//! Token secrets for tokenized record keys (docs/PROTOCOL.md section 5e,
//! docs/FORMAT.md section 13): one random secret per topic, shared by every
//! authorized producer of the topic, stable across epochs and restarts, and
//! replaced only by an explicit operator action (a new generation).
//!
//! Two keys-topic messages carry it, both asynchronous like envelopes, so
//! no live session is needed and a producer that starts after the others
//! exited still gets it from any engine that holds it:
//!
//! - a **claim** (kind 14, public, signed by its founder): "generation *g*
//!   of topic *t*'s token secret is the one founded by instance *f* at
//!   instant *s*, and it commits to this hash". Every reader picks the same
//!   claim for a topic by one rule (highest generation, then earliest
//!   founding instant, then lowest founder id), so producers that founded
//!   at once (both read no claim) converge on one secret;
//! - a **token envelope** (kind 15): the secret, sealed to a mailbox's
//!   prekey like a key envelope (Noise `X`, or `Xpsk1` with ML-KEM for a
//!   hybrid mailbox) by any engine that holds it. The recipient takes it
//!   only if it matches the commitment of a valid claim, so a relaying
//!   engine cannot hand over a secret of its own.
//!
//! Holders (producers and consumers of the topic) re-publish the chosen
//! claim once per prekey period, so the keys topic's time retention never
//! removes it while anyone holds the secret.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::engine::{Channel, ControlMessage, Shared};
use crate::error::{ControlError, Error};
use crate::format::{InstanceId, TokenSecret};
use crate::trust::Credential;

use super::hybrid::{HybridMode, CT_LEN};
use super::mailbox::MailboxId;
use super::statement::{self, Salt};
use super::wire::{put_topic, valid_topic, Reader, MAGIC, ROUTE_LEN, VERSION};
use super::Exchange;

/// Kind byte of a token claim on the keys topic.
pub const KIND_TOKEN_CLAIM: u8 = 14;
/// Kind byte of a token envelope on the keys topic.
pub const KIND_TOKEN_ENVELOPE: u8 = 15;
/// Signature context of a claim.
pub const CLAIM_CONTEXT: &[u8] = b"kafka-e2ee/v3/token-claim";
const COMMITMENT_LABEL: &[u8] = b"kafka-e2ee/v3/token-commitment";
/// Noise prologue label of a token envelope (then its header).
pub const TOKEN_ENVELOPE_PROLOGUE: &[u8] = b"kafka-e2ee/v3/token-envelope";

/// A claim first read this soon after it was founded is used only once it
/// has been known this long, so that a rival claim founded at the same
/// moment (by a producer that read no claim either) is seen before any
/// record is tokenized under the loser's secret.
pub const SETTLE_MS: u64 = 5_000;
/// A founder whose claim has not come back from the keys topic after this
/// long publishes it again.
const REPUBLISH_UNSEEN_MS: u64 = 30_000;
/// Topics this engine keeps claims for, and claims per topic: claims are
/// only taken for topics the credential may produce or consume, and only
/// the best few per topic matter.
const MAX_TOKEN_TOPICS: usize = 4_096;
const MAX_CLAIMS_PER_TOPIC: usize = 4;
/// Secrets read from envelopes before their claim, kept until it arrives.
const MAX_PENDING: usize = 256;
/// (mailbox, claim) pairs remembered as sealed.
const MAX_SEALED: usize = 65_536;

/// A signed claim on a topic's token secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaim {
    pub founder: InstanceId,
    pub generation: u32,
    pub topic: String,
    pub founded_ms: u64,
    pub salt: Salt,
    pub commitment: [u8; 32],
    pub credential: Vec<u8>,
    pub signature: [u8; 64],
}

/// SHA-256(label || founder || generation || u16 topic length || topic ||
/// secret): binds a secret to its claim without revealing it.
pub fn commitment(
    founder: InstanceId,
    generation: u32,
    topic: &str,
    secret: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_LABEL);
    h.update(founder.0);
    h.update(generation.to_be_bytes());
    let mut t = Vec::with_capacity(2 + topic.len());
    put_topic(&mut t, topic);
    h.update(&t);
    h.update(secret);
    h.finalize().into()
}

impl TokenClaim {
    /// The signed bytes: everything but the signature.
    pub fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            ROUTE_LEN + 4 + 2 + self.topic.len() + 8 + 16 + 32 + 2 + self.credential.len(),
        );
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(KIND_TOKEN_CLAIM);
        out.extend_from_slice(&self.founder.0);
        out.extend_from_slice(&[0u8; 8]);
        out.extend_from_slice(&self.generation.to_be_bytes());
        put_topic(&mut out, &self.topic);
        out.extend_from_slice(&self.founded_ms.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.commitment);
        let len = u16::try_from(self.credential.len()).unwrap_or(0);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.credential.get(..usize::from(len)).unwrap_or_default());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<TokenClaim, ControlError> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != MAGIC || r.u8()? != VERSION || r.u8()? != KIND_TOKEN_CLAIM {
            return Err(ControlError::Malformed);
        }
        let founder = InstanceId(r.array()?);
        if founder.0 == [0; 8] || r.array::<8>()? != [0; 8] {
            return Err(ControlError::Malformed);
        }
        let generation = r.u32()?;
        let topic = r.topic()?;
        let founded_ms = r.u64()?;
        let salt = r.array()?;
        let commitment = r.array()?;
        let len = usize::from(r.u16()?);
        let credential = r.take(len)?.to_vec();
        let signature = r.array()?;
        r.finish()?;
        Ok(TokenClaim {
            founder,
            generation,
            topic,
            founded_ms,
            salt,
            commitment,
            credential,
            signature,
        })
    }

    /// Smaller is better: every reader orders a topic's claims alike.
    fn rank(&self) -> (core::cmp::Reverse<u32>, u64, [u8; 8]) {
        (
            core::cmp::Reverse(self.generation),
            self.founded_ms,
            self.founder.0,
        )
    }

    fn id(&self) -> (u32, InstanceId) {
        (self.generation, self.founder)
    }
}

/// The record key of a claim on the keys topic: its route, generation and
/// topic, so compaction keeps one copy of each claim (the newest
/// re-publication) and every claim of every topic.
pub fn claim_record_key(payload: &[u8]) -> Vec<u8> {
    let topic_len = payload
        .get(ROUTE_LEN + 4..ROUTE_LEN + 6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, |b| usize::from(u16::from_be_bytes(b)));
    let end = ROUTE_LEN + 6 + topic_len;
    payload.get(..end).unwrap_or(payload).to_vec()
}

/// A token envelope: header fields, then one Noise message that carries
/// one secret. The header names the claim the secret belongs to by the
/// first 8 bytes of its commitment (public: the claim is), so every holder
/// sees that a mailbox has it and does not seal it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEnvelope {
    pub sealer: InstanceId,
    pub mailbox: MailboxId,
    pub id: [u8; 8],
    pub claim: ClaimRef,
    pub period: u64,
    pub kem_ct: Option<Vec<u8>>,
    pub noise: Vec<u8>,
}

impl TokenEnvelope {
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROUTE_LEN + 8 + 8 + 8 + 1 + CT_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(KIND_TOKEN_ENVELOPE);
        out.extend_from_slice(&self.sealer.0);
        out.extend_from_slice(&self.mailbox.0);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.claim);
        out.extend_from_slice(&self.period.to_be_bytes());
        match &self.kem_ct {
            Some(ct) => {
                out.push(1);
                out.extend_from_slice(ct);
            }
            None => out.push(0),
        }
        out
    }

    pub fn prologue(&self) -> Vec<u8> {
        [TOKEN_ENVELOPE_PROLOGUE, &self.header()].concat()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.noise);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<TokenEnvelope, ControlError> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != MAGIC || r.u8()? != VERSION || r.u8()? != KIND_TOKEN_ENVELOPE {
            return Err(ControlError::Malformed);
        }
        let sealer = InstanceId(r.array()?);
        let mailbox = InstanceId(r.array()?);
        if sealer.0 == [0; 8] || mailbox.0 == [0; 8] {
            return Err(ControlError::Malformed);
        }
        let id = r.array()?;
        let claim = r.array()?;
        let period = r.u64()?;
        let kem_ct = match r.u8()? {
            0 => None,
            1 => Some(r.take(CT_LEN)?.to_vec()),
            _ => return Err(ControlError::Malformed),
        };
        let noise = r.rest().to_vec();
        if noise.is_empty() {
            return Err(ControlError::Malformed);
        }
        Ok(TokenEnvelope {
            sealer,
            mailbox,
            id,
            claim,
            period,
            kem_ct,
            noise,
        })
    }
}

/// One secret inside a token envelope. `Debug` leaves the secret out.
pub struct TokenItem {
    pub topic: String,
    pub generation: u32,
    pub founder: InstanceId,
    pub secret: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for TokenItem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenItem")
            .field("topic", &self.topic)
            .field("generation", &self.generation)
            .field("founder", &self.founder)
            .finish_non_exhaustive()
    }
}

/// Payload: u16 credential length, the sealer's credential, then the
/// item: topic, generation u32, founder (8), secret (32).
pub fn encode_token_payload(credential: &[u8], item: &TokenItem) -> Zeroizing<Vec<u8>> {
    let size = 2 + credential.len() + 2 + item.topic.len() + 4 + 8 + 32;
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    let len = u16::try_from(credential.len()).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(credential.get(..usize::from(len)).unwrap_or_default());
    put_topic(&mut out, &item.topic);
    out.extend_from_slice(&item.generation.to_be_bytes());
    out.extend_from_slice(&item.founder.0);
    out.extend_from_slice(&item.secret[..]);
    out
}

pub fn decode_token_payload(bytes: &[u8]) -> Result<(Credential, TokenItem), ControlError> {
    let mut r = Reader::new(bytes);
    let len = usize::from(r.u16()?);
    let cred = Credential::decode(r.take(len)?).map_err(ControlError::Untrusted)?;
    let item = TokenItem {
        topic: r.topic()?,
        generation: r.u32()?,
        founder: InstanceId(r.array()?),
        secret: Zeroizing::new(r.array()?),
    };
    r.finish()?;
    Ok((cred, item))
}

/// How a token envelope names its claim: the commitment's first 8 bytes.
pub type ClaimRef = [u8; 8];

fn claim_ref(commitment: &[u8; 32]) -> ClaimRef {
    let mut out = [0u8; 8];
    out.copy_from_slice(commitment.get(..8).unwrap_or(&[0; 8]));
    out
}

// ---- the engine's side -------------------------------------------------------

/// The token secrets a host may tokenize with now, per topic: read on every
/// tokenized record, written by the exchange.
#[derive(Debug, Default)]
pub(crate) struct TokenRing(RwLock<BTreeMap<String, Arc<TokenSecret>>>);

impl TokenRing {
    pub(crate) fn get(&self, topic: &str) -> Option<Arc<TokenSecret>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .cloned()
    }

    fn set(&self, topic: &str, secret: Option<Arc<TokenSecret>>) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match secret {
            Some(s) => {
                map.insert(topic.to_owned(), s);
            }
            None => {
                map.remove(topic);
            }
        }
    }
}

struct KnownClaim {
    claim: TokenClaim,
    bytes: Vec<u8>,
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// Restored from the state directory: it was in use before, so it
    /// needs no settling.
    restored: bool,
}

impl KnownClaim {
    fn settled(&self, now_ms: u64) -> bool {
        self.restored
            || self.first_seen_ms >= self.claim.founded_ms.saturating_add(SETTLE_MS)
            || now_ms >= self.first_seen_ms.saturating_add(SETTLE_MS)
    }
}

/// The exchange's token state.
#[derive(Default)]
pub(crate) struct Tokens {
    claims: BTreeMap<String, Vec<KnownClaim>>,
    held: BTreeMap<(String, u32, InstanceId), Arc<TokenSecret>>,
    /// Topics a host asked to tokenize for: founded here if nobody has.
    wanted: BTreeSet<String>,
    /// Claims this engine founded that have not come back yet, with when
    /// they were (last) sent.
    founding: BTreeMap<String, (Vec<u8>, u64)>,
    /// (mailbox, claim) pairs with a token envelope on the keys topic (any
    /// holder's): each is sealed about once, not once per holder.
    sealed: BTreeSet<(MailboxId, ClaimRef)>,
    /// Secrets opened before their claim was read.
    pending: Vec<TokenItem>,
    /// The host has read the keys topic up to its end once: only then may
    /// this engine conclude that no claim exists and found one.
    caught_up: bool,
    /// When this engine last published (or saw) each chosen claim.
    republished: BTreeMap<String, u64>,
}

impl core::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tokens")
            .field("topics", &self.claims.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// The chosen claim of a topic, if any valid claim is known.
    fn chosen(&self, topic: &str) -> Option<&KnownClaim> {
        self.claims
            .get(topic)?
            .iter()
            .min_by_key(|c| c.claim.rank())
    }

    /// (claim bytes, secret) of every held secret whose claim is known, for
    /// the state directory.
    pub(crate) fn for_state(&self) -> Vec<(Vec<u8>, Arc<TokenSecret>)> {
        let mut out = Vec::new();
        for ((topic, generation, founder), secret) in &self.held {
            if let Some(c) = self
                .claims
                .get(topic)
                .and_then(|v| v.iter().find(|c| c.claim.id() == (*generation, *founder)))
            {
                out.push((c.bytes.clone(), secret.clone()));
            }
        }
        out
    }
}

impl Exchange {
    /// A host wants to tokenize keys of `topic` and has no secret yet.
    pub(crate) fn want_token(&mut self, topic: &str) {
        if self.tokens.wanted.len() < MAX_TOKEN_TOPICS {
            self.tokens.wanted.insert(topic.to_owned());
        }
    }

    /// The host has read the keys topic to its end (once is enough).
    pub(crate) fn keys_caught_up(&mut self) {
        self.tokens.caught_up = true;
    }

    /// Restores held secrets (with their claims) from the state directory.
    pub(crate) fn restore_tokens(
        &mut self,
        sh: &Shared,
        entries: Vec<(Vec<u8>, Zeroizing<[u8; 32]>)>,
    ) {
        for (bytes, secret) in entries {
            let Ok(claim) = TokenClaim::decode(&bytes) else {
                continue;
            };
            if commitment(claim.founder, claim.generation, &claim.topic, &secret)
                != claim.commitment
            {
                continue;
            }
            let topic = claim.topic.clone();
            let key = (topic.clone(), claim.generation, claim.founder);
            if self.take_claim(sh, claim, bytes, true).is_ok() {
                self.tokens
                    .held
                    .insert(key, Arc::new(TokenSecret::from_bytes(*secret)));
                self.refresh_token(sh, &topic);
            }
        }
    }

    /// Operator action (`kafka-e2ee tokens rotate`): founds the next
    /// generation of `topic`'s token secret. Every producer moves to it as
    /// soon as it holds it; keys get new tokens (docs/PROTOCOL.md 5e).
    pub(crate) fn rotate_token(&mut self, sh: &Shared, topic: &str) -> Result<u32, Error> {
        if !valid_topic(topic) || !sh.identity.credential().may_produce(topic) {
            return Err(Error::NotAuthorized {
                topic: topic.to_owned(),
                operation: "produce",
            });
        }
        let next = self
            .tokens
            .claims
            .get(topic)
            .and_then(|v| v.iter().map(|c| c.claim.generation).max())
            .map_or(Some(1), |g| g.checked_add(1))
            .ok_or(Error::Config(format!(
                "topic {topic}: no token generation left"
            )))?;
        self.found(sh, topic, next)?;
        Ok(next)
    }

    fn found(&mut self, sh: &Shared, topic: &str, generation: u32) -> Result<(), Error> {
        if !sh.identity.has_signing_key() {
            return Err(Error::Config(
                "e2ee.keys=tokenize needs a credential with a signing key (version 2): reissue it"
                    .into(),
            ));
        }
        let salt = sh.salt_of(sh.me).ok_or(ControlError::Unauthorized)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        self.rng().fill_bytes(&mut secret[..]);
        let mut claim = TokenClaim {
            founder: sh.me,
            generation,
            topic: topic.to_owned(),
            founded_ms: self.now_ms,
            salt,
            commitment: commitment(sh.me, generation, topic, &secret),
            credential: sh.identity.credential().encode(),
            signature: [0; 64],
        };
        claim.signature = sh
            .identity
            .sign_statement(CLAIM_CONTEXT, &claim.signed_part());
        let bytes = claim.encode();
        self.tokens.held.insert(
            (topic.to_owned(), generation, sh.me),
            Arc::new(TokenSecret::from_bytes(*secret)),
        );
        self.tokens
            .founding
            .insert(topic.to_owned(), (bytes.clone(), self.now_ms));
        self.outbox.push_back(ControlMessage {
            channel: Channel::Keys,
            to: None,
            payload: bytes,
        });
        self.state_dirty = true;
        Ok(())
    }

    /// A claim read from the keys topic.
    pub(crate) fn on_token_claim(&mut self, sh: &Shared, bytes: &[u8]) -> Result<(), Error> {
        let claim = TokenClaim::decode(bytes)?;
        let own = sh.identity.credential();
        if !own.may_produce(&claim.topic) && !own.may_consume(&claim.topic) {
            return Ok(()); // another topic's: this engine never needs it
        }
        let topic = claim.topic.clone();
        self.take_claim(sh, claim, bytes.to_vec(), false)?;
        // Secrets that arrived before their claim.
        let pending = core::mem::take(&mut self.tokens.pending);
        for item in pending {
            if item.topic == topic {
                self.take_secret(item);
            } else {
                self.tokens.pending.push(item);
            }
        }
        self.refresh_token(sh, &topic);
        Ok(())
    }

    fn take_claim(
        &mut self,
        sh: &Shared,
        claim: TokenClaim,
        bytes: Vec<u8>,
        restored: bool,
    ) -> Result<(), Error> {
        let now = self.now_ms;
        if let Some(c) = self
            .tokens
            .claims
            .get_mut(&claim.topic)
            .and_then(|v| v.iter_mut().find(|c| c.claim == claim))
        {
            c.last_seen_ms = now;
            self.tokens.republished.insert(claim.topic.clone(), now);
            return Ok(());
        }
        // Valid if its founder's credential was trusted when it founded
        // (a claim must outlive the credential: the secret does), may
        // produce the topic, owns the founder instance, and signed it.
        let cred = Credential::decode(&claim.credential).map_err(ControlError::Untrusted)?;
        sh.trust
            .verify(&cred, claim.founded_ms, sh.config.clock_skew_ms)
            .map_err(ControlError::Untrusted)?;
        if claim.founded_ms > now.saturating_add(sh.config.clock_skew_ms)
            || !cred.may_produce(&claim.topic)
            || !statement::owns(&cred, claim.founder, &claim.salt)
            || !cred.verify_statement(CLAIM_CONTEXT, &claim.signed_part(), &claim.signature)
        {
            return Err(ControlError::Unauthorized.into());
        }
        if !self.tokens.claims.contains_key(&claim.topic)
            && self.tokens.claims.len() >= MAX_TOKEN_TOPICS
        {
            return Err(ControlError::Busy.into());
        }
        let topic = claim.topic.clone();
        if self
            .tokens
            .founding
            .get(&topic)
            .is_some_and(|(b, _)| *b == bytes)
        {
            self.tokens.founding.remove(&topic);
        }
        let list = self.tokens.claims.entry(topic.clone()).or_default();
        list.push(KnownClaim {
            claim,
            bytes,
            first_seen_ms: now,
            last_seen_ms: now,
            restored,
        });
        list.sort_by_key(|c| c.claim.rank());
        list.truncate(MAX_CLAIMS_PER_TOPIC);
        self.tokens.republished.insert(topic, now);
        self.state_dirty = true;
        Ok(())
    }

    /// A token envelope read from the keys topic.
    pub(crate) fn on_token_envelope(&mut self, sh: &Shared, bytes: &[u8]) -> Result<(), Error> {
        let env = TokenEnvelope::decode(bytes)?;
        // Whoever sealed it, that mailbox has that claim's secret now.
        if self.tokens.sealed.len() < MAX_SEALED {
            self.tokens.sealed.insert((env.mailbox, env.claim));
        }
        if self.mailbox.as_ref().map(|m| m.id) != Some(env.mailbox) {
            return Ok(());
        }
        if env.kem_ct.is_none() && sh.config.hybrid == HybridMode::Require {
            return Err(ControlError::ClassicalRefused.into());
        }
        let Some((payload, remote)) = self.noise_open(
            env.period,
            env.kem_ct.as_deref(),
            &env.prologue(),
            &env.noise,
        )?
        else {
            return Ok(());
        };
        let (cred, item) = decode_token_payload(&payload)?;
        if remote != cred.public_key() {
            return Err(ControlError::Unauthorized.into());
        }
        sh.trust
            .verify(&cred, self.now_ms, sh.config.clock_skew_ms)
            .map_err(ControlError::Untrusted)?;
        // Only parties of the topic hand it on or take it; the secret
        // itself is checked against its founder's claim in `take_secret`.
        let (own, t) = (sh.identity.credential(), &item.topic);
        if !valid_topic(t)
            || !(cred.may_produce(t) || cred.may_consume(t))
            || !(own.may_produce(t) || own.may_consume(t))
        {
            return Err(ControlError::Unauthorized.into());
        }
        let topic = t.clone();
        let taken = self.take_secret(item);
        self.refresh_token(sh, &topic);
        if !taken {
            return Err(ControlError::Unauthorized.into());
        }
        Ok(())
    }

    /// Takes a secret if its claim is known and it matches the commitment;
    /// keeps it pending if the claim has not been read yet. False if it
    /// contradicts its claim.
    fn take_secret(&mut self, item: TokenItem) -> bool {
        let Some(c) = self.tokens.claims.get(&item.topic).and_then(|v| {
            v.iter()
                .find(|c| c.claim.id() == (item.generation, item.founder))
        }) else {
            if self.tokens.pending.len() < MAX_PENDING {
                self.tokens.pending.push(item);
            }
            return true;
        };
        if commitment(item.founder, item.generation, &item.topic, &item.secret)
            != c.claim.commitment
        {
            return false;
        }
        let key = (item.topic, item.generation, item.founder);
        if let std::collections::btree_map::Entry::Vacant(e) = self.tokens.held.entry(key) {
            e.insert(Arc::new(TokenSecret::from_bytes(*item.secret)));
            self.state_dirty = true;
        }
        true
    }

    /// Publishes the secret hosts may tokenize `topic` with now: the chosen
    /// claim's, once held and settled; none otherwise (a host then waits).
    fn refresh_token(&mut self, sh: &Shared, topic: &str) {
        let now = self.now_ms;
        let chosen = self
            .tokens
            .chosen(topic)
            .map(|c| (c.claim.id(), c.settled(now)));
        let secret = chosen.and_then(|((g, f), settled)| {
            settled
                .then(|| self.tokens.held.get(&(topic.to_owned(), g, f)).cloned())
                .flatten()
        });
        let current = sh.tokens.get(topic);
        let same = match (&current, &secret) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            sh.tokens.set(topic, secret);
            sh.notify_key_arrived();
        }
        // Secrets of claims that lost (known, not chosen, not newer) are
        // never used: forget them. Our own claim still on its way is not
        // known yet, so it is kept.
        let Some(((cg, cf), _)) = chosen else {
            return;
        };
        let known: Vec<(u32, InstanceId)> = self
            .tokens
            .claims
            .get(topic)
            .map(|v| v.iter().map(|c| c.claim.id()).collect())
            .unwrap_or_default();
        let before = self.tokens.held.len();
        self.tokens.held.retain(|(t, g, f), _| {
            t != topic || (*g, *f) == (cg, cf) || *g > cg || !known.contains(&(*g, *f))
        });
        if self.tokens.held.len() != before {
            self.state_dirty = true;
        }
    }

    /// Every tick: found secrets nobody has founded, publish claims again
    /// (so the keys topic's time retention never removes the chosen one),
    /// seal held secrets to the mailboxes that may have them, and let
    /// settled claims take effect.
    pub(crate) fn tokens_tick(&mut self, sh: &Shared, now_ms: u64) {
        // Found: only once the keys topic was read to its end (no claim
        // exists), and never while our own claim is on its way.
        if self.tokens.caught_up {
            let wanted: Vec<String> = self.tokens.wanted.iter().cloned().collect();
            for topic in wanted {
                let claimed = self
                    .tokens
                    .claims
                    .get(&topic)
                    .is_some_and(|v| !v.is_empty());
                if claimed || self.tokens.founding.contains_key(&topic) {
                    continue;
                }
                if !sh.identity.credential().may_produce(&topic) {
                    continue;
                }
                let _ = self.found(sh, &topic, 1);
            }
        }
        // Our claims not read back yet: send again (the first may be lost).
        let resend: Vec<Vec<u8>> = self
            .tokens
            .founding
            .values_mut()
            .filter(|(_, at)| now_ms >= at.saturating_add(REPUBLISH_UNSEEN_MS))
            .map(|(b, at)| {
                *at = now_ms;
                b.clone()
            })
            .collect();
        for payload in resend {
            self.outbox.push_back(ControlMessage {
                channel: Channel::Keys,
                to: None,
                payload,
            });
        }
        // Re-publish the chosen claim of each topic whose secret we hold,
        // once per prekey period unless someone else did.
        let period = sh.config.prekey_period_ms.max(1);
        let topics: Vec<String> = self.tokens.claims.keys().cloned().collect();
        for topic in &topics {
            let Some(c) = self.tokens.chosen(topic) else {
                continue;
            };
            let held = self.tokens.held.contains_key(&(
                topic.clone(),
                c.claim.generation,
                c.claim.founder,
            ));
            let last = self.tokens.republished.get(topic).copied().unwrap_or(0);
            if held && now_ms >= last.saturating_add(period) {
                let payload = c.bytes.clone();
                self.tokens.republished.insert(topic.clone(), now_ms);
                self.outbox.push_back(ControlMessage {
                    channel: Channel::Keys,
                    to: None,
                    payload,
                });
            }
            self.refresh_token(sh, topic);
        }
        self.seal_tokens(sh, now_ms);
    }

    /// Seals each held chosen secret to each mailbox whose credential may
    /// produce or consume its topic and that has no envelope of it on the
    /// keys topic yet.
    fn seal_tokens(&mut self, sh: &Shared, now_ms: u64) {
        if !sh.identity.has_signing_key() {
            return;
        }
        let period = now_ms / sh.config.prekey_period_ms.max(1);
        let own_mailbox = self.mailbox.as_ref().map(|m| m.id);
        let mut to_seal: Vec<(MailboxId, ClaimRef, TokenItem)> = Vec::new();
        for (topic, list) in &self.tokens.claims {
            let Some(c) = list.iter().min_by_key(|c| c.claim.rank()) else {
                continue;
            };
            let (generation, founder) = c.claim.id();
            let Some(secret) = self.tokens.held.get(&(topic.clone(), generation, founder)) else {
                continue;
            };
            let cref = claim_ref(&c.claim.commitment);
            for (mb, r) in &self.recipients {
                if Some(*mb) == own_mailbox
                    || self.tokens.sealed.contains(&(*mb, cref))
                    || !(r.credential.may_produce(topic) || r.credential.may_consume(topic))
                    || r.prekeys.key_for(period).is_none()
                {
                    continue;
                }
                to_seal.push((
                    *mb,
                    cref,
                    TokenItem {
                        topic: topic.clone(),
                        generation,
                        founder,
                        secret: Zeroizing::new(*secret.as_bytes()),
                    },
                ));
            }
        }
        for (mb, cref, item) in to_seal {
            // Checked when sealing: a credential may have expired or been
            // denied since its prekeys arrived.
            let ok = self.recipients.get(&mb).is_some_and(|r| {
                sh.trust
                    .verify(&r.credential, now_ms, sh.config.clock_skew_ms)
                    .is_ok()
            });
            if ok
                && self
                    .seal_token_envelope(sh, mb, cref, period, &item)
                    .is_ok()
            {
                self.tokens.sealed.insert((mb, cref));
            }
        }
    }

    fn seal_token_envelope(
        &mut self,
        sh: &Shared,
        mailbox: MailboxId,
        claim: ClaimRef,
        period: u64,
        item: &TokenItem,
    ) -> Result<(), ControlError> {
        let (prekey, kem_key) = {
            let r = self
                .recipients
                .get(&mailbox)
                .ok_or(ControlError::Unauthorized)?;
            let prekey = r
                .prekeys
                .key_for(period)
                .ok_or(ControlError::Unauthorized)?;
            // A hybrid record is sealed to hybrid or not at all.
            let kem = match &r.prekeys.kem {
                Some(_) => Some(
                    r.prekeys
                        .kem_key_for(period)
                        .ok_or(ControlError::Unauthorized)?
                        .to_vec(),
                ),
                None => None,
            };
            (prekey, kem)
        };
        let payload = encode_token_payload(&sh.identity.credential().encode(), item);
        let mut id = [0u8; 8];
        self.rng().fill_bytes(&mut id);
        let (kem_ct, psk) = self.encapsulate_to(kem_key.as_deref())?;
        let mut env = TokenEnvelope {
            sealer: sh.me,
            mailbox,
            id,
            claim,
            period,
            kem_ct,
            noise: Vec::new(),
        };
        env.noise = self.noise_seal(sh, &prekey, &env.prologue(), psk.as_deref(), &payload)?;
        self.outbox.push_back(ControlMessage {
            channel: Channel::Keys,
            to: None,
            payload: env.encode(),
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claim() -> TokenClaim {
        TokenClaim {
            founder: InstanceId(*b"founder1"),
            generation: 2,
            topic: "customers".into(),
            founded_ms: 1_790_000_000_000,
            salt: [7; 16],
            commitment: [9; 32],
            credential: vec![1, 2, 3],
            signature: [5; 64],
        }
    }

    #[test]
    fn a_claim_round_trips_and_its_record_key_names_founder_generation_and_topic() {
        let c = claim();
        let bytes = c.encode();
        assert_eq!(TokenClaim::decode(&bytes).unwrap(), c);
        let key = claim_record_key(&bytes);
        assert_eq!(key.len(), ROUTE_LEN + 4 + 2 + "customers".len());
        assert!(key.ends_with(b"customers"));
        for cut in 0..bytes.len() {
            assert!(TokenClaim::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TokenClaim::decode(&longer).is_err());
    }

    #[test]
    fn claims_rank_by_generation_then_founding_instant_then_founder() {
        let a = claim();
        let mut b = claim();
        b.generation = 3;
        assert!(b.rank() < a.rank());
        let mut c = claim();
        c.founded_ms -= 1;
        assert!(c.rank() < a.rank());
        let mut d = claim();
        d.founder = InstanceId(*b"founder0");
        assert!(d.rank() < a.rank());
    }

    #[test]
    fn a_token_envelope_round_trips_and_debug_hides_secrets() {
        let env = TokenEnvelope {
            sealer: InstanceId([1; 8]),
            mailbox: InstanceId([2; 8]),
            id: [3; 8],
            claim: [6; 8],
            period: 99,
            kem_ct: Some(vec![4; CT_LEN]),
            noise: vec![5; 40],
        };
        assert_eq!(TokenEnvelope::decode(&env.encode()).unwrap(), env);
        let item = TokenItem {
            topic: "t".into(),
            generation: 1,
            founder: InstanceId([1; 8]),
            secret: Zeroizing::new([0x41; 32]),
        };
        assert!(!format!("{item:?}").contains("65"));
    }
}
