//! Deterministic simulation of many producers and consumers exchanging keys
//! over a faulty control channel, in the style of quinn-proto's test harness:
//! one seed drives every random choice (engine RNGs, network faults, crash
//! times, workload), and a virtual clock jumps from event to event.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use kafka_e2ee_core::format::{KeyBinding, KeyId, RecordHeader};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Engine, EngineConfig, Error, KeyUnavailable, Opened, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const T0: u64 = 1_790_000_000_000; // a fixed wall-clock start
const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;
/// How soon after sealing a producer may die for good and take the key with
/// it (see `check`); key delivery takes seconds even under the simulated faults.
const LOSS_WINDOW_MS: u64 = 60 * SEC;

/// Fixed seeds the test command runs; any seed that ever failed goes here.
// 215, 524, 531 and 574 (found by `scripts/long-run`) each lose one record with a
// producer that died for good before handing its key on: see `check`.
const FIXED_SEEDS: &[u64] = &[1, 2, 3, 4, 215, 524, 531, 574];

#[derive(Clone, Default)]
struct MemStorage(Arc<Mutex<Option<Vec<u8>>>>);

impl Storage for MemStorage {
    fn load(&mut self) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn store(&mut self, blob: &[u8]) -> Result<(), String> {
        *self.0.lock().unwrap() = Some(blob.to_vec());
        Ok(())
    }
}

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
    /// Retry bookkeeping: the key generation and record count at the last pass.
    last_pass: (u64, usize, u64),
}

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
    producers: usize,
    consumers: usize,
    topics: usize,
    duration_ms: u64,
    drop_per_mille: u64,
    dup_per_mille: u64,
    max_delay_ms: u64,
    crash_per_mille: u64,
    records_per_producer: usize,
}

/// A control message on its way to one reader: (receiver node, bytes).
type Delivery = (usize, Rc<[u8]>);

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
    net: BTreeMap<(u64, u64), Delivery>,
    seq: u64,
    /// Every control message seen, for the attacker to replay.
    captured: Vec<Rc<[u8]>>,
    p: Params,
    forged_rejected: u64,
}

fn topic_name(i: usize) -> String {
    format!("t{i}")
}

impl Sim {
    fn new(seed: u64, p: Params) -> Sim {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let authority = Authority::generate(&mut rng);
        let rogue_authority = Authority::generate(&mut rng);
        let config = EngineConfig {
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
        };
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
            p,
            forged_rejected: 0,
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
        sim.add_node("expiring".into(), Kind::Expiring, vec![], all);
        // Deny lists are part of everyone's trust anchor, so build engines last.
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        // Crash schedule.
        for i in 0..sim.nodes.len() {
            if sim.rng.next_u64() % 1000 < sim.p.crash_per_mille
                && matches!(sim.nodes[i].kind, Kind::Producer | Kind::Consumer)
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
            last_pass: (u64::MAX, 0, 0),
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
        let auth = if kind == Kind::Rogue {
            &self.rogue_authority
        } else {
            &self.authority
        };
        Identity::generate(
            name,
            pats(produce),
            pats(consume),
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
        let engine = Engine::new(
            self.config.clone(),
            identity,
            trust,
            self.now,
            rng,
            Some(storage),
        )
        .unwrap_or_else(|e| panic!("seed {}: {} failed to start: {e}", self.seed, n.name));
        let n = &mut self.nodes[i];
        n.engine = Some(engine);
        n.next_tick = self.now;
        n.up_since = self.now;
    }

    fn send(&mut self, from: usize, bytes: Vec<u8>) {
        let bytes: Rc<[u8]> = bytes.into();
        self.captured.push(Rc::clone(&bytes));
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
            self.send(i, msg.payload);
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
        match engine.seal(&topic, binding, &mut value) {
            Ok(header) => {
                assert!(
                    len == 0 || value != plaintext || len < 4,
                    "seed {}: seal left plaintext",
                    self.seed
                );
                let key_id = RecordHeader::decode(&header).unwrap().key_id;
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
        if generation == last_gen && last_count == self.records.len() && now < last_at + period {
            return;
        }
        n.last_pass = (generation, self.records.len(), now);
        for (idx, r) in self.records.iter().enumerate() {
            if n.opened.contains_key(&idx) || !n.consume.contains(&r.topic) {
                continue;
            }
            let mut value = r.ciphertext.clone();
            let binding = r.key.as_deref().map_or(KeyBinding::Null, KeyBinding::Bytes);
            match engine.open(&r.topic, Some(&r.header), binding, &mut value) {
                Ok(Opened::Decrypted) => {
                    assert_eq!(
                        value, r.plaintext,
                        "seed {seed}: {} opened record {idx} to wrong plaintext",
                        n.name
                    );
                    assert!(
                        matches!(n.kind, Kind::Consumer | Kind::Expiring),
                        "seed {seed}: {} ({:?}) opened record {idx}",
                        n.name,
                        n.kind
                    );
                    n.opened.insert(idx, now);
                }
                Ok(Opened::Plaintext) => {
                    panic!("seed {seed}: record with header passed as plaintext")
                }
                Err(Error::KeyUnavailable {
                    reason: KeyUnavailable::Pending,
                    ..
                }) => {}
                Err(Error::KeyUnavailable { .. }) if n.kind != Kind::Consumer => {}
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
            for (i, n) in self.nodes.iter().enumerate() {
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
            }
            while let Some((&(at, seq), _)) = self.net.first_key_value() {
                if at > self.now {
                    break;
                }
                let (to, bytes) = self.net.remove(&(at, seq)).unwrap();
                if let Some(engine) = self.nodes[to].engine.as_ref() {
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
                        engine
                            .handle_timeout(self.now)
                            .unwrap_or_else(|e| panic!("seed {}: tick: {e}", self.seed));
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
                    next_produce[i] = self.now + 50 + self.rng.next_u64() % (2 * SEC);
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
        // Liveness: every authorized, live consumer opened every record of its topics.
        for n in &self.nodes {
            if n.kind != Kind::Consumer || n.engine.is_none() {
                continue;
            }
            for (idx, r) in self.records.iter().enumerate() {
                if !n.consume.contains(&r.topic) || lost_with_producer.contains(&idx) {
                    continue;
                }
                let Some(at) = n.opened.get(&idx) else {
                    panic!(
                        "seed {seed}: {} never opened record {idx} on {} (key {})",
                        n.name, r.topic, r.key_id
                    );
                };
                worst_wait = worst_wait.max(at.saturating_sub(r.sealed_at.max(n.up_since)));
            }
        }
        // Bounded: no consumer waited longer than this for any key.
        assert!(
            worst_wait <= 2 * MIN,
            "seed {seed}: a consumer waited {worst_wait} ms for a key"
        );
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
                    Kind::Consumer | Kind::Producer => {
                        if holds && n.kind == Kind::Consumer {
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
        // ... nor in any state directory: a restart from storage restores nothing old.
        for n in &self.nodes {
            if n.engine.is_none() || n.kind != Kind::Producer {
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
        for n in &self.nodes {
            if let Some(e) = n.engine.as_ref() {
                let m = e.metrics();
                handshakes += m.handshakes;
                if std::env::var("SIM_DEBUG").is_ok() {
                    eprintln!("{} {:?}", n.name, m);
                }
                served += m.keys_served;
            }
        }
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
        producers: 20,
        consumers: 20,
        topics: 5,
        duration_ms: 8 * MIN,
        drop_per_mille: 50,
        dup_per_mille: 50,
        max_delay_ms: 800,
        crash_per_mille: 200,
        records_per_producer: 60,
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
