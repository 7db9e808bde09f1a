//! The one object hosts talk to. Seal and open records from any number of
//! client threads; feed control messages in, drain them out, and tick time.
//! The engine performs no I/O: the host carries control messages over its
//! own Kafka client, supplies the clock and randomness, and backs `Storage`
//! with a state directory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::{Error, KeyUnavailable};
use crate::exchange::mailbox::Mailbox;
use crate::exchange::statement::{self, Salt, Statement};
use crate::exchange::wire::{valid_topic, Reader};
use crate::exchange::{Exchange, StateSizes};
use crate::format::{
    self, DataKey, EpochSecret, InstanceId, KeyBinding, KeyId, RecordHeader, Sealing, TokenSecret,
    HEADER_LEN,
};
use crate::keys::{HeldKey, KeyPolicy, Keyring, ProducerEpoch, ProducerKeys};
use crate::trust::{Identity, TopicPattern, TrustAnchor};

/// Engine settings. Defaults are the safe ones; hosts map `e2ee.*` onto these.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub key: KeyPolicy,
    /// Topics whose records must be encrypted (`e2ee.topics`); default all.
    pub protected_topics: Vec<TopicPattern>,
    /// How this engine seals (`e2ee.cipher`, `e2ee.compression`). Opening
    /// follows each record's header, whatever this says.
    pub sealing: Sealing,
    /// Sessions are re-handshaken after this long, which replaces their
    /// ephemeral keys.
    pub session_lifetime_ms: u64,
    /// A handshake that has not completed by then is abandoned.
    pub handshake_timeout_ms: u64,
    /// First retry of an unanswered key request; doubles up to `max_retry_ms`.
    pub request_retry_ms: u64,
    pub max_retry_ms: u64,
    /// A want no record asked about for this long is dropped.
    pub want_ttl_ms: u64,
    /// Tolerated clock difference between parties for credential validity.
    pub clock_skew_ms: u64,
    /// The longest the engine sleeps between ticks.
    pub housekeeping_ms: u64,
    /// At most this many Hellos are answered per second (burst as many).
    /// Answering one costs three X25519 operations before the sender is
    /// known, so this bounds what forged Hellos can cost; honest peers whose
    /// Hello is dropped retry after `handshake_timeout_ms`.
    pub handshakes_per_sec: u32,
    /// Asynchronous delivery: each mailbox has one prekey per period of this
    /// length (aligned on Unix time). Shorter periods delete prekeys sooner
    /// after their keys' retention (forward secrecy at rest), at the cost of
    /// longer directory records.
    pub prekey_period_ms: u64,
    /// This engine is a keeper (`kafka-e2ee keeper`): its prekeys record
    /// says so, so operators (`kafka-e2ee inspect`) can tell whether every
    /// epoch was sealed to something that outlives the consumers. It changes
    /// nothing else: a keeper holds and serves keys as any consumer does.
    pub keeper: bool,
    /// The hybrid post-quantum key exchange (`e2ee.kex.hybrid`, issue 17):
    /// X25519 and ML-KEM-768 together in every live session.
    pub hybrid: crate::exchange::hybrid::HybridMode,
    /// The host tokenizes record keys (`e2ee.keys=tokenize`,
    /// docs/FORMAT.md section 13): a producer-only credential then has a
    /// mailbox too, in which other parties seal it the token secrets.
    pub tokenize_keys: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            key: KeyPolicy::default(),
            protected_topics: vec![TopicPattern::all()],
            sealing: Sealing::default(),
            session_lifetime_ms: 60 * 60 * 1000,
            handshake_timeout_ms: 10_000,
            request_retry_ms: 500,
            max_retry_ms: 30_000,
            want_ttl_ms: 10 * 60 * 1000,
            clock_skew_ms: 5 * 60 * 1000,
            housekeeping_ms: 1000,
            handshakes_per_sec: 100,
            prekey_period_ms: 60 * 60 * 1000,
            keeper: false,
            hybrid: Default::default(),
            tokenize_keys: false,
        }
    }
}

impl EngineConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.key.rotation_ms == 0 {
            return Err(Error::Config(
                "e2ee.key.rotation.ms must be greater than 0".into(),
            ));
        }
        if self.key.rotation_records == 0 {
            return Err(Error::Config(
                "e2ee.key.rotation.records must be greater than 0".into(),
            ));
        }
        if self.key.retention_ms < self.key.rotation_ms {
            return Err(Error::Config(
                "e2ee.key.retention.ms must be at least e2ee.key.rotation.ms, or records \
                 would become unreadable before their epoch ends"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Where a host keeps the engine's state across restarts (a state directory).
/// The engine hands over its state as one blob **in plaintext** (it holds
/// epoch keys, held keys, the mailbox's prekey seed): a storage seals it
/// before it leaves memory, with [`state::seal`](crate::state::seal) under a
/// file key it replaces on every save, and keeps no copy (the host's state
/// directory, `kafka-e2ee-ffi`'s `state_dir`, does both). `load` returns what
/// the last successful `store` was given.
pub trait Storage: Send {
    fn load(&mut self) -> Result<Option<Vec<u8>>, String>;
    fn store(&mut self, blob: &[u8]) -> Result<(), String>;
}

/// Which topic a control message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `e2ee.control.topic`: live key exchange between running instances.
    /// Delete policy, short retention; read from its end at start.
    Control,
    /// `e2ee.keys.topic`: prekeys and sealed key envelopes, which must outlive
    /// the instances that wrote them. Compacted and kept at least as long as
    /// key retention; read from its beginning at start.
    Keys,
}

/// A control message to publish. `channel` names the topic; `to` is the
/// recipient's instance on the control topic (`None` is a broadcast).
/// Hosts use [`ControlMessage::record_key`] as the Kafka record key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage {
    pub channel: Channel,
    pub to: Option<InstanceId>,
    pub payload: Vec<u8>,
}

impl ControlMessage {
    /// The Kafka record key: the recipient's instance id on the control
    /// topic (none for a broadcast); on the keys topic (compacted, so every
    /// record needs a key) the message's own directory or envelope id.
    pub fn record_key(&self) -> Option<Vec<u8>> {
        match self.channel {
            Channel::Control => self.to.map(|id| id.0.to_vec()),
            Channel::Keys => Some(crate::exchange::wire::keys_record_key(&self.payload)),
        }
    }
}

/// A record sealed with a tokenized key ([`Engine::seal_record_tokenized`]):
/// the `e2ee` header, the `e2ee.h` value if the record has sealed headers,
/// the token to send as the record's key, and the `e2ee.k` value. `Debug`
/// shows lengths only.
pub struct TokenizedRecord {
    pub header: [u8; HEADER_LEN],
    pub sealed_headers: Option<Vec<u8>>,
    pub token: Zeroizing<Vec<u8>>,
    pub sealed_key: Vec<u8>,
}

impl core::fmt::Debug for TokenizedRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenizedRecord")
            .field("token_len", &self.token.len())
            .finish_non_exhaustive()
    }
}

/// An opened record's encoded application header list
/// ([`format::decode_header_list`]); wiped when dropped.
pub type HeaderList = Zeroizing<Vec<u8>>;

/// What `open` did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The value was decrypted in place.
    Decrypted,
    /// The topic is not protected and the record carried no header.
    Plaintext,
}

macro_rules! counters {
    ($($name:ident => $add:ident),* $(,)?) => {
        /// Counters a host exports as metrics; every rejection is counted.
        #[derive(Debug, Default)]
        pub struct Metrics { $($name: AtomicU64,)* }
        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MetricsSnapshot { $(pub $name: u64,)* }
        impl Metrics {
            $(#[allow(dead_code)] pub(crate) fn $add(&self) { self.$name.fetch_add(1, Ordering::Relaxed); })*
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
        impl MetricsSnapshot {
            /// Every counter with its name, in declaration order (for hosts
            /// that export them all, e.g. as JSON).
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    records_sealed => add_sealed,
    records_opened => add_opened,
    records_rejected => add_rejected,
    records_missing_header => add_missing_header,
    records_key_unavailable => add_key_unavailable,
    records_failed => add_record_failed,
    control_rejected => add_control_rejected,
    keys_served => add_key_served,
    keys_received => add_key_received,
    keys_refused => add_refused,
    keys_deleted => add_key_deleted,
    rotations => add_rotation,
    handshakes => add_handshake,
    sessions_hybrid => add_session_hybrid,
    sessions_classical => add_session_classical,
    prekeys_published => add_prekeys_published,
    envelopes_sealed => add_envelope_sealed,
    envelopes_received => add_envelope_received,
}

impl Metrics {
    pub(crate) fn add_keys_deleted(&self, n: usize) {
        self.keys_deleted
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The parts of the engine the data path reads without the exchange lock.
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) me: InstanceId,
    /// Instance ids restored from the state directory: this process still
    /// serves the keys it sealed under them before a restart.
    pub(crate) restored: HashSet<InstanceId>,
    /// The salts that bind this process's instance ids (its own and the
    /// restored ones) to its signing key (exchange/statement.rs).
    pub(crate) salts: std::collections::BTreeMap<InstanceId, Salt>,
    pub(crate) identity: Identity,
    pub(crate) trust: TrustAnchor,
    pub(crate) producer: ProducerKeys,
    pub(crate) keyring: Keyring,
    /// The token secrets hosts tokenize record keys with, per topic.
    pub(crate) tokens: crate::exchange::tokens::TokenRing,
    pub(crate) metrics: Metrics,
    /// Bumped whenever a key arrives, so waiting hosts can re-check.
    key_generation: AtomicU64,
    /// The last time the host ticked, for epochs started by record count.
    last_now_ms: AtomicU64,
}

impl Shared {
    pub(crate) fn salt_of(&self, id: InstanceId) -> Option<Salt> {
        self.salts.get(&id).copied()
    }

    pub(crate) fn is_mine(&self, id: InstanceId) -> bool {
        id == self.me || self.restored.contains(&id)
    }
    /// Whether this engine has a mailbox: a consumer, or a producer that
    /// tokenizes keys.
    pub(crate) fn wants_mailbox(&self) -> bool {
        let cred = self.identity.credential();
        !cred.consume().is_empty() || (self.config.tokenize_keys && !cred.produce().is_empty())
    }

    pub(crate) fn notify_key_arrived(&self) {
        self.key_generation.fetch_add(1, Ordering::Release);
    }
}

/// The engine. `Send + Sync`: share one per process and cluster.
pub struct Engine {
    shared: Shared,
    exchange: Mutex<Exchange>,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("instance", &self.shared.me)
            .field("name", &self.shared.identity.credential().name())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine for `identity`, checking its own credential against
    /// `trust` first, and restores state from `storage` if it holds any.
    pub fn new(
        config: EngineConfig,
        identity: Identity,
        trust: TrustAnchor,
        now_ms: u64,
        mut rng: Box<dyn CryptoRngCore + Send>,
        mut storage: Option<Box<dyn Storage>>,
    ) -> Result<Engine, Error> {
        config.validate()?;
        trust.verify(identity.credential(), now_ms, config.clock_skew_ms)?;
        let (me, salt) = new_instance(&identity, &mut *rng);
        let mut shared = Shared {
            config,
            me,
            restored: HashSet::new(),
            salts: salt.map(|s| (me, s)).into_iter().collect(),
            identity,
            trust,
            producer: ProducerKeys::default(),
            keyring: Keyring::default(),
            tokens: Default::default(),
            metrics: Metrics::default(),
            key_generation: AtomicU64::new(0),
            last_now_ms: AtomicU64::new(now_ms),
        };
        let mut restored = Restored::default();
        if let Some(storage) = storage.as_mut() {
            if let Some(blob) = storage.load().map_err(Error::Storage)? {
                let blob = Zeroizing::new(blob);
                restored = decode_state(&mut shared, &blob, now_ms)?;
            }
        }
        let mut exchange = Exchange::new(rng, storage, now_ms, 0, None);
        exchange.restore_tokens(&shared, restored.tokens);
        if shared.config.hybrid != crate::exchange::hybrid::HybridMode::Off {
            // (With `off` the marks would only stop this producer sealing
            // to those mailboxes at all: dropped, as `off` drops section 4.)
            exchange.seen_hybrid.extend(restored.seen_hybrid);
        }
        let mailbox = restored.mailbox;
        // A consumer keeps its mailbox across restarts on its state
        // directory: envelopes sealed to it while it was away open then.
        match mailbox {
            Some(mut m) if shared.wants_mailbox() => {
                exchange.hybrid_mailbox(&shared, &mut m);
                exchange.set_mailbox(Some(m));
            }
            _ => {
                let m = exchange.new_mailbox(&shared, now_ms);
                exchange.set_mailbox(m);
                exchange.mark_dirty();
            }
        }
        let engine = Engine {
            shared,
            exchange: Mutex::new(exchange),
        };
        // Make (and persist) the first epoch now, so the first send never waits.
        engine.handle_timeout(now_ms)?;
        Ok(engine)
    }

    fn exchange(&self) -> MutexGuard<'_, Exchange> {
        self.exchange.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn instance_id(&self) -> InstanceId {
        self.shared.me
    }

    /// This engine's mailbox for asynchronous key delivery (none if its
    /// credential consumes nothing).
    pub fn mailbox_id(&self) -> Option<InstanceId> {
        self.exchange().mailbox().map(|m| m.id)
    }

    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// How many topic keys of other producers this engine holds now (what a
    /// keeper exports as `keys_held`); its own epochs are not counted.
    pub fn keys_held(&self) -> usize {
        self.shared.keyring.len()
    }

    /// The size of every map the key exchange keeps (see [`StateSizes`]).
    pub fn state_sizes(&self) -> StateSizes {
        let mut sizes = self.exchange().sizes();
        sizes.keys_held = self.shared.keyring.len();
        sizes
    }

    /// Whether records of `topic` must be encrypted.
    pub fn is_protected(&self, topic: &str) -> bool {
        self.shared
            .config
            .protected_topics
            .iter()
            .any(|p| p.matches(topic))
    }

    /// Encrypts `value` in place and returns the record header to attach.
    /// Never waits on the network. On error the value is unchanged, and the
    /// host must not send the record.
    pub fn seal(
        &self,
        topic: &str,
        binding: KeyBinding<'_>,
        value: &mut [u8],
    ) -> Result<[u8; HEADER_LEN], Error> {
        self.seal_record(topic, binding, value, None)
            .map(|(header, _)| header)
    }

    /// [`Engine::seal`], and if `headers` is given (the record's application
    /// headers, [`format::encode_header_list`]), seals them too and returns
    /// the value of the [`format::SEALED_HEADERS_NAME`] header to attach
    /// (docs/FORMAT.md section 12). The host then removes every header the
    /// list does not mark clear from the record.
    pub fn seal_record(
        &self,
        topic: &str,
        binding: KeyBinding<'_>,
        value: &mut [u8],
        headers: Option<&[u8]>,
    ) -> Result<([u8; HEADER_LEN], Option<Vec<u8>>), Error> {
        self.seal_parts(topic, binding, value, headers, None)
            .map(|r| (r.header.encode(), r.sealed_headers))
    }

    /// [`Engine::seal_record`] with a tokenized key (`e2ee.keys=tokenize`,
    /// docs/FORMAT.md section 13): computes the token of `key` under the
    /// topic's token secret, seals the value (binding the token if
    /// `bind_key`), the headers and the real key. The host puts the token
    /// in place of the key and attaches `e2ee`, `e2ee.h` (if any) and
    /// `e2ee.k`. For a tombstone, seal an empty value and send it null.
    /// [`Error::TokenPending`] while no token secret is ready: the host
    /// waits (the engine is fetching or founding it) and retries.
    pub fn seal_record_tokenized(
        &self,
        topic: &str,
        key: &[u8],
        bind_key: bool,
        value: &mut [u8],
        headers: Option<&[u8]>,
    ) -> Result<TokenizedRecord, Error> {
        let secret = self.token_secret(topic)?;
        let token = secret.token(topic, key)?;
        let binding = if bind_key {
            KeyBinding::Bytes(&token)
        } else {
            KeyBinding::Unbound
        };
        let tokenized = format::TokenizedKey { token: &token, key };
        let r = self.seal_parts(topic, binding, value, headers, Some(tokenized))?;
        let sealed_key = r.sealed_key.ok_or(Error::NoSealingKey)?;
        Ok(TokenizedRecord {
            header: r.header.encode(),
            sealed_headers: r.sealed_headers,
            token,
            sealed_key,
        })
    }

    /// The token secret keys of `topic` are tokenized with now.
    /// [`Error::TokenPending`] if there is none yet: this engine then asks
    /// for it (or founds it, once [`Engine::keys_topic_read`] was called and
    /// nobody has one), and [`Engine::key_generation`] moves when it comes.
    pub fn token_secret(&self, topic: &str) -> Result<Arc<TokenSecret>, Error> {
        let sh = &self.shared;
        if let Some(s) = sh.tokens.get(topic) {
            return Ok(s);
        }
        if !valid_topic(topic) || !sh.identity.credential().may_produce(topic) {
            return Err(Error::NotAuthorized {
                topic: topic.to_owned(),
                operation: "produce",
            });
        }
        self.exchange().want_token(topic);
        Err(Error::TokenPending {
            topic: topic.to_owned(),
        })
    }

    /// The host has read the keys topic up to its end: from now on a topic
    /// with no token secret claimed on it gets one founded here
    /// (docs/PROTOCOL.md 5e). Until then the engine never founds one, so it
    /// cannot race a claim it has not read yet.
    pub fn keys_topic_read(&self) {
        self.exchange().keys_caught_up();
    }

    /// Operator action: founds the next generation of `topic`'s token
    /// secret and publishes its claim; every producer moves to it once it
    /// holds it, which gives every key a new token (docs/PROTOCOL.md 5e
    /// describes the migration). Returns the new generation. Call after
    /// [`Engine::keys_topic_read`], and keep the engine running until it
    /// has sealed the secret on (`handle_timeout`).
    pub fn rotate_token_secret(&self, topic: &str) -> Result<u32, Error> {
        self.exchange().rotate_token(&self.shared, topic)
    }

    fn seal_parts(
        &self,
        topic: &str,
        binding: KeyBinding<'_>,
        value: &mut [u8],
        headers: Option<&[u8]>,
        tokenized: Option<format::TokenizedKey<'_>>,
    ) -> Result<format::SealedRecord, Error> {
        let sh = &self.shared;
        if !valid_topic(topic) || !sh.identity.credential().may_produce(topic) {
            return Err(Error::NotAuthorized {
                topic: topic.to_owned(),
                operation: "produce",
            });
        }
        let now = sh.last_now_ms.load(Ordering::Relaxed);
        // An expired (or not yet valid) credential seals nothing: consumers
        // would refuse its keys, and the record would be lost to them.
        let own = sh.identity.credential();
        if now >= own.expires_ms() {
            return Err(Error::Trust(crate::trust::TrustError::Expired {
                expires_ms: own.expires_ms(),
                now_ms: now,
            }));
        }
        let k = sh
            .producer
            .sealing_key(topic, &sh.config.key, now)
            .ok_or(Error::NoSealingKey)?;
        let sealed = format::seal_record_parts(
            &k.key,
            k.key_id,
            k.counter,
            topic,
            binding,
            sh.config.sealing,
            value,
            headers,
            tokenized,
        )?;
        sh.metrics.add_sealed();
        Ok(sealed)
    }

    /// Reverses [`Engine::seal`] on a record this engine sealed, for a host
    /// that sealed a buffer it must hand back (librdkafka's delivery report
    /// shows the payload it sealed in place). Opens only under this
    /// instance's own epochs: never asks the network and counts nothing, so
    /// it is not a way to read others' records. `binding` as given to `seal`.
    /// On error (not sealed here, epoch deleted, tampered) the value is
    /// unchanged.
    pub fn unseal(
        &self,
        topic: &str,
        header: &[u8],
        binding: KeyBinding<'_>,
        value: &mut [u8],
    ) -> Result<(), Error> {
        let header = RecordHeader::decode(header)?;
        let key = self.own_topic_key(&header, topic)?;
        format::open_in_place(&key, &header, topic, binding, value)?;
        Ok(())
    }

    /// The real key of a record this engine sealed with a tokenized key,
    /// for a host that hands the application's delivery report its key
    /// back (as [`Engine::unseal`] does the value): opens `sealed_key` (the
    /// `e2ee.k` value) against `token` under this instance's own epochs
    /// only; asks nothing of the network and counts nothing.
    pub fn unseal_key(
        &self,
        topic: &str,
        header: &[u8],
        token: &[u8],
        sealed_key: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let header = RecordHeader::decode(header)?;
        let key = self.own_topic_key(&header, topic)?;
        Ok(format::open_key(&key, &header, topic, token, sealed_key)?)
    }

    /// The key of `topic` under one of this instance's own epochs (the one
    /// `header` names), for undoing its own seal: never a held key.
    fn own_topic_key(&self, header: &RecordHeader, topic: &str) -> Result<Arc<DataKey>, Error> {
        let sh = &self.shared;
        let key_id = header.key_id;
        let epoch = sh
            .is_mine(key_id.producer)
            .then(|| sh.producer.get(&key_id))
            .flatten()
            .ok_or(Error::KeyUnavailable {
                key_id,
                reason: KeyUnavailable::Unknown,
            })?;
        Ok(epoch.topic_key(topic))
    }

    /// Whether `plaintext` is the plaintext of the record `header` belongs
    /// to, for a host that already opened that record in place and runs
    /// again over the same message (librdkafka may call `on_consume` twice):
    /// see [`format::reseals_to`], which seals a copy, so this costs what
    /// `open` does. Only keys held now (or this instance's own epochs), under
    /// the same authorization as `open`; asks nothing of the network and
    /// counts nothing. `binding` as for `open`.
    pub fn is_plaintext_of(
        &self,
        topic: &str,
        header: &[u8],
        binding: KeyBinding<'_>,
        plaintext: &[u8],
    ) -> bool {
        let sh = &self.shared;
        let Ok(header) = RecordHeader::decode(header) else {
            return false;
        };
        let key_id = header.key_id;
        let mine = sh.is_mine(key_id.producer);
        if !valid_topic(topic) || !sh.identity.credential().may_consume(topic) && !mine {
            return false;
        }
        let key = mine
            .then(|| sh.producer.get(&key_id))
            .flatten()
            .map(|epoch| epoch.derive_topic_key(topic))
            .or_else(|| sh.keyring.get(&key_id, topic).map(|held| held.key));
        let Some(key) = key else {
            return false;
        };
        let binding = match header.binding_kind() {
            format::BindingKind::Unbound => KeyBinding::Unbound,
            _ => binding,
        };
        format::reseals_to(&key, &header, topic, binding, plaintext)
    }

    /// Verifies and decrypts `value` in place. `header` is the value of the
    /// record's e2ee header, if it has one; `binding` is the record key as the
    /// hook sees it (`Unbound` if it cannot see keys). On error the value is unchanged
    /// and must not reach the application as data.
    ///
    /// A record whose application headers are sealed does not open here
    /// (`sealed_headers_missing`): hosts that restore headers use
    /// [`Engine::open_record`].
    pub fn open(
        &self,
        topic: &str,
        header: Option<&[u8]>,
        binding: KeyBinding<'_>,
        value: &mut [u8],
    ) -> Result<Opened, Error> {
        self.open_record(topic, header, &[], &[], binding, value)
            .map(|(opened, _)| opened)
    }

    /// [`Engine::open`] for a host that restores sealed application headers:
    /// `sealed_headers` are the values of every
    /// [`format::SEALED_HEADERS_NAME`] header of the record, in order. A
    /// record must have exactly one if its header says so, and none
    /// otherwise. `visible` are the record's other headers (but `e2ee`), in
    /// order, whose clear copies ([`format::check_clear_headers`]) are
    /// checked against the sealed list. Returns the encoded header list
    /// (decode it with [`format::decode_header_list`]) if the record had
    /// one; the host then replaces the record's headers with exactly those.
    /// Failures are counted as rejected, like any other tampering, and
    /// leave the value unchanged.
    pub fn open_record(
        &self,
        topic: &str,
        header: Option<&[u8]>,
        sealed_headers: &[&[u8]],
        visible: &[format::AppHeader<'_>],
        binding: KeyBinding<'_>,
        value: &mut [u8],
    ) -> Result<(Opened, Option<HeaderList>), Error> {
        let extras = format::RecordExtras {
            sealed_headers,
            visible,
            ..Default::default()
        };
        self.open_record_parts(topic, header, extras, binding, value)
            .map(|(opened, extras)| (opened, extras.headers))
    }

    /// [`Engine::open_record`] for a host that also restores tokenized keys
    /// (docs/FORMAT.md section 13): `extras` adds the record's key as it
    /// came off the wire and the values of every `e2ee.k` header, in order.
    /// Returns the real key if the record's key was a token; the host then
    /// hands the application that key.
    pub fn open_record_parts(
        &self,
        topic: &str,
        header: Option<&[u8]>,
        extras: format::RecordExtras<'_>,
        binding: KeyBinding<'_>,
        value: &mut [u8],
    ) -> Result<(Opened, format::OpenedExtras), Error> {
        let sh = &self.shared;
        let Some(header) = header else {
            if !extras.sealed_keys.is_empty() {
                sh.metrics.add_rejected();
                return Err(format::FormatError::SealedKeyUnexpected.into());
            }
            if !extras.sealed_headers.is_empty() {
                sh.metrics.add_rejected();
                return Err(format::FormatError::SealedHeadersUnexpected.into());
            }
            if self.is_protected(topic) {
                sh.metrics.add_missing_header();
                return Err(Error::MissingHeader {
                    topic: topic.to_owned(),
                });
            }
            return Ok((Opened::Plaintext, Default::default()));
        };
        let header = RecordHeader::decode(header).inspect_err(|_| sh.metrics.add_rejected())?;
        let key = self.key_for(topic, header.key_id)?;
        // The producer's choice (its authenticated flags) decides whether the
        // record key was bound: a hook that sees the key opens both kinds; a
        // hook that cannot see it (Unbound) fails on a key-bound record.
        let binding = match header.binding_kind() {
            format::BindingKind::Unbound => KeyBinding::Unbound,
            _ => binding,
        };
        let opened = format::open_record_parts(&key, &header, topic, binding, value, extras)
            .inspect_err(|_| sh.metrics.add_rejected())?;
        sh.metrics.add_opened();
        Ok((Opened::Decrypted, opened))
    }

    fn key_for(&self, topic: &str, key_id: KeyId) -> Result<Arc<DataKey>, Error> {
        let sh = &self.shared;
        if !valid_topic(topic)
            || !sh.identity.credential().may_consume(topic) && !sh.is_mine(key_id.producer)
        {
            return Err(Error::NotAuthorized {
                topic: topic.to_owned(),
                operation: "consume",
            });
        }
        if sh.is_mine(key_id.producer) {
            if let Some(epoch) = sh.producer.get(&key_id) {
                return Ok(epoch.derive_topic_key(topic));
            }
        }
        if let Some(held) = sh.keyring.get(&key_id, topic) {
            return Ok(held.key);
        }
        sh.metrics.add_key_unavailable();
        let reason = if sh.is_mine(key_id.producer) {
            KeyUnavailable::Expired
        } else {
            self.exchange().want(key_id, topic)
        };
        Err(Error::KeyUnavailable { key_id, reason })
    }

    /// A host calls this once for each record it finally gave up on: handed
    /// to the app's error path, or dropped. `open` counts every attempt
    /// (a host retries while it waits for a key); this counts records.
    pub fn note_record_failed(&self) {
        self.shared.metrics.add_record_failed();
    }

    /// A host that rejects a record before `open` can see it (more than one
    /// `e2ee` header: which one its producer wrote cannot be told, docs/FORMAT.md
    /// section 9) counts it here, as `open` counts a header that does not decode.
    pub fn note_record_rejected(&self) {
        self.shared.metrics.add_rejected();
    }

    /// Whether a key is held now, without asking for it.
    pub fn holds_key(&self, key_id: KeyId, topic: &str) -> bool {
        let sh = &self.shared;
        sh.keyring.get(&key_id, topic).is_some()
            || (sh.is_mine(key_id.producer) && sh.producer.get(&key_id).is_some())
    }

    /// The state of a wanted key: `None` if not wanted (held, or never asked).
    pub fn want_status(&self, key_id: KeyId, topic: &str) -> Option<KeyUnavailable> {
        self.exchange().want_status(key_id, topic)
    }

    /// Increases whenever a key arrives; a host waiting for a key re-tries
    /// `open` when it changes.
    pub fn key_generation(&self) -> u64 {
        self.shared.key_generation.load(Ordering::Acquire)
    }

    /// Feeds one control message read from the control topic. Errors say why
    /// it was rejected (and are counted); they are never fatal.
    pub fn handle_control(&self, now_ms: u64, message: &[u8]) -> Result<(), Error> {
        let mut ex = self.exchange();
        ex.now_ms = now_ms;
        let result = ex.handle_control(&self.shared, message);
        if result.is_err() {
            self.shared.metrics.add_control_rejected();
        }
        result
    }

    /// The next control message to publish.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<ControlMessage> {
        self.exchange().poll_transmit()
    }

    /// Runs timers: rotation, retries, session refresh, retention.
    pub fn handle_timeout(&self, now_ms: u64) -> Result<(), Error> {
        self.shared.last_now_ms.store(now_ms, Ordering::Relaxed);
        self.exchange().handle_timeout(&self.shared, now_ms)
    }

    /// When `handle_timeout` should run next (Unix ms).
    #[must_use]
    pub fn poll_timeout(&self) -> u64 {
        self.exchange().poll_timeout(&self.shared)
    }

    /// Crypto-shredding: deletes every key of epochs that started before
    /// `before_ms`, here and in the state directory. Returns how many.
    pub fn shred(&self, before_ms: u64) -> Result<usize, Error> {
        let sh = &self.shared;
        let now = sh.last_now_ms.load(Ordering::Relaxed);
        let mut ex = self.exchange();
        let n = sh.producer.purge(now, &sh.config.key, Some(before_ms))
            + sh.keyring.purge(now, Some(before_ms));
        sh.metrics.add_keys_deleted(n);
        ex.mark_dirty();
        ex.persist(sh)?;
        drop(ex);
        // A shredded sealing epoch is replaced at once.
        self.handle_timeout(now)?;
        Ok(n)
    }

    /// Call in a child process after `fork()`: the child must never seal
    /// under its parent's epoch and counter. It gets a new instance id, new
    /// epochs, and no sessions; it keeps the keys it may read with.
    pub fn after_fork(&mut self, now_ms: u64) -> Result<(), Error> {
        let ex = self
            .exchange
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        ex.forget_sessions();
        let sh = &mut self.shared;
        sh.producer.abandon_sealing(now_ms);
        let (me, salt) = new_instance(&sh.identity, ex.rng());
        if let Some(salt) = salt {
            sh.salts.insert(me, salt);
        }
        sh.restored.insert(sh.me);
        sh.me = me;
        // The child keeps the token secrets (they are the topics', not the
        // instance's), but must not write its parent's state directory.
        let tokens = core::mem::take(&mut ex.tokens);
        let seen_hybrid = core::mem::take(&mut ex.seen_hybrid);
        *ex = Exchange::new(
            Box::new(ForkRng(Zeroizing::new({
                let mut s = [0u8; 32];
                ex.rng().fill_bytes(&mut s);
                s
            }))),
            None,
            now_ms,
            0,
            None,
        );
        ex.tokens = tokens;
        ex.seen_hybrid = seen_hybrid;
        // The child gets its own mailbox (its prekeys must not be its
        // parent's, whose state directory it does not write).
        let m = ex.new_mailbox(sh, now_ms);
        ex.set_mailbox(m);
        self.handle_timeout(now_ms)
    }

    /// The instances this engine has live sessions with (for tests and tools).
    pub fn peers(&self) -> HashSet<InstanceId> {
        self.exchange().peers()
    }
}

/// A new instance id: bound to the signing key through a random salt when
/// the credential has one (version 2), random otherwise.
fn new_instance(identity: &Identity, rng: &mut dyn CryptoRngCore) -> (InstanceId, Option<Salt>) {
    loop {
        if identity.has_signing_key() {
            let mut salt = [0u8; 16];
            rng.fill_bytes(&mut salt);
            let id = statement::instance_id(&identity.signing_public_key(), &salt);
            if id.0 != [0; 8] {
                return (id, Some(salt));
            }
        } else {
            let mut id = InstanceId([0; 8]);
            rng.fill_bytes(&mut id.0);
            if id.0 != [0; 8] {
                return (id, None);
            }
        }
    }
}

/// After fork the host should pass a fresh RNG; until then the child draws
/// from a stream keyed by parent randomness drawn after the fork.
struct ForkRng(Zeroizing<[u8; 32]>);

impl rand_core::RngCore for ForkRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0[..]);
        let mut okm = Zeroizing::new([0u8; 64]);
        let _ = hk.expand(b"kafka-e2ee/v1/fork-rng", &mut okm[..]);
        for chunk in dest.chunks_mut(32) {
            let _ = hk.expand(&self.0[..], &mut okm[..]);
            let (out, next) = okm.split_at(32);
            chunk.copy_from_slice(out.get(..chunk.len()).unwrap_or_default());
            self.0.copy_from_slice(next);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for ForkRng {}

// ---- state at rest ---------------------------------------------------------

/// The state blob, in plaintext: producer epochs and held keys. The storage
/// seals it (`crate::state::seal`: under a file key replaced on every save
/// and the identity's state key). A trailing section (key exchange v2) holds
/// the mailbox: tag 1, its id, its salt, its oldest period and that period's
/// chain seed.
pub(crate) fn encode_state(
    sh: &Shared,
    mailbox: Option<&Mailbox>,
    tokens: &[(Vec<u8>, Arc<TokenSecret>)],
    seen_hybrid: &[InstanceId],
) -> Zeroizing<Vec<u8>> {
    let epochs = sh.producer.all();
    let held = sh.keyring.all();
    // The salts of the instance ids whose epochs are kept: a restarted
    // producer signs statements for them as their owner.
    let ids: HashSet<InstanceId> = epochs.iter().map(|e| e.key_id.producer).collect();
    let salts: Vec<_> = sh.salts.iter().filter(|(id, _)| ids.contains(id)).collect();
    // The statements of held keys, so a restarted holder still relays them
    // (public: signatures and credentials), encoded first so that the
    // plaintext buffer is sized once and never reallocated (a reallocation
    // would leave a copy of the keys in freed memory).
    let signed: Vec<_> = held
        .iter()
        .filter_map(|(id, topic, h)| h.statement.as_ref().map(|st| (id, topic, st)))
        .collect();
    let mut statements = Vec::new();
    if !signed.is_empty() {
        statements.push(STATEMENTS_TAG);
        statements.extend_from_slice(&u32::try_from(signed.len()).unwrap_or(0).to_be_bytes());
        for (id, topic, st) in signed {
            statements.extend_from_slice(&id.producer.0);
            statements.extend_from_slice(&id.epoch.to_be_bytes());
            crate::exchange::wire::put_topic(&mut statements, topic);
            st.encode(&mut statements);
        }
    }
    const KEY_ID: usize = 8 + 4;
    const SECRET: usize = 32;
    let size = 4
        + epochs.len() * (KEY_ID + 8 + 8 + SECRET)
        + 4
        + held
            .iter()
            .map(|(_, topic, _)| KEY_ID + 2 + topic.len() + 8 + 8 + SECRET)
            .sum::<usize>()
        + mailbox.map_or(0, |m| 1 + m.id.0.len() + m.salt.len() + 8 + m.seed().len())
        + mailbox
            .and_then(Mailbox::kem)
            .map_or(0, |(_, seed)| 1 + 8 + seed.len())
        + if salts.is_empty() {
            0
        } else {
            1 + 4 + salts.len() * (8 + core::mem::size_of::<Salt>())
        }
        + statements.len()
        + if tokens.is_empty() {
            0
        } else {
            1 + 4 + tokens.iter().map(|(c, _)| 4 + c.len() + 32).sum::<usize>()
        }
        + if seen_hybrid.is_empty() {
            0
        } else {
            1 + 4 + 8 * seen_hybrid.len()
        };
    let mut plain = Zeroizing::new(Vec::with_capacity(size));
    plain.extend_from_slice(&u32::try_from(epochs.len()).unwrap_or(0).to_be_bytes());
    for e in epochs.iter().take(u32::MAX as usize) {
        plain.extend_from_slice(&e.key_id.producer.0);
        plain.extend_from_slice(&e.key_id.epoch.to_be_bytes());
        plain.extend_from_slice(&e.started_ms.to_be_bytes());
        plain.extend_from_slice(&e.delete_at_ms(&sh.config.key).to_be_bytes());
        plain.extend_from_slice(e.secret().as_bytes());
    }
    plain.extend_from_slice(&u32::try_from(held.len()).unwrap_or(0).to_be_bytes());
    for (id, topic, h) in held.iter().take(u32::MAX as usize) {
        plain.extend_from_slice(&id.producer.0);
        plain.extend_from_slice(&id.epoch.to_be_bytes());
        let len = u16::try_from(topic.len()).unwrap_or(0);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(topic.as_bytes().get(..usize::from(len)).unwrap_or_default());
        plain.extend_from_slice(&h.epoch_started_ms.to_be_bytes());
        plain.extend_from_slice(&h.delete_at_ms.to_be_bytes());
        plain.extend_from_slice(h.key.as_bytes());
    }
    if let Some(m) = mailbox {
        plain.push(MAILBOX_TAG);
        plain.extend_from_slice(&m.id.0);
        plain.extend_from_slice(&m.salt);
        plain.extend_from_slice(&m.first().to_be_bytes());
        plain.extend_from_slice(m.seed());
        if let Some((first, seed)) = m.kem() {
            plain.push(KEM_TAG);
            plain.extend_from_slice(&first.to_be_bytes());
            plain.extend_from_slice(seed);
        }
    }
    if !salts.is_empty() {
        plain.push(SALTS_TAG);
        plain.extend_from_slice(&u32::try_from(salts.len()).unwrap_or(0).to_be_bytes());
        for (id, salt) in salts {
            plain.extend_from_slice(&id.0);
            plain.extend_from_slice(&salt[..]);
        }
    }
    plain.extend_from_slice(&statements);
    if !tokens.is_empty() {
        // Token secrets with their claims (public): tag 5, count, then per
        // secret the claim's length and bytes and the 32-byte secret.
        plain.push(TOKENS_TAG);
        plain.extend_from_slice(&u32::try_from(tokens.len()).unwrap_or(0).to_be_bytes());
        for (claim, secret) in tokens {
            plain.extend_from_slice(&u32::try_from(claim.len()).unwrap_or(0).to_be_bytes());
            plain.extend_from_slice(claim);
            plain.extend_from_slice(secret.as_bytes());
        }
    }
    if !seen_hybrid.is_empty() {
        plain.push(HYBRID_SEEN_TAG);
        plain.extend_from_slice(&u32::try_from(seen_hybrid.len()).unwrap_or(0).to_be_bytes());
        for id in seen_hybrid {
            plain.extend_from_slice(&id.0);
        }
    }
    debug_assert_eq!(plain.len(), size, "the state buffer was sized exactly");
    plain
}

/// Tags of the sections at the end of the state blob (key exchange v2).
pub(crate) const MAILBOX_TAG: u8 = 1;
const SALTS_TAG: u8 = 2;
const STATEMENTS_TAG: u8 = 3;
/// The mailbox's ML-KEM prekey chain (issue 17): its oldest span and that
/// span's seed. Written only after a mailbox section, and only when hybrid
/// is not `off` (so `off` leaves a state the previous version can read).
const KEM_TAG: u8 = 4;
/// Token secrets and their claims (docs/PROTOCOL.md 5e). Written only when
/// the engine holds one, so a state without tokenized keys stays readable
/// by the previous version.
const TOKENS_TAG: u8 = 5;
/// The mailboxes a producer has seen publish hybrid prekeys (issue 17):
/// count, then 8-byte ids. Not written with `off`.
const HYBRID_SEEN_TAG: u8 = 6;

/// What the state restores besides keys.
#[derive(Default)]
struct Restored {
    mailbox: Option<Mailbox>,
    /// Token secrets with their claims.
    tokens: Vec<(Vec<u8>, Zeroizing<[u8; 32]>)>,
    seen_hybrid: Vec<InstanceId>,
}

fn decode_state(sh: &mut Shared, blob: &[u8], now_ms: u64) -> Result<Restored, Error> {
    let bad = || Error::Storage("the state file is corrupt".into());
    let mut r = Reader::new(blob);
    let n = r.u32().map_err(|_| bad())?;
    for _ in 0..n {
        let key_id = KeyId {
            producer: InstanceId(r.array().map_err(|_| bad())?),
            epoch: r.u32().map_err(|_| bad())?,
        };
        let started = r.u64().map_err(|_| bad())?;
        let delete_at = r.u64().map_err(|_| bad())?;
        let secret = EpochSecret::from_bytes(r.array().map_err(|_| bad())?);
        if delete_at <= now_ms {
            continue;
        }
        // Restored epochs are ended: a restarted instance never seals under
        // them again (their counters are lost), it only serves them.
        let ended = delete_at
            .saturating_sub(sh.config.key.retention_ms)
            .min(now_ms);
        sh.restored.insert(key_id.producer);
        sh.producer
            .retain(Arc::new(ProducerEpoch::new(key_id, secret, started, ended)));
    }
    let n = r.u32().map_err(|_| bad())?;
    for _ in 0..n {
        let key_id = KeyId {
            producer: InstanceId(r.array().map_err(|_| bad())?),
            epoch: r.u32().map_err(|_| bad())?,
        };
        let len = usize::from(r.u16().map_err(|_| bad())?);
        let topic =
            String::from_utf8(r.take(len).map_err(|_| bad())?.to_vec()).map_err(|_| bad())?;
        let epoch_started_ms = r.u64().map_err(|_| bad())?;
        let delete_at_ms = r.u64().map_err(|_| bad())?;
        let key = DataKey::from_bytes(r.array().map_err(|_| bad())?);
        if delete_at_ms > now_ms {
            sh.keyring.insert(
                key_id,
                &topic,
                HeldKey {
                    key: Arc::new(key),
                    epoch_started_ms,
                    delete_at_ms,
                    statement: None,
                },
            );
        }
    }
    let mut out = Restored::default();
    while r.remaining() > 0 {
        match r.u8().map_err(|_| bad())? {
            MAILBOX_TAG => {
                let id = InstanceId(r.array().map_err(|_| bad())?);
                let salt: Salt = r.array().map_err(|_| bad())?;
                let first = r.u64().map_err(|_| bad())?;
                let seed = Zeroizing::new(r.array().map_err(|_| bad())?);
                out.mailbox = Some(Mailbox::new(id, salt, first, seed));
            }
            KEM_TAG => {
                let first = r.u64().map_err(|_| bad())?;
                let seed = Zeroizing::new(r.array().map_err(|_| bad())?);
                out.mailbox.as_mut().ok_or_else(bad)?.set_kem(first, seed);
            }
            SALTS_TAG => {
                for _ in 0..r.u32().map_err(|_| bad())? {
                    let id = InstanceId(r.array().map_err(|_| bad())?);
                    let salt: Salt = r.array().map_err(|_| bad())?;
                    sh.salts.insert(id, salt);
                }
            }
            STATEMENTS_TAG => {
                for _ in 0..r.u32().map_err(|_| bad())? {
                    let key_id = KeyId {
                        producer: InstanceId(r.array().map_err(|_| bad())?),
                        epoch: r.u32().map_err(|_| bad())?,
                    };
                    let topic = r.topic().map_err(|_| bad())?;
                    let st = Statement::decode(&mut r).map_err(|_| bad())?;
                    sh.keyring.attach_statement(&key_id, &topic, Arc::new(st));
                }
            }
            TOKENS_TAG => {
                for _ in 0..r.u32().map_err(|_| bad())? {
                    let len = usize::try_from(r.u32().map_err(|_| bad())?).map_err(|_| bad())?;
                    let claim = r.take(len).map_err(|_| bad())?.to_vec();
                    let secret = Zeroizing::new(r.array().map_err(|_| bad())?);
                    out.tokens.push((claim, secret));
                }
            }
            HYBRID_SEEN_TAG => {
                for _ in 0..r.u32().map_err(|_| bad())? {
                    out.seen_hybrid
                        .push(InstanceId(r.array().map_err(|_| bad())?));
                }
            }
            _ => return Err(bad()),
        }
    }
    r.finish().map_err(|_| bad())?;
    sh.restored.remove(&sh.me);
    Ok(out)
}
