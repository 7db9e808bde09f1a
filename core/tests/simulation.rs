//! Deterministic simulation of many producers and consumers exchanging keys
//! over a faulty control channel and a durable keys topic (key exchange v2),
//! in the style of quinn-proto's test harness: one seed drives every random
//! choice (engine RNGs, network faults, crash, exit and stop times, workload,
//! the insiders' forgeries), and a virtual clock jumps from event to event.
//! Parties: producers (some crash, some exit for good), consumers (some
//! crash, some stop for a while and come back on their state directory), a
//! keeper, a newcomer, a denied, a rogue and an expiring party, two insiders
//! with valid credentials, and the broker as attacker. docs/PROTOCOL.md §7
//! lists what each seed asserts.
//!
//! `cargo test -p kafka-e2ee-core --test simulation` runs the fixed seeds.
//! `KAFKA_E2EE_SIM_SEEDS=1000 cargo test --release -p kafka-e2ee-core --test simulation -- --nocapture`
//! runs seeds 0..1000; `KAFKA_E2EE_SIM_SEED=N` replays one seed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use kafka_e2ee_core::exchange::hybrid;
use kafka_e2ee_core::exchange::mailbox::{
    encode_payload, EnvelopeItem, Prekeys, SealedEnvelope, KIND_PREKEYS, KIND_PREKEYS_HYBRID,
    PREKEYS_CONTEXT,
};
use kafka_e2ee_core::exchange::session::{new_handshake, one_way};
use kafka_e2ee_core::exchange::statement::Statement;
use kafka_e2ee_core::exchange::wire::{
    decode_batch, decode_finish_payload, encode_batch, encode_finish_payload, Body, Delivery,
    Envelope, Inner, Refusal, BROADCAST,
};
use kafka_e2ee_core::format::{DataKey, InstanceId, KeyBinding, KeyId, RecordHeader};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::state::MemoryStorage as MemStorage;
use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Channel, Engine, EngineConfig, Error, KeyUnavailable, Opened, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

const T0: u64 = 1_790_000_000_000; // a fixed wall-clock start
const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;
/// How soon after sealing a producer may die for good and take the key with
/// it (see `check`); key delivery takes seconds even under the simulated faults.
const LOSS_WINDOW_MS: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

/// Heap bytes per party, for the long-horizon mode (`long_horizon`): every
/// allocation made while an engine call of node `i` runs is charged to slot
/// `i + 1`, in a header before the block, so that freeing it (wherever that
/// happens) credits the same slot. Slot 0 is the harness itself. This is the
/// engine's whole heap (sessions, handshakes, queues, wants, keys, outbox,
/// its state-directory copy in `MemStorage`), measured without an accessor
/// in the engine.
struct Tagged;

const SLOTS: usize = 128;
static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
/// Only one measuring simulation at a time (tests run on several threads).
static MEASURING: Mutex<()> = Mutex::new(());

thread_local! {
    static TAG: Cell<usize> = const { Cell::new(0) };
}

fn header_len(layout: Layout) -> usize {
    layout.align().max(16)
}

// SAFETY: forwards to the system allocator with a header of `header_len`
// bytes (a multiple of the block's alignment) in front of every block; the
// header's last word holds the slot the block is charged to.
unsafe impl GlobalAlloc for Tagged {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let head = header_len(layout);
        let Ok(full) = Layout::from_size_align(layout.size() + head, head) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `full` has a nonzero size.
        let base = unsafe { System.alloc(full) };
        if base.is_null() {
            return base;
        }
        let tag = TAG.try_with(Cell::get).unwrap_or(0);
        LIVE[tag].fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `head` >= 16 bytes precede the block inside the allocation,
        // and `base + head` is aligned to at least 16.
        unsafe {
            let block = base.add(head);
            block.cast::<usize>().sub(1).write(tag);
            block
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let head = header_len(layout);
        // SAFETY: `ptr` came from `alloc` with this layout: the header is there.
        unsafe {
            let tag = ptr.cast::<usize>().sub(1).read();
            LIVE[tag].fetch_sub(layout.size() as i64, Ordering::Relaxed);
            let full = Layout::from_size_align_unchecked(layout.size() + head, head);
            System.dealloc(ptr.sub(head), full);
        }
    }
}

#[global_allocator]
static ALLOCATOR: Tagged = Tagged;

/// Charges what is allocated until the guard drops to node `i` (if `on`).
struct Charge(usize);

fn charge(on: bool, i: usize) -> Charge {
    let slot = if on { (i + 1).min(SLOTS - 1) } else { 0 };
    Charge(TAG.with(|t| t.replace(slot)))
}

impl Drop for Charge {
    fn drop(&mut self) {
        TAG.with(|t| t.set(self.0));
    }
}

/// Control-message kinds, as the sixth byte of every control and keys-topic
/// record says: 1 Hello, 2 HelloReply, 3 HelloFinish, 4 Sealed, 5 Want,
/// 6 Have, 7 prekeys, 8 envelope (0: anything else); a hybrid Hello (9)
/// and its reply (10) count as a Hello and a reply.
const KINDS: usize = 9;
const KIND_NAMES: [&str; KINDS] = [
    "other", "hello", "reply", "finish", "sealed", "want", "have", "prekeys", "envelope",
];

fn kind_of(bytes: &[u8]) -> usize {
    match bytes.get(5) {
        Some(&k) if (1..KINDS as u8).contains(&k) => k as usize,
        Some(&9) => 1,
        Some(&10) => 2,
        _ => 0,
    }
}

/// One party over one simulated hour (long-horizon mode): peaks of its
/// state, sampled every minute, and what its engine sent.
#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    up: bool,
    /// Peak heap bytes charged to the engine (see `Tagged`).
    heap: i64,
    /// Peak `keys_held()` (other producers' topic keys).
    keys: usize,
    /// Peak `peers().len()` (live sessions).
    peers: usize,
    /// Peak state-directory size in bytes.
    state: usize,
    /// Messages its engine sent this hour, by kind (see `KINDS`).
    sent: [u64; KINDS],
    /// Handshakes it initiated this hour (`metrics().handshakes`).
    handshakes: u64,
}

/// Fixed seeds the test command runs; any seed that ever failed goes here.
// 215, 524, 531 and 574 (found by `scripts/long-run` before key exchange v2
// was simulated) each lost one record with a producer that died for good
// before handing its key on: see `check`. 1, 2 and 3 fail without the fix in
// `Exchange::on_prekeys` (an insider's prekeys record took over an honest
// mailbox at producers: a consumer back from a stop lacked keys). 145 (found
// with the insider chaos of the hardening work) had a consumer wait
// 126 s for a key on an intermediate build; 31 s at most since. 777 had the
// newcomer wait 127 s: its first-contact budget spent at start, it ignored
// the Haves of the keeper it had a session with while the holder it had
// picked waited for a token (fixed in `Exchange::on_have`; 11 s since).
const FIXED_SEEDS: &[u64] = &[1, 2, 3, 4, 145, 215, 524, 531, 574, 777];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Producer,
    Consumer,
    /// Valid credential, but on every producer's deny list.
    Denied,
    /// Credential signed by an authority nobody trusts.
    Rogue,
    /// Valid credential that expires mid-run.
    Expiring,
    /// Insider adversaries: valid credentials, an honest engine for what they
    /// may do, and a hand that speaks the protocol to forge the rest
    /// (`Sim::insider_*`). The reader may consume one topic; the writer may
    /// also produce it (yet is no producer instance of anyone's records).
    InsiderReader,
    InsiderWriter,
}

struct Node {
    name: String,
    kind: Kind,
    produce: Vec<String>,
    consume: Vec<String>,
    identity_seed: u64,
    expires_ms: u64,
    storage: MemStorage,
    engine: Option<Engine>,
    next_tick: u64,
    /// Record index -> time opened.
    opened: HashMap<usize, u64>,
    /// When this node (re)started: records older than this may still be read.
    up_since: u64,
    crash_at: Option<u64>,
    restart_at: Option<u64>,
    /// When it crashed for good (no restart, so its memory-only keys died with it).
    gone_at: Option<u64>,
    /// Whether it ever crashed.
    crashed: bool,
    /// First start, if later than T0 (the newcomer).
    start_at: Option<u64>,
    /// Whether it has started at least once (with its state directory).
    started: bool,
    /// A producer's clean exit for good (close: last tick, outbox drained).
    exit_at: Option<u64>,
    exited_at: Option<u64>,
    /// A consumer's clean stop, and when it comes back on its state directory.
    stop_at: Option<u64>,
    back_at: Option<u64>,
    /// When it last came back from a clean stop (for the bound it is held to).
    back_since: Option<u64>,
    /// Retry bookkeeping: the key generation and record count at the last pass.
    last_pass: (u64, usize, u64),
    /// Records of its topics it has not opened yet (it looks at these only).
    unopened: BTreeSet<usize>,
    /// `metrics().handshakes` of its engine at the last sample.
    handshakes_seen: u64,
}

/// A record an insider (or the broker) wrote to a data topic under a
/// made-up producer instance id: nobody can open it, and readers of the
/// topic try for `JUNK_TRIES_MS` (as a host waits for a key), then give up.
struct Junk {
    topic: String,
    header: [u8; 34],
    ciphertext: Vec<u8>,
    written_at: u64,
}

const JUNK_TRIES_MS: u64 = 2 * MIN;
/// Parties other than honest consumers stop trying a record after this.
const GIVE_UP_MS: u64 = 5 * MIN;

struct Record {
    topic: String,
    key: Option<Vec<u8>>,
    header: [u8; 34],
    ciphertext: Vec<u8>,
    plaintext: Vec<u8>,
    sealed_at: u64,
    key_id: KeyId,
    /// The node that sealed it.
    producer: usize,
}

struct Params {
    /// Producers that exit for good, cleanly (per mille).
    exit_per_mille: u64,
    /// Consumers that stop cleanly for 1-3 minutes mid-production (per mille).
    stop_per_mille: u64,
    producers: usize,
    consumers: usize,
    topics: usize,
    duration_ms: u64,
    drop_per_mille: u64,
    dup_per_mille: u64,
    max_delay_ms: u64,
    crash_per_mille: u64,
    records_per_producer: usize,
    /// Long-horizon mode: engine defaults but a scaled retention (see
    /// `long_config`), per-party sampling and the bounds of `check_bounds`.
    long: bool,
}

/// A control message on its way to one reader: (receiver node, bytes).
type Route = (usize, Rc<[u8]>);

/// The hand of an insider (see `Kind::InsiderReader`).
struct Insider {
    node: usize,
    identity: Identity,
    /// Hellos it answered in another instance's name: session ->
    /// (the instance it posed as, the initiator, the handshake).
    pending: BTreeMap<[u8; 8], (InstanceId, InstanceId, snow::HandshakeState)>,
    /// Sessions it opened as itself to push keys unasked: session -> (peer, handshake).
    initiated: BTreeMap<[u8; 8], (InstanceId, snow::HandshakeState, Option<hybrid::KemKey>)>,
    next_hijack: u64,
    next_forgery: u64,
    /// Next arbitrary well-formed control message (`Sim::insider_chaos`).
    next_chaos: u64,
    /// How many of the Hellos and HelloReplies it sees draw a garbage
    /// HelloReply or HelloFinish in the addressee's name (per mille).
    garbage_per_mille: u64,
}

/// How often each insider answers a Hello in another instance's name.
const HIJACK_EVERY_MS: u64 = 3 * SEC;

struct Sim {
    seed: u64,
    rng: ChaCha20Rng,
    now: u64,
    authority: Authority,
    rogue_authority: Authority,
    denied_keys: Vec<[u8; 32]>,
    config: EngineConfig,
    nodes: Vec<Node>,
    records: Vec<Record>,
    /// (deliver_at, seq) -> (receiver node, bytes). Every reader gets the
    /// same bytes, so they are shared rather than copied per reader.
    net: BTreeMap<(u64, u64), Route>,
    /// The keys topic: the broker keeps every record it acknowledged (no
    /// drops), in order; an engine that starts reads it from the beginning.
    keys_log: Vec<Rc<[u8]>>,
    /// Keys-topic records on their way to the broker: (append at, seq) ->
    /// (sender node, bytes). Delayed and duplicated like control records.
    keys_pending: BTreeMap<(u64, u64), Route>,
    insiders: Vec<Insider>,
    /// Counts for the report.
    hijacks: u64,
    forgeries: u64,
    seq: u64,
    /// Every control message seen, for the attacker to replay.
    captured: Vec<Rc<[u8]>>,
    p: Params,
    forged_rejected: u64,
    /// Records under made-up producer instance ids; `junk_start` is the
    /// first still tried.
    junk: Vec<Junk>,
    junk_start: usize,
    /// Counts for the report: arbitrary control messages, garbage replies.
    chaos: u64,
    garbage: u64,
    /// Long-horizon mode: heap charged per party, hourly samples.
    measure: bool,
    samples: Vec<Vec<Sample>>,
    hour: Vec<Sample>,
    next_sample: u64,
    /// Control and keys-topic messages written by the insiders' hands.
    hand_sent: u64,
    /// Keep at most this many captured messages (the attacker's pool).
    captured_cap: usize,
}

fn topic_name(i: usize) -> String {
    format!("t{i}")
}

impl Sim {
    fn new(seed: u64, p: Params) -> Sim {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let authority = Authority::generate(&mut rng);
        let rogue_authority = Authority::generate(&mut rng);
        let config = if p.long {
            long_config()
        } else {
            EngineConfig {
                key: KeyPolicy {
                    rotation_ms: 60 * SEC,
                    rotation_records: 40,
                    retention_ms: 10 * MIN,
                },
                session_lifetime_ms: 4 * MIN,
                handshake_timeout_ms: 5 * SEC,
                request_retry_ms: 300,
                max_retry_ms: 5 * SEC,
                ..EngineConfig::default()
            }
        };
        let measure = p.long;
        let mut sim = Sim {
            seed,
            rng,
            now: T0,
            authority,
            rogue_authority,
            denied_keys: Vec::new(),
            config,
            nodes: Vec::new(),
            records: Vec::new(),
            net: BTreeMap::new(),
            seq: 0,
            captured: Vec::new(),
            keys_log: Vec::new(),
            keys_pending: BTreeMap::new(),
            insiders: Vec::new(),
            hijacks: 0,
            forgeries: 0,
            p,
            forged_rejected: 0,
            junk: Vec::new(),
            junk_start: 0,
            chaos: 0,
            garbage: 0,
            measure,
            samples: Vec::new(),
            hour: Vec::new(),
            next_sample: T0 + MIN,
            hand_sent: 0,
            captured_cap: if measure { 20_000 } else { usize::MAX },
        };
        let n_topics = sim.p.topics;
        for i in 0..sim.p.producers {
            let a = sim.rng.next_u64() as usize % n_topics;
            let b = sim.rng.next_u64() as usize % n_topics;
            let produce: Vec<String> = [a, b]
                .iter()
                .map(|&t| topic_name(t))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            sim.add_node(format!("producer-{i}"), Kind::Producer, produce, vec![]);
        }
        for i in 0..sim.p.consumers {
            let consume: Vec<String> = if i == 0 {
                (0..n_topics).map(topic_name).collect()
            } else {
                let a = sim.rng.next_u64() as usize % n_topics;
                let b = sim.rng.next_u64() as usize % n_topics;
                [a, b]
                    .iter()
                    .map(|&t| topic_name(t))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect()
            };
            sim.add_node(format!("consumer-{i}"), Kind::Consumer, vec![], consume);
        }
        let all: Vec<String> = (0..n_topics).map(topic_name).collect();
        sim.add_node("denied".into(), Kind::Denied, vec![], all.clone());
        sim.add_node("rogue".into(), Kind::Rogue, all.clone(), all.clone());
        sim.add_node("expiring".into(), Kind::Expiring, vec![], all.clone());
        // The keeper (`consume *`, always up on its state directory) and the
        // newcomer, whose identity first starts after producers exited for
        // good: it gets their keys from holders such as the keeper.
        sim.add_node("keeper".into(), Kind::Consumer, vec![], all.clone());
        sim.add_node("newcomer".into(), Kind::Consumer, vec![], all);
        let newcomer = sim.nodes.len() - 1;
        sim.nodes[newcomer].start_at =
            Some(T0 + sim.p.duration_ms / 2 + 30 * SEC + sim.rng.next_u64() % (30 * SEC));
        let t0 = vec![topic_name(0)];
        let t01 = vec![topic_name(0), topic_name(1 % n_topics)];
        sim.add_node("insider-reader".into(), Kind::InsiderReader, vec![], t0);
        sim.add_node(
            "insider-writer".into(),
            Kind::InsiderWriter,
            t01.clone(),
            t01,
        );
        sim.hour = vec![Sample::default(); sim.nodes.len()];
        // Deny lists are part of everyone's trust anchor, so build engines last.
        for i in 0..sim.nodes.len() {
            if sim.nodes[i].start_at.is_none() {
                sim.start(i);
            }
        }
        for i in 0..sim.nodes.len() {
            if matches!(sim.nodes[i].kind, Kind::InsiderReader | Kind::InsiderWriter) {
                let n = &sim.nodes[i];
                let identity = sim.identity(
                    &n.name,
                    n.kind,
                    &n.produce,
                    &n.consume,
                    n.identity_seed,
                    n.expires_ms,
                );
                sim.insiders.push(Insider {
                    node: i,
                    identity,
                    pending: BTreeMap::new(),
                    initiated: BTreeMap::new(),
                    next_hijack: T0,
                    next_forgery: T0 + SEC,
                    next_chaos: T0 + SEC / 2,
                    garbage_per_mille: [100, 300, 600, 1000][sim.rng.next_u64() as usize % 4],
                });
            }
        }
        // Crash, exit and stop schedule.
        for i in 0..sim.nodes.len() {
            let roll = sim.rng.next_u64() % 1000;
            let special = matches!(sim.nodes[i].name.as_str(), "keeper" | "newcomer");
            if special || !matches!(sim.nodes[i].kind, Kind::Producer | Kind::Consumer) {
                continue;
            }
            if roll >= sim.p.crash_per_mille {
                let half = sim.p.duration_ms / 2;
                if sim.nodes[i].kind == Kind::Producer
                    && roll < sim.p.crash_per_mille + sim.p.exit_per_mille
                {
                    sim.nodes[i].exit_at =
                        Some(T0 + MIN + sim.rng.next_u64() % half.saturating_sub(MIN).max(1));
                } else if sim.nodes[i].kind == Kind::Consumer
                    && roll < sim.p.crash_per_mille + sim.p.stop_per_mille
                {
                    let at = T0 + 30 * SEC + sim.rng.next_u64() % half;
                    sim.nodes[i].stop_at = Some(at);
                    sim.nodes[i].back_at = Some(at + MIN + sim.rng.next_u64() % (2 * MIN));
                }
                continue;
            }
            {
                let at = T0 + sim.rng.next_u64() % (sim.p.duration_ms / 2).max(1);
                // Some producers never come back: other holders must serve their keys.
                let back = if sim.nodes[i].kind == Kind::Producer
                    && sim.rng.next_u64().is_multiple_of(2)
                {
                    None
                } else {
                    Some(at + SEC + sim.rng.next_u64() % (30 * SEC))
                };
                sim.nodes[i].crash_at = Some(at);
                sim.nodes[i].restart_at = back;
            }
        }
        sim
    }

    fn add_node(&mut self, name: String, kind: Kind, produce: Vec<String>, consume: Vec<String>) {
        let identity_seed = self.rng.next_u64();
        let expires_ms = if kind == Kind::Expiring {
            T0 + self.p.duration_ms / 3
        } else {
            T0 + 365 * 24 * 60 * MIN
        };
        if kind == Kind::Denied {
            let id = self.identity(&name, kind, &produce, &consume, identity_seed, expires_ms);
            self.denied_keys.push(id.public_key());
        }
        self.nodes.push(Node {
            name,
            kind,
            produce,
            consume,
            identity_seed,
            expires_ms,
            storage: MemStorage::default(),
            engine: None,
            next_tick: T0,
            opened: HashMap::new(),
            up_since: T0,
            crash_at: None,
            restart_at: None,
            gone_at: None,
            crashed: false,
            start_at: None,
            started: false,
            exit_at: None,
            exited_at: None,
            stop_at: None,
            back_at: None,
            back_since: None,
            last_pass: (u64::MAX, 0, 0),
            unopened: BTreeSet::new(),
            handshakes_seen: 0,
        });
    }

    fn identity(
        &self,
        name: &str,
        kind: Kind,
        produce: &[String],
        consume: &[String],
        seed: u64,
        expires_ms: u64,
    ) -> Identity {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let pats = |v: &[String]| {
            v.iter()
                .map(|t| TopicPattern::parse(t).unwrap())
                .collect::<Vec<_>>()
        };
        // The keeper's credential reads every topic, present and future.
        let consume_pats = if name == "keeper" {
            vec![TopicPattern::parse("*").unwrap()]
        } else {
            pats(consume)
        };
        let auth = if kind == Kind::Rogue {
            &self.rogue_authority
        } else {
            &self.authority
        };
        Identity::generate(
            name,
            pats(produce),
            consume_pats,
            T0 - MIN,
            expires_ms,
            auth,
            &mut rng,
        )
    }

    fn trust_for(&self, kind: Kind) -> TrustAnchor {
        let mut auths = vec![self.authority.public_key()];
        if kind == Kind::Rogue {
            // The rogue trusts everyone; nobody trusts the rogue.
            auths.push(self.rogue_authority.public_key());
        }
        let mut t = TrustAnchor::from_authorities(auths);
        for k in &self.denied_keys {
            if kind != Kind::Denied {
                t.add_deny(*k);
            }
        }
        t
    }

    fn start(&mut self, i: usize) {
        let n = &self.nodes[i];
        let identity = self.identity(
            &n.name,
            n.kind,
            &n.produce,
            &n.consume,
            n.identity_seed,
            n.expires_ms,
        );
        let trust = self.trust_for(n.kind);
        let rng = Box::new(ChaCha20Rng::seed_from_u64(self.rng.next_u64()));
        let storage: Box<dyn Storage> = Box::new(n.storage.clone());
        let charged = charge(self.measure, i);
        let engine = Engine::new(
            self.config.clone(),
            identity,
            trust,
            self.now,
            rng,
            Some(storage),
        )
        .unwrap_or_else(|e| panic!("seed {}: {} failed to start: {e}", self.seed, n.name));
        // A starting engine reads the keys topic from its beginning, in order.
        for m in &self.keys_log {
            let _ = engine.handle_control(self.now, m);
        }
        drop(charged);
        let n = &mut self.nodes[i];
        n.engine = Some(engine);
        n.handshakes_seen = 0;
        n.next_tick = self.now;
        n.up_since = self.now;
        n.started = true;
    }

    /// A consumer back on its state directory holds, from the keys topic
    /// alone (before any control message), the key of every record of its
    /// topics written since it first ran, whoever wrote it and whether or not
    /// the writer is still up. Exempt: records past their retention (their
    /// keys may be deleted), records of a producer that ever
    /// crashed (a crash may come before the tick that seals the envelopes;
    /// those keys come from the producer's restart or from holders), and the
    /// last seconds' records (their envelopes are still on their way: a tick,
    /// then the broker's delay).
    fn check_caught_up(&self, i: usize) {
        let n = &self.nodes[i];
        let engine = n.engine.as_ref().unwrap();
        for (idx, r) in self.records.iter().enumerate() {
            let p = &self.nodes[r.producer];
            if !n.consume.contains(&r.topic)
                || p.crashed
                || r.sealed_at + 3 * SEC > self.now
                || r.sealed_at < T0 + 2 * SEC
                || r.sealed_at + self.config.key.retention_ms <= self.now
            {
                continue;
            }
            assert!(
                engine.holds_key(r.key_id, &r.topic),
                "seed {}: {} came back at {} without the key of record {idx} ({} on {}, sealed at {} by {}, exited {:?})",
                self.seed,
                n.name,
                self.now - T0,
                r.key_id,
                r.topic,
                r.sealed_at - T0,
                p.name,
                p.exited_at.map(|x| x - T0),
            );
        }
    }

    /// A clean close, as the hosts' close does: a last tick, the outbox
    /// drained, and every keys-topic record it sent acknowledged by the broker
    /// before it goes.
    fn close(&mut self, i: usize) {
        if let Some(engine) = self.nodes[i].engine.as_ref() {
            let _c = charge(self.measure, i);
            engine
                .handle_timeout(self.now)
                .unwrap_or_else(|e| panic!("seed {}: close: {e}", self.seed));
        }
        self.drain(i);
        let mine: Vec<(u64, u64)> = self
            .keys_pending
            .iter()
            .filter(|(_, (from, _))| *from == i)
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            let v = self.keys_pending.remove(&k).unwrap();
            self.seq += 1;
            self.keys_pending.insert((self.now, self.seq), v);
        }
        self.nodes[i].engine = None;
    }

    /// A keys-topic record on its way to the broker: delayed, maybe
    /// duplicated, never dropped once sent (the broker keeps it).
    fn send_keys(&mut self, from: usize, bytes: Vec<u8>) {
        let bytes: Rc<[u8]> = bytes.into();
        self.capture(&bytes);
        let copies = if self.rng.next_u64() % 1000 < self.p.dup_per_mille {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + 1 + self.rng.next_u64() % self.p.max_delay_ms.max(1);
            self.seq += 1;
            self.keys_pending
                .insert((at, self.seq), (from, Rc::clone(&bytes)));
        }
    }

    /// Appends due keys-topic records to the log; running engines read them
    /// as they are appended.
    fn append_keys(&mut self) {
        while let Some((&(at, seq), _)) = self.keys_pending.first_key_value() {
            if at > self.now {
                break;
            }
            let (from, bytes) = self.keys_pending.remove(&(at, seq)).unwrap();
            self.keys_log.push(Rc::clone(&bytes));
            for to in 0..self.nodes.len() {
                if to == from {
                    continue;
                }
                if let Some(engine) = self.nodes[to].engine.as_ref() {
                    let _c = charge(self.measure, to);
                    let _ = engine.handle_control(self.now, &bytes);
                }
                self.drain(to);
            }
        }
    }

    /// Keeps a message for the attacker to replay (the newest
    /// `captured_cap`: the long mode must not keep a day of traffic).
    fn capture(&mut self, bytes: &Rc<[u8]>) {
        if self.captured.len() >= self.captured_cap {
            self.captured.drain(..self.captured_cap / 2);
        }
        self.captured.push(Rc::clone(bytes));
    }

    fn send(&mut self, from: usize, bytes: Vec<u8>) {
        let bytes: Rc<[u8]> = bytes.into();
        self.capture(&bytes);
        // The control topic is read by every instance; each delivery may be
        // lost, duplicated or delayed independently (which also reorders).
        for to in 0..self.nodes.len() {
            if to == from {
                continue;
            }
            if self.rng.next_u64() % 1000 < self.p.drop_per_mille {
                continue;
            }
            let copies = if self.rng.next_u64() % 1000 < self.p.dup_per_mille {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + 1 + self.rng.next_u64() % self.p.max_delay_ms.max(1);
                self.seq += 1;
                self.net.insert((at, self.seq), (to, Rc::clone(&bytes)));
            }
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(engine) = self.nodes[i].engine.as_ref() else {
                return;
            };
            let Some(msg) = engine.poll_transmit() else {
                return;
            };
            if self.measure {
                self.hour[i].sent[kind_of(&msg.payload)] += 1;
            }
            match msg.channel {
                Channel::Control => self.send(i, msg.payload),
                Channel::Keys => self.send_keys(i, msg.payload),
            }
        }
    }

    /// The broker plays attacker: replays captured messages, flips bits in
    /// them, and injects garbage.
    fn attack(&mut self) {
        if self.captured.is_empty() {
            return;
        }
        let idx = self.rng.next_u64() as usize % self.captured.len();
        let mut msg = self.captured[idx].to_vec();
        match self.rng.next_u64() % 3 {
            0 => {} // replay as is
            1 => {
                let bit = self.rng.next_u64() as usize % (msg.len() * 8);
                msg[bit / 8] ^= 1 << (bit % 8);
            }
            _ => {
                let len = 1 + self.rng.next_u64() as usize % 200;
                msg = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                if self.rng.next_u64().is_multiple_of(2) && len > 22 {
                    msg[..4].copy_from_slice(b"KE2X");
                    msg[4] = 1;
                }
            }
        }
        if self.rng.next_u64().is_multiple_of(4) {
            // ... also into the keys topic, which every later start reads.
            self.seq += 1;
            self.keys_pending
                .insert((self.now + 1, self.seq), (usize::MAX, msg.into()));
            return;
        }
        let to = self.rng.next_u64() as usize % self.nodes.len();
        self.seq += 1;
        self.net.insert((self.now + 1, self.seq), (to, msg.into()));
    }

    fn produce(&mut self, i: usize) {
        let n = &self.nodes[i];
        let Some(engine) = n.engine.as_ref() else {
            return;
        };
        if n.produce.is_empty() {
            return;
        }
        let topic = n.produce[self.rng.next_u64() as usize % n.produce.len()].clone();
        let len = self.rng.next_u64() as usize % 64;
        let plaintext: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
        let key = match self.rng.next_u64() % 3 {
            0 => None,
            _ => Some(format!("k{}", self.records.len()).into_bytes()),
        };
        let mut value = plaintext.clone();
        let binding = key.as_deref().map_or(KeyBinding::Null, KeyBinding::Bytes);
        let charged = charge(self.measure, i);
        let sealed = engine.seal(&topic, binding, &mut value);
        drop(charged);
        match sealed {
            Ok(header) => {
                assert!(
                    len == 0 || value != plaintext || len < 4,
                    "seed {}: seal left plaintext",
                    self.seed
                );
                let key_id = RecordHeader::decode(&header).unwrap().key_id;
                let idx = self.records.len();
                for m in &mut self.nodes {
                    if m.consume.contains(&topic) {
                        m.unopened.insert(idx);
                    }
                }
                self.records.push(Record {
                    topic,
                    key,
                    header,
                    ciphertext: value,
                    plaintext,
                    sealed_at: self.now,
                    key_id,
                    producer: i,
                });
            }
            Err(Error::NoSealingKey) => {} // count limit hit faster than ticks: the record is refused, never sent
            Err(e) => panic!("seed {}: {} seal failed: {e}", self.seed, n.name),
        }
    }

    fn consume(&mut self, i: usize) {
        let seed = self.seed;
        let now = self.now;
        let measure = self.measure;
        let retention = self.config.key.retention_ms;
        while self
            .junk
            .get(self.junk_start)
            .is_some_and(|j| j.written_at + JUNK_TRIES_MS < now)
        {
            self.junk_start += 1;
        }
        let n = &mut self.nodes[i];
        let Some(engine) = n.engine.as_ref() else {
            return;
        };
        // Like a real consumer waiting for a key: look again when a key
        // arrived, when new records came, or every few seconds.
        let generation = engine.key_generation();
        let (last_gen, last_count, last_at) = n.last_pass;
        let period = if n.kind == Kind::Consumer {
            2 * SEC
        } else {
            10 * SEC
        };
        let count = self.records.len() + self.junk.len();
        if generation == last_gen && last_count == count && now < last_at + period {
            return;
        }
        n.last_pass = (generation, count, now);
        let mut done = Vec::new();
        for &idx in &n.unopened {
            let r = &self.records[idx];
            if n.kind != Kind::Consumer && r.sealed_at + GIVE_UP_MS < now {
                done.push(idx);
                continue;
            }
            let mut value = r.ciphertext.clone();
            let binding = r.key.as_deref().map_or(KeyBinding::Null, KeyBinding::Bytes);
            let charged = charge(measure, i);
            let result = engine.open(&r.topic, Some(&r.header), binding, &mut value);
            drop(charged);
            match result {
                Ok(Opened::Decrypted) => {
                    assert_eq!(
                        value, r.plaintext,
                        "seed {seed}: {} opened record {idx} to wrong plaintext",
                        n.name
                    );
                    assert!(
                        matches!(
                            n.kind,
                            Kind::Consumer
                                | Kind::Expiring
                                | Kind::InsiderReader
                                | Kind::InsiderWriter
                        ),
                        "seed {seed}: {} ({:?}) opened record {idx}",
                        n.name,
                        n.kind
                    );
                    n.opened.insert(idx, now);
                    done.push(idx);
                }
                Ok(Opened::Plaintext) => {
                    panic!("seed {seed}: record with header passed as plaintext")
                }
                Err(Error::KeyUnavailable {
                    reason: KeyUnavailable::Pending,
                    ..
                }) => {}
                Err(Error::KeyUnavailable { .. }) if n.kind != Kind::Consumer => {}
                // Too old when this consumer first tried (the long mode's
                // newcomer): its key was rightly deleted after its retention.
                Err(Error::KeyUnavailable { .. }) if r.sealed_at + retention <= now => {
                    done.push(idx);
                }
                Err(e) => {
                    if n.kind == Kind::Consumer {
                        panic!(
                            "seed {seed}: {} could not open record {idx} ({}): {e}",
                            n.name, r.key_id
                        );
                    }
                }
            }
        }
        for idx in done {
            n.unopened.remove(&idx);
        }
        // Records under made-up producer ids: nothing opens them, and
        // whatever the engine says (pending, unavailable) is fine.
        for (j, junk) in self.junk.iter().enumerate().skip(self.junk_start) {
            if !n.consume.contains(&junk.topic) {
                continue;
            }
            let mut value = junk.ciphertext.clone();
            let charged = charge(measure, i);
            let result = engine.open(
                &junk.topic,
                Some(&junk.header),
                KeyBinding::Null,
                &mut value,
            );
            drop(charged);
            assert!(
                result.is_err(),
                "seed {seed}: {} opened junk record {j} (made-up producer)",
                n.name
            );
        }
    }

    fn run(&mut self) {
        let end = T0 + self.p.duration_ms;
        let mut next_produce: Vec<u64> = (0..self.nodes.len())
            .map(|_| T0 + self.rng.next_u64() % SEC)
            .collect();
        let mut produced = vec![0usize; self.nodes.len()];
        let mut next_consume = T0;
        let mut next_attack = T0;
        // Run past the end of production so stragglers can fetch keys.
        let settle = end + 3 * MIN;
        while self.now < settle {
            // Next event time.
            let mut t = settle;
            if let Some((&(at, _), _)) = self.net.first_key_value() {
                t = t.min(at);
            }
            if let Some((&(at, _), _)) = self.keys_pending.first_key_value() {
                t = t.min(at);
            }
            for ins in &self.insiders {
                t = t.min(ins.next_forgery).min(ins.next_chaos);
            }
            if self.measure {
                t = t.min(self.next_sample);
            }
            for (i, n) in self.nodes.iter().enumerate() {
                for at in [n.exit_at, n.stop_at].into_iter().flatten() {
                    t = t.min(at);
                }
                if n.engine.is_none() {
                    for at in [n.back_at, n.start_at].into_iter().flatten() {
                        t = t.min(at);
                    }
                }
                if n.engine.is_some() {
                    t = t.min(n.next_tick);
                    if n.kind == Kind::Producer
                        && self.now < end
                        && produced[i] < self.p.records_per_producer
                    {
                        t = t.min(next_produce[i]);
                    }
                }
                if let Some(c) = n.crash_at {
                    t = t.min(c);
                }
                if let Some(r) = n.restart_at {
                    if n.engine.is_none() {
                        t = t.min(r);
                    }
                }
            }
            t = t.min(next_consume).min(next_attack);
            self.now = t.max(self.now);

            for i in 0..self.nodes.len() {
                if self.nodes[i].crash_at.is_some_and(|c| c <= self.now) {
                    self.nodes[i].crash_at = None;
                    self.nodes[i].crashed = true;
                    self.nodes[i].engine = None; // SIGKILL: no goodbye
                    if self.nodes[i].restart_at.is_none() {
                        self.nodes[i].gone_at = Some(self.now);
                    }
                }
                if self.nodes[i].engine.is_none()
                    && self.nodes[i].crash_at.is_none()
                    && self.nodes[i].restart_at.is_some_and(|r| r <= self.now)
                {
                    self.nodes[i].restart_at = None;
                    self.start(i);
                }
                if self.nodes[i].exit_at.is_some_and(|x| x <= self.now) {
                    // A producer exits for good, cleanly.
                    self.nodes[i].exit_at = None;
                    self.close(i);
                    self.nodes[i].exited_at = Some(self.now);
                }
                if self.nodes[i].stop_at.is_some_and(|x| x <= self.now) {
                    // A consumer stops cleanly for a while...
                    self.nodes[i].stop_at = None;
                    self.close(i);
                }
                if self.nodes[i].engine.is_none()
                    && self.nodes[i].stop_at.is_none()
                    && self.nodes[i].back_at.is_some_and(|x| x <= self.now)
                {
                    // ... and comes back on its state directory.
                    self.nodes[i].back_at = None;
                    self.start(i);
                    self.nodes[i].back_since = Some(self.now);
                    self.check_caught_up(i);
                }
                if self.nodes[i].start_at.is_some_and(|x| x <= self.now) {
                    self.nodes[i].start_at = None;
                    self.start(i);
                }
            }
            self.append_keys();
            while let Some((&(at, seq), _)) = self.net.first_key_value() {
                if at > self.now {
                    break;
                }
                let (to, bytes) = self.net.remove(&(at, seq)).unwrap();
                if let Some(k) = self.insiders.iter().position(|x| x.node == to) {
                    self.insider_observe(k, &bytes);
                }
                if let Some(engine) = self.nodes[to].engine.as_ref() {
                    let _c = charge(self.measure, to);
                    if engine.handle_control(self.now, &bytes).is_err() {
                        self.forged_rejected += 1;
                    }
                    // As hosts do: ask the engine when to tick after every
                    // call, so a stream of control messages cannot postpone
                    // a timer.
                    self.nodes[to].next_tick = engine.poll_timeout();
                }
                self.drain(to);
            }
            // Outboxes only fill in the engine calls below and above, each
            // followed by a drain: an idle node is not polled.
            for i in 0..self.nodes.len() {
                if let Some(engine) = self.nodes[i].engine.as_ref() {
                    if self.nodes[i].next_tick <= self.now {
                        let c = charge(self.measure, i);
                        engine
                            .handle_timeout(self.now)
                            .unwrap_or_else(|e| panic!("seed {}: tick: {e}", self.seed));
                        drop(c);
                        self.nodes[i].next_tick = engine.poll_timeout().max(self.now + 1);
                        self.drain(i);
                    }
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].kind == Kind::Producer
                    && self.now < end
                    && next_produce[i] <= self.now
                    && produced[i] < self.p.records_per_producer
                {
                    self.produce(i);
                    self.drain(i);
                    produced[i] += 1;
                    // Spread over the production time, so that exits, stops and
                    // the newcomer fall among epochs still being written.
                    let gap = 2 * self.p.duration_ms / self.p.records_per_producer as u64;
                    next_produce[i] = self.now + 50 + self.rng.next_u64() % gap;
                }
            }
            if next_consume <= self.now {
                for i in 0..self.nodes.len() {
                    self.consume(i);
                    self.drain(i);
                }
                next_consume = self.now + 250;
            }
            if next_attack <= self.now {
                self.attack();
                next_attack = self.now + 100 + self.rng.next_u64() % 400;
            }
            for k in 0..self.insiders.len() {
                if self.insiders[k].next_forgery <= self.now {
                    self.insider_forge(k);
                    self.insiders[k].next_forgery =
                        self.now + SEC + self.rng.next_u64() % (3 * SEC);
                }
                if self.insiders[k].next_chaos <= self.now {
                    self.insider_chaos(k);
                    self.insiders[k].next_chaos =
                        self.now + SEC / 2 + self.rng.next_u64() % (2 * SEC);
                }
            }
            if self.measure && self.next_sample <= self.now {
                self.sample();
                self.next_sample += MIN;
            }
        }
    }

    /// An insider reads the control topic like everyone: it answers Hellos
    /// addressed to other instances in their name, and over a session so
    /// won pushes forged keys (no statement, or one it signed itself) for the
    /// requested key ids and future epochs, and refuses in their name.
    fn insider_observe(&mut self, k: usize, bytes: &[u8]) {
        let Ok(env) = Envelope::decode(bytes) else {
            return;
        };
        let node = self.insiders[k].node;
        let own = self.nodes[node].engine.as_ref().map(Engine::instance_id);
        // Garbage in the addressee's name for handshakes it sees: a
        // HelloReply to a Hello, a HelloFinish to a HelloReply (well-formed
        // envelopes, random Noise bytes of a plausible length).
        let garbage = match &env.body {
            Body::Hello { session, .. } => Some((*session, true, false)),
            Body::HybridHello { session, .. } => Some((*session, true, true)),
            Body::HelloReply { session, .. } | Body::HybridReply { session, .. } => {
                Some((*session, false, false))
            }
            _ => None,
        };
        if let Some((session, reply, hybrid)) = garbage {
            let mine = Some(env.from) == own || Some(env.to) == own;
            if !mine && self.rng.next_u64() % 1000 < self.insiders[k].garbage_per_mille {
                // A hybrid reply is at least its ML-KEM ciphertext longer.
                let least = if hybrid { 1184 } else { 96 };
                let len = least + self.rng.next_u64() as usize % 300;
                let noise: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                let body = match (reply, hybrid) {
                    (true, true) => Body::HybridReply { session, noise },
                    (true, false) => Body::HelloReply { session, noise },
                    _ => Body::HelloFinish { session, noise },
                };
                let msg = Envelope {
                    from: env.to,
                    to: env.from,
                    body,
                };
                self.garbage += 1;
                self.send_hand(node, msg.encode());
            }
        }
        let hybrid_hello = matches!(env.body, Body::HybridHello { .. });
        match env.body {
            Body::Hello { session, noise } | Body::HybridHello { session, noise }
                if env.to != InstanceId([0; 8])
                    && Some(env.to) != own
                    && self.now >= self.insiders[k].next_hijack =>
            {
                // Answers classical and hybrid Hellos alike: the KEM binds
                // no identity, so an insider answers a hybrid Hello as
                // easily (the credential check is what stops it).
                let mut seed = [0u8; 64];
                self.rng.fill_bytes(&mut seed);
                let mut m = Zeroizing::new([0u8; 32]);
                self.rng.fill_bytes(&mut *m);
                let ins = &self.insiders[k];
                let mut hs = new_handshake(
                    false,
                    hybrid_hello,
                    &ins.identity.private_key_bytes(),
                    env.from,
                    env.to,
                    Zeroizing::new(seed),
                )
                .unwrap();
                let mut buf = vec![0u8; 8192];
                let Ok(n) = hs.read_message(&noise, &mut buf) else {
                    return;
                };
                let mut payload = Vec::new();
                if hybrid_hello {
                    let Ok((ct, secret)) = hybrid::encapsulate(&buf[..n], &m) else {
                        return;
                    };
                    hs.set_psk(hybrid::PSK_LOCATION, &*secret).unwrap();
                    payload = ct;
                }
                payload.extend_from_slice(&ins.identity.credential().encode());
                let n = hs.write_message(&payload, &mut buf).unwrap();
                let noise = buf[..n].to_vec();
                let reply = Envelope {
                    from: env.to,
                    to: env.from,
                    body: if hybrid_hello {
                        Body::HybridReply { session, noise }
                    } else {
                        Body::HelloReply { session, noise }
                    },
                };
                let ins = &mut self.insiders[k];
                ins.pending.insert(session, (env.to, env.from, hs));
                while ins.pending.len() > 64 {
                    ins.pending.pop_first();
                }
                ins.next_hijack = self.now + HIJACK_EVERY_MS;
                self.hijacks += 1;
                self.send_hand(node, reply.encode());
            }
            Body::HelloReply { session, noise } | Body::HybridReply { session, noise } => {
                // A consumer answered the insider's own Hello: finish the
                // handshake as itself and push keys nobody asked for, in the
                // first batch (no statement, or one it signed itself).
                let Some((peer, mut hs, kem)) = self.insiders[k].initiated.remove(&session) else {
                    return;
                };
                if env.from != peer {
                    return;
                }
                let mut buf = vec![0u8; noise.len() + 64];
                let Ok(n) = hs.read_message(&noise, &mut buf) else {
                    return;
                };
                if let Some(kem) = kem {
                    let Some(Ok(secret)) = buf
                        .get(..hybrid::CT_LEN.min(n))
                        .map(|ct| kem.decapsulate(ct))
                    else {
                        return;
                    };
                    if hs.set_psk(hybrid::PSK_LOCATION, &*secret).is_err() {
                        return;
                    }
                }
                let mut items = Vec::new();
                let recent: Vec<(KeyId, String)> = self
                    .records
                    .iter()
                    .rev()
                    .take(2)
                    .map(|r| (r.key_id, r.topic.clone()))
                    .collect();
                // It proves an instance id with a salt that does not derive it...
                let mut salt = [0u8; 16];
                self.rng.fill_bytes(&mut salt);
                items.push(Inner::InstanceProof { salt });
                for (key_id, topic) in recent {
                    let future = KeyId {
                        producer: key_id.producer,
                        epoch: key_id.epoch + 1,
                    };
                    for id in [key_id, future] {
                        items.push(self.forged_delivery(k, id, &topic, false));
                        items.push(self.forged_delivery(k, id, &topic, true));
                    }
                    // ... and refuses other producers' keys.
                    items.push(Inner::KeyUnavailable {
                        key_id,
                        topic,
                        reason: Refusal::NotAuthorized,
                    });
                }
                let ins = &self.insiders[k];
                let payload = encode_finish_payload(
                    &ins.identity.credential().encode(),
                    &encode_batch(&items),
                );
                let mut buf = vec![0u8; payload.len() + 256];
                let Ok(n) = hs.write_message(&payload, &mut buf) else {
                    return;
                };
                let msg = Envelope {
                    from: env.to,
                    to: peer,
                    body: Body::HelloFinish {
                        session,
                        noise: buf[..n].to_vec(),
                    },
                };
                self.forgeries += 1;
                self.send_hand(node, msg.encode());
            }
            Body::HelloFinish { session, noise } => {
                let Some((as_id, peer, mut hs)) = self.insiders[k].pending.remove(&session) else {
                    return;
                };
                if env.from != peer || env.to != as_id {
                    return;
                }
                let mut buf = vec![0u8; noise.len() + 64];
                let Ok(n) = hs.read_message(&noise, &mut buf) else {
                    return; // the initiator finished with the real instance
                };
                let Ok((_, batch)) = decode_finish_payload(&buf[..n]) else {
                    return;
                };
                let mut asked: Vec<(KeyId, String)> = decode_batch(batch)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|item| match item {
                        Inner::KeyRequest { key_id, topic } => Some((key_id, topic)),
                        _ => None,
                    })
                    .collect();
                if asked.is_empty() {
                    if let Some(r) = self.records.last() {
                        asked.push((r.key_id, r.topic.clone()));
                    }
                }
                let Ok(t) = hs.into_stateless_transport_mode() else {
                    return;
                };
                let mut items = Vec::new();
                for (key_id, topic) in asked.into_iter().take(2) {
                    let future = KeyId {
                        producer: key_id.producer,
                        epoch: key_id.epoch + 1 + (self.rng.next_u64() % 4) as u32,
                    };
                    for id in [key_id, future] {
                        items.push(self.forged_delivery(k, id, &topic, false));
                        items.push(self.forged_delivery(k, id, &topic, true));
                    }
                    items.push(Inner::KeyUnavailable {
                        key_id,
                        topic,
                        reason: match self.rng.next_u64() % 3 {
                            0 => Refusal::NotAuthorized,
                            1 => Refusal::Expired,
                            _ => Refusal::Unknown,
                        },
                    });
                }
                let batch = encode_batch(&items);
                let mut buf = vec![0u8; batch.len() + 64];
                let n = t.write_message(0, &batch, &mut buf).unwrap();
                let msg = Envelope {
                    from: as_id,
                    to: peer,
                    body: Body::Sealed {
                        session,
                        nonce: 0,
                        noise: buf[..n].to_vec(),
                    },
                };
                self.forgeries += 1;
                self.send_hand(node, msg.encode());
            }
            _ => {}
        }
    }

    /// A key that is not the producer's: random, with no statement or with a
    /// statement the insider signed itself.
    fn forged_delivery(&mut self, k: usize, key_id: KeyId, topic: &str, signed: bool) -> Inner {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let key = DataKey::from_bytes(key);
        let statement = signed.then(|| {
            let mut salt = [0u8; 16];
            self.rng.fill_bytes(&mut salt);
            Box::new(Statement::sign(
                &self.insiders[k].identity,
                salt,
                &key_id,
                topic,
                &key,
                self.now,
                self.now + 5 * MIN,
            ))
        });
        Inner::KeyDelivery(Delivery {
            key_id,
            topic: topic.to_owned(),
            key,
            epoch_started_ms: self.now,
            retain_ms: 5 * MIN,
            statement,
        })
    }

    /// An insider writes to the keys topic: prekeys records claiming honest
    /// mailboxes (signed by itself, or carrying the mailbox owner's credential
    /// under its own signature), and envelopes to honest mailboxes in real
    /// producers' names with keys of its own making.
    fn insider_forge(&mut self, k: usize) {
        let node = self.insiders[k].node;
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].kind == Kind::Consumer && self.nodes[i].engine.is_some())
            .collect();
        if honest.is_empty() {
            return;
        }
        let victim = honest[self.rng.next_u64() as usize % honest.len()];
        let Some(mailbox) = self.nodes[victim].engine.as_ref().unwrap().mailbox_id() else {
            return;
        };
        let period = self.config.prekey_period_ms;
        let v = &self.nodes[victim];
        let victim_cred = self
            .identity(
                &v.name,
                v.kind,
                &v.produce,
                &v.consume,
                v.identity_seed,
                v.expires_ms,
            )
            .credential()
            .encode();
        self.forgeries += 1;
        let what = self.rng.next_u64() % 3;
        if what == 2 {
            // A session of its own (as itself) with an honest consumer, to
            // push keys into it unasked (see `insider_observe`).
            let Some(me) = self.nodes[node].engine.as_ref().map(Engine::instance_id) else {
                return;
            };
            // A consumer or a producer.
            let real = self.real_instances();
            let to = if self.rng.next_u64().is_multiple_of(2) {
                real[self.rng.next_u64() as usize % real.len()].0
            } else {
                self.nodes[victim].engine.as_ref().unwrap().instance_id()
            };
            let mut seed = [0u8; 64];
            self.rng.fill_bytes(&mut seed);
            let mut session = [0u8; 8];
            self.rng.fill_bytes(&mut session);
            // Half its own sessions hybrid, half classical (as an engine
            // of the version before issue 17 would call).
            let hybrid_hs = self.rng.next_u64().is_multiple_of(2);
            let ins = &mut self.insiders[k];
            let mut hs = new_handshake(
                true,
                hybrid_hs,
                &ins.identity.private_key_bytes(),
                me,
                to,
                Zeroizing::new(seed),
            )
            .unwrap();
            let kem = hybrid_hs.then(|| hybrid::KemKey::from_handshake_seed(&seed));
            let payload = kem.as_ref().map(hybrid::KemKey::public).unwrap_or_default();
            let mut buf = vec![0u8; 2048];
            let n = hs.write_message(&payload, &mut buf).unwrap();
            ins.initiated.insert(session, (to, hs, kem));
            while ins.initiated.len() > 64 {
                ins.initiated.pop_first();
            }
            let noise = buf[..n].to_vec();
            let hello = Envelope {
                from: me,
                to,
                body: if hybrid_hs {
                    Body::HybridHello { session, noise }
                } else {
                    Body::Hello { session, noise }
                },
            };
            self.send_hand(node, hello.encode());
            return;
        }
        if what == 0 {
            let keys: Vec<[u8; 32]> = (0..4)
                .map(|_| {
                    let mut b = [0u8; 32];
                    self.rng.fill_bytes(&mut b);
                    b
                })
                .collect();
            let own = self.rng.next_u64().is_multiple_of(2);
            let ins = &self.insiders[k];
            let mut record = Prekeys {
                mailbox,
                keeper: false,
                published_ms: self.now,
                first_period: self.now / period,
                salt: [0x5a; 16],
                keys,
                kem: None,
                credential: if own {
                    ins.identity.credential().encode()
                } else {
                    victim_cred
                },
                signature: [0; 64],
            };
            record.signature = ins
                .identity
                .sign_statement(PREKEYS_CONTEXT, &record.signed_part());
            self.hand_sent += 1;
            self.send_keys(node, record.encode());
            return;
        }
        // An envelope to the victim's real prekey of this period: hybrid
        // (to its ML-KEM key too) or classical, whichever record comes first.
        let hybrid_first = self.rng.next_u64().is_multiple_of(2);
        let prekey = self.keys_log.iter().rev().find_map(|m| {
            if !matches!(m.get(5), Some(&KIND_PREKEYS | &KIND_PREKEYS_HYBRID))
                || m.get(6..14) != Some(&mailbox.0[..])
            {
                return None;
            }
            let p = Prekeys::decode(m).ok()?;
            if p.credential != victim_cred || (p.kem.is_some() != hybrid_first) {
                return None;
            }
            let now = self.now / period;
            Some((p.key_for(now)?, p.kem_key_for(now).map(<[u8]>::to_vec)))
        });
        let (Some((prekey, kem_key)), Some(r)) = (prekey, self.records.last()) else {
            return;
        };
        let (producer, topic) = (r.key_id.producer, r.topic.clone());
        let epoch = r.key_id.epoch + (self.rng.next_u64() % 3) as u32;
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let key = DataKey::from_bytes(key);
        let mut salt = [0u8; 16];
        self.rng.fill_bytes(&mut salt);
        let key_id = KeyId { producer, epoch };
        let ins = &self.insiders[k];
        let st = Statement::sign(
            &ins.identity,
            salt,
            &key_id,
            &topic,
            &key,
            self.now,
            self.now + 5 * MIN,
        );
        let item = EnvelopeItem {
            topic,
            key,
            epoch_started_ms: self.now,
            delete_by_ms: self.now + 5 * MIN,
            signature: st.signature,
        };
        let payload = encode_payload(
            &ins.identity.credential().encode(),
            &salt,
            self.now,
            &[item],
        );
        let mut id = [0u8; 8];
        self.rng.fill_bytes(&mut id);
        let mut env = SealedEnvelope {
            producer,
            mailbox,
            id,
            epoch,
            period: self.now / period,
            kem_ct: None,
            noise: Vec::new(),
        };
        let mut psk = None;
        if let Some(ek) = kem_key {
            let mut m = Zeroizing::new([0u8; 32]);
            self.rng.fill_bytes(&mut *m);
            // The log holds tampered records too: a key that is not a valid
            // ML-KEM key cannot be sealed to (an honest producer refuses it
            // the same way).
            let Ok((ct, secret)) = hybrid::encapsulate(&ek, &m) else {
                return;
            };
            env.kem_ct = Some(ct);
            psk = Some(secret);
        }
        let mut seed = [0u8; 64];
        self.rng.fill_bytes(&mut seed);
        let ins = &self.insiders[k];
        let mut hs = one_way(
            true,
            &ins.identity.private_key_bytes(),
            Some(&prekey),
            &env.prologue(),
            Zeroizing::new(seed),
            psk.as_deref(),
        )
        .unwrap();
        let mut msg = vec![0u8; payload.len() + 128];
        let n = hs.write_message(&payload, &mut msg).unwrap();
        msg.truncate(n);
        env.noise = msg;
        self.hand_sent += 1;
        self.send_keys(node, env.encode());
    }

    /// A control message from an insider's hand (not its engine).
    fn send_hand(&mut self, node: usize, bytes: Vec<u8>) {
        self.hand_sent += 1;
        self.send(node, bytes);
    }

    /// Running honest engines (producers and consumers): (instance id, kind).
    fn real_instances(&self) -> Vec<(InstanceId, Kind)> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::Producer | Kind::Consumer))
            .filter_map(|n| n.engine.as_ref().map(|e| (e.instance_id(), n.kind)))
            .collect()
    }

    fn made_up(&mut self) -> InstanceId {
        let mut id = [0u8; 8];
        self.rng.fill_bytes(&mut id);
        InstanceId(id)
    }

    /// An insider, driven by the seed, sends one arbitrary well-formed
    /// control message (or writes one record under a made-up producer id):
    /// Hellos to real and made-up instance ids, Wants for real, future and
    /// made-up key ids under forged sender ids, Haves in other instances'
    /// names, Sealed and handshake messages with made-up sessions.
    fn insider_chaos(&mut self, k: usize) {
        let node = self.insiders[k].node;
        let Some(me) = self.nodes[node].engine.as_ref().map(Engine::instance_id) else {
            return;
        };
        let real = self.real_instances();
        if real.is_empty() {
            return;
        }
        let (target, _) = real[self.rng.next_u64() as usize % real.len()];
        let made = self.made_up();
        // A sender id: its own, another party's, or made up.
        let forged = match self.rng.next_u64() % 3 {
            0 => me,
            1 => real[self.rng.next_u64() as usize % real.len()].0,
            _ => self.made_up(),
        };
        // A key id: a real one, a future epoch of a real producer, or made up.
        let recent = self
            .records
            .len()
            .checked_sub(1 + self.rng.next_u64() as usize % 20)
            .and_then(|i| self.records.get(i))
            .map(|r| (r.key_id, r.topic.clone()));
        let (key_id, topic) = match (recent, self.rng.next_u64() % 3) {
            (Some((id, topic)), 0) => (id, topic),
            (Some((id, topic)), 1) => (
                KeyId {
                    producer: id.producer,
                    epoch: id.epoch + 1 + (self.rng.next_u64() % 8) as u32,
                },
                topic,
            ),
            _ => (
                KeyId {
                    producer: self.made_up(),
                    epoch: self.rng.next_u64() as u32,
                },
                topic_name(self.rng.next_u64() as usize % self.p.topics),
            ),
        };
        let mut session = [0u8; 8];
        self.rng.fill_bytes(&mut session);
        self.chaos += 1;
        // Weights out of 48: Hellos 12, Wants 12, Haves 8, garbage 15, and
        // one record under a made-up producer (about 100 an hour from the
        // two insiders; 300 in three hours drew 27,000 Hellos an hour
        // before the zombie-peer fix: issue 14).
        let (from, to, body) = match self.rng.next_u64() % 48 {
            0..=11 => {
                // A Hello with a valid first Noise message, to a made-up or a
                // real instance, from its own or a forged id; never finished.
                let to = if self.rng.next_u64().is_multiple_of(2) {
                    made
                } else {
                    target
                };
                let mut seed = [0u8; 64];
                self.rng.fill_bytes(&mut seed);
                let hybrid_hs = self.rng.next_u64().is_multiple_of(2);
                let ins = &self.insiders[k];
                let mut hs = new_handshake(
                    true,
                    hybrid_hs,
                    &ins.identity.private_key_bytes(),
                    forged,
                    to,
                    Zeroizing::new(seed),
                )
                .unwrap();
                let payload = if hybrid_hs {
                    hybrid::KemKey::from_handshake_seed(&seed).public()
                } else {
                    Vec::new()
                };
                let mut buf = vec![0u8; 2048];
                let n = hs.write_message(&payload, &mut buf).unwrap();
                buf.truncate(n);
                let body = if hybrid_hs {
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
                (forged, to, body)
            }
            12..=23 => (forged, BROADCAST, Body::Want { key_id, topic }),
            24..=31 => {
                // A Have in a producer's (or anyone's) name, to a real party.
                let from = if self.rng.next_u64().is_multiple_of(2) {
                    key_id.producer
                } else {
                    forged
                };
                (from, target, Body::Have { key_id, topic })
            }
            32..=46 => {
                let len = 16 + self.rng.next_u64() as usize % 200;
                let noise: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                let nonce = self.rng.next_u64() % 4;
                let body = match self.rng.next_u64() % 4 {
                    0 => Body::Sealed {
                        session,
                        nonce,
                        noise,
                    },
                    1 => Body::HelloReply { session, noise },
                    2 => {
                        // Long enough to pass for a hybrid reply.
                        let mut noise = noise;
                        noise.resize(1184 + noise.len(), 0x5a);
                        Body::HybridReply { session, noise }
                    }
                    _ => Body::HelloFinish { session, noise },
                };
                (forged, target, body)
            }
            _ => {
                // A record on a data topic under a made-up producer id (the
                // header of a real record with its key id replaced).
                let Some(r) = self.records.last() else {
                    return;
                };
                let mut header = r.header;
                header[2..10].copy_from_slice(&made.0);
                let epoch = self.rng.next_u64() as u32;
                header[10..14].copy_from_slice(&epoch.to_be_bytes());
                let len = 1 + self.rng.next_u64() as usize % 64;
                let ciphertext = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                self.junk.push(Junk {
                    topic,
                    header,
                    ciphertext,
                    written_at: self.now,
                });
                return;
            }
        };
        let msg = Envelope { from, to, body };
        self.send_hand(node, msg.encode());
    }

    /// Long-horizon mode, every simulated minute: each party's state
    /// (peaks over the hour) and, on the hour, the hour's sample.
    fn sample(&mut self) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(engine) = n.engine.as_ref() else {
                continue;
            };
            let s = &mut self.hour[i];
            s.up = true;
            s.heap = s
                .heap
                .max(LIVE[(i + 1).min(SLOTS - 1)].load(Ordering::Relaxed));
            s.keys = s.keys.max(engine.keys_held());
            s.peers = s.peers.max(engine.peers().len());
            let state = n.storage.blob().map_or(0, |b| b.len());
            s.state = s.state.max(state);
            let handshakes = engine.metrics().handshakes;
            s.handshakes += handshakes.saturating_sub(n.handshakes_seen);
            n.handshakes_seen = handshakes;
        }
        if self.now >= T0 + (self.samples.len() as u64 + 1) * HOUR {
            let hour = std::mem::replace(&mut self.hour, vec![Sample::default(); self.nodes.len()]);
            let hellos: u64 = hour.iter().map(|s| s.sent[1]).sum();
            let heap: i64 = hour.iter().map(|s| s.heap).sum();
            eprintln!(
                "seed {}: hour {} done: {hellos} Hellos, heap of all parties {} KiB, {} records, {} under made-up producers",
                self.seed,
                self.samples.len(),
                heap / 1024,
                self.records.len(),
                self.junk.len()
            );
            self.samples.push(hour);
        }
    }

    fn check(&mut self) {
        let seed = self.seed;
        let skew = self.config.clock_skew_ms;
        let rotation = self.config.key.rotation_ms;
        let mut worst_wait = 0;
        // The one loss the design accepts: a producer that dies for good
        // before any other party holds its key takes that key with it (no
        // central store; docs/PROTOCOL.md). Such records are exempt only if
        // nobody opened them AND the producer died within LOSS_WINDOW_MS of
        // sealing; a producer that lived longer must have handed the key on.
        let lost_with_producer: HashSet<usize> = self
            .records
            .iter()
            .enumerate()
            .filter(|(idx, r)| {
                self.nodes[r.producer]
                    .gone_at
                    .is_some_and(|g| g.saturating_sub(r.sealed_at) <= LOSS_WINDOW_MS)
                    && !self.nodes.iter().any(|m| m.opened.contains_key(idx))
            })
            .map(|(idx, _)| idx)
            .collect();
        // Liveness: every authorized consumer identity opened every record of
        // its topics, whether its producer is still up, exited for good, or
        // crashed (unless lost as above): those that ran before the record
        // was written (offline ones from the keys topic on their return), and
        // the newcomer, which started after producers had exited for good,
        // through holders such as the keeper.
        let (mut worst_back, mut worst_newcomer, mut exited_records) = (0, 0, 0);
        for n in &self.nodes {
            if n.kind != Kind::Consumer {
                continue;
            }
            assert!(
                n.engine.is_some(),
                "seed {seed}: {} is not up at the end",
                n.name
            );
            for (idx, r) in self.records.iter().enumerate() {
                if !n.consume.contains(&r.topic) || lost_with_producer.contains(&idx) {
                    continue;
                }
                // Past its retention (everyone may have deleted its key) by
                // the time this consumer came up, and not opened before: the
                // long mode's newcomer, which starts after 12 hours.
                if !n.opened.contains_key(&idx)
                    && r.sealed_at + self.config.key.retention_ms < n.up_since + 2 * MIN
                {
                    continue;
                }
                let Some(at) = n.opened.get(&idx) else {
                    panic!(
                        "seed {seed}: {} never opened record {idx} on {} (key {}, producer {} exited {:?} gone {:?})",
                        n.name,
                        r.topic,
                        r.key_id,
                        self.nodes[r.producer].name,
                        self.nodes[r.producer].exited_at,
                        self.nodes[r.producer].gone_at,
                    );
                };
                let wait = at.saturating_sub(r.sealed_at.max(n.up_since));
                worst_wait = worst_wait.max(wait);
                if n.back_since.is_some() && r.sealed_at < n.up_since {
                    worst_back = worst_back.max(wait);
                }
                if n.name == "newcomer" {
                    worst_newcomer = worst_newcomer.max(wait);
                    if self.nodes[r.producer]
                        .exited_at
                        .is_some_and(|x| x <= n.up_since)
                    {
                        exited_records += 1;
                    }
                }
            }
        }
        // Bounded: no consumer waited longer than this for any key.
        assert!(
            worst_wait <= 2 * MIN,
            "seed {seed}: a consumer waited {worst_wait} ms for a key"
        );
        // Integrity: every key an honest or insider engine holds is the
        // producer's own (it opens the producer's records to their plaintext):
        // no forged key (pushed in a hijacked session, or in a forged
        // envelope) was ever taken.
        for n in &self.nodes {
            let Some(engine) = n.engine.as_ref() else {
                continue;
            };
            if matches!(n.kind, Kind::Producer | Kind::Denied | Kind::Rogue) {
                continue;
            }
            for (idx, r) in self.records.iter().enumerate() {
                if !engine.holds_key(r.key_id, &r.topic) {
                    continue;
                }
                let mut value = r.ciphertext.clone();
                let binding = r.key.as_deref().map_or(KeyBinding::Null, KeyBinding::Bytes);
                engine
                    .open(&r.topic, Some(&r.header), binding, &mut value)
                    .unwrap_or_else(|e| {
                        panic!(
                            "seed {seed}: {} holds a key for record {idx} ({}) that is not the producer's: {e}",
                            n.name, r.key_id
                        )
                    });
                assert_eq!(value, r.plaintext, "seed {seed}: {} wrong key", n.name);
            }
        }
        // Safety: unauthorized parties hold no key.
        for n in &self.nodes {
            let Some(engine) = n.engine.as_ref() else {
                continue;
            };
            for r in &self.records {
                let holds = engine.holds_key(r.key_id, &r.topic);
                match n.kind {
                    Kind::Denied | Kind::Rogue => assert!(
                        !holds,
                        "seed {seed}: {} holds key {} of {}",
                        n.name, r.key_id, r.topic
                    ),
                    Kind::Consumer | Kind::Producer | Kind::InsiderReader | Kind::InsiderWriter => {
                        if holds && n.kind != Kind::Producer {
                            assert!(
                                n.consume.contains(&r.topic),
                                "seed {seed}: {} holds a key of {}",
                                n.name,
                                r.topic
                            );
                        }
                    }
                    Kind::Expiring => {
                        // Revocation: nothing sealed more than one rotation after expiry.
                        if r.sealed_at > n.expires_ms + skew + 2 * rotation {
                            assert!(
                                !holds,
                                "seed {seed}: expired credential holds key {}",
                                r.key_id
                            );
                        }
                    }
                }
            }
        }
        // No record opens under another topic, even for a holder of both keys.
        let all_reader = self
            .nodes
            .iter()
            .position(|n| n.name == "consumer-0")
            .unwrap();
        if let Some(engine) = self.nodes[all_reader].engine.as_ref() {
            for r in self.records.iter().take(200) {
                let other = if r.topic == "t0" { "t1" } else { "t0" };
                let mut value = r.ciphertext.clone();
                let binding = r.key.as_deref().map_or(KeyBinding::Null, KeyBinding::Bytes);
                let result = engine.open(other, Some(&r.header), binding, &mut value);
                assert!(
                    result.is_err(),
                    "seed {seed}: record opened under another topic"
                );
                assert_eq!(
                    value, r.ciphertext,
                    "seed {seed}: failed open changed the value"
                );
            }
        }
        // Attacks happened and were rejected.
        assert!(
            self.forged_rejected > 0,
            "seed {seed}: the attacker was never rejected"
        );
        // Retention: after it passes, no key of the run is held anywhere.
        let later = self.now + self.config.key.retention_ms + 2 * rotation + MIN;
        for n in &self.nodes {
            if let Some(engine) = n.engine.as_ref() {
                engine.handle_timeout(later).unwrap();
                for r in &self.records {
                    assert!(
                        !engine.holds_key(r.key_id, &r.topic),
                        "seed {seed}: {} still holds {} after retention",
                        n.name,
                        r.key_id
                    );
                }
            }
        }
        // ... nor in any state directory: a restart from storage restores
        // nothing old, not even with the whole keys topic read again (its
        // mailbox has moved past the prekeys those envelopes were sealed to).
        // (Producers, and a sample of consumers: the keeper, those that
        // stopped, the newcomer.)
        let later = later + skew;
        for n in &self.nodes {
            let sample = n.kind == Kind::Producer
                || (n.kind == Kind::Consumer
                    && (n.back_since.is_some() || n.name == "keeper" || n.name == "newcomer"));
            if n.engine.is_none() || !sample {
                continue;
            }
            let identity = self.identity(
                &n.name,
                n.kind,
                &n.produce,
                &n.consume,
                n.identity_seed,
                n.expires_ms,
            );
            let restored = Engine::new(
                self.config.clone(),
                identity,
                self.trust_for(n.kind),
                later,
                Box::new(ChaCha20Rng::seed_from_u64(7)),
                Some(Box::new(n.storage.clone())),
            )
            .unwrap();
            if n.kind == Kind::Consumer {
                for m in &self.keys_log {
                    let _ = restored.handle_control(later, m);
                }
            }
            for r in &self.records {
                assert!(
                    !restored.holds_key(r.key_id, &r.topic),
                    "seed {seed}: {} state dir still holds {}",
                    n.name,
                    r.key_id
                );
            }
        }
        let mut handshakes = 0;
        let mut served = 0;
        let mut envelopes = 0;
        for n in &self.nodes {
            if let Some(e) = n.engine.as_ref() {
                let m = e.metrics();
                handshakes += m.handshakes;
                if std::env::var("SIM_DEBUG").is_ok() {
                    eprintln!("{} {:?}", n.name, m);
                }
                served += m.keys_served;
                envelopes += m.envelopes_received;
            }
        }
        let keeper = self.nodes.iter().find(|n| n.name == "keeper").unwrap();
        let keeper_served = keeper.engine.as_ref().unwrap().metrics().keys_served;
        let exited = self.nodes.iter().filter(|n| n.exited_at.is_some()).count();
        let stopped = self.nodes.iter().filter(|n| n.back_since.is_some()).count();
        eprintln!(
            "seed {seed}: {exited} producers exited for good, {stopped} consumers offline for a while (worst wait on return {worst_back} ms), newcomer opened {exited_records} records of exited producers (worst wait {worst_newcomer} ms), keeper served {keeper_served} keys, {envelopes} envelopes opened, keys topic {} records, insiders: {} hellos answered as others, {} forgeries, {} arbitrary control messages, {} garbage handshake replies, {} records under made-up producers, {} messages in all",
            self.keys_log.len(),
            self.hijacks,
            self.forgeries,
            self.chaos,
            self.garbage,
            self.junk.len(),
            self.hand_sent,
        );
        eprintln!("seed {seed}: {handshakes} handshakes initiated, {served} keys served, {} control messages", self.captured.len());
        eprintln!(
            "seed {seed}: {} records ({} lost with a producer that died for good within {} s of sealing them), {} nodes, worst key wait {} ms, {} control messages rejected",
            self.records.len(),
            lost_with_producer.len(),
            LOSS_WINDOW_MS / SEC,
            self.nodes.len(),
            worst_wait,
            self.forged_rejected
        );
    }
}

fn full_params() -> Params {
    Params {
        producers: 14,
        consumers: 14,
        topics: 5,
        duration_ms: 8 * MIN,
        drop_per_mille: 50,
        dup_per_mille: 50,
        max_delay_ms: 800,
        crash_per_mille: 200,
        records_per_producer: 50,
        exit_per_mille: 250,
        stop_per_mille: 250,
        long: false,
    }
}

/// The long-horizon mode's engine settings: the defaults (rotation 15 min,
/// sessions 1 h, handshake timeout 10 s, retries 0.5-30 s, wants 10 min,
/// prekey period 1 h), but a retention of 2 h instead of 7 days, so that
/// the keys a party holds reach their steady state within the day.
fn long_config() -> EngineConfig {
    let default = EngineConfig::default();
    EngineConfig {
        key: KeyPolicy {
            retention_ms: 2 * HOUR,
            ..default.key
        },
        ..default
    }
}

/// Fewer parties than the fixed seeds (a simulated day must stay affordable),
/// the same faults, one record per producer per minute on average.
fn long_params(hours: u64) -> Params {
    Params {
        producers: 6,
        consumers: 6,
        topics: 3,
        duration_ms: hours * HOUR,
        drop_per_mille: 50,
        dup_per_mille: 50,
        max_delay_ms: 800,
        crash_per_mille: 200,
        records_per_producer: (hours * 60) as usize,
        exit_per_mille: 250,
        stop_per_mille: 250,
        long: true,
    }
}

fn run_seed(seed: u64) {
    let mut sim = Sim::new(seed, full_params());
    sim.run();
    sim.check();
}

#[test]
fn simulation_fixed_seeds() {
    if let Ok(seed) = std::env::var("KAFKA_E2EE_SIM_SEED") {
        run_seed(seed.parse().expect("KAFKA_E2EE_SIM_SEED must be a number"));
        return;
    }
    let count: u64 = std::env::var("KAFKA_E2EE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if count > 0 {
        for seed in 0..count {
            run_seed(seed);
        }
    } else {
        for &seed in FIXED_SEEDS {
            run_seed(seed);
        }
    }
}

/// One seed reproduces a run exactly: same records, same control traffic.
#[test]
fn same_seed_same_run() {
    let small = || Params {
        producers: 4,
        consumers: 4,
        topics: 2,
        duration_ms: 2 * MIN,
        drop_per_mille: 50,
        dup_per_mille: 50,
        max_delay_ms: 500,
        crash_per_mille: 300,
        records_per_producer: 20,
        exit_per_mille: 300,
        stop_per_mille: 300,
        long: false,
    };
    let digest = |seed| {
        let mut sim = Sim::new(seed, small());
        sim.run();
        let records: Vec<_> = sim
            .records
            .iter()
            .map(|r| (r.header, r.ciphertext.clone()))
            .collect();
        (records, sim.captured.clone(), sim.forged_rejected)
    };
    let a = digest(42);
    assert!(!a.0.is_empty() && !a.1.is_empty());
    assert_eq!(a, digest(42), "seed 42 did not replay identically");
    assert_ne!(
        a.1,
        digest(43).1,
        "different seeds gave the same control traffic"
    );
}

/// Long-horizon bounds, per party and per simulated hour after the warm-up
/// (`check_bounds`). A party's engine must not send more Hellos than this in
/// an hour: honest parties start a few dozen handshakes an hour (sessions
/// live an hour; retries back off to 30 s), whatever made-up instance ids
/// the insiders inject.
const HELLOS_PER_HOUR: u64 = 600;
/// Every control and keys-topic message its engine sends in an hour.
const MESSAGES_PER_HOUR: u64 = 20_000;
/// Heap charged to one engine at any sample.
const HEAP_BYTES: i64 = 8 << 20;
/// No growth: a party's peak in the second half of the run (after the
/// warm-up) is at most this factor (per mille) of its peak in the first
/// half, plus `GROWTH_SLACK` bytes (heap) or items (keys, sessions).
const GROWTH_PER_MILLE: i64 = 1500;
const GROWTH_SLACK_BYTES: i64 = 256 << 10;
const GROWTH_SLACK_ITEMS: i64 = 16;

/// A per-party figure `check_bounds` watches for growth: name, reading, slack.
type Measure<'a> = (&'a str, &'a dyn Fn(&Sample) -> i64, i64);

impl Sim {
    fn warm_up_hours(&self) -> usize {
        if self.samples.len() >= 12 {
            3
        } else {
            1
        }
    }

    /// Prints each party's figures over the hours after the warm-up.
    fn report_bounds(&self) {
        let w = self.warm_up_hours();
        let hours = self.samples.len();
        eprintln!(
            "seed {}: {hours} h, warm-up {w} h; per party after warm-up: peak heap KiB, keys held, sessions, state bytes; max per hour: hellos, handshakes, messages sent (by kind)",
            self.seed
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let after: Vec<&Sample> = self.samples[w.min(hours)..]
                .iter()
                .map(|h| &h[i])
                .filter(|s| s.up)
                .collect();
            let peak = |f: &dyn Fn(&Sample) -> i64| after.iter().map(|s| f(s)).max().unwrap_or(0);
            let by_kind: Vec<String> = (0..KINDS)
                .map(|k| format!("{}={}", KIND_NAMES[k], peak(&|s| s.sent[k] as i64)))
                .collect();
            eprintln!(
                "  {:<16} heap {:>6} KiB  keys {:>4}  sessions {:>3}  state {:>7} B  hellos/h {:>5}  handshakes/h {:>5}  msgs/h {:>6}  [{}]",
                n.name,
                peak(&|s| s.heap) / 1024,
                peak(&|s| s.keys as i64),
                peak(&|s| s.peers as i64),
                peak(&|s| s.state as i64),
                peak(&|s| s.sent[1] as i64),
                peak(&|s| s.handshakes as i64),
                peak(&|s| s.sent.iter().sum::<u64>() as i64),
                by_kind.join(" "),
            );
        }
        for (h, hour) in self.samples.iter().enumerate() {
            let hellos: u64 = hour.iter().map(|s| s.sent[1]).sum();
            let msgs: u64 = hour.iter().map(|s| s.sent.iter().sum::<u64>()).sum();
            let heap: i64 = hour.iter().map(|s| s.heap).sum();
            let worst = hour
                .iter()
                .zip(&self.nodes)
                .max_by_key(|(s, _)| s.sent[1])
                .map(|(s, n)| format!("{} {}", n.name, s.sent[1]))
                .unwrap_or_default();
            eprintln!(
                "  hour {h:>2}: hellos {hellos:>6} (most: {worst}), messages {msgs:>7}, heap of all parties {:>6} KiB",
                heap / 1024
            );
        }
    }

    /// Bounded memory and control traffic per party, hour over hour, while
    /// the insiders inject made-up instance ids all day.
    fn check_bounds(&self) {
        let seed = self.seed;
        let w = self.warm_up_hours();
        let hours = self.samples.len();
        assert!(hours > w, "seed {seed}: run shorter than the warm-up");
        let mid = w + (hours - w) / 2;
        for (i, n) in self.nodes.iter().enumerate() {
            for (h, hour) in self.samples.iter().enumerate().skip(w) {
                let s = &hour[i];
                if !s.up {
                    continue;
                }
                assert!(
                    s.sent[1] <= HELLOS_PER_HOUR,
                    "seed {seed}: {} sent {} Hellos in hour {h} (bound {HELLOS_PER_HOUR})",
                    n.name,
                    s.sent[1]
                );
                let sent: u64 = s.sent.iter().sum();
                assert!(
                    sent <= MESSAGES_PER_HOUR,
                    "seed {seed}: {} sent {sent} messages in hour {h} (bound {MESSAGES_PER_HOUR})",
                    n.name
                );
                assert!(
                    s.heap <= HEAP_BYTES,
                    "seed {seed}: {} heap {} bytes in hour {h} (bound {HEAP_BYTES})",
                    n.name,
                    s.heap
                );
            }
            let peak = |range: std::ops::Range<usize>, f: &dyn Fn(&Sample) -> i64| {
                self.samples[range]
                    .iter()
                    .map(|h| &h[i])
                    .filter(|s| s.up)
                    .map(f)
                    .max()
            };
            let measures: [Measure; 3] = [
                ("heap bytes", &|s| s.heap, GROWTH_SLACK_BYTES),
                ("keys held", &|s| s.keys as i64, GROWTH_SLACK_ITEMS),
                ("sessions", &|s| s.peers as i64, GROWTH_SLACK_ITEMS),
            ];
            for (what, f, slack) in measures {
                let (Some(first), Some(second)) = (peak(w..mid, f), peak(mid..hours, f)) else {
                    continue;
                };
                assert!(
                    second <= first * GROWTH_PER_MILLE / 1000 + slack,
                    "seed {seed}: {} {what} grew from {first} (hours {w}-{}) to {second} (hours {mid}-{})",
                    n.name,
                    mid - 1,
                    hours - 1
                );
            }
        }
    }
}

/// Long horizon: a simulated day (`KAFKA_E2EE_SIM_HOURS`, default 24) with
/// the insiders active all day; asserts everything `simulation_fixed_seeds`
/// does, plus bounded memory and control traffic per party (`check_bounds`).
/// `KAFKA_E2EE_SIM_HOURS=24 KAFKA_E2EE_SIM_SEED=0 cargo test --release -p
/// kafka-e2ee-core --test simulation long_horizon -- --ignored --nocapture`
#[test]
#[ignore = "long: run with --ignored (KAFKA_E2EE_SIM_HOURS, KAFKA_E2EE_SIM_SEED)"]
fn long_horizon() {
    let _one = MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let hours = env("KAFKA_E2EE_SIM_HOURS", 24);
    let seed = env("KAFKA_E2EE_SIM_SEED", 0);
    let mut sim = Sim::new(seed, long_params(hours));
    sim.run();
    sim.report_bounds();
    sim.check();
    sim.check_bounds();
}
