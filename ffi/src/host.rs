//! What every host (the JNI library and the librdkafka plugin) needs around
//! the sans-IO engine: the `e2ee.*` settings, the credential and trust files,
//! a state directory, the clock and the OS RNG, and the rule of one engine
//! per process, cluster and credential.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::trust::{Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Engine, EngineConfig, Storage};

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
    pub bind_key: bool,
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
        let state_dir = get("e2ee.state.dir").trim();
        let control_topic = get("e2ee.control.topic").trim().to_owned();
        if control_topic.is_empty() {
            return Err(bad("e2ee.control.topic", "must not be empty"));
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
            bind_key,
        })
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

fn read_file(property: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    fs::read(path).map_err(|e| bad(property, format!("cannot read '{}': {e}", path.display())))
}

/// The state directory: one encrypted blob, written atomically, and an
/// exclusive lock so two processes never share one (they would reuse epoch
/// numbers under one instance id).
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    _lock: File,
}

impl FileStorage {
    pub fn open(dir: &Path) -> Result<FileStorage, ConfigError> {
        let p = "e2ee.state.dir";
        fs::create_dir_all(dir)
            .map_err(|e| bad(p, format!("cannot create '{}': {e}", dir.display())))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| bad(p, format!("cannot open '{}': {e}", dir.display())))?;
        lock.try_lock().map_err(|_| {
            bad(
                p,
                format!(
                    "'{}' is in use by another process; give each process its own state directory",
                    dir.display()
                ),
            )
        })?;
        Ok(FileStorage {
            path: dir.join("state"),
            _lock: lock,
        })
    }
}

impl Storage for FileStorage {
    fn load(&mut self) -> Result<Option<Vec<u8>>, String> {
        match fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }
    fn store(&mut self, blob: &[u8]) -> Result<(), String> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            f.write_all(blob)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// Builds an engine from the settings: reads and checks the credential and
/// trust files, opens the state directory, seeds from the OS RNG.
pub fn build_engine(cfg: &HostConfig) -> Result<Engine, ConfigError> {
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
        Some(dir) => Some(Box::new(FileStorage::open(dir)?)),
        None => None,
    };
    Engine::new(
        cfg.engine_config()?,
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

/// One engine per process, cluster and credential: clients that share them
/// share the engine (and its keys and sessions). `cluster` is the client's
/// bootstrap servers string.
pub fn shared_engine(cluster: &str, cfg: &HostConfig) -> Result<(Arc<Engine>, bool), ConfigError> {
    // The pid keeps a forked child from reusing its parent's engine (and
    // so its epoch keys and nonce counters).
    let key = format!(
        "{}\u{0}{cluster}\u{0}{}\u{0}{}",
        std::process::id(),
        cfg.credential.display(),
        cfg.control_topic
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
    out.push('}');
    out
}

/// One line for a log: the instance and every counter as `name=value`.
pub fn metrics_line(engine: &Engine) -> String {
    let mut out = format!("instance={}", engine.instance_id());
    for (name, value) in engine.metrics().named() {
        out.push_str(&format!(" {name}={value}"));
    }
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

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
