//! `kafka-e2ee doctor --config FILE`: checks a client configuration the way
//! the client will use it, and says what to fix.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_e2ee_core::exchange::hybrid::{self, HybridMode, Speaks};
use kafka_e2ee_core::exchange::mailbox;
use kafka_e2ee_core::format::{Cipher, Compression, InstanceId};
use kafka_e2ee_core::state::StateBlob;
use kafka_e2ee_core::trust::{Identity, TopicPattern, TrustAnchor, DEFAULT_SKEW_MS};

use crate::json::{self, Value};
use crate::props::{self, Property};
use crate::{files, kafka, settings, timefmt, Output};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warning,
    Problem,
}

struct Check {
    level: Level,
    subject: String,
    message: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn ok(&mut self, subject: &str, message: impl Into<String>) {
        self.push(Level::Ok, subject, message.into(), None);
    }
    fn warn(&mut self, subject: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warning, subject, message.into(), Some(fix.into()));
    }
    fn problem(&mut self, subject: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Problem, subject, message.into(), Some(fix.into()));
    }
    fn push(&mut self, level: Level, subject: &str, message: String, fix: Option<String>) {
        self.checks.push(Check {
            level,
            subject: subject.to_owned(),
            message,
            fix,
        });
    }
    fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|c| c.level == level).count()
    }
}

/// Which side of the client the configuration sets up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
    Unknown,
}

pub struct Options<'a> {
    pub config: &'a Path,
    pub offline: bool,
    pub timeout: Duration,
    pub now: u64,
}

pub fn run(opts: &Options<'_>) -> Result<Output, String> {
    let text = fs::read_to_string(opts.config)
        .map_err(|e| format!("cannot read {}: {e}", opts.config.display()))?;
    let props = props::parse(&text);
    let base = opts.config.parent().unwrap_or(Path::new("."));
    let mut r = Report::default();

    let (role, java) = check_hook(&props, &mut r);
    let values = check_properties(&props, java, &mut r);
    let identity = check_credential(&values, base, &mut r);
    let anchor = check_trust(&values, base, &mut r);
    if let (Some(id), Some(anchor)) = (&identity, &anchor) {
        check_verification(id, anchor, opts.now, &mut r);
    }
    if let Some(id) = &identity {
        check_topics(id, &values.topics, role, &mut r);
        check_state_dir(id, values.state_dir.as_deref(), base, &mut r);
    }
    if opts.offline {
        r.warn(
            "broker",
            "not checked (--offline)",
            "run without --offline on a host that reaches the cluster",
        );
    } else {
        check_broker(
            &props,
            &values.control_topic,
            (&values.keys_topic, values.keys_retention_ms),
            opts.timeout,
            &mut r,
        );
    }
    Ok(render(opts.config, &r))
}

fn render(config: &Path, r: &Report) -> Output {
    let (problems, warnings) = (r.count(Level::Problem), r.count(Level::Warning));
    let mut text = format!("kafka-e2ee doctor: {}\n", config.display());
    let mut items = Vec::new();
    for c in &r.checks {
        let tag = match c.level {
            Level::Ok => "ok      ",
            Level::Warning => "warning ",
            Level::Problem => "PROBLEM ",
        };
        text.push_str(&format!("  {tag} {}: {}\n", c.subject, c.message));
        if let Some(fix) = &c.fix {
            if c.level != Level::Ok {
                text.push_str(&format!("           fix: {fix}\n"));
            }
        }
        items.push(json::object(&[
            (
                "level",
                Value::Str(
                    match c.level {
                        Level::Ok => "ok",
                        Level::Warning => "warning",
                        Level::Problem => "problem",
                    }
                    .to_owned(),
                ),
            ),
            ("subject", Value::Str(c.subject.clone())),
            ("message", Value::Str(c.message.clone())),
            ("fix", json::opt_str(c.fix.as_deref())),
        ]));
    }
    text.push_str(&format!("{problems} problem(s), {warnings} warning(s)\n"));
    Output {
        text,
        json: json::object(&[
            ("config", Value::Str(config.display().to_string())),
            ("problems", Value::Num(problems as u64)),
            ("warnings", Value::Num(warnings as u64)),
            ("checks", Value::Raw(json::array(&items))),
        ]),
        failed: problems > 0,
    }
}

const JAVA_PRODUCER: [&str; 2] = ["EncryptingSerializer", "E2eeProducerInterceptor"];
const JAVA_CONSUMER: [&str; 2] = ["DecryptingDeserializer", "E2eeConsumerInterceptor"];

/// Is a kafka-e2ee hook configured (Java serde/interceptor or the plugin)?
fn check_hook(props: &[Property], r: &mut Report) -> (Role, bool) {
    let has = |key: &str, names: &[&str]| {
        props::get(props, key).is_some_and(|v| names.iter().any(|n| v.contains(n)))
    };
    let producer =
        has("value.serializer", &JAVA_PRODUCER) || has("interceptor.classes", &JAVA_PRODUCER);
    let consumer =
        has("value.deserializer", &JAVA_CONSUMER) || has("interceptor.classes", &JAVA_CONSUMER);
    let plugin = props::get(props, "plugin.library.paths");
    if producer || consumer {
        let role = match (producer, consumer) {
            (true, false) => Role::Producer,
            (false, true) => Role::Consumer,
            _ => Role::Unknown,
        };
        let what = match role {
            Role::Producer => "Java producer",
            Role::Consumer => "Java consumer",
            Role::Unknown => "Java producer and consumer",
        };
        r.ok(
            "hook",
            format!("{what} with the kafka-e2ee serde or interceptor"),
        );
        if has("value.serializer", &["EncryptingSerializer"])
            && props::get(props, "e2ee.inner.value.serializer").is_none()
        {
            r.problem(
                "e2ee.inner.value.serializer",
                "EncryptingSerializer wraps another serializer, and none is set",
                "set e2ee.inner.value.serializer to your value serializer, e.g. \
                 org.apache.kafka.common.serialization.StringSerializer",
            );
        }
        if has("value.deserializer", &["DecryptingDeserializer"])
            && props::get(props, "e2ee.inner.value.deserializer").is_none()
        {
            r.problem(
                "e2ee.inner.value.deserializer",
                "DecryptingDeserializer wraps another deserializer, and none is set",
                "set e2ee.inner.value.deserializer to your value deserializer, e.g. \
                 org.apache.kafka.common.serialization.StringDeserializer",
            );
        }
        return (role, true);
    }
    if let Some(paths) = plugin {
        check_plugin(props, paths, r);
        return (Role::Unknown, false);
    }
    r.problem(
        "hook",
        "no kafka-e2ee hook is configured, so this client neither encrypts nor decrypts",
        "Java: value.serializer=dev.kafkae2ee.EncryptingSerializer (consumers: \
         value.deserializer=dev.kafkae2ee.DecryptingDeserializer) or \
         interceptor.classes=dev.kafkae2ee.E2eeProducerInterceptor; librdkafka: \
         plugin.library.paths=/path/to/libkafka_e2ee.so, above the e2ee.* lines",
    );
    (Role::Unknown, false)
}

fn check_plugin(props: &[Property], paths: &str, r: &mut Report) {
    let mut found = false;
    for p in paths.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if !p.contains("kafka_e2ee") {
            continue;
        }
        found = true;
        if p.contains('/') && !Path::new(p).is_file() {
            r.problem(
                "plugin.library.paths",
                format!("{p} does not exist"),
                "give the full path of libkafka_e2ee.so as installed on this host",
            );
        } else {
            r.ok("hook", format!("librdkafka plugin {p}"));
        }
    }
    if !found {
        r.problem(
            "plugin.library.paths",
            format!("'{paths}' does not name libkafka_e2ee"),
            "add the path of libkafka_e2ee.so to plugin.library.paths (';'-separated)",
        );
        return;
    }
    let plugin_line = props
        .iter()
        .filter(|p| p.key == "plugin.library.paths")
        .map(|p| p.line)
        .min()
        .unwrap_or(0);
    let early: Vec<String> = props
        .iter()
        .filter(|p| p.key.starts_with("e2ee.") && p.line < plugin_line)
        .map(|p| format!("{} (line {})", p.key, p.line))
        .collect();
    if !early.is_empty() {
        r.problem(
            "plugin.library.paths",
            format!(
                "{} come(s) before plugin.library.paths; librdkafka rejects e2ee.* properties \
                 until the plugin is loaded",
                early.join(", ")
            ),
            "move plugin.library.paths above every e2ee.* line (a binding that keeps properties \
             in a map, such as rust-rdkafka or confluent-kafka-go: put the e2ee.* lines in a \
             file named by the KAFKA_E2EE_CONFIG environment variable)",
        );
    }
}

struct Values {
    credential: Option<String>,
    trust: Option<String>,
    topics: Vec<TopicPattern>,
    state_dir: Option<String>,
    control_topic: String,
    keys_topic: String,
    /// retention.ms the clients give the keys topic when they create it.
    keys_retention_ms: u64,
}

/// Every `e2ee.*` property: known names, well-formed values, the rules
/// between them (as the native hosts apply them).
fn check_properties(props: &[Property], java: bool, r: &mut Report) -> Values {
    for p in props.iter().filter(|p| p.key.starts_with("e2ee.")) {
        if settings::is_known(&p.key) || (java && settings::JAVA_ONLY.contains(&p.key.as_str())) {
            continue;
        }
        let fix = match settings::closest(&p.key) {
            Some(near) => format!("did you mean {near}? (see `kafka-e2ee config docs`)"),
            None => "remove it; `kafka-e2ee config docs` lists the e2ee.* properties".to_owned(),
        };
        r.problem(
            &p.key,
            format!(
                "unknown property (line {}); the client refuses to start",
                p.line
            ),
            fix,
        );
    }
    let get = |k: &str| -> Option<String> {
        props::get(props, k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let value =
        |k: &str| get(k).unwrap_or_else(|| settings::default_of(k).unwrap_or("").to_owned());
    let number = |k: &str, r: &mut Report| -> Option<u64> {
        let v = value(k);
        match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                r.problem(
                    k,
                    format!("'{v}' is not a whole number"),
                    "give a number of milliseconds (or records)",
                );
                None
            }
        }
    };
    let rotation = number("e2ee.key.rotation.ms", r);
    let records = number("e2ee.key.rotation.records", r);
    let retention = number("e2ee.key.retention.ms", r);
    let wait = number("e2ee.key.wait.ms", r);
    if rotation == Some(0) {
        r.problem(
            "e2ee.key.rotation.ms",
            "must be greater than 0",
            "use e.g. 900000 (15 min)",
        );
    }
    match records {
        Some(0) => r.problem(
            "e2ee.key.rotation.records",
            "must be greater than 0",
            "use e.g. 100000000",
        ),
        Some(n) if n > u64::from(u32::MAX) => r.problem(
            "e2ee.key.rotation.records",
            "must be at most 4294967295",
            "use e.g. 100000000",
        ),
        _ => {}
    }
    if let (Some(rot), Some(ret)) = (rotation, retention) {
        if ret < rot {
            r.problem(
                "e2ee.key.retention.ms",
                format!("{ret} is less than e2ee.key.rotation.ms ({rot}): records would become unreadable before their epoch ends"),
                "make retention at least the rotation interval (default 7 days)",
            );
        } else if rot > 0 {
            r.ok(
                "keys",
                format!(
                    "rotate every {}, kept {} after their epoch ends (the exposure window)",
                    human_ms(rot),
                    human_ms(ret)
                ),
            );
        }
    }
    if wait == Some(0) {
        r.warn(
            "e2ee.key.wait.ms",
            "0: a consumer fails a record at once when it lacks its key",
            "keep the default 30000 unless you handle such failures",
        );
    }
    let mut topics = Vec::new();
    for t in value("e2ee.topics")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match TopicPattern::parse(t) {
            Ok(p) => topics.push(p),
            Err(e) => r.problem(
                "e2ee.topics",
                format!("'{t}': {e}"),
                "use a topic name, `prefix.*` or `*`",
            ),
        }
    }
    if topics.is_empty()
        && !value("e2ee.topics")
            .split(',')
            .any(|t| !t.trim().is_empty())
    {
        r.problem(
            "e2ee.topics",
            "lists no topic",
            "list the protected topics, or `*` for all",
        );
    }
    let cipher = value("e2ee.cipher");
    if cipher != "auto" && Cipher::from_name(&cipher).is_none() {
        r.problem(
            "e2ee.cipher",
            format!("'{cipher}' is not a cipher"),
            "use auto (the default), aes-256-gcm or chacha20-poly1305",
        );
    }
    let hybrid = value("e2ee.kex.hybrid");
    match HybridMode::parse(&hybrid) {
        None => r.problem(
            "e2ee.kex.hybrid",
            format!("'{hybrid}' is not a mode"),
            "use prefer (the default), require or off",
        ),
        Some(HybridMode::Off) => r.warn(
            "e2ee.kex.hybrid",
            "off: the topic keys this client exchanges are protected by X25519 alone, so a broker that keeps the control topic can read them once it has a quantum computer",
            "remove it (prefer) unless a measured cost rules hybrid out (docs/PERFORMANCE.md)",
        ),
        Some(_) => {}
    }
    let compression = value("e2ee.compression");
    match Compression::from_name(&compression) {
        None => r.problem(
            "e2ee.compression",
            format!("'{compression}' is not a compression"),
            "use none (the default), zstd or lz4",
        ),
        Some(Compression::None) => {}
        Some(_) => {
            let batch = props::get(props, "compression.type")
                .or_else(|| props::get(props, "compression.codec"))
                .map(str::trim)
                .unwrap_or("none");
            if matches!(batch, "none" | "") {
                r.warn(
                    "e2ee.compression",
                    format!("{compression} without compression.type: values keep their length, nothing is saved"),
                    "set compression.type=zstd (or lz4) so the client's batches squeeze the padding",
                );
            }
            r.warn(
                "e2ee.compression",
                "compressed sizes reveal something about the values (CRIME/BREACH-style)",
                "keep it off for values that mix attacker-influenced data with secrets",
            );
        }
    }
    let control_topic = value("e2ee.control.topic");
    if control_topic.is_empty() {
        r.problem(
            "e2ee.control.topic",
            "is empty",
            "remove it to use _e2ee_control",
        );
    }
    let keys_topic = value("e2ee.keys.topic");
    if keys_topic.is_empty() {
        r.problem("e2ee.keys.topic", "is empty", "remove it to use _e2ee_keys");
    } else if keys_topic == control_topic {
        r.problem(
            "e2ee.keys.topic",
            format!("is the control topic ({control_topic}): the two need different retention and cleanup"),
            "remove it to use _e2ee_keys",
        );
    }
    let close = value("e2ee.close.timeout.ms");
    match close.parse::<u64>() {
        Err(_) => r.problem(
            "e2ee.close.timeout.ms",
            format!("'{close}' is not a whole number of milliseconds"),
            "give 0 or more milliseconds, or remove it to use 30000",
        ),
        Ok(0) => r.warn(
            "e2ee.close.timeout.ms",
            "0: a producer's close does not wait for its key envelopes to reach the broker",
            "keep the default 30000 so records stay readable after the producer exits",
        ),
        Ok(_) => {}
    }
    Values {
        credential: get("e2ee.credential"),
        trust: get("e2ee.trust"),
        topics,
        state_dir: get("e2ee.state.dir"),
        control_topic,
        keys_topic,
        keys_retention_ms: retention
            .unwrap_or(604_800_000)
            .saturating_add(rotation.unwrap_or(900_000))
            .saturating_add(86_400_000),
    }
}

fn human_ms(ms: u64) -> String {
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ] {
        if ms >= unit && ms.is_multiple_of(unit) {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}

/// The client resolves a relative path against its own working directory,
/// which doctor cannot know; it looks here and next to the configuration,
/// and warns that the client may not find it.
fn resolve(property: &str, value: &str, base: &Path, r: &mut Report) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_absolute() {
        return p;
    }
    r.warn(
        property,
        format!("'{value}' is a relative path: the client resolves it against its own working directory"),
        "use an absolute path",
    );
    if p.exists() {
        p
    } else {
        base.join(p)
    }
}

fn check_credential(v: &Values, base: &Path, r: &mut Report) -> Option<Identity> {
    let Some(value) = &v.credential else {
        r.problem(
            "e2ee.credential",
            "is not set; the client refuses to start",
            "set it to this client's credential file (kafka-e2ee credential issue ... --out FILE)",
        );
        return None;
    };
    let path = resolve("e2ee.credential", value, base, r);
    let bytes = match files::read_secret(&path) {
        Ok(b) => b,
        Err(e) => {
            r.problem(
                "e2ee.credential",
                e,
                "check the path; the file must be readable by the client's user",
            );
            return None;
        }
    };
    let id = match Identity::from_file_bytes(&bytes) {
        Ok(id) => id,
        Err(e) => {
            r.problem(
                "e2ee.credential",
                format!("{}: {e}", path.display()),
                "point it at a file written by `kafka-e2ee credential issue` (not the trust file or the authority key)",
            );
            return None;
        }
    };
    if let Some(why) = files::writable_by_others(&path) {
        r.problem(
            "e2ee.credential",
            format!(
                "{} {why}: whoever can write it can make this client use their key",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        );
    } else if let Some(mode) = files::readable_by_others(&path) {
        r.warn(
            "e2ee.credential",
            format!(
                "{} has mode {mode:03o}: others may read this client's private key",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        );
    }
    let c = id.credential();
    let version = if c.signing_key().is_some() {
        ""
    } else {
        "; version 1 (no signing key): key exchange v2 needs version 2, \
         reissue with `kafka-e2ee credential issue`"
    };
    r.ok(
        "e2ee.credential",
        format!(
            "{} ({}), expires {}{version}",
            c.name(),
            c.fingerprint(),
            timefmt::format_instant(c.expires_ms())
        ),
    );
    Some(id)
}

fn check_trust(v: &Values, base: &Path, r: &mut Report) -> Option<TrustAnchor> {
    let Some(value) = &v.trust else {
        r.problem(
            "e2ee.trust",
            "is not set; the client refuses to start",
            "set it to the trust file (kafka-e2ee authority init writes one)",
        );
        return None;
    };
    let path = resolve("e2ee.trust", value, base, r);
    let bytes = match files::read(&path) {
        Ok(b) => b,
        Err(e) => {
            r.problem(
                "e2ee.trust",
                e,
                "copy the deployment's trust file to this host and give its path",
            );
            return None;
        }
    };
    if let Some(why) = files::writable_by_others(&path) {
        r.problem(
            "e2ee.trust",
            format!(
                "{} {why}: whoever can write it can make this client trust their own authority",
                path.display()
            ),
            format!("chmod 644 {} (owned by you or root)", path.display()),
        );
    }
    match TrustAnchor::from_file_bytes(&bytes) {
        Ok(a) => {
            r.ok(
                "e2ee.trust",
                format!(
                    "{} authority key(s), {} pinned, {} denied",
                    a.authorities().len(),
                    a.pinned_credentials().len(),
                    a.denied().len()
                ),
            );
            Some(a)
        }
        Err(e) => {
            r.problem(
                "e2ee.trust",
                format!("{}: {e}", path.display()),
                "point it at the trust file (DIR/trust from `kafka-e2ee authority init`, or `kafka-e2ee trust pin`)",
            );
            None
        }
    }
}

fn check_verification(id: &Identity, anchor: &TrustAnchor, now: u64, r: &mut Report) {
    let c = id.credential();
    match anchor.verify(c, now, DEFAULT_SKEW_MS) {
        Ok(()) => {
            r.ok("trust", "the credential is trusted by the trust file");
            let left = c.expires_ms().saturating_sub(now);
            if left < 7 * 86_400_000 {
                r.warn(
                    "e2ee.credential",
                    format!("expires in {}", human_ms(left - left % 60_000)),
                    "issue a new credential and restart the client before then",
                );
            }
        }
        Err(e) => r.problem(
            "trust",
            format!("the trust file does not accept this credential: {e}"),
            "issue the credential with the authority whose trust file the client uses \
             (or pin it with `kafka-e2ee trust pin`), and check it has not expired or been denied",
        ),
    }
}

/// Does `granted` cover every topic `wanted` matches?
fn covers(granted: &TopicPattern, wanted: &TopicPattern) -> bool {
    let (g, w) = (granted.to_string(), wanted.to_string());
    match g.strip_suffix('*') {
        Some(gp) => w.strip_suffix('*').unwrap_or(&w).starts_with(gp),
        None => g == w,
    }
}

fn check_topics(id: &Identity, topics: &[TopicPattern], role: Role, r: &mut Report) {
    let c = id.credential();
    for t in topics {
        let p = c.produce().iter().any(|g| covers(g, t));
        let q = c.consume().iter().any(|g| covers(g, t));
        let subject = format!("topic {t}");
        let flags = match role {
            Role::Producer => format!("--produce '{t}'"),
            Role::Consumer => format!("--consume '{t}'"),
            Role::Unknown => format!("--produce '{t}' and/or --consume '{t}'"),
        };
        let fix = format!("issue a credential with {flags}, or narrow e2ee.topics");
        match (role, p, q) {
            (Role::Producer, false, _) => {
                r.problem(&subject, "the credential may not produce to it", fix)
            }
            (Role::Consumer, _, false) => {
                r.problem(&subject, "the credential may not consume from it", fix)
            }
            (Role::Unknown, false, false) => r.problem(
                &subject,
                "the credential may neither produce to nor consume from it",
                fix,
            ),
            _ => r.ok(
                &subject,
                match (p, q) {
                    (true, true) => "may produce and consume",
                    (true, false) => "may produce",
                    _ => "may consume",
                },
            ),
        }
    }
}

fn check_state_dir(id: &Identity, dir: Option<&str>, base: &Path, r: &mut Report) {
    let Some(dir) = dir else {
        r.warn(
            "e2ee.state.dir",
            "not set: keys live in memory only, so after a restart a producer cannot serve \
             the keys of records it already wrote",
            "set e2ee.state.dir to a directory of its own for each client process",
        );
        return;
    };
    let path = resolve("e2ee.state.dir", dir, base, r);
    if !path.exists() {
        r.ok(
            "e2ee.state.dir",
            format!("{} will be created on first start", path.display()),
        );
        return;
    }
    if !path.is_dir() {
        r.problem(
            "e2ee.state.dir",
            format!("{} is not a directory", path.display()),
            "give a directory path",
        );
        return;
    }
    let read = kafka_e2ee::state_dir::StateDir::open_read_only(&path, id).read();
    match read.map(|o| o.map(|plain| StateBlob::parse(&plain))) {
        Ok(Some(Ok(s))) => r.ok(
            "e2ee.state.dir",
            format!("{}: {} stored key(s)", path.display(), s.keys().len()),
        ),
        Ok(None) => r.ok(
            "e2ee.state.dir",
            format!("{}: no state yet", path.display()),
        ),
        Ok(Some(Err(_))) | Err(_) => r.problem(
            "e2ee.state.dir",
            format!(
                "{}/state belongs to another credential or is corrupt (or its state.key is \
                 missing or not the one saved with it); the client refuses to start",
                path.display()
            ),
            "give each credential its own state directory (or move the old one away)",
        ),
    }
}

/// What a census of one key-exchange topic looks for: the control topic's
/// handshakes (`hybrid::census`), or the keys topic's prekeys records
/// (`mailbox::census`).
struct Census {
    check: &'static str,
    census: fn(&[&[u8]]) -> BTreeMap<InstanceId, Speaks>,
    /// Who is counted, and what the classical ones do.
    parties: &'static str,
    classical: &'static str,
    hybrid: &'static str,
    unreadable: &'static str,
    fix: &'static str,
}

/// Which parties seen on the control topic (its retention: about the last
/// hour) still speak the classical key exchange only: they and whoever
/// they exchange keys with are not protected against a broker that keeps
/// the control topic until it has a quantum computer.
const SESSIONS: Census = Census {
    check: "hybrid key exchange",
    census: |v| hybrid::census(v.iter().copied()),
    parties: "instance(s)",
    classical: "speak the classical (X25519-only) key exchange",
    hybrid: "speak hybrid",
    unreadable: "grant this client Read on the control topic to see which parties speak classical only",
    fix: "upgrade them, or remove e2ee.kex.hybrid=off from their configuration; once none is left, e2ee.kex.hybrid=require refuses classical sessions",
};

/// Which consumers' mailboxes on the keys topic publish no hybrid prekeys
/// record: producers seal their keys in classical envelopes, which a
/// broker that keeps the keys topic opens once it can break X25519.
const MAILBOXES: Census = Census {
    check: "hybrid envelopes",
    census: |v| mailbox::census(v.iter().copied()),
    parties: "mailbox(es)",
    classical: "publish classical (X25519-only) prekeys only, so their keys travel in classical envelopes",
    hybrid: "publish hybrid prekeys",
    unreadable: "grant this client Read on the keys topic to see which mailboxes get classical envelopes",
    fix: "upgrade those consumers, or remove e2ee.kex.hybrid=off from their configuration; once none is left, e2ee.kex.hybrid=require on the producers seals only hybrid envelopes",
};

fn check_census(
    c: &Census,
    conn: &kafka::Connection,
    client: &rskafka::client::Client,
    topic: &str,
    parts: usize,
    r: &mut Report,
) {
    let partitions: Vec<i32> = (0..i32::try_from(parts).unwrap_or(1)).collect();
    let samples = match kafka::sample(conn, client, topic, &partitions, 20_000, &mut |_, _| {}) {
        Ok(s) => s,
        Err(e) => {
            r.warn(c.check, format!("cannot read {topic}: {e}"), c.unreadable);
            return;
        }
    };
    let values: Vec<&[u8]> = samples
        .iter()
        .flat_map(|s| s.records.iter())
        .filter_map(|r| r.record.value.as_deref())
        .collect();
    let census = (c.census)(&values);
    let classical: Vec<String> = census
        .iter()
        .filter(|(_, s)| **s == Speaks::ClassicalOnly)
        .map(|(id, _)| id.to_string())
        .collect();
    let hybrid_n = census.len() - classical.len();
    if classical.is_empty() {
        r.ok(
            c.check,
            format!(
                "{hybrid_n} {} on {topic} {} ({} records), none classical only",
                c.parties,
                c.hybrid,
                values.len()
            ),
        );
    } else {
        r.warn(
            c.check,
            format!(
                "{} {} on {topic} {}: {} ({hybrid_n} {})",
                classical.len(),
                c.parties,
                c.classical,
                classical.join(", "),
                c.hybrid
            ),
            c.fix,
        );
    }
}

fn check_broker(
    props: &[Property],
    control_topic: &str,
    (keys_topic, keys_retention_ms): (&str, u64),
    timeout: Duration,
    r: &mut Report,
) {
    // Every check here is about the key-exchange topics: they live on the
    // cluster e2ee.control.bootstrap.servers names when it is set (a
    // mirrored cluster's consumer), not on the client's own.
    let control_cluster = props::get(props, "e2ee.control.bootstrap.servers")
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let conn = match kafka::Connection::from_config(control_cluster, props, timeout) {
        Ok(c) => c,
        Err(e) => {
            r.problem(
                "broker",
                e,
                "fix the connection settings, or pass --offline to skip this check",
            );
            return;
        }
    };
    crate::progress(&format!("connecting to {} ...", conn.bootstrap.join(",")));
    let client = match conn.connect() {
        Ok(c) => c,
        Err(e) => {
            r.problem(
                "broker",
                e,
                "start the broker or fix bootstrap.servers / the network path",
            );
            return;
        }
    };
    match kafka::topics(&conn, &client) {
        Ok(list) => {
            r.ok(
                "broker",
                format!(
                    "{} answers ({} topics)",
                    conn.bootstrap.join(","),
                    list.len()
                ),
            );
            match list.iter().find(|(n, _)| n == control_topic) {
                Some((_, parts)) => {
                    r.ok("control topic", format!("{control_topic} exists ({parts} partition(s))"));
                    check_census(&SESSIONS, &conn, &client, control_topic, *parts, r);
                }
                None => r.warn(
                    "control topic",
                    format!("{control_topic} does not exist yet: clients create it on first start if they may"),
                    format!(
                        "create it: kafka-topics.sh --bootstrap-server {} --create --topic {control_topic} --partitions 1 --config retention.ms=3600000",
                        conn.bootstrap.first().map_or("HOST:PORT", String::as_str)
                    ),
                ),
            }
            match list.iter().find(|(n, _)| n == keys_topic) {
                Some((_, parts)) => {
                    r.ok("keys topic", format!("{keys_topic} exists ({parts} partition(s))"));
                    check_census(&MAILBOXES, &conn, &client, keys_topic, *parts, r);
                }
                None => r.warn(
                    "keys topic",
                    format!("{keys_topic} does not exist yet: clients create it on first start (compact,delete, retention = e2ee.key.retention.ms + e2ee.key.rotation.ms + 1 day) if they may"),
                    format!(
                        "or create it: kafka-topics.sh --bootstrap-server {} --create --topic {keys_topic} --partitions 1 --config cleanup.policy=compact,delete --config retention.ms={keys_retention_ms}",
                        conn.bootstrap.first().map_or("HOST:PORT", String::as_str)
                    ),
                ),
            }
            // MirrorMaker 2's default topics.exclude does not match the
            // key-exchange topics (one underscore), so `topics = .*` copies
            // them; with the default replication policy the copies show
            // here as <alias>.<topic> (docs/PROTOCOL.md, section 5c).
            let copies: Vec<&str> = list
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| is_mirrored_copy(n, control_topic) || is_mirrored_copy(n, keys_topic))
                .collect();
            if !copies.is_empty() {
                r.warn(
                    "mirrored key-exchange topics",
                    format!(
                        "{}: MirrorMaker 2 copies of a key-exchange topic; no client reads them",
                        copies.join(", ")
                    ),
                    "add _e2ee_.* (or your e2ee.control.topic and e2ee.keys.topic) to the mirror \
                     flow's topics.exclude, keeping its defaults (docs/QUICKSTART.md, MirrorMaker \
                     2), then delete the copies",
                );
            }
        }
        Err(e) => r.problem(
            "broker",
            format!("cannot list topics: {e}"),
            "check the client's ACLs allow Describe on topics",
        ),
    }
}

/// Whether `name` is what MirrorMaker 2's DefaultReplicationPolicy names a
/// copy of `topic`: `<alias>.<topic>`, for any alias (chains included).
fn is_mirrored_copy(name: &str, topic: &str) -> bool {
    name.strip_suffix(topic)
        .and_then(|head| head.strip_suffix('.'))
        .is_some_and(|alias| !alias.is_empty())
}

#[cfg(test)]
mod tests {
    use super::is_mirrored_copy;

    #[test]
    fn mirrored_copies_of_the_key_exchange_topics_are_recognised() {
        assert!(is_mirrored_copy("A._e2ee_control", "_e2ee_control"));
        assert!(is_mirrored_copy("B.A._e2ee_keys", "_e2ee_keys"));
        for name in [
            "_e2ee_control",
            "._e2ee_control",
            "A_e2ee_control",
            "A._e2ee_controls",
        ] {
            assert!(!is_mirrored_copy(name, "_e2ee_control"), "{name}");
        }
    }
}
