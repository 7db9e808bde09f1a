//! What every host (the JNI library and the librdkafka plugin) needs around
//! the sans-IO engine: the `e2ee.*` settings, the credential and trust files,
//! a state directory, the clock and the OS RNG, and the rule of one engine
//! per process, cluster and credential.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_e2ee_core::exchange::hybrid::HybridMode;
use kafka_e2ee_core::format::{Cipher, Compression, Sealing};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::trust::{Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Engine, EngineConfig, Storage};

use crate::state_dir::{OpenError, StateDir};

/// Wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A configuration problem, naming the property and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub property: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.property, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn bad(property: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        property: property.to_owned(),
        message: message.into(),
    }
}

pub use kafka_e2ee_core::settings::PROPERTIES;

/// `e2ee.headers`: what a producer does with a record's application headers
/// (docs/FORMAT.md section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersMode {
    /// Sealed in the `e2ee.h` header (the default).
    Encrypt,
    /// Left readable and unauthenticated, as before section 12.
    Clear,
}

/// The parsed `e2ee.*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub credential: PathBuf,
    pub trust: PathBuf,
    pub topics: Vec<String>,
    pub rotation_ms: u64,
    pub rotation_records: u32,
    pub retention_ms: u64,
    pub wait_ms: u64,
    pub state_dir: Option<PathBuf>,
    pub control_topic: String,
    /// `e2ee.keys.topic`: prekeys and key envelopes, read from the beginning.
    pub keys_topic: String,
    /// `e2ee.close.timeout.ms`: how long a producer's close may take to hand
    /// its key envelopes to the broker.
    pub close_timeout_ms: u64,
    pub bind_key: bool,
    /// `e2ee.cipher` and `e2ee.compression`.
    pub sealing: Sealing,
    /// `e2ee.headers`.
    pub headers: HeadersMode,
    /// `e2ee.headers.clear`: names of headers that stay readable (and
    /// authenticated) on sealed records.
    pub headers_clear: Vec<String>,
    /// `e2ee.kex.hybrid`: X25519 with ML-KEM-768 in every live session.
    pub hybrid: HybridMode,
    /// `e2ee.control.bootstrap.servers`: the cluster of the control and keys
    /// topics, when it is not the client's own (a mirrored cluster's
    /// consumers exchange keys with the source cluster's deployment).
    pub control_bootstrap: Option<String>,
    /// `e2ee.topic.source.prefix`: consumers open a record of `<prefix>T` as
    /// topic `T`. Only ever from the client's own configuration.
    pub topic_source_prefix: Option<String>,
    /// `e2ee.keys=tokenize`: producers send a token in place of each
    /// non-null record key (docs/FORMAT.md section 13).
    pub tokenize_keys: bool,
}

impl HostConfig {
    /// Parses `e2ee.*` properties; unknown `e2ee.*` names are an error (a
    /// typo must not silently turn a setting off).
    pub fn from_properties<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HostConfig, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::new();
        for (k, v) in props {
            if !k.starts_with("e2ee.") {
                continue;
            }
            if !PROPERTIES.iter().any(|(name, _, _)| *name == k) {
                let known: Vec<&str> = PROPERTIES.iter().map(|p| p.0).collect();
                return Err(bad(
                    k,
                    format!(
                        "unknown property; the e2ee.* properties are: {}",
                        known.join(", ")
                    ),
                ));
            }
            map.insert(k, v);
        }
        let get = |k: &str| -> &str {
            map.get(k)
                .copied()
                .unwrap_or_else(|| PROPERTIES.iter().find(|p| p.0 == k).map_or("", |p| p.1))
        };
        let number = |k: &str| -> Result<u64, ConfigError> {
            get(k)
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(k, format!("must be a whole number, got '{}'", get(k))))
        };
        let required = |k: &str, what: &str| -> Result<PathBuf, ConfigError> {
            let v = get(k).trim();
            if v.is_empty() {
                return Err(bad(k, format!("is required: set it to the path of {what}")));
            }
            Ok(PathBuf::from(v))
        };
        let topics: Vec<String> = get("e2ee.topics")
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            return Err(bad(
                "e2ee.topics",
                "must list at least one topic pattern (use * for all topics)",
            ));
        }
        for t in &topics {
            TopicPattern::parse(t).map_err(|e| bad("e2ee.topics", e.to_string()))?;
        }
        let rotation_records = u32::try_from(number("e2ee.key.rotation.records")?)
            .map_err(|_| bad("e2ee.key.rotation.records", "must be at most 4294967295"))?;
        let bind_key = match get("e2ee.bind.key").trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(bad(
                    "e2ee.bind.key",
                    format!("must be true or false, got '{other}'"),
                ))
            }
        };
        let cipher = get("e2ee.cipher").trim();
        let cipher = match cipher {
            "auto" => preferred_cipher(),
            name => Cipher::from_name(name).ok_or_else(|| {
                bad(
                    "e2ee.cipher",
                    format!("must be auto, chacha20-poly1305 or aes-256-gcm, got '{name}'"),
                )
            })?,
        };
        let compression = get("e2ee.compression").trim();
        let compression = Compression::from_name(compression).ok_or_else(|| {
            bad(
                "e2ee.compression",
                format!("must be none, zstd or lz4, got '{compression}'"),
            )
        })?;
        let hybrid = get("e2ee.kex.hybrid").trim();
        let hybrid = HybridMode::parse(hybrid).ok_or_else(|| {
            bad(
                "e2ee.kex.hybrid",
                format!("must be prefer, require or off, got '{hybrid}'"),
            )
        })?;
        let headers = match get("e2ee.headers").trim() {
            "encrypt" => HeadersMode::Encrypt,
            "clear" => HeadersMode::Clear,
            other => {
                return Err(bad(
                    "e2ee.headers",
                    format!("must be encrypt or clear, got '{other}'"),
                ))
            }
        };
        let headers_clear: Vec<String> = get("e2ee.headers.clear")
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(reserved) = headers_clear.iter().find(|n| {
            *n == "e2ee"
                || *n == kafka_e2ee_core::format::SEALED_HEADERS_NAME
                || *n == kafka_e2ee_core::format::SEALED_KEY_NAME
        }) {
            return Err(bad(
                "e2ee.headers.clear",
                format!("'{reserved}' is kafka-e2ee's own header, not an application header"),
            ));
        }
        let tokenize_keys = match get("e2ee.keys").trim() {
            "clear" => false,
            "tokenize" => true,
            other => {
                return Err(bad(
                    "e2ee.keys",
                    format!("must be clear or tokenize, got '{other}'"),
                ))
            }
        };
        let state_dir = get("e2ee.state.dir").trim();
        let control_topic = get("e2ee.control.topic").trim().to_owned();
        if control_topic.is_empty() {
            return Err(bad("e2ee.control.topic", "must not be empty"));
        }
        let keys_topic = get("e2ee.keys.topic").trim().to_owned();
        if keys_topic.is_empty() {
            return Err(bad(
                "e2ee.keys.topic",
                "must not be empty: remove it to use _e2ee_keys, or name the keys topic",
            ));
        }
        let close_timeout_ms = get("e2ee.close.timeout.ms")
            .trim()
            .parse::<u64>()
            .map_err(|_| {
                bad(
                    "e2ee.close.timeout.ms",
                    format!(
                        "must be a whole number of milliseconds, 0 or more, got '{}'; remove it to use 30000",
                        get("e2ee.close.timeout.ms")
                    ),
                )
            })?;
        let control_bootstrap = get("e2ee.control.bootstrap.servers").trim().to_owned();
        let topic_source_prefix = get("e2ee.topic.source.prefix").trim().to_owned();
        if !topic_source_prefix.is_empty() {
            check_topic_prefix(&topic_source_prefix)?;
        }
        Ok(HostConfig {
            credential: required(
                "e2ee.credential",
                "this client's credential file (kafka-e2ee credential issue ...)",
            )?,
            trust: required(
                "e2ee.trust",
                "the trust file (kafka-e2ee authority init writes one)",
            )?,
            topics,
            rotation_ms: number("e2ee.key.rotation.ms")?,
            rotation_records,
            retention_ms: number("e2ee.key.retention.ms")?,
            wait_ms: number("e2ee.key.wait.ms")?,
            state_dir: (!state_dir.is_empty()).then(|| PathBuf::from(state_dir)),
            control_topic,
            keys_topic,
            close_timeout_ms,
            bind_key,
            hybrid,
            sealing: Sealing {
                cipher,
                compression,
            },
            headers,
            headers_clear,
            control_bootstrap: (!control_bootstrap.is_empty()).then_some(control_bootstrap),
            topic_source_prefix: (!topic_source_prefix.is_empty()).then_some(topic_source_prefix),
            tokenize_keys,
        })
    }

    /// The name a consumer opens a record of `topic` under: its source
    /// topic's when `topic` is `e2ee.topic.source.prefix` followed by a
    /// name, else `topic` itself. The record's authentication, its key and
    /// the authorization check (`may_consume`) all use this name, so a
    /// mirrored record is readable exactly by the consumers the source
    /// topic's grant allows; a grant for the mirrored name opens nothing.
    /// The mapping comes from this client's configuration only, never from
    /// the broker (a header or topic config could be forged).
    pub fn source_topic<'t>(&self, topic: &'t str) -> &'t str {
        source_topic(self.topic_source_prefix.as_deref(), topic)
    }

    /// The bootstrap servers of the cluster this client exchanges keys on:
    /// `e2ee.control.bootstrap.servers`, else the client's own.
    pub fn key_exchange_cluster<'a>(&'a self, own: &'a str) -> &'a str {
        self.control_bootstrap.as_deref().unwrap_or(own)
    }

    /// `retention.ms` of the keys topic: an envelope must outlive the last
    /// record sealed under its key (an epoch lasts up to e2ee.key.rotation.ms,
    /// its key is kept e2ee.key.retention.ms after it ended), plus a day of
    /// margin for clock skew and late consumers. Capped at Kafka's long.
    pub fn keys_topic_retention_ms(&self) -> u64 {
        self.retention_ms
            .saturating_add(self.rotation_ms)
            .saturating_add(86_400_000)
            .min(i64::MAX as u64)
    }

    fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        let protected = self
            .topics
            .iter()
            .map(|t| TopicPattern::parse(t).map_err(|e| bad("e2ee.topics", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let config = EngineConfig {
            key: KeyPolicy {
                rotation_ms: self.rotation_ms,
                rotation_records: self.rotation_records,
                retention_ms: self.retention_ms,
            },
            protected_topics: protected,
            sealing: self.sealing,
            hybrid: self.hybrid,
            tokenize_keys: self.tokenize_keys,
            ..EngineConfig::default()
        };
        if self.rotation_ms == 0 {
            return Err(bad("e2ee.key.rotation.ms", "must be greater than 0"));
        }
        if self.rotation_records == 0 {
            return Err(bad("e2ee.key.rotation.records", "must be greater than 0"));
        }
        if self.retention_ms < self.rotation_ms {
            return Err(bad(
                "e2ee.key.retention.ms",
                "must be at least e2ee.key.rotation.ms",
            ));
        }
        Ok(config)
    }
}

/// [`HostConfig::source_topic`] for hosts that keep only the prefix.
pub fn source_topic<'t>(prefix: Option<&str>, topic: &'t str) -> &'t str {
    match prefix.map(|p| topic.strip_prefix(p)) {
        Some(Some(rest)) if !rest.is_empty() => rest,
        _ => topic,
    }
}

/// The plaintext rule of a mapped topic, for a record that `engine.open`
/// under its source topic found to be plaintext (no e2ee header, source
/// topic not protected): `e2ee.topics` may name the mirrored topic rather
/// than its source (`A.*` instead of `orders`), so the record is refused
/// if the mirrored name is protected. The mapping never lets plaintext in.
/// Counted in records-rejected. Both hosts call it (docs/PROTOCOL.md,
/// section 5c).
pub fn refuse_mirrored_plaintext(
    engine: &Engine,
    mirrored: &str,
    source: &str,
) -> Result<(), kafka_e2ee_core::Error> {
    if mirrored != source && engine.is_protected(mirrored) {
        engine.note_record_rejected();
        return Err(kafka_e2ee_core::Error::MissingHeader {
            topic: mirrored.to_owned(),
        });
    }
    Ok(())
}

/// A topic-name prefix Kafka could have made: the characters of a topic name
/// (`[a-zA-Z0-9._-]`), short enough to leave room for a name after it.
fn check_topic_prefix(prefix: &str) -> Result<(), ConfigError> {
    let ok = prefix.len() < 249
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "e2ee.topic.source.prefix",
            format!(
                "'{prefix}' is not the start of a Kafka topic name (letters, digits, '.', '_', \
                 '-'; under 249 characters): set it to the source cluster's alias and the \
                 replication policy's separator, e.g. 'A.' for topics mirrored as A.<topic>"
            ),
        ))
    }
}

fn read_file(property: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    fs::read(path).map_err(|e| bad(property, format!("cannot read '{}': {e}", path.display())))
}

/// Builds an engine from the settings: reads and checks the credential and
/// trust files, opens the state directory, seeds from the OS RNG.
pub fn build_engine(cfg: &HostConfig) -> Result<Engine, ConfigError> {
    build(cfg, false)
}

/// [`build_engine`] for `kafka-e2ee keeper`: the same engine, whose prekeys
/// record says it is a keeper (so `kafka-e2ee inspect` can tell).
pub fn build_keeper_engine(cfg: &HostConfig) -> Result<Engine, ConfigError> {
    build(cfg, true)
}

fn build(cfg: &HostConfig, keeper: bool) -> Result<Engine, ConfigError> {
    let identity = Identity::from_file_bytes(&read_file("e2ee.credential", &cfg.credential)?)
        .map_err(|e| {
            bad(
                "e2ee.credential",
                format!("'{}': {e}", cfg.credential.display()),
            )
        })?;
    let trust = TrustAnchor::from_file_bytes(&read_file("e2ee.trust", &cfg.trust)?)
        .map_err(|e| bad("e2ee.trust", format!("'{}': {e}", cfg.trust.display())))?;
    let storage: Option<Box<dyn Storage>> = match &cfg.state_dir {
        Some(dir) => Some(Box::new(StateDir::open(dir, &identity).map_err(|e| {
            bad(
                "e2ee.state.dir",
                match e {
                    OpenError::InUse => format!(
                        "'{}' is in use by another process; give each process its own state \
                         directory",
                        dir.display()
                    ),
                    OpenError::Io(m) => m,
                },
            )
        })?)),
        None => None,
    };
    Engine::new(
        EngineConfig {
            keeper,
            ..cfg.engine_config()?
        },
        identity,
        trust,
        now_ms(),
        Box::new(rand_core::OsRng),
        storage,
    )
    .map_err(|e| match e {
        kafka_e2ee_core::Error::Trust(t) => bad(
            "e2ee.credential",
            format!(
                "this credential is not valid under the trust file {}: {t}",
                cfg.trust.display()
            ),
        ),
        kafka_e2ee_core::Error::Storage(m) => bad("e2ee.state.dir", m),
        other => bad("e2ee", other.to_string()),
    })
}

type Registry = Mutex<HashMap<String, Weak<Engine>>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// One engine per process, cluster, credential, control topic and keys
/// topic: clients that share them
/// share the engine (and its keys and sessions). `cluster` is the client's
/// bootstrap servers string. Clients that differ in `e2ee.cipher`,
/// `e2ee.compression` or `e2ee.kex.hybrid` get an engine each, so each
/// seals and exchanges keys as it was told (they then need an
/// `e2ee.state.dir` each, if they set one).
pub fn shared_engine(cluster: &str, cfg: &HostConfig) -> Result<(Arc<Engine>, bool), ConfigError> {
    // The pid keeps a forked child from reusing its parent's engine (and
    // so its epoch keys and nonce counters).
    let key = format!(
        "{}\u{0}{cluster}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        std::process::id(),
        cfg.credential.display(),
        cfg.control_topic,
        cfg.keys_topic,
        cfg.sealing.cipher,
        cfg.sealing.compression,
        cfg.hybrid.as_str()
    );
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|_, w| w.strong_count() > 0);
    if let Some(engine) = reg.get(&key).and_then(Weak::upgrade) {
        return Ok((engine, false));
    }
    let engine = Arc::new(build_engine(cfg)?);
    reg.insert(key, Arc::downgrade(&engine));
    Ok((engine, true))
}

/// The engines alive in this process, each with its cluster (the bootstrap
/// servers string its clients were made with).
pub fn live_engines() -> Vec<(String, Arc<Engine>)> {
    let reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out: Vec<(String, Arc<Engine>)> = reg
        .iter()
        .filter_map(|(key, weak)| {
            let cluster = key.split('\u{0}').nth(1).unwrap_or_default().to_owned();
            weak.upgrade().map(|e| (cluster, e))
        })
        .collect();
    out.sort_by_key(|(_, e)| e.instance_id().0);
    out
}

/// Key envelopes (keys-topic messages) a closing control plane could not
/// get acknowledged, by engine instance: a host-side counter, kept next to
/// the core's, because only the host sees delivery reports.
fn unacknowledged() -> &'static Mutex<HashMap<[u8; 8], u64>> {
    static U: std::sync::OnceLock<Mutex<HashMap<[u8; 8], u64>>> = std::sync::OnceLock::new();
    U.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Counts `n` key envelopes of `engine` that the broker did not acknowledge.
pub fn add_key_envelopes_unacknowledged(engine: &Engine, n: u64) {
    let mut u = unacknowledged()
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let c = u.entry(engine.instance_id().0).or_insert(0);
    *c = c.saturating_add(n);
}

/// The count kept by [`add_key_envelopes_unacknowledged`].
pub fn key_envelopes_unacknowledged(engine: &Engine) -> u64 {
    unacknowledged()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&engine.instance_id().0)
        .copied()
        .unwrap_or(0)
}

/// The ERROR line of a close that could not get every key envelope
/// acknowledged: what it means and what fixes it (both hosts say the same).
pub fn unacknowledged_message(n: u64, keys_topic: &str, close_timeout_ms: u64) -> String {
    format!(
        "{n} key envelope(s) were not acknowledged by the broker on keys topic {keys_topic} \
         within e2ee.close.timeout.ms ({close_timeout_ms} ms) of close: records this producer \
         sealed may stay unreadable for consumers that were not running. To fix it, keep the \
         producer running until the broker is reachable, or restart it on its e2ee.state.dir \
         (it publishes them again), and check that the keys topic's ACLs let this client write it"
    )
}

/// One engine's counters as a JSON object: its instance id, credential name
/// and cluster, then every counter by name. Names and counts only: nothing
/// secret.
pub fn metrics_json(cluster: &str, engine: &Engine) -> String {
    let mut out = format!(
        "{{\"instance\":\"{}\",\"credential\":{},\"cluster\":{}",
        engine.instance_id(),
        json_string(engine.identity().credential().name()),
        json_string(cluster)
    );
    for (name, value) in engine.metrics().named() {
        out.push_str(&format!(",\"{name}\":{value}"));
    }
    out.push_str(&format!(
        ",\"key_envelopes_unacknowledged\":{}",
        key_envelopes_unacknowledged(engine)
    ));
    out.push('}');
    out
}

/// One line for a log: the instance and every counter as `name=value`.
pub fn metrics_line(engine: &Engine) -> String {
    let mut out = format!("instance={}", engine.instance_id());
    for (name, value) in engine.metrics().named() {
        out.push_str(&format!(" {name}={value}"));
    }
    out.push_str(&format!(
        " key_envelopes_unacknowledged={}",
        key_envelopes_unacknowledged(engine)
    ));
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `e2ee.cipher=auto`: AES-256-GCM where this CPU has AES and carry-less
/// multiply instructions (there it is 2.6x faster than ChaCha20-Poly1305 for
/// 1 KiB, docs/PERFORMANCE.md), ChaCha20-Poly1305 elsewhere (where software
/// AES is slow). The producer decides; every consumer opens both. Decided here
/// and not in the core, which never looks at the machine it runs on.
pub fn preferred_cipher() -> Cipher {
    #[cfg(target_arch = "x86_64")]
    let hardware = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let hardware = std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let hardware = false;
    if hardware {
        Cipher::Aes256Gcm
    } else {
        Cipher::ChaCha20Poly1305
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::{json_string, HeadersMode, HostConfig};

    fn parse<'a>(extra: &[(&'a str, &'a str)]) -> Result<HostConfig, super::ConfigError> {
        let mut props = vec![("e2ee.credential", "c"), ("e2ee.trust", "t")];
        props.extend_from_slice(extra);
        HostConfig::from_properties(props)
    }

    #[test]
    fn keys_topic_and_close_timeout_have_defaults() {
        let c = parse(&[]).expect("defaults parse");
        assert_eq!(c.keys_topic, "_e2ee_keys");
        assert_eq!(c.close_timeout_ms, 30_000);
        // retention + rotation + one day
        assert_eq!(
            c.keys_topic_retention_ms(),
            604_800_000 + 900_000 + 86_400_000
        );
        let c =
            parse(&[("e2ee.keys.topic", " k "), ("e2ee.close.timeout.ms", "0")]).expect("parses");
        assert_eq!((c.keys_topic.as_str(), c.close_timeout_ms), ("k", 0));
    }

    #[test]
    fn a_source_prefix_maps_only_names_that_start_with_it() {
        let c = parse(&[]).expect("defaults parse");
        assert_eq!(c.source_topic("A.orders"), "A.orders");
        assert_eq!(c.key_exchange_cluster("b:9092"), "b:9092");
        let c = parse(&[
            ("e2ee.topic.source.prefix", " A. "),
            ("e2ee.control.bootstrap.servers", " a:9092 "),
        ])
        .expect("parses");
        assert_eq!(c.source_topic("A.orders"), "orders");
        assert_eq!(c.source_topic("A.B.orders"), "B.orders");
        // Not mirrored, or nothing after the prefix: the topic's own name.
        assert_eq!(c.source_topic("orders"), "orders");
        assert_eq!(c.source_topic("B.orders"), "B.orders");
        assert_eq!(c.source_topic("A."), "A.");
        assert_eq!(c.source_topic("a.orders"), "a.orders");
        assert_eq!(c.key_exchange_cluster("b:9092"), "a:9092");
    }

    #[test]
    fn a_source_prefix_must_be_a_topic_name_start() {
        for bad in ["A/", "A .", "*", "A\u{e9}."] {
            let e = parse(&[("e2ee.topic.source.prefix", bad)]).expect_err(bad);
            assert_eq!(e.property, "e2ee.topic.source.prefix");
            assert!(e.message.contains("e.g. 'A.'"), "{}", e.message);
        }
        let long = "a".repeat(249);
        assert!(parse(&[("e2ee.topic.source.prefix", &long)]).is_err());
    }

    #[test]
    fn keys_topic_and_close_timeout_are_validated() {
        let e = parse(&[("e2ee.keys.topic", " ")]).expect_err("empty topic");
        assert_eq!(e.property, "e2ee.keys.topic");
        for bad in ["-1", "soon", "1.5", ""] {
            let e = parse(&[("e2ee.close.timeout.ms", bad)]).expect_err(bad);
            assert_eq!(e.property, "e2ee.close.timeout.ms");
            assert!(e.message.contains("remove it to use 30000"), "{e}");
        }
    }

    #[test]
    fn keys_setting_parses_and_names_its_property() {
        assert!(!parse(&[]).expect("defaults parse").tokenize_keys);
        assert!(
            parse(&[("e2ee.keys", " tokenize ")])
                .expect("tokenize")
                .tokenize_keys
        );
        assert!(
            !parse(&[("e2ee.keys", "clear")])
                .expect("clear")
                .tokenize_keys
        );
        for bad in ["encrypt", "Tokenize", ""] {
            let e = parse(&[("e2ee.keys", bad)]).expect_err(bad);
            assert_eq!(e.property, "e2ee.keys");
            assert!(e.message.contains("clear or tokenize"), "{e}");
        }
        let e = parse(&[("e2ee.headers.clear", "e2ee.k")]).expect_err("ours");
        assert_eq!(e.property, "e2ee.headers.clear");
    }

    #[test]
    fn headers_settings_parse_and_name_their_property() {
        let c = parse(&[]).expect("defaults parse");
        assert_eq!(c.headers, HeadersMode::Encrypt);
        assert!(c.headers_clear.is_empty());
        let c = parse(&[
            ("e2ee.headers", " clear "),
            ("e2ee.headers.clear", " route, traceparent ,,"),
        ])
        .expect("parses");
        assert_eq!(c.headers, HeadersMode::Clear);
        assert_eq!(c.headers_clear, ["route", "traceparent"]);
        for bad in ["", "plain", "Encrypt"] {
            let e = parse(&[("e2ee.headers", bad)]).expect_err(bad);
            assert_eq!(e.property, "e2ee.headers");
        }
        for ours in ["e2ee", "route,e2ee.h"] {
            let e = parse(&[("e2ee.headers.clear", ours)]).expect_err(ours);
            assert_eq!(e.property, "e2ee.headers.clear");
        }
    }

    #[test]
    fn keys_topic_retention_saturates() {
        let mut c = parse(&[]).expect("defaults parse");
        c.retention_ms = u64::MAX - 1;
        assert_eq!(c.keys_topic_retention_ms(), i64::MAX as u64);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
