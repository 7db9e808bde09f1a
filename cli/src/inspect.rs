//! `kafka-e2ee inspect`: the broker's-eye view of a topic. Reads a sample of
//! records without any key and classifies each by its `e2ee` header. It
//! cannot check a tag (that needs the key), so "encrypted" means "carries a
//! well-formed header"; a consumer still verifies every record.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kafka_e2ee_core::format::{RecordHeader, HEADER_NAME};
use kafka_e2ee_core::trust::TopicPattern;

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
    Ok(render(opts, is_protected, &samples, &t))
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
         \n  plaintext   {:>8}\
         \n  malformed   {:>8}\
         \n  tombstones  {:>8}   (null values stay null)\n",
        opts.topic,
        samples.len(),
        on_broker,
        t.encrypted,
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
