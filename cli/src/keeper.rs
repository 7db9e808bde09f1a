//! `kafka-e2ee keeper`: a long-running consumer identity that runs an engine
//! exactly as a client's control plane does (docs/KEEPER.md). Because its
//! credential consumes, it has a mailbox and publishes prekeys, so producers
//! seal every epoch's keys to it; it keeps them in its state directory for
//! the key retention and serves them to authorized newcomers through the
//! holder path (Want/Have, then a Noise session), which the engine runs by
//! itself. It holds only what its credential may read.
//!
//! The loop is single-threaded and blocking (one rskafka connection, fetches
//! with a short wait): the control plane's traffic is small, and a plain loop
//! makes "the last tick ran before exit" easy to see. A second thread serves
//! `/health` and `/metrics`.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka_e2ee::host::{self, HostConfig};
use kafka_e2ee::signals;
use kafka_e2ee_core::{Channel, ControlMessage, Engine};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;

use crate::props::{self, Property};
use crate::{kafka, now_ms, Output};

pub struct Options<'a> {
    pub config: &'a Path,
    pub listen: Option<&'a str>,
    pub timeout: Duration,
}

/// How long without a successful read of either topic, or a tick, before
/// `/health` says 503.
const STALE_MS: u64 = 30_000;
/// One status line on stderr this often.
const STATUS_EVERY_MS: u64 = 60_000;
/// Messages the broker has not taken yet, kept for the next try; beyond
/// this the oldest go (the engine re-publishes prekeys every period and
/// a requester retries, so nothing is lost for good).
const MAX_PENDING: usize = 10_000;
/// The longest a fetch waits for new records: bounds how late the keeper
/// answers a Want or a Hello.
const FETCH_WAIT_MS: i32 = 50;

fn log(msg: &str) {
    eprintln!("kafka-e2ee keeper: {msg}");
}

/// The keeper's settings: the client properties file, checked at start.
pub struct Settings {
    pub host: HostConfig,
    pub state_dir: PathBuf,
    /// All of the file, passwords included: never shown by `Debug`.
    pub props: Vec<Property>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Parses and checks the configuration; every error names the property and
/// the fix.
pub fn settings(text: &str) -> Result<Settings, String> {
    let props = props::parse(text);
    let host =
        HostConfig::from_properties(props.iter().map(|p| (p.key.as_str(), p.value.as_str())))
            .map_err(|e| e.to_string())?;
    // A keeper runs on the cluster it serves: point bootstrap.servers there.
    // A setting it would not use must not look as if it did.
    for (name, set) in [
        (
            "e2ee.control.bootstrap.servers",
            host.control_bootstrap.is_some(),
        ),
        (
            "e2ee.topic.source.prefix",
            host.topic_source_prefix.is_some(),
        ),
    ] {
        if set {
            return Err(format!(
                "{name}: is for consumers of a mirrored cluster, not the keeper: remove it, and \
                 run the keeper with bootstrap.servers set to the source cluster"
            ));
        }
    }
    let state_dir = host.state_dir.clone().ok_or(
        "e2ee.state.dir: is required for the keeper: set it to a directory of its own, on \
         encrypted storage; the keeper keeps the keys it holds there for \
         e2ee.key.retention.ms, so they survive its restarts",
    )?;
    if props::get(&props, "bootstrap.servers")
        .or_else(|| props::get(&props, "metadata.broker.list"))
        .is_none_or(|v| v.trim().is_empty())
    {
        return Err(
            "bootstrap.servers: is required: set it to the cluster's HOST:PORT[,...]".into(),
        );
    }
    Ok(Settings {
        host,
        state_dir,
        props,
    })
}

/// `--listen`: HOST:PORT, or a bare PORT on the loopback interface.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("--listen {s}: give HOST:PORT (e.g. 127.0.0.1:9464) or a port for the loopback interface")
    })
}

/// What `/health` reports, updated by the loop.
#[derive(Debug, Default)]
struct Health {
    control_read_ms: u64,
    keys_read_ms: u64,
    tick_ms: u64,
    /// The last thing that went wrong, until it goes right again.
    problem: Option<String>,
}

impl Health {
    /// `None` if healthy, else the reason.
    fn verdict(&self, now: u64) -> Option<String> {
        let stale = |at: u64| at == 0 || now.saturating_sub(at) > STALE_MS;
        if let Some(p) = &self.problem {
            return Some(p.clone());
        }
        if stale(self.control_read_ms) {
            return Some("the control topic has not been read in the last 30 s".into());
        }
        if stale(self.keys_read_ms) {
            return Some("the keys topic has not been read in the last 30 s".into());
        }
        if stale(self.tick_ms) {
            return Some("the engine has not ticked in the last 30 s".into());
        }
        None
    }
}

type Shared = Arc<Mutex<Health>>;

fn lock(h: &Shared) -> std::sync::MutexGuard<'_, Health> {
    h.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Prometheus text: every engine counter, keys held, and whether healthy.
pub fn metrics_text(engine: &Engine, healthy: bool) -> String {
    let mut out = String::new();
    for (name, value) in engine.metrics().named() {
        out.push_str(&format!(
            "# TYPE kafka_e2ee_{name} counter\nkafka_e2ee_{name} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP kafka_e2ee_keys_held Topic keys this keeper holds now.\n\
         # TYPE kafka_e2ee_keys_held gauge\nkafka_e2ee_keys_held {}\n\
         # HELP kafka_e2ee_keeper_up 1 while the keeper reads both topics and ticks.\n\
         # TYPE kafka_e2ee_keeper_up gauge\nkafka_e2ee_keeper_up {}\n",
        engine.keys_held(),
        u8::from(healthy)
    ));
    out
}

fn serve_http(listener: TcpListener, engine: Arc<Engine>, health: Shared) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // One request per connection; errors only affect that client.
        let _ = answer(stream, &engine, &health);
    }
}

fn answer(mut stream: TcpStream, engine: &Engine, health: &Shared) -> std::io::Result<()> {
    // A client that sends nothing must not hold the responder for long.
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(buf.get_mut(len..).unwrap_or_default())?;
        if n == 0 {
            break;
        }
        len += n;
        if buf
            .get(..len)
            .is_some_and(|b| b.windows(2).any(|w| w == b"\r\n" || w == b"\n\n"))
        {
            break;
        }
    }
    let head = String::from_utf8_lossy(buf.get(..len).unwrap_or_default());
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let verdict = lock(health).verdict(now_ms());
    let (status, body, ctype) = match (method, path) {
        ("GET", "/health") => match verdict {
            None => ("200 OK", "ok\n".to_owned(), "text/plain"),
            Some(reason) => (
                "503 Service Unavailable",
                format!("{reason}\n"),
                "text/plain",
            ),
        },
        ("GET", "/metrics") => (
            "200 OK",
            metrics_text(engine, verdict.is_none()),
            "text/plain; version=0.0.4",
        ),
        ("GET", _) => (
            "404 Not Found",
            "try /health or /metrics\n".into(),
            "text/plain",
        ),
        _ => ("405 Method Not Allowed", "GET only\n".into(), "text/plain"),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// One partition being read.
struct Reader {
    channel: Channel,
    pc: PartitionClient,
    offset: i64,
    /// The partition's end offset when reading began: reached, the keys
    /// topic has been read as a starting client reads it.
    end_at_start: i64,
}

/// The partitions of one topic to produce to.
struct Writer {
    topic: String,
    partitions: Vec<PartitionClient>,
}

impl Writer {
    /// A stable partition per record key (compaction keeps the newest record
    /// of a key only within one partition); keyless messages go to the first.
    fn partition(&self, key: Option<&[u8]>) -> Option<&PartitionClient> {
        let n = self.partitions.len().max(1);
        let i = key.map_or(0, |k| {
            // FNV-1a: stable across runs and builds, unlike the std hasher.
            let h = k.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            usize::try_from(h % n as u64).unwrap_or(0)
        });
        self.partitions.get(i)
    }
}

pub fn run(opts: &Options<'_>) -> Result<Output, String> {
    let text = std::fs::read_to_string(opts.config)
        .map_err(|e| format!("cannot read {}: {e}", opts.config.display()))?;
    let s = settings(&text)?;
    let listen = opts.listen.map(listen_addr).transpose()?;
    signals::install()?;
    let conn = kafka::Connection::from_config(None, &s.props, opts.timeout)?;
    let engine = Arc::new(host::build_keeper_engine(&s.host).map_err(|e| e.to_string())?);
    let cred = engine.identity().credential();
    if cred.consume().is_empty() {
        return Err(format!(
            "e2ee.credential: '{}' ({}) consumes nothing, so no producer seals keys to it; issue the \
             keeper a credential with --consume for the topics it keeps (e.g. --consume '*')",
            s.host.credential.display(),
            cred.name()
        ));
    }
    if !engine.identity().has_signing_key() {
        return Err(format!(
            "e2ee.credential: '{}' is a version 1 credential, which cannot sign prekeys, so no \
             producer seals keys to it; issue a new one with `kafka-e2ee credential issue`",
            s.host.credential.display()
        ));
    }
    let health: Shared = Arc::new(Mutex::new(Health {
        problem: Some("starting: not connected to the cluster yet".into()),
        ..Health::default()
    }));
    if let Some(addr) = listen {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("--listen {addr}: cannot listen there: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("--listen {addr}: {e}"))?;
        let (e, h) = (Arc::clone(&engine), Arc::clone(&health));
        std::thread::Builder::new()
            .name("kafka-e2ee-keeper-http".into())
            .spawn(move || serve_http(listener, e, h))
            .map_err(|e| format!("cannot start the HTTP responder: {e}"))?;
        log(&format!("serving /health and /metrics on http://{bound}"));
    }
    log(&format!(
        "started as '{}', mailbox {}, state directory {}",
        cred.name(),
        engine
            .mailbox_id()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        s.state_dir.display()
    ));
    let result = keep(&conn, &engine, &s.host, &health, &mut |_, _| false);
    // The last tick: the engine persists its state (and queues its last
    // messages) there; a stop must never lose what it received.
    let tick = engine.handle_timeout(now_ms());
    let m = engine.metrics();
    log(&format!(
        "stopped: {} key(s) held, {} envelope(s) received, {} key(s) served",
        engine.keys_held(),
        m.envelopes_received,
        m.keys_served
    ));
    result?;
    tick.map_err(|e| format!("the last tick failed: {e}"))?;
    Ok(Output {
        text: String::new(),
        json: crate::json::object(&[("stopped", crate::json::Value::Bool(true))]),
        failed: false,
    })
}

/// Sleeps up to `ms`, waking early on a stop signal.
fn nap(ms: u64) {
    let until = now_ms().saturating_add(ms);
    while !signals::stop_requested() && now_ms() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn problem(health: &Shared, msg: String) {
    let mut h = lock(health);
    if h.problem.as_deref() != Some(msg.as_str()) {
        log(&msg);
    }
    h.problem = Some(msg);
}

/// What `keep` asks after every round: stop now? Given the engine and
/// whether the keys topic has been read up to where it ended at the start.
type Done<'a> = dyn FnMut(&Engine, bool) -> bool + 'a;

/// Connects, waits for the topics, then runs the control plane until a stop
/// signal, or until `done` says so.
fn keep(
    conn: &kafka::Connection,
    engine: &Engine,
    cfg: &HostConfig,
    health: &Shared,
    done: &mut Done<'_>,
) -> Result<(), String> {
    let client = loop {
        if signals::stop_requested() {
            return Ok(());
        }
        match conn.connect() {
            Ok(c) => break c,
            Err(e) => {
                problem(health, e);
                nap(2000);
            }
        }
    };
    let Some((mut readers, writers)) = open_topics(conn, &client, cfg, health) else {
        return Ok(());
    };
    lock(health).problem = None;
    log("reading the control topic from its end and the keys topic from its beginning");
    let mut pending: VecDeque<ControlMessage> = VecDeque::new();
    let mut last_status = now_ms();
    let mut caught_up = false;
    while !signals::stop_requested() {
        for r in &mut readers {
            read_once(conn, engine, r, health);
        }
        if !caught_up
            && readers
                .iter()
                .all(|r| r.channel != Channel::Keys || r.offset >= r.end_at_start)
        {
            caught_up = true;
            engine.keys_topic_read();
        }
        let now = now_ms();
        if now >= engine.poll_timeout() {
            match engine.handle_timeout(now) {
                Ok(()) => {
                    let mut h = lock(health);
                    h.tick_ms = now;
                    if h.problem
                        .as_deref()
                        .is_some_and(|p| p.starts_with("tick failed"))
                    {
                        h.problem = None;
                    }
                }
                // Fail closed: a keeper that cannot persist says so on
                // /health and keeps trying; it never drops the error.
                Err(e) => problem(health, format!("tick failed: {e}")),
            }
        }
        while let Some(m) = engine.poll_transmit() {
            pending.push_back(m);
        }
        while pending.len() > MAX_PENDING {
            pending.pop_front();
        }
        send(conn, &writers, &mut pending, health);
        if done(engine, caught_up) {
            break;
        }
        if now.saturating_sub(last_status) >= STATUS_EVERY_MS {
            last_status = now;
            let m = engine.metrics();
            log(&format!(
                "{} key(s) held, {} envelope(s) received, {} key(s) served, {} control message(s) rejected",
                engine.keys_held(),
                m.envelopes_received,
                m.keys_served,
                m.control_rejected
            ));
        }
    }
    // Stopping: tick once more and hand the broker what that queued.
    if let Err(e) = engine.handle_timeout(now_ms()) {
        log(&format!("the last tick failed: {e}"));
    }
    while let Some(m) = engine.poll_transmit() {
        pending.push_back(m);
    }
    send(conn, &writers, &mut pending, health);
    Ok(())
}

/// Waits until both topics exist (the keeper does not create them: rskafka
/// cannot set their cleanup policy and retention), then opens a reader per
/// partition and the writers. `None` if stopped meanwhile.
fn open_topics(
    conn: &kafka::Connection,
    client: &Client,
    cfg: &HostConfig,
    health: &Shared,
) -> Option<(Vec<Reader>, [Writer; 2])> {
    loop {
        if signals::stop_requested() {
            return None;
        }
        match try_open(conn, client, cfg) {
            Ok(Some(v)) => return Some(v),
            Ok(None) => problem(
                health,
                format!(
                    "waiting for the topics {} and {}: any kafka-e2ee client creates them on its \
                     first start, or create them with kafka-topics.sh --create --partitions 1 \
                     --topic {} --config cleanup.policy=delete --config retention.ms=3600000, and \
                     --topic {} --config cleanup.policy=compact,delete --config retention.ms={}",
                    cfg.control_topic,
                    cfg.keys_topic,
                    cfg.control_topic,
                    cfg.keys_topic,
                    cfg.keys_topic_retention_ms()
                ),
            ),
            Err(e) => problem(health, format!("reading the topics' metadata: {e}")),
        }
        nap(2000);
    }
}

type Opened = Option<(Vec<Reader>, [Writer; 2])>;

fn try_open(conn: &kafka::Connection, client: &Client, cfg: &HostConfig) -> Result<Opened, String> {
    let topics = kafka::topics(conn, client)?;
    let count = |name: &str| topics.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
    let (Some(nc), Some(nk)) = (count(&cfg.control_topic), count(&cfg.keys_topic)) else {
        return Ok(None);
    };
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (channel, topic, n, at) in [
        (Channel::Control, &cfg.control_topic, nc, OffsetAt::Latest),
        (Channel::Keys, &cfg.keys_topic, nk, OffsetAt::Earliest),
    ] {
        let mut partitions = Vec::new();
        for p in 0..i32::try_from(n).unwrap_or(i32::MAX) {
            let pc =
                conn.run(client.partition_client(topic.as_str(), p, UnknownTopicHandling::Retry))?;
            let offset = conn.run(pc.get_offset(at))?;
            let end_at_start = conn.run(pc.get_offset(OffsetAt::Latest))?;
            readers.push(Reader {
                end_at_start,
                channel,
                pc: conn.run(client.partition_client(
                    topic.as_str(),
                    p,
                    UnknownTopicHandling::Retry,
                ))?,
                offset,
            });
            partitions.push(pc);
        }
        writers.push(Writer {
            topic: topic.clone(),
            partitions,
        });
    }
    let [control, keys]: [Writer; 2] = writers
        .try_into()
        .map_err(|_| "internal: two writers expected".to_owned())?;
    Ok(Some((readers, [control, keys])))
}

fn read_once(conn: &kafka::Connection, engine: &Engine, r: &mut Reader, health: &Shared) {
    match conn.run(r.pc.fetch_records(r.offset, 1..4 * 1024 * 1024, FETCH_WAIT_MS)) {
        Ok((records, _high)) => {
            for rec in records {
                if rec.offset < r.offset {
                    continue; // a batch may start before the offset asked for
                }
                r.offset = rec.offset + 1;
                if let Some(value) = rec.record.value {
                    // Rejections are counted by the engine (control_rejected);
                    // a forged message must not stop the keeper.
                    let _ = engine.handle_control(now_ms(), &value);
                }
            }
            let mut h = lock(health);
            match r.channel {
                Channel::Control => h.control_read_ms = now_ms(),
                Channel::Keys => h.keys_read_ms = now_ms(),
            }
            if h.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("reading "))
            {
                h.problem = None;
            }
        }
        Err(e) => {
            let topic = r.pc.topic().to_owned();
            problem(
                health,
                format!("reading {topic}[{}]: {e}", r.pc.partition()),
            );
            // Retention or compaction may have removed the offset: move into
            // the range the broker has (never back, never past its end).
            if let (Ok(earliest), Ok(latest)) = (
                conn.run(r.pc.get_offset(OffsetAt::Earliest)),
                conn.run(r.pc.get_offset(OffsetAt::Latest)),
            ) {
                r.offset = r.offset.clamp(earliest, latest.max(earliest));
            }
            nap(500);
        }
    }
}

fn send(
    conn: &kafka::Connection,
    writers: &[Writer; 2],
    pending: &mut VecDeque<ControlMessage>,
    health: &Shared,
) {
    while let Some(m) = pending.front() {
        let w = match m.channel {
            Channel::Control => &writers[0],
            Channel::Keys => &writers[1],
        };
        let key = m.record_key();
        let Some(pc) = w.partition(key.as_deref()) else {
            problem(health, format!("{} has no partition to write to", w.topic));
            return;
        };
        let record = Record {
            key,
            value: Some(m.payload.clone()),
            headers: Default::default(),
            // rskafka's chrono is built without the clock: stamp from ours.
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(
                i64::try_from(now_ms()).unwrap_or(i64::MAX),
            )
            .unwrap_or_default(),
        };
        match conn.run(pc.produce(vec![record], Compression::NoCompression)) {
            Ok(_) => {
                pending.pop_front();
            }
            Err(e) => {
                // Kept for the next round: the order of a session's messages
                // matters, so nothing behind it goes first.
                problem(health, format!("writing to {}: {e}", w.topic));
                return;
            }
        }
    }
    let mut h = lock(health);
    if h.problem
        .as_deref()
        .is_some_and(|p| p.starts_with("writing "))
    {
        h.problem = None;
    }
}

/// `kafka-e2ee rotate-token`.
pub struct RotateOptions<'a> {
    pub config: &'a Path,
    pub topic: &'a str,
    /// How long to run after founding, sealing the new secret to every
    /// mailbox that may have it.
    pub hold: Duration,
    pub timeout: Duration,
}

/// The operator's explicit rotation of a topic's token secret
/// (docs/PROTOCOL.md 5e): runs an engine with the given producer
/// credential as a client's control plane would, reads the keys topic to
/// its end, founds the next generation, and keeps running for `hold`,
/// sealing the new secret to every mailbox of the topic's producers and
/// consumers, which hand it on from then.
pub fn rotate(opts: &RotateOptions<'_>) -> Result<Output, String> {
    let text = std::fs::read_to_string(opts.config)
        .map_err(|e| format!("cannot read {}: {e}", opts.config.display()))?;
    let props = props::parse(&text);
    let mut cfg =
        HostConfig::from_properties(props.iter().map(|p| (p.key.as_str(), p.value.as_str())))
            .map_err(|e| e.to_string())?;
    cfg.tokenize_keys = true;
    signals::install()?;
    let conn = kafka::Connection::from_config(None, &props, opts.timeout)?;
    let engine = host::build_engine(&cfg).map_err(|e| e.to_string())?;
    let cred = engine.identity().credential();
    if !cred.may_produce(opts.topic) {
        return Err(format!(
            "e2ee.credential: '{}' ({}) may not produce {}: only a producer of the topic may \
             rotate its token secret",
            cfg.credential.display(),
            cred.name(),
            opts.topic
        ));
    }
    let health: Shared = Arc::new(Mutex::new(Health::default()));
    let mut generation: Option<Result<u32, String>> = None;
    let mut until = 0;
    let result = keep(&conn, &engine, &cfg, &health, &mut |engine, caught_up| {
        if !caught_up || signals::stop_requested() {
            return false;
        }
        match &generation {
            None => {
                let r = engine
                    .rotate_token_secret(opts.topic)
                    .map_err(|e| e.to_string());
                if let Ok(g) = &r {
                    log(&format!(
                        "founded generation {g} of the token secret of {}; sealing it on for {} s",
                        opts.topic,
                        opts.hold.as_secs()
                    ));
                }
                let failed = r.is_err();
                generation = Some(r);
                until = now_ms().saturating_add(u64::try_from(opts.hold.as_millis()).unwrap_or(0));
                failed
            }
            Some(_) => now_ms() >= until,
        }
    });
    let tick = engine.handle_timeout(now_ms());
    result?;
    tick.map_err(|e| format!("the last tick failed: {e}"))?;
    let generation = match generation {
        Some(r) => r?,
        None => return Err("stopped before the keys topic was read".into()),
    };
    let text = format!(
        "topic {}: token secret generation {generation} founded and sealed on; producers move to \
         it as they receive it, and every key gets a new token (docs/PROTOCOL.md section 5e)\n",
        opts.topic
    );
    Ok(Output {
        text,
        json: crate::json::object(&[
            ("topic", crate::json::Value::Str(opts.topic.to_owned())),
            ("generation", crate::json::Value::Num(u64::from(generation))),
        ]),
        failed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "bootstrap.servers=h:9092\ne2ee.credential=k.cred\ne2ee.trust=trust\n";

    #[test]
    fn state_dir_is_required() {
        let e = settings(BASE).unwrap_err();
        assert!(e.starts_with("e2ee.state.dir:"), "{e}");
        assert!(e.contains("encrypted storage"), "{e}");
        let s = settings(&format!("{BASE}e2ee.state.dir=/var/lib/keeper\n")).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/keeper"));
        assert_eq!(s.host.keys_topic, "_e2ee_keys");
    }

    #[test]
    fn the_mirror_settings_are_refused() {
        for (line, name) in [
            (
                "e2ee.control.bootstrap.servers=a:9092\n",
                "e2ee.control.bootstrap.servers",
            ),
            ("e2ee.topic.source.prefix=A.\n", "e2ee.topic.source.prefix"),
        ] {
            let e = settings(&format!("{BASE}e2ee.state.dir=/s\n{line}")).unwrap_err();
            assert!(e.starts_with(name), "{e}");
            assert!(e.contains("source cluster"), "{e}");
        }
    }

    #[test]
    fn wrong_settings_name_the_property() {
        let cases = [
            (
                "e2ee.state.dir=/s\n",
                "e2ee.credential",
                "bootstrap.servers=h:1\ne2ee.trust=t\n",
            ),
            (
                "e2ee.state.dir=/s\n",
                "e2ee.trust",
                "bootstrap.servers=h:1\ne2ee.credential=c\n",
            ),
            (
                "e2ee.state.dir=/s\ne2ee.key.rotation.ms=soon\n",
                "e2ee.key.rotation.ms",
                BASE,
            ),
            (
                "e2ee.state.dir=/s\ne2ee.statedir=/x\n",
                "e2ee.statedir",
                BASE,
            ),
            (
                "e2ee.state.dir=/s\ne2ee.keys.topic= \n",
                "e2ee.keys.topic",
                BASE,
            ),
            (
                "e2ee.state.dir=/s\n",
                "bootstrap.servers",
                "e2ee.credential=c\ne2ee.trust=t\n",
            ),
        ];
        for (extra, property, base) in cases {
            let e = settings(&format!("{base}{extra}")).unwrap_err();
            assert!(e.starts_with(&format!("{property}:")), "{property}: {e}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            listen_addr("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            listen_addr("0.0.0.0:1").unwrap(),
            "0.0.0.0:1".parse().unwrap()
        );
        assert!(listen_addr("localhost").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn health_says_why() {
        let mut h = Health::default();
        assert!(h.verdict(100_000).unwrap().contains("control topic"));
        h.control_read_ms = 99_000;
        h.keys_read_ms = 99_000;
        assert!(h.verdict(100_000).unwrap().contains("ticked"));
        h.tick_ms = 99_000;
        assert_eq!(h.verdict(100_000), None);
        assert!(h.verdict(200_000).is_some());
        h.problem = Some("writing to x: down".into());
        assert_eq!(h.verdict(100_000).as_deref(), Some("writing to x: down"));
    }
}
