//! `kafka-e2ee inspect`: the broker's-eye view of a topic. Reads a sample of
//! records without any key and classifies each by its `e2ee` header. It
//! cannot check a tag (that needs the key), so "encrypted" means "carries a
//! well-formed header"; a consumer still verifies every record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kafka_e2ee_core::exchange::mailbox::{
    Prekeys, SealedEnvelope, KIND_ENVELOPE, KIND_ENVELOPE_HYBRID, KIND_PREKEYS, KIND_PREKEYS_HYBRID,
};
use kafka_e2ee_core::format::{RecordHeader, HEADER_NAME, SEALED_HEADERS_NAME, SEALED_KEY_NAME};
use kafka_e2ee_core::trust::{Credential, TopicPattern};
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

use crate::json::{self, Value};
use crate::props::{self, Property};
use crate::{kafka, progress, timefmt, Output};

pub struct Options<'a> {
    pub bootstrap: Option<&'a str>,
    pub topic: &'a str,
    pub config: Option<&'a Path>,
    pub max: usize,
    pub timeout: Duration,
    pub now: u64,
}

#[derive(Default)]
struct KeyStats {
    records: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
}

#[derive(Default)]
struct Tally {
    encrypted: u64,
    plaintext: u64,
    malformed: u64,
    tombstones: u64,
    /// Encrypted records whose application headers are sealed (e2ee.h).
    sealed_headers: u64,
    /// Encrypted records with application headers in clear (all of them
    /// with e2ee.headers=clear or from earlier versions; those listed in
    /// e2ee.headers.clear otherwise).
    clear_headers: u64,
    /// Encrypted records (and tombstones) whose key is a token, the real key
    /// sealed in e2ee.k (e2ee.keys=tokenize).
    tokenized_keys: u64,
    /// Encrypted records with a key in clear.
    clear_keys: u64,
    /// Offsets of the first few suspicious records, for the report.
    examples: Vec<String>,
    keys: BTreeMap<(String, u32), KeyStats>,
    malformed_reasons: BTreeMap<String, u64>,
}

pub fn run(opts: &Options<'_>) -> Result<Output, String> {
    let config: Vec<Property> = match opts.config {
        Some(p) => props::parse(
            &std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
        None => Vec::new(),
    };
    let protected = match props::get(&config, "e2ee.topics") {
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(TopicPattern::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("e2ee.topics in the config: {e}"))?,
        None => vec![TopicPattern::all()],
    };
    // The control topic's messages are sealed by the key exchange itself,
    // not by the record format.
    let control = props::get(&config, "e2ee.control.topic")
        .map(str::trim)
        .unwrap_or("_e2ee_control");
    let is_protected = opts.topic != control && protected.iter().any(|p| p.matches(opts.topic));
    let conn = kafka::Connection::from_config(opts.bootstrap, &config, opts.timeout)?;
    progress(&format!("connecting to {} ...", conn.bootstrap.join(",")));
    let client = conn.connect()?;
    let partitions = match kafka::topics(&conn, &client)?
        .into_iter()
        .find(|(n, _)| n == opts.topic)
    {
        Some((_, n)) => (0..i32::try_from(n).unwrap_or(i32::MAX)).collect::<Vec<i32>>(),
        None => {
            return Err(format!(
                "topic '{}' does not exist on {}",
                opts.topic,
                conn.bootstrap.join(",")
            ))
        }
    };
    let mut report_progress = |done: usize, records: usize| {
        progress(&format!(
            "read partition {done}/{} ({records} records so far)",
            partitions.len()
        ));
    };
    let samples = kafka::sample(
        &conn,
        &client,
        opts.topic,
        &partitions,
        opts.max,
        &mut report_progress,
    )?;
    let mut t = Tally::default();
    for s in &samples {
        for r in &s.records {
            classify(&mut t, s.partition, r);
        }
    }
    let keys_topic = props::get(&config, "e2ee.keys.topic")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("_e2ee_keys");
    let directory = if t.keys.is_empty() || opts.topic == keys_topic {
        None
    } else {
        progress(&format!("reading {keys_topic} for the key recipients ..."));
        Some(read_directory(&conn, &client, keys_topic))
    };
    let mut out = render(opts, is_protected, &samples, &t);
    if let Some(directory) = directory {
        recipients_section(&mut out, keys_topic, &t, directory);
    }
    Ok(out)
}

/// Most keys-topic records inspect reads (the topic is compacted: about one
/// prekeys record per mailbox and one envelope per epoch and recipient).
const MAX_DIRECTORY_RECORDS: usize = 1_000_000;

/// A mailbox as its prekeys record describes it (names are public there).
struct MailboxInfo {
    name: String,
    keeper: bool,
}

/// What the keys topic says about recipients: mailboxes by id, and the
/// mailboxes each (producer instance, epoch) sealed envelopes to.
#[derive(Default)]
struct Directory {
    mailboxes: BTreeMap<String, MailboxInfo>,
    sealed_to: BTreeMap<(String, u32), BTreeSet<String>>,
    /// (producer, epoch, mailbox) of the envelopes sealed classically
    /// (X25519 only: a broker that keeps them opens them once it can break
    /// X25519; docs/PROTOCOL.md, section 5d).
    classical: BTreeSet<(String, u32, String)>,
    records: usize,
    truncated: bool,
}

fn read_directory(
    conn: &kafka::Connection,
    client: &rskafka::client::Client,
    topic: &str,
) -> Result<Directory, String> {
    let partitions = kafka::topics(conn, client)?
        .into_iter()
        .find(|(n, _)| n == topic)
        .map(|(_, n)| n)
        .ok_or_else(|| {
            format!("{topic} does not exist: no client has started with a keys topic")
        })?;
    let mut d = Directory::default();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let pc = conn.run(client.partition_client(topic, p, UnknownTopicHandling::Error))?;
        let mut offset = conn.run(pc.get_offset(OffsetAt::Earliest))?;
        let latest = conn.run(pc.get_offset(OffsetAt::Latest))?;
        while offset < latest {
            if d.records >= MAX_DIRECTORY_RECORDS {
                d.truncated = true;
                break;
            }
            let (batch, _high) = conn.run(pc.fetch_records(offset, 1..4_194_304, 500))?;
            let Some(last) = batch.last().map(|r| r.offset) else {
                break;
            };
            for r in batch
                .iter()
                .filter(|r| r.offset >= offset && r.offset < latest)
            {
                d.records += 1;
                if let Some(v) = &r.record.value {
                    d.add(v);
                }
            }
            offset = last + 1;
        }
    }
    Ok(d)
}

impl Directory {
    /// Records that do not decode are skipped: inspect reports, the clients
    /// verify (signatures included), and a forged record changes no key.
    fn add(&mut self, value: &[u8]) {
        match value.get(5) {
            Some(&KIND_PREKEYS | &KIND_PREKEYS_HYBRID) => {
                let Ok(p) = Prekeys::decode(value) else {
                    return;
                };
                let name = Credential::decode(&p.credential)
                    .map(|c| c.name().to_owned())
                    .unwrap_or_else(|_| "(unreadable credential)".into());
                let id = p.mailbox.to_string();
                // Compaction may leave an older record next to a newer one.
                self.mailboxes.insert(
                    id,
                    MailboxInfo {
                        name,
                        keeper: p.keeper,
                    },
                );
            }
            Some(&KIND_ENVELOPE | &KIND_ENVELOPE_HYBRID) => {
                let Ok(e) = SealedEnvelope::decode(value) else {
                    return;
                };
                if e.kem_ct.is_none() {
                    self.classical
                        .insert((e.producer.to_string(), e.epoch, e.mailbox.to_string()));
                }
                self.sealed_to
                    .entry((e.producer.to_string(), e.epoch))
                    .or_default()
                    .insert(e.mailbox.to_string());
            }
            _ => {}
        }
    }
}

fn recipients_section(
    out: &mut Output,
    keys_topic: &str,
    t: &Tally,
    directory: Result<Directory, String>,
) {
    let d = match directory {
        Ok(d) => d,
        Err(e) => {
            out.text.push_str(&format!(
                "\n  key recipients: cannot read {keys_topic}: {e}\n"
            ));
            out.json = json_add(&out.json, "recipients_error", Value::Str(e));
            return;
        }
    };
    out.text.push_str(&format!(
        "\n  key recipients (from {keys_topic}, {} record(s){}):\n",
        d.records,
        if d.truncated { ", read partly" } else { "" }
    ));
    let mut items = Vec::new();
    let (mut without_keeper, mut without_anyone) = (0usize, 0usize);
    for (p, e) in t.keys.keys() {
        let mailboxes = d.sealed_to.get(&(p.clone(), *e));
        let mut names: Vec<String> = Vec::new();
        let mut keepers = 0u64;
        let mut classical = 0u64;
        for m in mailboxes.into_iter().flatten() {
            let mut name = match d.mailboxes.get(m) {
                Some(info) if info.keeper => {
                    keepers += 1;
                    format!("{} (keeper)", info.name)
                }
                Some(info) => info.name.clone(),
                None => format!("mailbox {m} (no prekeys record left)"),
            };
            if d.classical.contains(&(p.clone(), *e, m.clone())) {
                classical += 1;
                name.push_str(" (classical envelope)");
            }
            names.push(name);
        }
        let n = mailboxes.map_or(0, BTreeSet::len) as u64;
        let flag = if n == 0 {
            without_anyone += 1;
            "  NO RECIPIENT: nobody will be able to read these records after the producer exits"
                .to_owned()
        } else if keepers == 0 {
            without_keeper += 1;
            "  (no keeper)".to_owned()
        } else {
            String::new()
        };
        out.text.push_str(&format!(
            "    {p}/{e}  sealed to {n} mailbox(es){}{}{flag}\n",
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        ));
        items.push(crate::json::object(&[
            ("key_id", Value::Str(format!("{p}/{e}"))),
            ("mailboxes", Value::Num(n)),
            ("keepers", Value::Num(keepers)),
            ("classical", Value::Num(classical)),
            ("names", Value::List(names)),
        ]));
    }
    if without_anyone > 0 {
        out.text.push_str(&format!(
            "  warning: {without_anyone} epoch(s) were sealed to no recipient: nobody will be able \
             to read these records after the producer exits (no consumer or keeper with a \
             mailbox had published prekeys before the epoch ended)\n"
        ));
    }
    if without_keeper > 0 {
        out.text.push_str(&format!(
            "  warning: no keeper among the recipients of {without_keeper} epoch(s): a consumer \
             that starts after the producer exits can read them only from a live holder \
             (run `kafka-e2ee keeper`, docs/KEEPER.md)\n"
        ));
    }
    out.json = json_add(
        &out.json,
        "recipients",
        Value::Raw(crate::json::array(&items)),
    );
}

/// Adds one field to a rendered JSON object.
fn json_add(object: &str, name: &str, value: Value) -> String {
    let field = crate::json::object(&[(name, value)]);
    match (object.strip_suffix('}'), field.strip_prefix('{')) {
        (Some(head), Some(tail)) if head.trim_end().ends_with('{') => format!("{head}{tail}"),
        (Some(head), Some(tail)) => format!("{head},{tail}"),
        _ => object.to_owned(),
    }
}

fn classify(t: &mut Tally, partition: i32, r: &rskafka::record::RecordAndOffset) {
    let rec = &r.record;
    let at = format!("{partition}@{}", r.offset);
    let note = |t: &mut Tally, what: &str| {
        if t.examples.len() < 5 {
            t.examples.push(format!("{at}: {what}"));
        }
    };
    match (rec.headers.get(HEADER_NAME), &rec.value) {
        (None, None) => t.tombstones += 1,
        (None, Some(_)) => {
            t.plaintext += 1;
            note(t, "no e2ee header (plaintext)");
        }
        // A tombstone of a tokenized key carries e2ee and e2ee.k over an
        // empty value (docs/FORMAT.md section 13.5).
        (Some(h), None)
            if rec.headers.contains_key(SEALED_KEY_NAME)
                && RecordHeader::decode(h).is_ok_and(|h| h.has_token_key()) =>
        {
            t.tombstones += 1;
            t.tokenized_keys += 1;
        }
        (Some(_), None) => {
            t.malformed += 1;
            *t.malformed_reasons
                .entry("e2ee header on a null value".into())
                .or_default() += 1;
            note(t, "e2ee header on a null value");
        }
        (Some(h), Some(_)) => match RecordHeader::decode(h) {
            Ok(h) => {
                t.encrypted += 1;
                t.sealed_headers += u64::from(h.has_sealed_headers());
                t.clear_headers +=
                    u64::from(rec.headers.keys().any(|k| {
                        k != HEADER_NAME && k != SEALED_HEADERS_NAME && k != SEALED_KEY_NAME
                    }));
                t.tokenized_keys += u64::from(h.has_token_key());
                t.clear_keys += u64::from(!h.has_token_key() && rec.key.is_some());
                let ts = rec.timestamp.timestamp_millis();
                let k = t
                    .keys
                    .entry((h.key_id.producer.to_string(), h.key_id.epoch))
                    .or_default();
                k.records += 1;
                k.first_ts = Some(k.first_ts.map_or(ts, |f| f.min(ts)));
                k.last_ts = Some(k.last_ts.map_or(ts, |l| l.max(ts)));
            }
            Err(e) => {
                t.malformed += 1;
                let reason = e.to_string();
                note(t, &format!("bad e2ee header: {reason}"));
                *t.malformed_reasons.entry(reason).or_default() += 1;
            }
        },
    }
}

fn render(
    opts: &Options<'_>,
    is_protected: bool,
    samples: &[kafka::PartitionSample],
    t: &Tally,
) -> Output {
    let total = t.encrypted + t.plaintext + t.malformed + t.tombstones;
    let on_broker: i64 = samples.iter().map(|s| s.latest - s.earliest).sum();
    let mut text = format!(
        "topic {} ({} partition(s), {} record(s) on the broker; sampled the newest {total})\n\
         \n  encrypted   {:>8}   (well-formed e2ee header; tags are checked by consumers)\
         \n    headers sealed   {:>8}   (application headers in e2ee.h, docs/FORMAT.md section 12)\
         \n    headers in clear {:>8}   (readable application headers)\
         \n    keys tokenized   {:>8}   (the broker sees a token, the key is in e2ee.k, docs/FORMAT.md section 13)\
         \n    keys in clear    {:>8}   (readable record keys; e2ee.keys=tokenize hides them)\
         \n  plaintext   {:>8}\
         \n  malformed   {:>8}\
         \n  tombstones  {:>8}   (null values stay null)\n",
        opts.topic,
        samples.len(),
        on_broker,
        t.encrypted,
        t.sealed_headers,
        t.clear_headers,
        t.tokenized_keys,
        t.clear_keys,
        t.plaintext,
        t.malformed,
        t.tombstones
    );
    for (reason, n) in &t.malformed_reasons {
        text.push_str(&format!("      {n} x {reason}\n"));
    }
    // Producers: instance id -> (epochs seen, records).
    let mut producers: BTreeMap<&str, (Vec<u32>, u64)> = BTreeMap::new();
    for ((p, e), k) in &t.keys {
        let entry = producers.entry(p.as_str()).or_default();
        entry.0.push(*e);
        entry.1 += k.records;
    }
    let mut producer_items = Vec::new();
    if !producers.is_empty() {
        text.push_str(&format!("\n  producers seen: {}\n", producers.len()));
        for (p, (epochs, n)) in &producers {
            let span = match (epochs.first(), epochs.last()) {
                (Some(a), Some(b)) if a != b => format!("epochs {a}..{b} ({} seen)", epochs.len()),
                (Some(a), _) => format!("epoch {a}"),
                _ => String::new(),
            };
            text.push_str(&format!("    {p}  {span}, {n} record(s)\n"));
            producer_items.push(json::object(&[
                ("producer", Value::Str((*p).to_owned())),
                (
                    "epochs",
                    Value::Raw(json::array(
                        &epochs.iter().map(u32::to_string).collect::<Vec<_>>(),
                    )),
                ),
                ("records", Value::Num(*n)),
            ]));
        }
    }
    // The newest key: the key id whose records are the most recent; its age
    // is from its first record in the sample, so it is a lower bound.
    let newest = t
        .keys
        .iter()
        .max_by_key(|(_, k)| k.last_ts)
        .and_then(|((p, e), k)| Some((p, e, k.first_ts?)));
    let mut newest_json = Value::Null;
    if let Some((p, e, first)) = newest {
        let first = u64::try_from(first).unwrap_or(0);
        let age_s = opts.now.saturating_sub(first) / 1000;
        text.push_str(&format!(
            "  newest key: {p}/{e}, in use since at least {} (age >= {age_s} s)\n",
            timefmt::format_instant(first)
        ));
        newest_json = Value::Raw(json::object(&[
            ("key_id", Value::Str(format!("{p}/{e}"))),
            ("first_seen_ms", Value::Num(first)),
            ("age_s", Value::Num(age_s)),
        ]));
    }
    let exposed = t.plaintext + t.malformed;
    let verdict = if total == 0 {
        "no records to judge".to_owned()
    } else if exposed == 0 && t.encrypted > 0 {
        "every sampled record with a value is encrypted".to_owned()
    } else if exposed == 0 {
        "only tombstones sampled".to_owned()
    } else if is_protected {
        format!(
            "NOT PROTECTED: {exposed} sampled record(s) are plaintext or malformed on a topic \
             e2ee.topics protects{}; consumers will reject them. Find the producer that writes \
             without kafka-e2ee (`kafka-e2ee doctor --config` on its configuration)",
            if opts.config.is_none() {
                " (without --config every topic counts, the e2ee.topics default)"
            } else {
                ""
            }
        )
    } else {
        format!("{exposed} plaintext or malformed record(s); this topic is not in e2ee.topics")
    };
    text.push_str(&format!("\n  verdict: {verdict}\n"));
    if exposed > 0 {
        for ex in &t.examples {
            text.push_str(&format!("    e.g. {ex}\n"));
        }
    }
    let json = json::object(&[
        ("topic", Value::Str(opts.topic.to_owned())),
        ("partitions", Value::Num(samples.len() as u64)),
        (
            "records_on_broker",
            Value::Num(u64::try_from(on_broker).unwrap_or(0)),
        ),
        ("sampled", Value::Num(total)),
        ("encrypted", Value::Num(t.encrypted)),
        ("sealed_headers", Value::Num(t.sealed_headers)),
        ("clear_headers", Value::Num(t.clear_headers)),
        ("tokenized_keys", Value::Num(t.tokenized_keys)),
        ("clear_keys", Value::Num(t.clear_keys)),
        ("plaintext", Value::Num(t.plaintext)),
        ("malformed", Value::Num(t.malformed)),
        ("tombstones", Value::Num(t.tombstones)),
        ("protected", Value::Bool(is_protected)),
        ("producers", Value::Raw(json::array(&producer_items))),
        ("newest_key", newest_json),
        ("examples", Value::List(t.examples.clone())),
        ("verdict", Value::Str(verdict)),
    ]);
    Output {
        text,
        json,
        failed: is_protected && exposed > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_e2ee_core::format::InstanceId;
    use kafka_e2ee_core::trust::Identity;

    fn prekeys(mailbox: u8, name: &str, keeper: bool) -> Vec<u8> {
        let id = Identity::try_generate_unsigned(
            name,
            vec![],
            vec![TopicPattern::all()],
            0,
            u64::MAX / 2,
            &mut rand_core::OsRng,
        )
        .unwrap();
        Prekeys {
            mailbox: InstanceId([mailbox; 8]),
            keeper,
            published_ms: 1,
            first_period: 1,
            salt: [0; 16],
            keys: vec![[1; 32]],
            kem: None,
            credential: id.credential().encode(),
            signature: [0; 64],
        }
        .encode()
    }

    /// A hybrid envelope (kind 13), or with `classical` a kind 8 one.
    fn envelope(producer: u8, epoch: u32, mailbox: u8, classical: bool) -> Vec<u8> {
        SealedEnvelope {
            producer: InstanceId([producer; 8]),
            mailbox: InstanceId([mailbox; 8]),
            id: [epoch as u8; 8],
            epoch,
            period: 1,
            kem_ct: (!classical).then(|| vec![0; kafka_e2ee_core::exchange::hybrid::CT_LEN]),
            noise: vec![0; 48],
        }
        .encode()
    }

    #[test]
    fn recipients_name_the_keeper_and_flag_epochs_without_one() {
        let mut d = Directory::default();
        d.add(&prekeys(1, "keeper-a", true));
        d.add(&prekeys(2, "billing", false));
        d.add(&envelope(9, 1, 1, false));
        d.add(&envelope(9, 1, 2, true));
        d.add(&envelope(9, 2, 2, false));
        d.add(b"garbage");
        let mut t = Tally::default();
        let p = InstanceId([9; 8]).to_string();
        for e in [1, 2, 3] {
            t.keys.insert((p.clone(), e), KeyStats::default());
        }
        let mut out = Output {
            text: String::new(),
            json: "{\"topic\":\"t\"}".into(),
            failed: false,
        };
        recipients_section(&mut out, "_e2ee_keys", &t, Ok(d));
        let lines: Vec<&str> = out.text.lines().collect();
        let line = |e: u32| {
            lines
                .iter()
                .find(|l| l.contains(&format!("{p}/{e} ")))
                .copied()
                .unwrap()
        };
        assert!(
            line(1).contains("2 mailbox(es): keeper-a (keeper), billing (classical envelope)"),
            "{}",
            out.text
        );
        assert!(line(2).contains("(no keeper)"), "{}", out.text);
        assert!(line(3).contains("NO RECIPIENT"), "{}", out.text);
        assert!(out.text.contains("1 epoch(s) were sealed to no recipient"));
        assert!(out
            .text
            .contains("no keeper among the recipients of 1 epoch(s)"));
        assert!(
            out.json.starts_with("{\"topic\":\"t\",\"recipients\":[{"),
            "{}",
            out.json
        );
    }

    #[test]
    fn sealed_and_clear_application_headers_are_counted() {
        use std::collections::BTreeMap;
        let record = |flags: u8, extra: &[&str]| {
            let mut header = vec![1, flags];
            header.extend_from_slice(&[9; 8]); // producer
            header.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]); // epoch, counter
            header.extend_from_slice(&[0; 16]); // tag
            let mut headers = BTreeMap::from([(HEADER_NAME.to_owned(), header)]);
            for name in extra {
                headers.insert((*name).to_owned(), b"x".to_vec());
            }
            rskafka::record::RecordAndOffset {
                record: rskafka::record::Record {
                    key: None,
                    value: Some(b"v".to_vec()),
                    headers,
                    timestamp: rskafka::chrono::DateTime::from_timestamp_millis(0).unwrap(),
                },
                offset: 0,
            }
        };
        let mut t = Tally::default();
        classify(&mut t, 0, &record(0x80, &[SEALED_HEADERS_NAME]));
        classify(&mut t, 0, &record(0x80, &[SEALED_HEADERS_NAME, "route"]));
        classify(&mut t, 0, &record(0, &["trace"]));
        classify(&mut t, 0, &record(0, &[]));
        assert_eq!((t.encrypted, t.sealed_headers, t.clear_headers), (4, 2, 2));
        assert_eq!((t.tokenized_keys, t.clear_keys), (0, 0));
    }

    #[test]
    fn tokenized_and_clear_keys_and_tokenized_tombstones_are_counted() {
        use std::collections::BTreeMap;
        let record = |flags: u8, key: Option<&[u8]>, value: Option<&[u8]>, sealed_key: bool| {
            let mut header = vec![1, flags];
            header.extend_from_slice(&[9; 8]);
            header.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            header.extend_from_slice(&[0; 16]);
            let mut headers = BTreeMap::from([(HEADER_NAME.to_owned(), header)]);
            if sealed_key {
                headers.insert(SEALED_KEY_NAME.to_owned(), vec![0; 20]);
            }
            rskafka::record::RecordAndOffset {
                record: rskafka::record::Record {
                    key: key.map(<[u8]>::to_vec),
                    value: value.map(<[u8]>::to_vec),
                    headers,
                    timestamp: rskafka::chrono::DateTime::from_timestamp_millis(0).unwrap(),
                },
                offset: 0,
            }
        };
        let mut t = Tally::default();
        classify(&mut t, 0, &record(0x40, Some(b"tok"), Some(b"v"), true));
        classify(&mut t, 0, &record(0x40, Some(b"tok"), None, true));
        classify(&mut t, 0, &record(0, Some(b"key"), Some(b"v"), false));
        classify(&mut t, 0, &record(0, None, Some(b"v"), false));
        classify(&mut t, 0, &record(0, Some(b"key"), None, false));
        assert_eq!((t.tokenized_keys, t.clear_keys, t.encrypted), (2, 1, 3));
        assert_eq!((t.tombstones, t.malformed), (1, 1));
    }
}
