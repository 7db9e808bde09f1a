//! Test helper: seals records with the real core engine and writes them to a
//! topic with their `e2ee` header, as a kafka-e2ee producer would. Used by
//! tests/integration/test_cli.py to make topics of real ciphertext.
//!
//!   produce_sealed BOOTSTRAP TOPIC COUNT CREDENTIAL TRUST [ROTATE_EVERY]
//!
//! Prints one line per record: `<key id> <offset>`. ROTATE_EVERY (default
//! 0 = never) moves to a new epoch every that many records, by advancing the
//! engine's clock past the rotation interval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_e2ee_core::format::{KeyBinding, RecordHeader, HEADER_NAME};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::trust::{Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Engine, EngineConfig};
use rskafka::chrono::DateTime;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, topic, count, cred, trust, rest @ ..] = args.as_slice() else {
        eprintln!("usage: produce_sealed BOOTSTRAP TOPIC COUNT CREDENTIAL TRUST [ROTATE_EVERY]");
        std::process::exit(2);
    };
    let count: u64 = count.parse().expect("COUNT");
    let rotate_every: u64 = rest.first().map_or(0, |r| r.parse().expect("ROTATE_EVERY"));
    let identity = Identity::from_file_bytes(&std::fs::read(cred).unwrap()).unwrap();
    let anchor = TrustAnchor::from_file_bytes(&std::fs::read(trust).unwrap()).unwrap();
    let mut now = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let config = EngineConfig {
        key: KeyPolicy {
            rotation_ms: 60_000,
            rotation_records: 1_000_000,
            retention_ms: 3_600_000,
        },
        protected_topics: vec![TopicPattern::all()],
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        config,
        identity,
        anchor,
        now,
        Box::new(rand_core::OsRng),
        None,
    )
    .unwrap();
    let mut records = Vec::new();
    let mut ids = Vec::new();
    for i in 0..count {
        if rotate_every > 0 && i > 0 && i % rotate_every == 0 {
            now += 61_000;
            engine.handle_timeout(now).unwrap();
        }
        let key = format!("key-{i}").into_bytes();
        let mut value = format!("secret value {i}").into_bytes();
        let header = engine
            .seal(topic, KeyBinding::Bytes(&key), &mut value)
            .unwrap();
        ids.push(RecordHeader::decode(&header).unwrap().key_id);
        records.push(Record {
            key: Some(key),
            value: Some(value),
            headers: BTreeMap::from([(HEADER_NAME.to_owned(), header.to_vec())]),
            // The record time: wall clock, plus the simulated rotations.
            timestamp: DateTime::from_timestamp_millis(i64::try_from(now).unwrap()).unwrap(),
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let offsets = rt.block_on(async {
        let client = ClientBuilder::new(vec![bootstrap.clone()])
            .build()
            .await
            .unwrap();
        let pc = client
            .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        pc.produce(records, Compression::NoCompression)
            .await
            .unwrap()
    });
    for (id, off) in ids.iter().zip(offsets) {
        println!("{id} {off}");
    }
}
