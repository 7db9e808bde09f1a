//! What asynchronous key delivery (key exchange v2) costs, measured on the
//! engine alone (no broker): the keys-topic bytes per rotation, and the
//! start-up work of a consumer that must read its envelopes, for one
//! producer, `CONSUMERS` consumer instances and `TOPICS` topics at the
//! default rotation (15 min); and a keeper holding `DAYS` days of keys (the
//! default retention). docs/PERFORMANCE.md has the figures.
//!
//!   cargo run --release -p kafka-e2ee-core --example key_exchange_cost
//!   cargo run --release -p kafka-e2ee-core --example key_exchange_cost -- 100 10 7
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use kafka_e2ee_core::format::KeyBinding;
use kafka_e2ee_core::state::MemoryStorage as Mem;
use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Channel, Engine, EngineConfig, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: u64 = 1_790_000_000_000;

struct Log {
    /// The keys topic as the broker keeps it (compaction left aside).
    keys: Vec<Vec<u8>>,
    control_bytes: usize,
}

/// Drains every engine's outbox into the log, delivering to the others.
fn run(engines: &[&Engine], log: &mut Log, now: u64) {
    loop {
        for e in engines {
            e.handle_timeout(now).unwrap();
        }
        let mut moved = false;
        for (i, from) in engines.iter().enumerate() {
            while let Some(m) = from.poll_transmit() {
                moved = true;
                match m.channel {
                    Channel::Keys => log.keys.push(m.payload.clone()),
                    Channel::Control => log.control_bytes += m.payload.len(),
                }
                for (j, to) in engines.iter().enumerate() {
                    if i != j {
                        let _ = to.handle_control(now, &m.payload);
                    }
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn identity(rng: &mut ChaCha20Rng, a: &Authority, name: &str, produce: bool) -> Identity {
    let all = vec![TopicPattern::all()];
    Identity::generate(
        name,
        if produce { all.clone() } else { Vec::new() },
        if produce { Vec::new() } else { all },
        T0 - 60_000,
        T0 + 400 * 86_400_000,
        a,
        rng,
    )
}

fn engine(
    rng: &mut ChaCha20Rng,
    trust: &TrustAnchor,
    id: Identity,
    mem: Option<Mem>,
    now: u64,
) -> Engine {
    Engine::new(
        EngineConfig::default(),
        id,
        trust.clone(),
        now,
        Box::new(ChaCha20Rng::from_rng(&mut *rng).unwrap()),
        mem.map(|m| Box::new(m) as Box<dyn Storage>),
    )
    .unwrap()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let consumers = *args.first().unwrap_or(&100) as usize;
    let topics = *args.get(1).unwrap_or(&10) as usize;
    let days = *args.get(2).unwrap_or(&7);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let authority = Authority::generate(&mut rng);
    let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
    let cfg = EngineConfig::default();
    let rotation = cfg.key.rotation_ms;
    let mut log = Log {
        keys: Vec::new(),
        control_bytes: 0,
    };

    // The consumers (one with a state directory, whose start-up we time
    // later) and the keeper start first and publish their prekeys.
    let mut cons = Vec::new();
    let probe_state = Mem::default();
    let probe_id = identity(&mut rng, &authority, "probe", false);
    let probe_file = probe_id.to_file_bytes();
    cons.push(engine(
        &mut rng,
        &trust,
        probe_id,
        Some(probe_state.clone()),
        T0,
    ));
    for i in 1..consumers {
        let id = identity(&mut rng, &authority, &format!("c{i}"), false);
        cons.push(engine(&mut rng, &trust, id, None, T0));
    }
    let keeper_state = Mem::default();
    let keeper_id = identity(&mut rng, &authority, "keeper", false);
    let keeper_file = keeper_id.to_file_bytes();
    let keeper = engine(&mut rng, &trust, keeper_id, Some(keeper_state.clone()), T0);
    let mut all: Vec<&Engine> = cons.iter().collect();
    all.push(&keeper);
    run(&all, &mut log, T0);
    let prekey_bytes: usize = log.keys.iter().map(Vec::len).sum();
    let prekey_records = log.keys.len();

    // The producer writes to every topic in every epoch, for `days` days.
    let pid = identity(&mut rng, &authority, "producer", true);
    let producer = engine(&mut rng, &trust, pid, None, T0);
    for m in &log.keys {
        let _ = producer.handle_control(T0, m);
    }
    let rotations = days * 86_400_000 / rotation;
    let mut per_rotation = Vec::new();
    let mut seal_time = 0f64;
    // Only the producer runs on: the consumers are offline (their envelopes
    // wait on the keys topic); the keeper, offline too, reads later.
    for r in 0..rotations {
        let now = T0 + r * rotation + 1;
        let before = log.keys.iter().map(Vec::len).sum::<usize>();
        for t in 0..topics {
            let mut v = vec![0u8; 1024];
            producer
                .seal(&format!("topic-{t}"), KeyBinding::Unbound, &mut v)
                .unwrap();
        }
        let t0 = Instant::now();
        run(&[&producer], &mut log, now);
        seal_time += t0.elapsed().as_secs_f64();
        per_rotation.push(log.keys.iter().map(Vec::len).sum::<usize>() - before);
        // Consumers republish prekeys every hour; at 4 rotations an hour
        // that is about one prekeys record per consumer per 4 rotations,
        // counted below from their size at start.
    }
    let end = T0 + rotations * rotation + 1;
    let envelope_bytes: usize = per_rotation.iter().sum();
    let steady = per_rotation.iter().skip(1).copied().max().unwrap_or(0);
    let log_bytes: usize = log.keys.iter().map(Vec::len).sum();

    // A consumer that was offline the whole time starts on its state
    // directory and reads the keys topic from the beginning.
    let t0 = Instant::now();
    let probe = engine(
        &mut rng,
        &trust,
        Identity::from_file_bytes(&probe_file).unwrap(),
        Some(probe_state),
        end,
    );
    for m in &log.keys {
        let _ = probe.handle_control(end, m);
    }
    probe.handle_timeout(end).unwrap();
    let probe_time = t0.elapsed().as_secs_f64();
    let probe_keys = probe.metrics().keys_received;

    // The keeper likewise: then it holds every key of the retention.
    let t0 = Instant::now();
    let keeper = engine(
        &mut rng,
        &trust,
        Identity::from_file_bytes(&keeper_file).unwrap(),
        Some(keeper_state.clone()),
        end,
    );
    for m in &log.keys {
        let _ = keeper.handle_control(end, m);
    }
    keeper.handle_timeout(end).unwrap();
    let keeper_time = t0.elapsed().as_secs_f64();
    let keeper_state_bytes = keeper_state.blob().map_or(0, |b| b.len());
    // And a restart of the keeper on that state (keys topic read again).
    drop(keeper);
    let t0 = Instant::now();
    let keeper = engine(
        &mut rng,
        &trust,
        Identity::from_file_bytes(&keeper_file).unwrap(),
        Some(keeper_state),
        end + 1000,
    );
    let restore_time = t0.elapsed().as_secs_f64();
    let held_after_restart = keeper.metrics();
    let _ = held_after_restart;

    println!("setup: 1 producer, {consumers} consumer instances + 1 keeper, {topics} topics, rotation {} min, {days} days ({rotations} rotations)", rotation / 60_000);
    println!("prekeys: {prekey_records} records, {prekey_bytes} bytes in all ({} bytes each), republished once an hour per mailbox", prekey_bytes / prekey_records.max(1));
    println!("envelopes per rotation (steady): {steady} bytes ({:.1} KiB), {} envelopes of {} topic keys", steady as f64 / 1024.0, consumers + 1, topics);
    println!(
        "envelopes, {days} days: {envelope_bytes} bytes ({:.1} MiB); keys topic total {:.1} MiB",
        envelope_bytes as f64 / 1048576.0,
        log_bytes as f64 / 1048576.0
    );
    println!(
        "producer CPU sealing envelopes: {:.1} ms per rotation",
        seal_time * 1000.0 / rotations as f64
    );
    println!("control topic bytes meanwhile: {}", log.control_bytes);
    println!("consumer start-up after {days} days offline: read {} records ({:.1} MiB) in {:.2} s, {probe_keys} keys received", log.keys.len(), log_bytes as f64 / 1048576.0, probe_time);
    println!("keeper: start-up reading the same in {keeper_time:.2} s, state {keeper_state_bytes} bytes; restart on its state {restore_time:.3} s");
}
