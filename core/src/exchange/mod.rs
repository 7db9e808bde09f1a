//! The key exchange: Noise sessions between instances, key requests, pushes
//! ahead of rotation, and holders serving keys to each other, all as a state
//! machine driven by the engine (messages in, messages out, time as input).
//!
//! The control channel is a Kafka topic: messages may be lost, duplicated,
//! delayed, reordered or replayed by the broker. Every request is idempotent,
//! every lost message is recovered by the requester's retry timer, and every
//! replay is either rejected (transport nonces, handshake ids) or harmless.

pub mod hybrid;
pub mod mailbox;
pub mod session;
pub mod statement;
pub mod tokens;
pub mod wire;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::engine::{Channel, ControlMessage, Shared, Storage};
use crate::error::{ControlError, Error, KeyUnavailable};
use crate::format::{EpochSecret, InstanceId, KeyId};
use crate::keys::{HeldKey, ProducerEpoch};
use crate::trust::Credential;

use hybrid::HybridMode;
use session::{new_handshake, Handshake, Session, MAX_NOISE};
use statement::Statement;
use wire::{Body, Delivery, Envelope, Inner, Refusal, SessionId, BROADCAST};

/// Upper bounds that keep a flood of control messages from growing state.
const MAX_PENDING_HANDSHAKES: usize = 1024;
const MAX_QUEUED_PER_PEER: usize = 256;
/// Peers with something queued, and peers whose handshakes failed. Anyone who
/// can write a record can make up producer instance ids; each becomes a
/// peer to call, so both maps are capped (and pruned as their wants go).
const MAX_QUEUED_PEERS: usize = 4096;
const MAX_BACKOFF: usize = 8192;
/// Hellos to peers never proven alive draw on a budget: a burst of this
/// many, refilled at `FIRST_CONTACTS_PER_HOUR`. However many made-up ids an
/// attacker injects, an instance sends at most that many such Hellos an hour
/// (peers it has had a session with are not limited: they exist).
const FIRST_CONTACT_BURST: u64 = 64;
const FIRST_CONTACTS_PER_HOUR: u64 = 360;
/// Peers proven alive (a session that confirmed who they are) are
/// remembered this long, and at most this many.
const ALIVE_FOR_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_ALIVE: usize = 16384;
/// Consumers served (for pushing new epochs): authenticated, but a reader
/// with wildcard rights can name any number of topics.
const MAX_SERVED: usize = 65536;
const MAX_WANTS: usize = 65536;
/// Forged wants with ever new sender ids must not grow the answer log.
const MAX_OFFERED: usize = 65536;
/// A broadcast Want reaches every holder of the key. Each holder waits a
/// random time below this before it answers, and stays silent once it has
/// seen `HAVE_FANOUT` other holders answer: the requester asks one holder at
/// a time, so more answers would only be traffic (and one forged Want would
/// draw an answer from every holder).
const HAVE_SPREAD_MS: u64 = 2000;
const HAVE_FANOUT: u8 = 2;
/// Room for a handshake message: ephemeral key, encrypted static key and
/// payload tag (32 + 48 + 16), rounded up.
const HANDSHAKE_OVERHEAD: usize = 128;

/// Noise message buffers sized for what they will hold, never more than a
/// Noise message can be: a forged message must not cost a 64 KiB buffer.
fn noise_buffer(payload_len: usize) -> Vec<u8> {
    vec![
        0u8;
        payload_len
            .saturating_add(HANDSHAKE_OVERHEAD)
            .min(MAX_NOISE)
    ]
}

/// How many entries each of the key exchange's maps holds: what a
/// long-running test (or an operator's debug output) checks stays bounded
/// however much garbage reaches the control topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSizes {
    pub sessions: usize,
    /// Handshakes under way, either side.
    pub handshakes: usize,
    /// Peers with something queued for them, and the items queued.
    pub queued_peers: usize,
    pub queued_items: usize,
    pub wants: usize,
    /// Peers whose handshakes failed (backing off or given up on).
    pub backoff: usize,
    /// Peers proven alive in the last day.
    pub alive: usize,
    /// Broadcast wants answered, or to be answered.
    pub offered: usize,
    /// Producer side: consumers served, for pushing new epochs.
    pub served: usize,
    /// Consumer side: (producer, topic) pairs it reads.
    pub subscribed: usize,
    /// Producer side: mailboxes it seals envelopes to.
    pub recipients: usize,
    /// Producer side: epochs with envelope bookkeeping.
    pub sealed_epochs: usize,
    /// Topic keys of other producers held.
    pub keys_held: usize,
}

/// Something to send to a peer once a session exists. Offers are turned into
/// deliveries only then, when the peer's credential is known and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Outgoing {
    Request { key_id: KeyId, topic: String },
    Offer { key_id: KeyId, topic: String },
}

/// A key this instance needs.
#[derive(Debug)]
struct Want {
    next_try_ms: u64,
    attempts: u32,
    /// Last time a record asked for it; wants nobody asks about are dropped.
    last_asked_ms: u64,
    refused: Option<KeyUnavailable>,
    /// The holder asked last (after a `Have`), and when.
    holder: Option<(InstanceId, u64)>,
}

pub(crate) struct Exchange {
    rng: Box<dyn CryptoRngCore + Send>,
    storage: Option<Box<dyn Storage>>,
    pub(crate) now_ms: u64,
    /// When `handle_timeout` last ran. Every control message moves `now_ms`,
    /// so housekeeping is scheduled from this, or a steady stream of
    /// messages would postpone it for ever.
    last_tick_ms: u64,
    next_epoch: u32,
    outgoing: BTreeMap<SessionId, Handshake>,
    incoming: BTreeMap<SessionId, Handshake>,
    sessions: BTreeMap<SessionId, Session>,
    by_peer: BTreeMap<InstanceId, SessionId>,
    /// Peers whose handshakes failed: (failures, no new handshake before).
    /// A peer that never completes (down, or refusing our credential) costs
    /// a handshake per backoff period, not one per request.
    backoff: BTreeMap<InstanceId, (u32, u64)>,
    queued: BTreeMap<InstanceId, Vec<Outgoing>>,
    wants: BTreeMap<(KeyId, String), Want>,
    /// Producer side: (consumer, topic) pairs served, for pushing new epochs.
    served: BTreeMap<(InstanceId, String), u64>,
    /// Consumer side: (producer, topic) pairs it holds keys of, with the
    /// newest key id, so it can refresh its session before the old expires.
    subscribed: BTreeMap<(InstanceId, String), (KeyId, u64)>,
    /// Rate limit for answering broadcast wants.
    offered: BTreeMap<(InstanceId, KeyId, String), u64>,
    /// Answers to broadcast wants not sent yet: when they are due, and how
    /// many other holders were seen answering the same want meanwhile.
    haves: BTreeMap<(InstanceId, KeyId, String), (u64, u8)>,
    /// Peers proven alive, and when last (see `FIRST_CONTACT_BURST`).
    alive: BTreeMap<InstanceId, u64>,
    /// `Prefer`: peers to call classically next (a hybrid Hello to them
    /// went unanswered, or the last session this instance opened with them
    /// was classical: an earlier version), and since when.
    classical_next: BTreeMap<InstanceId, u64>,
    first_contact_tokens: u64,
    first_contact_refilled_ms: u64,
    /// Token bucket for answering handshakes (see `take_hello_token`).
    hello_tokens: u64,
    hello_refilled_ms: u64,
    outbox: VecDeque<ControlMessage>,
    state_dirty: bool,
    /// Consumer role, asynchronous delivery: this engine's mailbox (none for
    /// a credential that consumes nothing).
    mailbox: Option<mailbox::Mailbox>,
    /// Producer role, asynchronous delivery: the mailboxes it seals to.
    recipients: BTreeMap<mailbox::MailboxId, mailbox::Recipient>,
    /// Producer role: per live epoch, which (mailbox, topic) pairs have
    /// their envelope; epochs whose set is final are in `sealed_final`.
    seals: BTreeMap<KeyId, mailbox::EpochSeals>,
    sealed_final: std::collections::BTreeSet<KeyId>,
    /// Token secrets of tokenized record keys (tokens.rs).
    pub(crate) tokens: tokens::Tokens,
    /// Producer role: mailboxes whose hybrid prekeys record this engine has
    /// taken, kept in the state directory, so that after a restart a broker
    /// that serves only their classical records cannot get classical
    /// envelopes out of `prefer` (docs/PROTOCOL.md 5d, "Downgrade").
    pub(crate) seen_hybrid: std::collections::BTreeSet<mailbox::MailboxId>,
}

impl Exchange {
    pub(crate) fn new(
        rng: Box<dyn CryptoRngCore + Send>,
        storage: Option<Box<dyn Storage>>,
        now_ms: u64,
        next_epoch: u32,
        mailbox: Option<mailbox::Mailbox>,
    ) -> Self {
        Exchange {
            rng,
            storage,
            now_ms,
            last_tick_ms: now_ms,
            next_epoch,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            backoff: BTreeMap::new(),
            queued: BTreeMap::new(),
            wants: BTreeMap::new(),
            served: BTreeMap::new(),
            subscribed: BTreeMap::new(),
            offered: BTreeMap::new(),
            haves: BTreeMap::new(),
            alive: BTreeMap::new(),
            classical_next: BTreeMap::new(),
            first_contact_tokens: FIRST_CONTACT_BURST,
            first_contact_refilled_ms: now_ms,
            hello_tokens: u64::MAX,
            hello_refilled_ms: now_ms,
            outbox: VecDeque::new(),
            state_dirty: false,
            mailbox,
            recipients: BTreeMap::new(),
            seals: BTreeMap::new(),
            sealed_final: Default::default(),
            tokens: Default::default(),
            seen_hybrid: Default::default(),
        }
    }

    pub(crate) fn rng(&mut self) -> &mut dyn CryptoRngCore {
        &mut *self.rng
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<ControlMessage> {
        self.outbox.pop_front()
    }

    pub(crate) fn set_mailbox(&mut self, mailbox: Option<mailbox::Mailbox>) {
        self.mailbox = mailbox;
    }

    pub(crate) fn mark_dirty(&mut self) {
        self.state_dirty = true;
    }

    fn seed(&mut self) -> Zeroizing<[u8; 64]> {
        let mut seed = Zeroizing::new([0u8; 64]);
        self.rng.fill_bytes(&mut *seed);
        seed
    }

    fn new_session_id(&mut self) -> SessionId {
        let mut id = [0u8; 8];
        self.rng.fill_bytes(&mut id);
        id
    }

    pub(crate) fn new_epoch(
        &mut self,
        sh: &Shared,
        now_ms: u64,
    ) -> Result<Arc<ProducerEpoch>, Error> {
        // Epoch numbers name keys: one used twice would be two keys under
        // one id. An instance that ran out (2^32 rotations) fails.
        let epoch = self.next_epoch;
        self.next_epoch = epoch.checked_add(1).ok_or(Error::NoSealingKey)?;
        let mut secret = [0u8; 32];
        self.rng.fill_bytes(&mut secret);
        let key_id = KeyId {
            producer: sh.me,
            epoch,
        };
        Ok(Arc::new(ProducerEpoch::new(
            key_id,
            EpochSecret::from_bytes(secret),
            now_ms,
            u64::MAX,
        )))
    }

    // ---- wants -----------------------------------------------------------

    /// A record needs a key this instance lacks. Returns the reason to report.
    pub(crate) fn want(&mut self, key_id: KeyId, topic: &str) -> KeyUnavailable {
        let now = self.now_ms;
        if let Some(w) = self.wants.get_mut(&(key_id, topic.to_owned())) {
            w.last_asked_ms = now;
            return w.refused.unwrap_or(KeyUnavailable::Pending);
        }
        if self.wants.len() < MAX_WANTS {
            self.wants.insert(
                (key_id, topic.to_owned()),
                Want {
                    next_try_ms: now,
                    attempts: 0,
                    last_asked_ms: now,
                    refused: None,
                    holder: None,
                },
            );
        }
        KeyUnavailable::Pending
    }

    pub(crate) fn want_status(&self, key_id: KeyId, topic: &str) -> Option<KeyUnavailable> {
        self.wants
            .get(&(key_id, topic.to_owned()))
            .map(|w| w.refused.unwrap_or(KeyUnavailable::Pending))
    }

    fn retry_delay(&self, sh: &Shared, attempts: u32) -> u64 {
        let base = sh.config.request_retry_ms.max(1);
        let factor = 1u64 << attempts.min(16);
        base.saturating_mul(factor)
            .min(sh.config.max_retry_ms.max(base))
    }

    // ---- time --------------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, sh: &Shared, now_ms: u64) -> Result<(), Error> {
        self.now_ms = now_ms;
        self.last_tick_ms = now_ms;
        let cfg = &sh.config;

        // Handshakes and sessions that outlived their time are dropped, which
        // deletes their ephemeral keys: that is the session forward secrecy.
        let hs_timeout = cfg.handshake_timeout_ms;
        let mut failed = Vec::new();
        let mut unanswered = Vec::new();
        self.outgoing.retain(|_, h| {
            let alive = h.started_ms.saturating_add(hs_timeout) > now_ms;
            if !alive {
                failed.push(h.peer);
                unanswered.push((h.peer, h.hybrid, h.peer_reads));
            }
            alive
        });
        for (peer, hybrid, reads) in unanswered {
            // A hybrid Hello that timed out says nothing about the peer's
            // version (it may be down, or the reply lost): it is called
            // hybrid again, unless the peer showed meanwhile that it reads
            // the control topic (a Have, `on_have`). A classical Hello that
            // timed out: hybrid next.
            if !hybrid || reads {
                self.hello_unanswered(sh, peer, hybrid);
            }
        }
        self.incoming
            .retain(|_, h| h.started_ms.saturating_add(hs_timeout) > now_ms);
        let lifetime = cfg.session_lifetime_ms;
        self.sessions.retain(|_, s| {
            let unconfirmed_too_long =
                !s.confirmed && s.established_ms.saturating_add(hs_timeout) <= now_ms;
            if unconfirmed_too_long {
                failed.push(s.peer);
            }
            s.established_ms.saturating_add(lifetime) > now_ms && !unconfirmed_too_long
        });
        for peer in failed {
            self.handshake_failed(sh, peer);
        }
        let horizon = cfg.max_retry_ms.saturating_mul(4);
        self.backoff
            .retain(|_, (_, until)| until.saturating_add(horizon) > now_ms);
        // Sessions with a producer end when its credential does (expiry,
        // deny list): nothing more is taken from it. A session with a
        // consumer whose credential ended stays, so that its requests are
        // refused at once (every delivery checks its credential again)
        // rather than waiting out a key wait each.
        let (trust, skew) = (&sh.trust, cfg.clock_skew_ms);
        self.sessions.retain(|_, s| {
            let cred = &s.peer_credential;
            cred.produce().is_empty()
                || (cred.is_valid_at(now_ms, skew) && !trust.is_denied(&cred.public_key()))
        });
        let sessions = &self.sessions;
        self.by_peer.retain(|_, id| sessions.contains_key(id));

        // Refresh sessions with producers we read from before they expire,
        // re-subscribing with an idempotent request, so pushes keep coming.
        let refresh_at = lifetime / 2;
        let mut refresh = Vec::new();
        for ((producer, topic), (key_id, last)) in &self.subscribed {
            let session_age = self
                .by_peer
                .get(producer)
                .and_then(|id| self.sessions.get(id))
                .map(|s| now_ms.saturating_sub(s.established_ms));
            let stale = session_age.is_none_or(|age| age >= refresh_at);
            if stale && last.saturating_add(cfg.key.rotation_ms.saturating_mul(3)) > now_ms {
                refresh.push((*producer, *key_id, topic.clone()));
            }
        }
        for (producer, key_id, topic) in refresh {
            if let Some(id) = self.by_peer.get(&producer).copied() {
                // Start a fresh session; the old one stays usable meanwhile.
                if self
                    .sessions
                    .get(&id)
                    .is_some_and(|s| now_ms.saturating_sub(s.established_ms) >= refresh_at)
                    && !self.outgoing.values().any(|h| h.peer == producer)
                {
                    self.by_peer.remove(&producer);
                }
            }
            self.enqueue(producer, Outgoing::Request { key_id, topic });
        }
        let horizon = cfg.key.rotation_ms.saturating_mul(3);
        self.subscribed
            .retain(|_, (_, last)| last.saturating_add(horizon) > now_ms);
        let retention = cfg.key.retention_ms;
        self.served
            .retain(|_, last| last.saturating_add(retention) > now_ms);
        let window = cfg.max_retry_ms;
        self.offered
            .retain(|_, t| t.saturating_add(window) > now_ms);

        // Producer role: rotate on time, always keep the next epoch ready.
        if sh.identity.credential().produce().is_empty() {
            // Consumer-only credential: no epochs to make.
        } else {
            self.rotate(sh, now_ms)?;
        }

        // Retention: delete expired keys everywhere.
        let removed = sh.producer.purge(now_ms, &cfg.key, None) + sh.keyring.purge(now_ms, None);
        if removed > 0 {
            sh.metrics.add_keys_deleted(removed);
            self.state_dirty = true;
        }

        // Wants: ask the producer, then everyone, with backoff.
        let want_ttl = cfg.want_ttl_ms;
        self.wants.retain(|(key_id, topic), w| {
            w.last_asked_ms.saturating_add(want_ttl) > now_ms
                && sh.keyring.get(key_id, topic).is_none()
        });
        let mut due = Vec::new();
        for ((key_id, topic), w) in &self.wants {
            if w.refused.is_none() && w.next_try_ms <= now_ms {
                due.push((*key_id, topic.clone(), w.attempts));
            }
        }
        for (key_id, topic, attempts) in due {
            let delay = self.retry_delay(sh, attempts);
            if let Some(w) = self.wants.get_mut(&(key_id, topic.clone())) {
                w.attempts = w.attempts.saturating_add(1);
                w.next_try_ms = now_ms.saturating_add(delay);
            }
            if !sh.is_mine(key_id.producer) {
                self.enqueue(
                    key_id.producer,
                    Outgoing::Request {
                        key_id,
                        topic: topic.clone(),
                    },
                );
            }
            if attempts > 0 || sh.is_mine(key_id.producer) {
                // The producer did not answer: any other holder may.
                self.push(sh.me, BROADCAST, Body::Want { key_id, topic });
            }
        }

        self.alive
            .retain(|_, t| t.saturating_add(ALIVE_FOR_MS) > now_ms);
        self.send_haves(sh, now_ms);
        self.prune_queued(sh);
        self.mailbox_tick(sh, now_ms);
        self.seal_envelopes(sh, now_ms);
        self.tokens_tick(sh, now_ms);

        // One failure to send must not stop the rest of the tick: above all
        // not the save, which is what deletes expired keys from disk.
        let sent = self.flush_all(sh);
        let saved = self.persist(sh);
        sent.and(saved)
    }

    /// Drops queued items whose reason is gone: a request lives as long as
    /// the want or the subscription behind it, an offer as long as the
    /// consumer is served and the epoch lives. Made-up instance ids (from
    /// injected records) then cost nothing once their wants expire.
    fn prune_queued(&mut self, sh: &Shared) {
        let (wants, subscribed, served) = (&self.wants, &self.subscribed, &self.served);
        self.queued.retain(|peer, items| {
            items.retain(|item| match item {
                Outgoing::Request { key_id, topic } => {
                    let topic = topic.clone();
                    wants.contains_key(&(*key_id, topic.clone()))
                        || subscribed.contains_key(&(*peer, topic))
                }
                Outgoing::Offer { key_id, topic } => {
                    served.contains_key(&(*peer, topic.clone()))
                        && sh.producer.get(key_id).is_some()
                }
            });
            !items.is_empty()
        });
    }

    /// Sends the answers to broadcast wants that are due, unless enough
    /// other holders answered first.
    fn send_haves(&mut self, sh: &Shared, now_ms: u64) {
        let due: Vec<_> = self
            .haves
            .iter()
            .filter(|(_, (at, _))| *at <= now_ms)
            .map(|(k, (_, seen))| (k.clone(), *seen))
            .collect();
        for ((to, key_id, topic), seen) in due {
            self.haves.remove(&(to, key_id, topic.clone()));
            if seen < HAVE_FANOUT {
                self.push(sh.me, to, Body::Have { key_id, topic });
            }
        }
    }

    /// A handshake with `peer` failed (timed out, or its answer was refused):
    /// back off exponentially (up to `max_retry_ms`), as for a timeout.
    fn handshake_failed(&mut self, sh: &Shared, peer: InstanceId) {
        let (failures, _) = self.backoff.get(&peer).copied().unwrap_or((0, 0));
        let failures = failures.saturating_add(1);
        let delay = self.retry_delay(sh, failures - 1);
        if self.backoff.len() >= MAX_BACKOFF && !self.backoff.contains_key(&peer) {
            // Full: forget the backoff that ends first.
            if let Some(first) = self
                .backoff
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(p, _)| *p)
            {
                self.backoff.remove(&first);
            }
        }
        self.backoff
            .insert(peer, (failures, self.now_ms.saturating_add(delay)));
    }

    /// A peer proved who it is over a session: it exists.
    fn proven_alive(&mut self, peer: InstanceId) {
        if self.alive.len() >= MAX_ALIVE && !self.alive.contains_key(&peer) {
            if let Some(oldest) = self.alive.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                self.alive.remove(&oldest);
            }
        }
        self.alive.insert(peer, self.now_ms);
        self.backoff.remove(&peer);
    }

    /// One Hello to a peer never proven alive, if the budget allows.
    fn take_first_contact_token(&mut self) -> bool {
        let per_token = 3_600_000 / FIRST_CONTACTS_PER_HOUR;
        let earned = self.now_ms.saturating_sub(self.first_contact_refilled_ms) / per_token;
        if earned > 0 {
            self.first_contact_tokens = self
                .first_contact_tokens
                .saturating_add(earned)
                .min(FIRST_CONTACT_BURST);
            self.first_contact_refilled_ms = self
                .first_contact_refilled_ms
                .saturating_add(earned.saturating_mul(per_token));
        }
        if self.first_contact_tokens == 0 {
            return false;
        }
        self.first_contact_tokens -= 1;
        true
    }

    /// The earliest deadline of any timer: housekeeping, want retries,
    /// handshakes that time out, handshakes that may be retried, rotation.
    pub(crate) fn poll_timeout(&self, sh: &Shared) -> u64 {
        let cfg = &sh.config;
        let mut next = self.last_tick_ms.saturating_add(cfg.housekeeping_ms);
        for w in self.wants.values() {
            if w.refused.is_none() {
                next = next.min(w.next_try_ms);
            }
        }
        // A lost Hello is retried as soon as it times out and its peer's
        // backoff ends, not at some later housekeeping round.
        for h in self.outgoing.values() {
            next = next.min(h.started_ms.saturating_add(cfg.handshake_timeout_ms));
        }
        for (due, _) in self.haves.values() {
            next = next.min(*due);
        }
        for s in self.sessions.values().filter(|s| !s.confirmed) {
            next = next.min(s.established_ms.saturating_add(cfg.handshake_timeout_ms));
        }
        // A backoff that ended at or before the last tick was acted on
        // then (or waits on a handshake under way, whose deadline is above).
        for peer in self.queued.keys() {
            if let Some((_, until)) = self.backoff.get(peer) {
                if *until > self.last_tick_ms {
                    next = next.min(*until);
                }
            }
        }
        if let Some(cur) = sh.producer.current() {
            next = next.min(cur.started_ms.saturating_add(sh.config.key.rotation_ms));
        }
        next.max(self.now_ms)
    }

    fn rotate(&mut self, sh: &Shared, now_ms: u64) -> Result<(), Error> {
        let policy = &sh.config.key;
        let mut pushed_new = false;
        match sh.producer.current() {
            None => {
                let epoch = match sh.producer.next() {
                    Some(next) => next,
                    None => {
                        let e = self.new_epoch(sh, now_ms)?;
                        sh.producer.retain(Arc::clone(&e));
                        self.state_dirty = true;
                        // Persisted before it may seal: records under it must
                        // stay readable after a crash.
                        self.persist(sh)?;
                        e
                    }
                };
                sh.producer.install_current(epoch, now_ms);
                pushed_new = true;
            }
            Some(cur) if cur.started_ms.saturating_add(policy.rotation_ms) <= now_ms => {
                if sh.producer.promote_next(&cur, now_ms).is_some() {
                    sh.metrics.add_rotation();
                    pushed_new = true;
                }
            }
            Some(_) => {}
        }
        if sh.producer.next().is_none() {
            let start = sh.producer.current().map_or(now_ms, |c| {
                c.started_ms.saturating_add(policy.rotation_ms).max(now_ms)
            });
            let next = self.new_epoch(sh, start)?;
            sh.producer.retain(Arc::clone(&next));
            self.state_dirty = true;
            self.persist(sh)?;
            sh.producer.install_next(next);
            pushed_new = true;
        }
        if pushed_new {
            // Push the new next epoch (and the current) to every consumer we
            // serve, so steady-state consumers never wait for a key. Only over
            // live sessions: a consumer that went away re-asks when it is back.
            let by_peer = &self.by_peer;
            self.served
                .retain(|(peer, _), _| by_peer.contains_key(peer));
            let served: Vec<(InstanceId, String)> = self.served.keys().cloned().collect();
            for (peer, topic) in served {
                for epoch in [sh.producer.current(), sh.producer.next()]
                    .into_iter()
                    .flatten()
                {
                    self.enqueue(
                        peer,
                        Outgoing::Offer {
                            key_id: epoch.key_id,
                            topic: topic.clone(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn persist(&mut self, sh: &Shared) -> Result<(), Error> {
        if !self.state_dirty {
            return Ok(());
        }
        let Some(mut storage) = self.storage.take() else {
            self.state_dirty = false;
            return Ok(());
        };
        let tokens = self.tokens.for_state();
        let seen: Vec<mailbox::MailboxId> = if sh.config.hybrid == HybridMode::Off {
            Vec::new() // `off` writes what the previous version reads
        } else {
            self.seen_hybrid.iter().copied().collect()
        };
        let blob = crate::engine::encode_state(sh, self.mailbox.as_ref(), &tokens, &seen);
        let result = storage.store(&blob).map_err(Error::Storage);
        self.storage = Some(storage);
        if result.is_ok() {
            self.state_dirty = false;
        }
        result
    }

    // ---- sending -----------------------------------------------------------

    fn push(&mut self, from: InstanceId, to: InstanceId, body: Body) {
        let payload = Envelope { from, to, body }.encode();
        self.outbox.push_back(ControlMessage {
            channel: Channel::Control,
            to: (to != BROADCAST).then_some(to),
            payload,
        });
    }

    fn enqueue(&mut self, peer: InstanceId, item: Outgoing) {
        if self.queued.len() >= MAX_QUEUED_PEERS && !self.queued.contains_key(&peer) {
            // Full: the peer that failed most often (the likeliest made-up
            // id) makes room.
            let backoff = &self.backoff;
            if let Some(worst) = self
                .queued
                .keys()
                .max_by_key(|p| backoff.get(p).map_or(0, |(f, _)| *f))
                .copied()
            {
                self.queued.remove(&worst);
            }
        }
        let q = self.queued.entry(peer).or_default();
        if !q.contains(&item) {
            if q.len() >= MAX_QUEUED_PER_PEER {
                q.remove(0);
            }
            q.push(item);
        }
    }

    /// Flushes every peer's queue; one peer's failure does not keep the
    /// others waiting (the first error is returned once all were tried).
    fn flush_all(&mut self, sh: &Shared) -> Result<(), Error> {
        // Peers that failed least go first: the budget for first contacts
        // goes to new peers (a holder that just answered, a producer just
        // met) before ids that never answered (made-up ones among them).
        let mut peers: Vec<InstanceId> = self.queued.keys().copied().collect();
        let backoff = &self.backoff;
        peers.sort_by_key(|p| backoff.get(p).map_or(0, |(f, _)| *f));
        let mut result = Ok(());
        for peer in peers {
            let r = self.flush(sh, peer);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Sends what is queued for `peer` over its session, or starts a handshake.
    fn flush(&mut self, sh: &Shared, peer: InstanceId) -> Result<(), Error> {
        self.flush_budgeted(sh, peer, true)
    }

    /// `flush`; `budgeted: false` for the hybrid Hello that replaces a
    /// classical one the peer refused (`on_hybrid_only`): that Hello already
    /// drew on the first-contact budget, and answered, so the pair costs
    /// one token as a single Hello would.
    fn flush_budgeted(
        &mut self,
        sh: &Shared,
        peer: InstanceId,
        budgeted: bool,
    ) -> Result<(), Error> {
        if self.queued.get(&peer).is_none_or(Vec::is_empty) {
            self.queued.remove(&peer);
            return Ok(());
        }
        if let Some(id) = self.by_peer.get(&peer).copied() {
            let items = self.queued.remove(&peer).unwrap_or_default();
            let Some(session) = self.sessions.get(&id) else {
                return Ok(());
            };
            let inner = self.materialize(sh, &session.peer_credential.clone(), peer, items);
            if !inner.is_empty() {
                self.send_sealed(sh, id, &inner)?;
            }
            return Ok(());
        }
        if self.outgoing.values().any(|h| h.peer == peer) {
            return Ok(()); // a handshake is under way
        }
        if self
            .backoff
            .get(&peer)
            .is_some_and(|(_, until)| *until > self.now_ms)
        {
            return Ok(()); // recent handshakes failed; the queue waits
        }
        if self.outgoing.len() >= MAX_PENDING_HANDSHAKES {
            return Ok(());
        }
        if self.now_ms >= sh.identity.credential().expires_ms() {
            // Nobody accepts an expired credential: calling is only traffic.
            return Ok(());
        }
        if budgeted && !self.alive.contains_key(&peer) && !self.take_first_contact_token() {
            return Ok(()); // the queue waits for the budget
        }
        let seed = self.seed();
        let hybrid = self.hello_is_hybrid(sh, peer);
        let (hs, buf) = first_message(sh, peer, &seed, hybrid)?;
        let session = self.new_session_id();
        self.outgoing.insert(
            session,
            Handshake {
                peer,
                local: sh.me,
                state: hs,
                started_ms: self.now_ms,
                seed: Some(seed),
                hybrid,
                peer_reads: false,
            },
        );
        let body = if hybrid {
            Body::HybridHello {
                session,
                noise: buf,
            }
        } else {
            Body::Hello {
                session,
                noise: buf,
            }
        };
        self.push(sh.me, peer, body);
        sh.metrics.add_handshake();
        Ok(())
    }

    /// Whether the next Hello to `peer` is hybrid. With `Prefer`, hybrid
    /// first; a peer whose hybrid Hello goes unanswered (an engine before
    /// issue 17 rejects it as unknown) is called classically next, with
    /// the `CLASSICAL_BY_FALLBACK` payload, and the two alternate while
    /// neither is answered. A peer met classically is called classically
    /// next (until such a Hello goes unanswered). Alternating cannot be
    /// turned into a downgrade: a hybrid responder refuses the fallback
    /// Hello, so only an earlier version ever completes one.
    fn hello_is_hybrid(&self, sh: &Shared, peer: InstanceId) -> bool {
        match sh.config.hybrid {
            HybridMode::Off => false,
            HybridMode::Require => true,
            HybridMode::Prefer => !self.classical_next.contains_key(&peer),
        }
    }

    /// Our Hello of that kind to `peer` went unanswered (see the callers):
    /// with `Prefer`, the next one is of the other kind. Failures that had
    /// an answer (a session that did not prove its instance, a credential
    /// refused) change nothing: the peer spoke that kind.
    fn hello_unanswered(&mut self, sh: &Shared, peer: InstanceId, hybrid: bool) {
        if sh.config.hybrid != HybridMode::Prefer {
            return;
        }
        if hybrid {
            self.call_classically(peer);
        } else {
            self.classical_next.remove(&peer);
        }
    }

    fn call_classically(&mut self, peer: InstanceId) {
        if self.classical_next.len() >= MAX_ALIVE && !self.classical_next.contains_key(&peer) {
            if let Some(oldest) = self
                .classical_next
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(p, _)| *p)
            {
                self.classical_next.remove(&oldest);
            }
        }
        self.classical_next.insert(peer, self.now_ms);
    }

    /// Turns queued items into inner messages for a peer whose credential is
    /// now known: offers become deliveries only if the peer may have the key.
    fn materialize(
        &mut self,
        sh: &Shared,
        peer_cred: &Credential,
        peer: InstanceId,
        items: Vec<Outgoing>,
    ) -> Vec<Inner> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Outgoing::Request { key_id, topic } => {
                    out.push(Inner::KeyRequest { key_id, topic })
                }
                Outgoing::Offer { key_id, topic } => {
                    if let Some(d) = self.delivery_for(sh, peer_cred, &key_id, &topic) {
                        sh.metrics.add_key_served();
                        out.push(Inner::KeyDelivery(d));
                    } else {
                        let _ = peer;
                    }
                }
            }
        }
        out
    }

    /// Whether a peer may receive keys of `topic` right now: its credential
    /// allows consuming it and still verifies (expiry, deny list) — checked at
    /// every delivery, so revocation takes effect at the next rotation.
    fn may_receive(&self, sh: &Shared, peer_cred: &Credential, topic: &str) -> bool {
        // The signature was verified at the handshake; expiry and the deny
        // list can change during a session, so they are checked every time.
        peer_cred.may_consume(topic)
            && peer_cred.is_valid_at(self.now_ms, sh.config.clock_skew_ms)
            && !sh.trust.is_denied(&peer_cred.public_key())
    }

    fn delivery_for(
        &self,
        sh: &Shared,
        peer_cred: &Credential,
        key_id: &KeyId,
        topic: &str,
    ) -> Option<Delivery> {
        if !self.may_receive(sh, peer_cred, topic) {
            sh.metrics.add_refused();
            return None;
        }
        // No key of an epoch that starts at or after the peer's credential
        // expires, not even pushed ahead of use: an expired consumer then
        // reads nothing produced after the first rotation following its
        // expiry (the next epoch is pushed one rotation early, which would
        // otherwise extend its reach by a whole rotation period).
        let expires = peer_cred.expires_ms();
        if sh.is_mine(key_id.producer) {
            if !sh.identity.credential().may_produce(topic) {
                return None;
            }
            let epoch = sh.producer.get(key_id)?;
            if epoch.started_ms >= expires {
                sh.metrics.add_refused();
                return None;
            }
            let key = (*epoch.derive_topic_key(topic)).clone();
            let delete_by = epoch.delete_at_ms(&sh.config.key);
            let statement = sh.salt_of(key_id.producer).map(|salt| {
                Box::new(Statement::sign(
                    &sh.identity,
                    salt,
                    key_id,
                    topic,
                    &key,
                    epoch.started_ms,
                    delete_by,
                ))
            });
            return Some(Delivery {
                key_id: *key_id,
                topic: topic.to_owned(),
                key,
                epoch_started_ms: epoch.started_ms,
                retain_ms: delete_by.saturating_sub(self.now_ms),
                statement,
            });
        }
        let held = sh.keyring.get(key_id, topic)?;
        if held.epoch_started_ms >= expires {
            sh.metrics.add_refused();
            return None;
        }
        // A holder relays only what its producer signed: a key without a
        // statement (from a version 1 producer) stays with its holder.
        let statement = Box::new(held.statement.as_deref()?.clone());
        Some(Delivery {
            key_id: *key_id,
            topic: topic.to_owned(),
            key: (*held.key).clone(),
            epoch_started_ms: held.epoch_started_ms,
            retain_ms: held.delete_at_ms.saturating_sub(self.now_ms),
            statement: Some(statement),
        })
    }

    /// Sends `items` over a session, in as many Sealed messages as it
    /// takes: a batch holds at most 255 items and must fit one Noise message
    /// (signed deliveries carry the producer's credential, ~0.5 KiB each).
    /// Always at least one message (an empty batch confirms a session).
    fn send_sealed(&mut self, sh: &Shared, id: SessionId, items: &[Inner]) -> Result<(), Error> {
        const MAX_BATCH_BYTES: usize = 48 * 1024;
        // Every batch opens with this instance's proof (17 bytes): the
        // network may lose or reorder messages, and whichever arrives first
        // confirms the session and must carry it.
        let proof = match self.sessions.get(&id) {
            Some(s) => self.proof(sh, &s.peer_credential, s.local),
            None => return Ok(()),
        };
        let items: Vec<Inner> = items
            .iter()
            .filter(|i| !matches!(i, Inner::InstanceProof { .. }))
            .cloned()
            .collect();
        let items = &items[..];
        let mut start = 0;
        loop {
            let mut end = start;
            let mut bytes = 1;
            while end < items.len() && end - start < usize::from(u8::MAX) - proof.len() {
                let n = items
                    .get(end)
                    .map_or(0, |i| wire::encode_batch(std::slice::from_ref(i)).len() - 1);
                if end > start && bytes + n > MAX_BATCH_BYTES {
                    break;
                }
                bytes += n;
                end += 1;
            }
            let mut chunk = proof.clone();
            chunk.extend_from_slice(items.get(start..end).unwrap_or_default());
            let batch = wire::encode_batch(&chunk);
            let Some(session) = self.sessions.get_mut(&id) else {
                return Ok(());
            };
            let (nonce, noise) = session.seal(&batch)?;
            let (from, to) = (session.local, session.peer);
            self.push(
                from,
                to,
                Body::Sealed {
                    session: id,
                    nonce,
                    noise,
                },
            );
            if end >= items.len() {
                return Ok(());
            }
            start = end;
        }
    }

    // ---- receiving ---------------------------------------------------------

    pub(crate) fn handle_control(&mut self, sh: &Shared, bytes: &[u8]) -> Result<(), Error> {
        // Framing first (magic, version, a sender): whatever is not a
        // control message is refused, whichever topic it came from.
        let (from, to) = Envelope::route(bytes)?;
        // (With hybrid `off`, kinds 12 and 13 are unknown, as they were to
        // the version before issue 17.)
        let hybrid_on = sh.config.hybrid != HybridMode::Off;
        match bytes.get(5) {
            Some(&mailbox::KIND_PREKEYS) => return self.on_prekeys(sh, bytes),
            Some(&mailbox::KIND_ENVELOPE) => return self.on_envelope(sh, bytes),
            Some(&mailbox::KIND_PREKEYS_HYBRID) if hybrid_on => return self.on_prekeys(sh, bytes),
            Some(&mailbox::KIND_ENVELOPE_HYBRID) if hybrid_on => {
                return self.on_envelope(sh, bytes)
            }
            Some(&tokens::KIND_TOKEN_CLAIM) => return self.on_token_claim(sh, bytes),
            Some(&tokens::KIND_TOKEN_ENVELOPE) => return self.on_token_envelope(sh, bytes),
            _ => {}
        }
        if from == sh.me {
            return Ok(()); // our own message, read back from the topic
        }
        if to != BROADCAST && !sh.is_mine(to) {
            // For another instance: not even decoded, unless it answers a
            // want this instance means to answer too.
            if !self.haves.is_empty() && bytes.get(5) == Some(&wire::KIND_HAVE) {
                if let Ok(Envelope {
                    body: Body::Have { key_id, topic },
                    ..
                }) = Envelope::decode(bytes)
                {
                    if let Some((_, seen)) = self.haves.get_mut(&(to, key_id, topic)) {
                        *seen = seen.saturating_add(1);
                    }
                }
            }
            return Ok(());
        }
        let env = Envelope::decode(bytes)?;
        match env.body {
            Body::Hello { session, noise } => {
                self.on_hello(sh, env.from, env.to, session, &noise, false)
            }
            Body::HybridHello { session, noise } => {
                self.on_hello(sh, env.from, env.to, session, &noise, true)
            }
            Body::HelloReply { session, noise } => {
                self.on_hello_reply(sh, env.from, env.to, session, &noise, false)
            }
            Body::HybridReply { session, noise } => {
                self.on_hello_reply(sh, env.from, env.to, session, &noise, true)
            }
            Body::HybridOnly { session } => self.on_hybrid_only(sh, env.from, env.to, session),
            Body::HelloFinish { session, noise } => {
                self.on_hello_finish(sh, env.from, env.to, session, &noise)
            }
            Body::Sealed {
                session,
                nonce,
                noise,
            } => self.on_sealed(sh, env.from, env.to, session, nonce, &noise),
            Body::Want { key_id, topic } => {
                self.on_want(sh, env.from, env.to, key_id, topic);
                Ok(())
            }
            Body::Have { key_id, topic } => {
                if env.to == BROADCAST {
                    return Err(ControlError::Malformed.into());
                }
                self.on_have(sh, env.from, key_id, topic);
                Ok(())
            }
        }
    }

    fn on_hello(
        &mut self,
        sh: &Shared,
        from: InstanceId,
        to: InstanceId,
        session: SessionId,
        noise: &[u8],
        hybrid: bool,
    ) -> Result<(), Error> {
        if to == BROADCAST || (hybrid && sh.config.hybrid == HybridMode::Off) {
            // `Off` is the version before issue 17, which knows no such kind.
            return Err(ControlError::Malformed.into());
        }
        if !hybrid && sh.config.hybrid == HybridMode::Require {
            return Err(ControlError::ClassicalRefused.into());
        }
        if self.incoming.contains_key(&session)
            || self.outgoing.contains_key(&session)
            || self.sessions.contains_key(&session)
        {
            return Err(ControlError::Replay.into());
        }
        if self.incoming.len() >= MAX_PENDING_HANDSHAKES {
            // Under a flood, the oldest half-open handshake goes first.
            if let Some(oldest) = self
                .incoming
                .iter()
                .min_by_key(|(_, h)| h.started_ms)
                .map(|(k, _)| *k)
            {
                self.incoming.remove(&oldest);
            }
        }
        // Everything above was cheap; answering costs three X25519
        // operations, and anyone who can write to the control topic can
        // send a Hello under any name.
        if !self.take_hello_token(sh) {
            return Err(ControlError::Busy.into());
        }
        let seed = self.seed();
        let mut hs = new_handshake(
            false,
            hybrid,
            &sh.identity.private_key_bytes(),
            from,
            to,
            seed,
        )?;
        let mut scratch = vec![0u8; noise.len()];
        let n = hs
            .read_message(noise, &mut scratch)
            .map_err(|_| ControlError::Decrypt)?;
        let payload = scratch.get(..n).ok_or(ControlError::Malformed)?;
        let mut kem_ct = Vec::new();
        if hybrid {
            // The initiator's ephemeral ML-KEM key: encapsulate to it, and
            // the secret becomes the handshake's pre-shared key (mixed in
            // with message 3).
            let mut m = Zeroizing::new([0u8; 32]);
            self.rng.fill_bytes(&mut *m);
            let (ct, secret) = hybrid::encapsulate(payload, &m)?;
            hs.set_psk(hybrid::PSK_LOCATION, &*secret)
                .map_err(|_| ControlError::Malformed)?;
            kem_ct = ct;
        } else if payload == hybrid::CLASSICAL_BY_FALLBACK && sh.config.hybrid != HybridMode::Off {
            // The initiator can do hybrid and went classical only because
            // its hybrid Hello to us went unanswered (lost, or a broker
            // dropping it): answering would let the broker choose classical
            // for two hybrid parties. Tell it to call hybrid again now.
            self.push(to, from, Body::HybridOnly { session });
            return Err(ControlError::ClassicalRefused.into());
        }
        // Hybrid: the ciphertext, then the credential; classical: the
        // credential, as before issue 17.
        kem_ct.extend_from_slice(&sh.identity.credential().encode());
        let payload = kem_ct;
        let mut reply = noise_buffer(payload.len());
        let n = hs
            .write_message(&payload, &mut reply)
            .map_err(|_| ControlError::Malformed)?;
        reply.truncate(n);
        self.incoming.insert(
            session,
            Handshake {
                peer: from,
                local: to,
                state: hs,
                started_ms: self.now_ms,
                seed: None,
                hybrid,
                peer_reads: false,
            },
        );
        let body = if hybrid {
            Body::HybridReply {
                session,
                noise: reply,
            }
        } else {
            Body::HelloReply {
                session,
                noise: reply,
            }
        };
        self.push(to, from, body);
        Ok(())
    }

    /// Whether this instance may answer one more Hello now. Handshakes are
    /// answered at most `handshakes_per_sec` a second (with a burst of as
    /// many), which bounds the CPU a flood of forged Hellos can cost; honest
    /// peers whose Hello is dropped retry after their handshake timeout.
    fn take_hello_token(&mut self, sh: &Shared) -> bool {
        let rate = u64::from(sh.config.handshakes_per_sec.max(1));
        let now = self.now_ms;
        let elapsed = now.saturating_sub(self.hello_refilled_ms);
        let earned = elapsed.saturating_mul(rate) / 1000;
        if earned > 0 || self.hello_tokens > rate {
            self.hello_tokens = self.hello_tokens.saturating_add(earned).min(rate);
            // Keep the fraction of a token not yet earned.
            self.hello_refilled_ms = if self.hello_tokens == rate {
                now
            } else {
                self.hello_refilled_ms
                    .saturating_add(earned.saturating_mul(1000) / rate)
            };
        }
        if self.hello_tokens == 0 {
            return false;
        }
        self.hello_tokens -= 1;
        true
    }

    /// Checks a peer's credential: it must name the key the peer proved it
    /// holds in the handshake, and verify against the trust anchor.
    fn check_peer(
        &self,
        sh: &Shared,
        remote_static: Option<&[u8]>,
        credential: &[u8],
    ) -> Result<Credential, Error> {
        let cred = Credential::decode(credential).map_err(ControlError::Untrusted)?;
        if remote_static != Some(&cred.public_key()[..]) {
            return Err(ControlError::Unauthorized.into());
        }
        sh.trust
            .verify(&cred, self.now_ms, sh.config.clock_skew_ms)
            .map_err(ControlError::Untrusted)?;
        Ok(cred)
    }

    fn on_hello_reply(
        &mut self,
        sh: &Shared,
        from: InstanceId,
        to: InstanceId,
        session: SessionId,
        noise: &[u8],
        hybrid: bool,
    ) -> Result<(), Error> {
        if self
            .outgoing
            .get(&session)
            .is_some_and(|hs| hs.hybrid != hybrid)
        {
            // A classical reply to a hybrid Hello (or the reverse) is not an
            // answer to it (and would not decrypt: the pattern names differ).
            return Err(ControlError::UnknownSession.into());
        }
        let (mut hs, payload) = read_handshake(&mut self.outgoing, session, from, to, noise)?;
        let (kem_ct, credential) = if hybrid {
            let ct = payload.get(..hybrid::CT_LEN);
            let cred = payload.get(hybrid::CT_LEN..);
            (ct, cred.unwrap_or_default())
        } else {
            (None, &payload[..])
        };
        let checked = self
            .check_peer(sh, hs.state.get_remote_static(), credential)
            .and_then(|cred| match (kem_ct, hs.seed.as_ref()) {
                (Some(ct), Some(seed)) => {
                    let secret = hybrid::KemKey::from_handshake_seed(seed).decapsulate(ct)?;
                    hs.state
                        .set_psk(hybrid::PSK_LOCATION, &*secret)
                        .map_err(|_| ControlError::Malformed)?;
                    Ok(cred)
                }
                (None, _) if !hybrid => Ok(cred),
                _ => Err(ControlError::Malformed.into()),
            });
        let cred = match checked {
            Ok(cred) => cred,
            Err(e) => {
                // Anyone can answer a Hello with a Noise-valid reply under a
                // key of their own: that says nothing about the peer we
                // called, whose own reply may still come. The handshake goes
                // back to where it was (rebuilt from its seed) and waits.
                if let Some(seed) = hs.seed.take() {
                    let (state, _) = first_message(sh, hs.peer, &seed, hs.hybrid)?;
                    hs.state = state;
                    hs.seed = Some(seed);
                    self.outgoing.insert(session, hs);
                }
                return Err(e);
            }
        };
        let items = self.queued.remove(&from).unwrap_or_default();
        let mut inner = self.proof(sh, &cred, to);
        let mut later = self.materialize(sh, &cred, from, items);
        // Requests ride in message 3; deliveries (signed, ~0.5 KiB each) go
        // in Sealed messages right after it, which split as they must.
        let (requests, deliveries): (Vec<_>, Vec<_>) = later
            .drain(..)
            .partition(|i| !matches!(i, Inner::KeyDelivery(_)));
        // What does not fit one batch follows in Sealed messages.
        let mut requests = requests;
        let rest = requests.split_off(requests.len().min(usize::from(u8::MAX) - inner.len()));
        inner.extend(requests);
        let deliveries: Vec<Inner> = rest.into_iter().chain(deliveries).collect();
        let batch = wire::encode_batch(&inner);
        let finish = wire::encode_finish_payload(&sh.identity.credential().encode(), &batch);
        let mut msg = noise_buffer(finish.len());
        let n = hs
            .state
            .write_message(&finish, &mut msg)
            .map_err(|_| ControlError::Malformed)?;
        msg.truncate(n);
        self.establish(sh, hs, session, cred, true)?;
        self.push(
            to,
            from,
            Body::HelloFinish {
                session,
                noise: msg,
            },
        );
        if !deliveries.is_empty() {
            self.send_sealed(sh, session, &deliveries)?;
        }
        Ok(())
    }

    /// The peer we called classically (thinking it an earlier version)
    /// speaks hybrid: call it hybrid at once. Only our own pending classical
    /// Hello to that peer is affected, so a forged one can at most replace a
    /// classical attempt by a hybrid one.
    fn on_hybrid_only(
        &mut self,
        sh: &Shared,
        from: InstanceId,
        to: InstanceId,
        session: SessionId,
    ) -> Result<(), Error> {
        let ours = self
            .outgoing
            .get(&session)
            .is_some_and(|h| h.peer == from && h.local == to && !h.hybrid);
        if !ours || sh.config.hybrid != HybridMode::Prefer {
            return Err(ControlError::UnknownSession.into());
        }
        self.outgoing.remove(&session);
        self.classical_next.remove(&from);
        // No backoff for this: the peer answered.
        if let Some((_, until)) = self.backoff.get_mut(&from) {
            *until = self.now_ms;
        }
        self.flush_budgeted(sh, from, false)
    }

    /// Turns a finished handshake into a session. The responder's session
    /// is confirmed at once (message 3 arrived); the initiator's when the
    /// first transport message comes back.
    fn establish(
        &mut self,
        sh: &Shared,
        hs: Handshake,
        session: SessionId,
        cred: Credential,
        initiator: bool,
    ) -> Result<(), Error> {
        let transport = hs
            .state
            .into_stateless_transport_mode()
            .map_err(|_| ControlError::Malformed)?;
        let bound = cred.signing_key().is_none();
        if hs.hybrid {
            sh.metrics.add_session_hybrid();
        } else {
            sh.metrics.add_session_classical();
        }
        if initiator {
            // Which way to call this peer next time (`hello_is_hybrid`).
            if hs.hybrid {
                self.classical_next.remove(&hs.peer);
            } else {
                self.call_classically(hs.peer);
            }
        }
        self.sessions.insert(
            session,
            Session {
                id: session,
                peer: hs.peer,
                local: hs.local,
                peer_credential: cred,
                transport,
                established_ms: self.now_ms,
                initiator,
                bound,
                confirmed: !initiator,
                send_nonce: 0,
                replay: Default::default(),
                hybrid: hs.hybrid,
            },
        );
        self.by_peer.insert(hs.peer, session);
        Ok(())
    }

    fn on_hello_finish(
        &mut self,
        sh: &Shared,
        from: InstanceId,
        to: InstanceId,
        session: SessionId,
        noise: &[u8],
    ) -> Result<(), Error> {
        if self.sessions.contains_key(&session) {
            return Err(ControlError::Replay.into());
        }
        let (hs, payload) = read_handshake(&mut self.incoming, session, from, to, noise)?;
        let (cred_bytes, batch) = wire::decode_finish_payload(&payload)?;
        let cred = self.check_peer(sh, hs.state.get_remote_static(), cred_bytes)?;
        let items = wire::decode_batch(batch)?;
        let mut replies = self.proof(sh, &cred, to);
        self.establish(sh, hs, session, cred, false)?;
        replies.extend(self.process(sh, session, items)?);
        if self.sessions.get(&session).is_some_and(|s| s.bound) {
            // It proved who it is: whatever we gave up on it is forgotten.
            self.proven_alive(from);
        }
        let queued = self.queued.remove(&from).unwrap_or_default();
        if let Some(cred) = self
            .sessions
            .get(&session)
            .map(|s| s.peer_credential.clone())
        {
            replies.extend(self.materialize(sh, &cred, from, queued));
        }
        // Always answer, even with an empty batch: it confirms the session.
        self.send_sealed(sh, session, &replies)
    }

    fn on_sealed(
        &mut self,
        sh: &Shared,
        from: InstanceId,
        to: InstanceId,
        id: SessionId,
        nonce: u64,
        noise: &[u8],
    ) -> Result<(), Error> {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(ControlError::UnknownSession.into());
        };
        if session.peer != from || session.local != to {
            return Err(ControlError::UnknownSession.into());
        }
        let plaintext = session.open(nonce, noise)?;
        let confirming = !session.confirmed;
        let items = wire::decode_batch(&plaintext)?;
        let replies = self.process(sh, id, items)?;
        if confirming {
            // The responder's first message must prove it owns the instance
            // we addressed (when its credential can): otherwise it is another
            // credential answering in that instance's name. Drop the session
            // and back off, as for a failed handshake.
            let bound = self.sessions.get(&id).is_some_and(|s| s.bound);
            if !bound {
                self.drop_session(sh, id, from);
                return Err(ControlError::Unauthorized.into());
            }
            if let Some(s) = self.sessions.get_mut(&id) {
                s.confirmed = true;
            }
            self.proven_alive(from);
        }
        if !replies.is_empty() {
            self.send_sealed(sh, id, &replies)?;
        }
        Ok(())
    }

    fn on_want(
        &mut self,
        sh: &Shared,
        from: InstanceId,
        to: InstanceId,
        key_id: KeyId,
        topic: String,
    ) {
        if to != BROADCAST && !sh.is_mine(to) {
            return;
        }
        let holds = if sh.is_mine(key_id.producer) {
            sh.producer.get(&key_id).is_some()
        } else {
            sh.keyring.get(&key_id, &topic).is_some()
        };
        if !holds {
            return;
        }
        // At most one answer per requester and key per window, so replayed
        // or forged wants cannot turn this instance into an amplifier.
        let k = (from, key_id, topic);
        if self.offered.contains_key(&k) || self.offered.len() >= MAX_OFFERED {
            return;
        }
        self.offered.insert(k.clone(), self.now_ms);
        if to == BROADCAST {
            let mut r = [0u8; 8];
            self.rng.fill_bytes(&mut r);
            let delay = u64::from_le_bytes(r) % HAVE_SPREAD_MS;
            self.haves.insert(k, (self.now_ms.saturating_add(delay), 0));
        } else {
            let (from, key_id, topic) = k;
            self.push(sh.me, from, Body::Have { key_id, topic });
        }
    }

    /// A holder answered our want: ask it (one holder at a time). The
    /// requester opens the session, so holders never do handshake work for
    /// an unauthenticated broadcast.
    fn on_have(&mut self, sh: &Shared, from: InstanceId, key_id: KeyId, topic: String) {
        let now = self.now_ms;
        let timeout = sh.config.handshake_timeout_ms;
        let Some(w) = self.wants.get_mut(&(key_id, topic.clone())) else {
            return;
        };
        // One holder at a time: a Have while the last one asked is still
        // within its handshake timeout waits, except that a holder this
        // instance has a session with replaces one it has none with. The
        // request to it is one Sealed message, needing neither a handshake
        // nor a first-contact token; a holder without a session may wait on
        // the first-contact budget (an instance that starts among many
        // unknown instance ids spends the burst at once, then earns one
        // token per 10 s) or on a backoff, while the holder it already talks
        // to is ignored. (Simulation seed 777: a newcomer with a live
        // session to the keeper ignored the keeper's Haves for 96 s.) A
        // forged Have in a session peer's name costs one Sealed request per
        // want and timeout, as any forged Have costs a request.
        let by_peer = &self.by_peer;
        if w.holder.is_some_and(|(holder, at)| {
            at.saturating_add(timeout) > now
                && (by_peer.contains_key(&holder) || !by_peer.contains_key(&from))
        }) {
            return;
        }
        w.holder = Some((from, now));
        // A peer that answers wants reads the control topic. If our Hello to
        // it has gone unanswered for longer than a request retry, it went
        // out before the peer started reading (a producer's first records
        // reach consumers before its control plane reads): send a new one
        // now rather than after the handshake timeout. At most once per
        // want and handshake timeout, as `holder` above limits.
        let stale = now.saturating_sub(sh.config.request_retry_ms);
        // Longer than any answer takes on a working control topic.
        let ignored = now.saturating_sub(sh.config.handshake_timeout_ms / 2);
        let mut unanswered = None;
        self.outgoing.retain(|_, h| {
            let keep = h.peer != from || h.started_ms >= stale;
            if !keep && h.started_ms < ignored {
                unanswered = Some(h.hybrid);
            }
            keep
        });
        if let Some(hybrid) = unanswered {
            // It reads the control topic yet left our Hello unanswered for
            // half a handshake timeout: an engine before issue 17 ignores
            // hybrid Hellos, so the next one is of the other kind, at once.
            // (A Hello merely slower than a request retry is sent again as
            // it was: flipping then costs hybrid peers a refusal and a hint
            // round trip each time.)
            self.hello_unanswered(sh, from, hybrid);
        }
        self.enqueue(from, Outgoing::Request { key_id, topic });
        let _ = self.flush(sh, from);
        for h in self.outgoing.values_mut() {
            if h.peer == from {
                h.peer_reads = true;
            }
        }
    }

    /// Handles a batch of inner messages from an authenticated peer and
    /// returns the replies.
    fn process(
        &mut self,
        sh: &Shared,
        id: SessionId,
        items: Vec<Inner>,
    ) -> Result<Vec<Inner>, Error> {
        let Some(session) = self.sessions.get(&id) else {
            return Ok(Vec::new());
        };
        let peer = session.peer;
        let peer_cred = session.peer_credential.clone();
        let mut replies = Vec::new();
        for item in items {
            let bound = self.sessions.get(&id).is_some_and(|s| s.bound);
            match item {
                Inner::InstanceProof { salt } => {
                    if !statement::owns(&peer_cred, peer, &salt) {
                        self.drop_session(sh, id, peer);
                        return Err(ControlError::Unauthorized.into());
                    }
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.bound = true;
                    }
                }
                Inner::KeyRequest { key_id, topic } => {
                    self.on_key_request(sh, peer, &peer_cred, key_id, topic, &mut replies);
                }
                Inner::KeyDelivery(d) => self.on_delivery(sh, peer, &peer_cred, d),
                Inner::KeyUnavailable {
                    key_id,
                    topic,
                    reason,
                } => {
                    // Only the instance itself refuses its keys, and only
                    // once it proved it is that instance.
                    if key_id.producer == peer && bound {
                        if let Some(w) = self.wants.get_mut(&(key_id, topic)) {
                            w.refused = Some(match reason {
                                Refusal::NotAuthorized => KeyUnavailable::Refused,
                                Refusal::Expired => KeyUnavailable::Expired,
                                Refusal::Unknown => KeyUnavailable::Unknown,
                            });
                        }
                    }
                }
            }
        }
        Ok(replies)
    }

    /// The `InstanceProof` for the id a peer addressed us as, for peers
    /// whose software knows it (a version 2 credential means version 2).
    fn proof(&self, sh: &Shared, peer_cred: &Credential, local: InstanceId) -> Vec<Inner> {
        match sh.salt_of(local) {
            Some(salt) if peer_cred.signing_key().is_some() => {
                vec![Inner::InstanceProof { salt }]
            }
            _ => Vec::new(),
        }
    }

    fn drop_session(&mut self, sh: &Shared, id: SessionId, peer: InstanceId) {
        self.sessions.remove(&id);
        if self.by_peer.get(&peer) == Some(&id) {
            self.by_peer.remove(&peer);
        }
        self.handshake_failed(sh, peer);
    }

    fn on_key_request(
        &mut self,
        sh: &Shared,
        peer: InstanceId,
        peer_cred: &Credential,
        key_id: KeyId,
        topic: String,
        replies: &mut Vec<Inner>,
    ) {
        if sh.is_mine(key_id.producer) {
            if !self.may_receive(sh, peer_cred, &topic)
                || !sh.identity.credential().may_produce(&topic)
            {
                sh.metrics.add_refused();
                replies.push(Inner::KeyUnavailable {
                    key_id,
                    topic,
                    reason: Refusal::NotAuthorized,
                });
                return;
            }
            let Some(d) = self.delivery_for(sh, peer_cred, &key_id, &topic) else {
                let reason = match sh.producer.max_epoch(key_id.producer) {
                    Some(max) if key_id.epoch <= max => Refusal::Expired,
                    _ => Refusal::Unknown,
                };
                replies.push(Inner::KeyUnavailable {
                    key_id,
                    topic,
                    reason,
                });
                return;
            };
            sh.metrics.add_key_served();
            replies.push(Inner::KeyDelivery(d));
            // Serve ahead: the current and next epochs for this topic too.
            for epoch in [sh.producer.current(), sh.producer.next()]
                .into_iter()
                .flatten()
            {
                if epoch.key_id != key_id {
                    if let Some(d) = self.delivery_for(sh, peer_cred, &epoch.key_id, &topic) {
                        sh.metrics.add_key_served();
                        replies.push(Inner::KeyDelivery(d));
                    }
                }
            }
            if self.served.len() >= MAX_SERVED && !self.served.contains_key(&(peer, topic.clone()))
            {
                // Full: the consumer served longest ago is pushed no more
                // (it asks again when it needs a key).
                if let Some(oldest) = self
                    .served
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
                {
                    self.served.remove(&oldest);
                }
            }
            self.served.insert((peer, topic), self.now_ms);
        } else if let Some(d) = self.delivery_for(sh, peer_cred, &key_id, &topic) {
            // Another holder's key: serve it if the peer may read the topic.
            sh.metrics.add_key_served();
            replies.push(Inner::KeyDelivery(d));
        }
    }

    fn on_delivery(&mut self, sh: &Shared, peer: InstanceId, peer_cred: &Credential, d: Delivery) {
        let now = self.now_ms;
        // Hold only keys this credential may hold, from a peer that may hand
        // them out: the producer itself, or another reader of the topic.
        let sender_ok = peer_cred.may_produce(&d.topic)
            || (peer != d.key_id.producer && peer_cred.may_consume(&d.topic));
        // The sender's credential is checked at every delivery, not only at
        // the handshake: it may have expired or been denied since.
        let sender_valid = peer_cred.is_valid_at(now, sh.config.clock_skew_ms)
            && !sh.trust.is_denied(&peer_cred.public_key());
        if !sh.identity.credential().may_consume(&d.topic) || !sender_ok || !sender_valid {
            sh.metrics.add_control_rejected();
            return;
        }
        // Only producers mint keys: a key is taken with its producer's
        // signed statement (whoever relays it), or from a version 1 producer
        // itself, which cannot sign, over its own session.
        let (statement, producer_expires, started) = match d.statement {
            Some(st) => {
                let Ok(producer) = st.verify(
                    &sh.trust,
                    now,
                    sh.config.clock_skew_ms,
                    &d.key_id,
                    &d.topic,
                    &d.key,
                ) else {
                    sh.metrics.add_control_rejected();
                    return;
                };
                let started = st.epoch_started_ms;
                (Some(Arc::new(*st)), producer.expires_ms(), started)
            }
            // A version 1 producer, over its own session, cannot sign; its
            // credential is the session's, checked just above.
            None if peer == d.key_id.producer && peer_cred.signing_key().is_none() => {
                (None, peer_cred.expires_ms(), d.epoch_started_ms)
            }
            None => {
                sh.metrics.add_control_rejected();
                return;
            }
        };
        // No epoch that began after its producer's credential expired: an
        // expired producer mints nothing (and seals nothing, see `seal`).
        if started >= producer_expires {
            sh.metrics.add_control_rejected();
            return;
        }
        if d.retain_ms == 0 {
            return;
        }
        // The sender's time left, counted down on our clock (the two clocks
        // may differ by minutes); never longer than our own policy allows.
        let policy = &sh.config.key;
        let cap = policy.retention_ms.saturating_add(policy.rotation_ms);
        let held = HeldKey {
            key: Arc::new(d.key),
            epoch_started_ms: started,
            delete_at_ms: now.saturating_add(d.retain_ms.min(cap)),
            statement,
        };
        if sh.keyring.insert(d.key_id, &d.topic, held) {
            sh.metrics.add_key_received();
            self.state_dirty = true;
            sh.notify_key_arrived();
        }
        let sub = self
            .subscribed
            .entry((d.key_id.producer, d.topic.clone()))
            .or_insert((d.key_id, now));
        if d.key_id.epoch >= sub.0.epoch {
            sub.0 = d.key_id;
        }
        sub.1 = now;
        self.wants.remove(&(d.key_id, d.topic));
    }

    pub(crate) fn forget_sessions(&mut self) {
        self.outgoing.clear();
        self.incoming.clear();
        self.sessions.clear();
        self.by_peer.clear();
    }

    pub(crate) fn sizes(&self) -> StateSizes {
        StateSizes {
            sessions: self.sessions.len(),
            handshakes: self.outgoing.len() + self.incoming.len(),
            queued_peers: self.queued.len(),
            queued_items: self.queued.values().map(Vec::len).sum(),
            wants: self.wants.len(),
            backoff: self.backoff.len(),
            alive: self.alive.len(),
            offered: self.offered.len() + self.haves.len(),
            served: self.served.len(),
            subscribed: self.subscribed.len(),
            recipients: self.recipients.len(),
            sealed_epochs: self.seals.len() + self.sealed_final.len(),
            keys_held: 0,
        }
    }

    pub(crate) fn peers(&self) -> HashSet<InstanceId> {
        self.sessions.values().map(|s| s.peer).collect()
    }
}

/// The initiator's handshake state after its first message, and that
/// message. Deterministic in `seed`, so a handshake can be rebuilt.
/// A hybrid one carries the ephemeral ML-KEM key derived from the same
/// seed; a classical one from an engine that could do hybrid says so
/// (`CLASSICAL_BY_FALLBACK`), and one with hybrid off is exactly the
/// Hello of the version before issue 17 (empty payload).
fn first_message(
    sh: &Shared,
    peer: InstanceId,
    seed: &Zeroizing<[u8; 64]>,
    hybrid: bool,
) -> Result<(snow::HandshakeState, Vec<u8>), Error> {
    let mut hs = new_handshake(
        true,
        hybrid,
        &sh.identity.private_key_bytes(),
        sh.me,
        peer,
        seed.clone(),
    )?;
    let payload = if hybrid {
        hybrid::KemKey::from_handshake_seed(seed).public()
    } else if sh.config.hybrid == HybridMode::Prefer {
        hybrid::CLASSICAL_BY_FALLBACK.to_vec()
    } else {
        Vec::new()
    };
    let mut buf = noise_buffer(payload.len());
    let n = hs
        .write_message(&payload, &mut buf)
        .map_err(|_| ControlError::Malformed)?;
    buf.truncate(n);
    Ok((hs, buf))
}

/// Reads the peer's next message of the pending handshake `session` (it
/// must be with `from`, addressed to `to`) and takes the handshake out. A
/// message that does not decrypt leaves it pending, untouched (snow rolls
/// its state back on a failed read): anyone who can write to the control
/// topic can send garbage in a session's name, and one such message must
/// not end a handshake.
fn read_handshake(
    pending: &mut BTreeMap<SessionId, Handshake>,
    session: SessionId,
    from: InstanceId,
    to: InstanceId,
    noise: &[u8],
) -> Result<(Handshake, Zeroizing<Vec<u8>>), Error> {
    let Some(hs) = pending.get_mut(&session) else {
        return Err(ControlError::UnknownSession.into());
    };
    if hs.peer != from || hs.local != to {
        return Err(ControlError::UnknownSession.into());
    }
    // A payload is never longer than the message that carries it.
    let mut payload = Zeroizing::new(vec![0u8; noise.len()]);
    let n = hs
        .state
        .read_message(noise, &mut payload)
        .map_err(|_| ControlError::Decrypt)?;
    payload.truncate(n);
    let hs = pending
        .remove(&session)
        .ok_or(ControlError::UnknownSession)?;
    Ok((hs, payload))
}
