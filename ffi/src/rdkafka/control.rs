//! The control plane of one engine: a producer and an assign-only consumer
//! made from the host's own librdkafka and a filtered copy of the host's
//! configuration (so its SASL/SSL settings apply), driven by one thread.
//!
//! Contract shared with the Java host (ControlPlane.java):
//! - Two topics. `e2ee.control.topic` (live exchange; delete policy, 1 h) is
//!   read on all partitions from the end offsets as of start, known before
//!   the first message is sent. `e2ee.keys.topic` (prekeys and key
//!   envelopes; `compact,delete`, retention = e2ee.key.retention.ms +
//!   e2ee.key.rotation.ms + 1 day) is read on all partitions from the
//!   beginning. Both with `assign`: no group membership, no commits. Both are
//!   created if missing (1 partition, the broker's default replication).
//! - Every non-null record value of either topic goes to
//!   `Engine::handle_control`; the messages say what they are.
//! - Every message of `poll_transmit` goes to the topic its `channel` names,
//!   keyed by `ControlMessage::record_key` (the recipient's 8-byte instance
//!   id or null on the control topic; always set on the compacted keys
//!   topic).
//! - "Caught up": the keys topic has been read up to the end offsets it had
//!   when reading started.
//! - Close, when a producer client used the engine: within
//!   e2ee.close.timeout.ms from the start of close, wait until caught up (so
//!   the engine knows every recipient's prekey), tick the engine once more
//!   and send everything it queued, flush; key envelopes the broker has not
//!   acknowledged by then are logged at ERROR and counted
//!   (key_envelopes_unacknowledged). A consumer-only engine stops at once.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use kafka_e2ee_core::{Channel, ControlMessage, Engine};

use super::api::{self, Api, Conf, Kafka, Topic};
use crate::host::{self, now_ms, HostConfig};

/// Wakes consumers waiting for a key when the control thread handled input.
#[derive(Debug, Default)]
pub struct KeySignal {
    lock: Mutex<()>,
    cond: Condvar,
}

impl KeySignal {
    pub fn notify(&self) {
        let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.cond.notify_all();
    }
    /// Waits until `changed()` or the deadline (Unix ms); true if changed.
    pub fn wait_until(&self, deadline_ms: u64, changed: impl Fn() -> bool) -> bool {
        let mut g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if changed() {
                return true;
            }
            let now = now_ms();
            if now >= deadline_ms {
                return false;
            }
            let step = Duration::from_millis((deadline_ms - now).min(20));
            g = self
                .cond
                .wait_timeout(g, step)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What the control thread needs of the client settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub control_topic: String,
    pub keys_topic: String,
    pub keys_retention_ms: u64,
    pub close_timeout_ms: u64,
    /// `e2ee.control.bootstrap.servers`: the control clients connect there
    /// instead of to the client's own cluster.
    pub bootstrap: Option<String>,
}

impl Settings {
    pub fn of(cfg: &HostConfig) -> Settings {
        Settings {
            control_topic: cfg.control_topic.clone(),
            keys_topic: cfg.keys_topic.clone(),
            keys_retention_ms: cfg.keys_topic_retention_ms(),
            close_timeout_ms: cfg.close_timeout_ms,
            bootstrap: cfg.control_bootstrap.clone(),
        }
    }
}

/// The timeout of each blocking librdkafka call of the setup (metadata,
/// watermarks). Short, so a close is never held up long by a call already in
/// flight when it starts (the broker may be down); the setup loop retries,
/// and a connection still being made carries over to the next try.
const SLICE_MS: u64 = 1000;

/// State shared between a control plane and its thread.
#[derive(Debug, Default)]
struct Status {
    stop: AtomicBool,
    /// A producer client used this engine: close delivers its key envelopes.
    drain: AtomicBool,
    /// Unix ms when close started (set before `stop`).
    close_started_ms: AtomicU64,
    caught_up: AtomicBool,
}

impl Status {
    /// Whether the thread should end now: stopped, and either nothing to
    /// deliver or out of time.
    fn give_up(&self, close_timeout_ms: u64) -> bool {
        self.stop.load(Ordering::Acquire)
            && (!self.drain.load(Ordering::Acquire)
                || now_ms() >= self.deadline_ms(close_timeout_ms))
    }
    /// The timeout of one blocking librdkafka call: `ms`, cut to what is
    /// left of the close deadline once closing, so a close with the broker
    /// down ends on time.
    fn budget_ms(&self, ms: u64, close_timeout_ms: u64) -> c_int {
        let ms = if self.stop.load(Ordering::Acquire) {
            self.deadline_ms(close_timeout_ms)
                .saturating_sub(now_ms())
                .clamp(1, ms)
        } else {
            ms
        };
        c_int::try_from(ms).unwrap_or(c_int::MAX)
    }
    fn deadline_ms(&self, close_timeout_ms: u64) -> u64 {
        self.close_started_ms
            .load(Ordering::Acquire)
            .saturating_add(close_timeout_ms)
    }
}

/// One per engine; dropped when the last client using it is destroyed.
#[derive(Debug)]
pub struct ControlPlane {
    engine: Arc<Engine>,
    pub keys: Arc<KeySignal>,
    status: Arc<Status>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ControlPlane {
    /// A producer client joined: from now on, close delivers key envelopes
    /// before it stops (a consumer-only engine has none and stops at once).
    pub fn producer_joined(&self) {
        self.status.drain.store(true, Ordering::Release);
    }

    /// Whether the keys topic has been read up to the end offsets it had when
    /// this control plane started reading it.
    // Read by close (in the thread) today; the record path will consult it
    // once the core publishes prekeys (a consumer then knows whether a
    // missing envelope may still be on its way).
    #[allow(dead_code)]
    pub fn caught_up(&self) -> bool {
        self.status.caught_up.load(Ordering::Acquire)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The close timeout counts from here.
        self.status
            .close_started_ms
            .store(now_ms(), Ordering::Release);
        self.status.stop.store(true, Ordering::Release);
        let t = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The thread touches only its own handles, never a client's, so
        // joining from a client's on_destroy cannot deadlock librdkafka.
        // It returns within e2ee.close.timeout.ms (plus at most one
        // librdkafka call's own timeout) after the stop above.
        if let Some(t) = t {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        // The last client of this engine is gone: leave its counters where
        // any app (kcat too) shows them, if something was turned away.
        let m = self.engine.metrics();
        if m.records_rejected
            + m.records_missing_header
            + m.records_failed
            + m.control_rejected
            + host::key_envelopes_unacknowledged(&self.engine)
            > 0
        {
            eprintln!(
                "kafka-e2ee: closing with rejections: {}",
                crate::host::metrics_line(&self.engine)
            );
        }
    }
}

type Registry = Mutex<HashMap<String, Weak<ControlPlane>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Raw pointers moved into the control thread.
struct Handles {
    api: Arc<Api>,
    producer_conf: *mut Conf,
    consumer_conf: *mut Conf,
}
// SAFETY: librdkafka configuration objects and handles may be used from any
// thread; only the control thread uses these after the move.
unsafe impl Send for Handles {}

/// Joins the control plane of `engine`, starting it from `host_conf` if this
/// is the engine's first client.
///
/// # Safety
/// `host_conf` must be a live configuration of `api`'s library.
pub unsafe fn join(
    key: &str,
    engine: Arc<Engine>,
    api: &Arc<Api>,
    host_conf: *const Conf,
    settings: &Settings,
) -> Result<Arc<ControlPlane>, String> {
    let key = format!("{key}\u{0}{}", api.library);
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|_, w| w.strong_count() > 0);
    if let Some(cp) = reg.get(&key).and_then(Weak::upgrade) {
        return Ok(cp);
    }
    // SAFETY: host_conf is live (caller).
    let producer_conf = unsafe { control_conf(api, host_conf, api::PRODUCER, &engine, settings)? };
    // SAFETY: as above.
    let consumer_conf =
        match unsafe { control_conf(api, host_conf, api::CONSUMER, &engine, settings) } {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: we own producer_conf.
                unsafe { (api.conf_destroy)(producer_conf) };
                return Err(e);
            }
        };
    let status = Arc::new(Status::default());
    let keys = Arc::new(KeySignal::default());
    let handles = Handles {
        api: api.clone(),
        producer_conf,
        consumer_conf,
    };
    let (e2, s2, k2, settings) = (
        engine.clone(),
        status.clone(),
        keys.clone(),
        settings.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("kafka-e2ee-control".into())
        .spawn(move || {
            let h = handles;
            // SAFETY: the confs are ours and live; run() consumes them.
            unsafe { run(&h, &e2, &s2, &k2, &settings) }
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    let cp = Arc::new(ControlPlane {
        engine,
        keys,
        status,
        thread: Mutex::new(Some(thread)),
    });
    reg.insert(key, Arc::downgrade(&cp));
    Ok(cp)
}

/// Delivery outcomes of the keys-topic messages of one control producer.
/// Its address is the `msg_opaque` of every keys message, so the delivery
/// report callback finds it; it lives on the control thread's stack until
/// after the producer is destroyed (librdkafka serves delivery reports only
/// inside that thread's poll, flush and destroy calls).
#[derive(Debug, Default)]
struct KeysDelivery {
    /// Handed to the producer, no delivery report yet.
    pending: AtomicU64,
    /// Failed for good (delivery report with an error, or never queued).
    failed: AtomicU64,
}

impl KeysDelivery {
    fn queued(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }
    fn reported(&self, ok: bool) {
        // Never below zero, even for a report that was not counted in.
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if !ok {
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
    }
    fn never_queued(&self) {
        self.failed.fetch_add(1, Ordering::AcqRel);
    }
    /// Not acknowledged by the broker: failed, or still waiting.
    fn unacknowledged(&self) -> u64 {
        self.pending
            .load(Ordering::Acquire)
            .saturating_add(self.failed.load(Ordering::Acquire))
    }
}

/// librdkafka's `dr_msg_cb` for the control producer: counts the outcome of
/// keys-topic messages (their `msg_opaque` is the thread's [`KeysDelivery`];
/// control-topic messages have none).
unsafe extern "C" fn delivered(_rk: *mut Kafka, msg: *const api::Message, _opaque: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        if msg.is_null() {
            return;
        }
        // SAFETY: librdkafka passes a live message for the callback's span.
        let m = unsafe { &*msg };
        if m.private.is_null() {
            return;
        }
        // SAFETY: a non-null msg_opaque is always the KeysDelivery of the
        // thread that produced it, alive until the producer is destroyed.
        let d = unsafe { &*m.private.cast::<KeysDelivery>() };
        d.reported(m.err == api::ERR_NO_ERROR);
    });
}

/// A copy of the host's configuration without the plugin, the e2ee.*
/// settings, the app's callbacks and anything that would make the control
/// clients part of the app's transactions or group.
unsafe fn control_conf(
    api: &Api,
    host: *const Conf,
    kind: c_int,
    engine: &Engine,
    cs: &Settings,
) -> Result<*mut Conf, String> {
    // SAFETY: api is the live table of the host's librdkafka.
    let other = unsafe { other_kinds_properties(api, kind) };
    let filter: Vec<CString> = [
        "plugin.library.paths",
        "e2ee.",
        "interceptors",
        "transactional.id",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "statistics.interval.ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(other.global)
    // Copied whole by rd_kafka_conf_dup_filter, the other kind's topic-level
    // properties with it: rebuilt by copy_topic_properties (where this
    // librdkafka has what that needs).
    .chain(
        TopicConfApi::of(api)
            .is_some()
            .then(|| "default_topic_conf".to_owned()),
    )
    .filter_map(|s| CString::new(s).ok())
    .collect();
    let ptrs: Vec<*const std::ffi::c_char> = filter.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: host is live; ptrs outlive the call.
    let conf = unsafe { (api.conf_dup_filter)(host, ptrs.len(), ptrs.as_ptr()) };
    if conf.is_null() {
        return Err("rd_kafka_conf_dup_filter failed".into());
    }
    // SAFETY: host is live; conf is ours.
    unsafe { copy_topic_properties(api, host, conf, &other.topic) };
    // SAFETY: conf is ours.
    // (Only the callbacks that apply to the kind: setting another kind's
    // callback, even to NULL, makes librdkafka warn about it.)
    unsafe {
        (api.conf_set_error_cb)(conf, std::ptr::null());
        (api.conf_set_stats_cb)(conf, std::ptr::null());
        if kind == api::PRODUCER {
            // Delivery reports tell close which key envelopes the broker
            // acknowledged; the app's own callbacks are not ours to call.
            (api.conf_set_events)(conf, 0);
            (api.conf_set_dr_msg_cb)(conf, delivered as *const c_void);
            (api.conf_set_dr_cb)(conf, std::ptr::null());
        } else {
            (api.conf_set_events)(conf, 0);
            (api.conf_set_rebalance_cb)(conf, std::ptr::null());
            (api.conf_set_offset_commit_cb)(conf, std::ptr::null());
            (api.conf_set_consume_cb)(conf, std::ptr::null());
        }
    }
    let id = hex(&engine.instance_id().0);
    let mut settings: Vec<(&str, String)> = vec![("client.id", format!("kafka-e2ee-{id}"))];
    if let Some(b) = &cs.bootstrap {
        // The source cluster of a mirror, with the client's own security
        // settings (librdkafka takes the last of bootstrap.servers and its
        // alias metadata.broker.list).
        settings.push(("bootstrap.servers", b.clone()));
    }
    if kind == api::PRODUCER {
        settings.push(("linger.ms", "5".into()));
        settings.push(("enable.idempotence", "false".into()));
    } else {
        // assign() needs a group id; the consumer never joins or commits.
        settings.push(("group.id", format!("_e2ee-control-{id}")));
        settings.push(("enable.auto.commit", "false".into()));
        settings.push(("enable.auto.offset.store", "false".into()));
        // End-of-partition events tell when the keys topic is caught up,
        // also where its last offsets were compacted or deleted away.
        settings.push(("enable.partition.eof", "true".into()));
        settings.push(("fetch.wait.max.ms", "50".into()));
    }
    for (k, v) in settings {
        // SAFETY: conf is ours.
        if let Err(e) = unsafe { api.set(conf, k, &v) } {
            // SAFETY: conf is ours.
            unsafe { (api.conf_destroy)(conf) };
            return Err(format!("control client setting {k}: {e}"));
        }
    }
    Ok(conf)
}

/// The properties of the other client kind, global and topic-level.
#[derive(Debug, Default)]
struct OtherKinds {
    global: Vec<String>,
    topic: Vec<String>,
}

/// The properties of the other client kind (consumer-only ones for a
/// producer and the reverse), as this librdkafka defines them: the control
/// clients are copies of the app's configuration, and librdkafka prints a
/// CONFWARN line for every property of the other kind that is set (an app
/// consumer's `group.id` or `auto.offset.reset` in the control producer, a
/// producer's `acks` in the control consumer), which would look like the
/// app's mistake. librdkafka tells the kinds only in
/// `rd_kafka_conf_properties_show`'s table (its "C/P" column), so that is
/// read. Global ones go to `rd_kafka_conf_dup_filter`, which drops by
/// prefix: a name that starts another property of this kind or of both is
/// kept (a harmless warning rather than a lost setting). Topic-level ones go
/// to [`drop_topic_properties`] (the filter does not reach the default topic
/// configuration). Empty if the table cannot be had.
unsafe fn other_kinds_properties(api: &Api, kind: c_int) -> OtherKinds {
    let mut buf: *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: open_memstream writes buf and len on fclose.
    let fp = unsafe { libc::open_memstream(&mut buf, &mut len) };
    if fp.is_null() {
        return OtherKinds::default();
    }
    // SAFETY: fp is a live stream of this process's libc (the one librdkafka
    // writes with: there is one libc in the process).
    unsafe { (api.conf_properties_show)(fp) };
    // SAFETY: fp is ours; after fclose buf holds len bytes (NUL-terminated).
    let table = unsafe {
        libc::fclose(fp);
        if buf.is_null() {
            return OtherKinds::default();
        }
        let t =
            String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast::<u8>(), len)).into_owned();
        libc::free(buf.cast());
        t
    };
    let other = if kind == api::PRODUCER { "C" } else { "P" };
    OtherKinds {
        global: parse_other_kinds(&table, other),
        topic: parse_other_kinds_in(&table, other, "Topic"),
    }
}

/// The global properties of the table whose C/P column is `other`.
fn parse_other_kinds(table: &str, other: &str) -> Vec<String> {
    parse_other_kinds_in(table, other, "Global")
}

/// The properties of the table's section `section` ("Global", "Topic") whose
/// C/P column is `other`, but for names that start a property of this kind
/// or of both in that section.
fn parse_other_kinds_in(table: &str, other: &str, section: &str) -> Vec<String> {
    let mut inside = false;
    let mut other_kind: Vec<&str> = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    for line in table.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = title.starts_with(section);
            continue;
        }
        let mut cols = line.split('|').map(str::trim);
        let (Some(name), Some(cp)) = (cols.next(), cols.next()) else {
            continue;
        };
        if !inside || name.is_empty() || name == "Property" || name.starts_with('-') {
            continue;
        }
        if cp == other {
            other_kind.push(name);
        } else {
            rest.push(name);
        }
    }
    other_kind
        .into_iter()
        .filter(|o| !rest.iter().any(|r| r.starts_with(o)))
        .map(str::to_owned)
        .collect()
}

/// Copies the app's topic-level settings (its default topic configuration,
/// which `rd_kafka_conf_dup_filter` would copy whole and is filtered out)
/// into `conf`, a control client's configuration, but those of the other
/// client kind (`other`): librdkafka prints a CONFWARN line for each
/// other-kind property set (`auto.offset.reset` in the control producer,
/// `acks` in the control consumer). They are set through `conf` as an app
/// sets them in the global configuration (replacing the default topic
/// configuration instead makes librdkafka warn that it overwrote them). A
/// setting is copied when its value differs from a fresh topic
/// configuration's (one equal to the default changes nothing, and setting a
/// deprecated one again would warn); one that cannot be set from its text
/// (a callback or opaque pointer of the app's) is left out.
unsafe fn copy_topic_properties(api: &Api, host: *const Conf, conf: *mut Conf, other: &[String]) {
    let Some(t) = TopicConfApi::of(api) else {
        return;
    };
    // SAFETY: host is live; the topic conf stays owned by it.
    let app_topic = unsafe { (t.get_default)(host) };
    if app_topic.is_null() {
        return;
    }
    // SAFETY: app_topic is live.
    let Some(app) = (unsafe { t.pairs(app_topic) }) else {
        return;
    };
    // SAFETY: a new topic conf is ours, destroyed below.
    let fresh = unsafe { (t.new)() };
    if fresh.is_null() {
        return;
    }
    // SAFETY: fresh is live.
    let defaults = unsafe { t.pairs(fresh) };
    // SAFETY: fresh is ours.
    unsafe { (t.destroy)(fresh) };
    let Some(defaults) = defaults else {
        return;
    };
    let defaults: HashMap<String, String> = defaults.into_iter().collect();
    for (name, value) in app {
        if other.contains(&name) || defaults.get(&name) == Some(&value) {
            continue;
        }
        // SAFETY: conf is ours. A value that cannot be set from text is
        // left out (see above).
        let _ = unsafe { api.set(conf, &name, &value) };
    }
}

/// The optional part of the API [`copy_topic_properties`] needs, all of it.
struct TopicConfApi {
    get_default: unsafe extern "C" fn(*const Conf) -> *mut api::TopicConf,
    new: unsafe extern "C" fn() -> *mut api::TopicConf,
    destroy: unsafe extern "C" fn(*mut api::TopicConf),
    dump: unsafe extern "C" fn(*mut api::TopicConf, *mut usize) -> *mut *const std::ffi::c_char,
    dump_free: unsafe extern "C" fn(*mut *const std::ffi::c_char, usize),
}

impl TopicConfApi {
    fn of(api: &Api) -> Option<TopicConfApi> {
        Some(TopicConfApi {
            get_default: api.conf_get_default_topic_conf?,
            new: api.topic_conf_new?,
            destroy: api.topic_conf_destroy?,
            dump: api.topic_conf_dump?,
            dump_free: api.conf_dump_free?,
        })
    }

    /// A topic configuration's properties and values, as
    /// `rd_kafka_topic_conf_dump` gives them.
    unsafe fn pairs(&self, tconf: *mut api::TopicConf) -> Option<Vec<(String, String)>> {
        let mut cnt: usize = 0;
        // SAFETY: tconf is live; the array is freed below with its count.
        let arr = unsafe { (self.dump)(tconf, &mut cnt) };
        if arr.is_null() {
            return None;
        }
        let mut out = Vec::with_capacity(cnt / 2);
        for i in (0..cnt.saturating_sub(1)).step_by(2) {
            // SAFETY: arr holds cnt entries: name, value, name, value, ...
            let (k, v) = unsafe { (*arr.add(i), *arr.add(i + 1)) };
            if k.is_null() || v.is_null() {
                continue;
            }
            // SAFETY: NUL-terminated strings owned by the dump.
            let (k, v) = unsafe { (std::ffi::CStr::from_ptr(k), std::ffi::CStr::from_ptr(v)) };
            out.push((
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            ));
        }
        // SAFETY: the array and count rd_kafka_topic_conf_dump returned.
        unsafe { (self.dump_free)(arr, cnt) };
        Some(out)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

unsafe fn new_client(api: &Api, kind: c_int, conf: *mut Conf) -> Result<*mut Kafka, String> {
    let mut err = [0 as std::ffi::c_char; 512];
    // SAFETY: conf is ours; rd_kafka_new takes it on success.
    let rk = unsafe { (api.new)(kind, conf, err.as_mut_ptr(), err.len()) };
    if rk.is_null() {
        // SAFETY: on failure the conf is still ours.
        unsafe { (api.conf_destroy)(conf) };
        // SAFETY: NUL-terminated by librdkafka.
        return Err(unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned());
    }
    Ok(rk)
}

/// The topic configuration of the keys topic: compacted, so the newest
/// prekey and envelope under each record key stay, and deleted after
/// `retention_ms`, so shredded keys' envelopes go too.
fn keys_topic_configs(retention_ms: u64) -> [(&'static str, String); 2] {
    [
        ("retention.ms", retention_ms.to_string()),
        ("cleanup.policy", "compact,delete".to_owned()),
    ]
}

/// Creates the topics that are missing — one partition each, the broker's
/// default replication — in one request through the admin API of the host's
/// librdkafka (as the Java host does). An existing topic, or a cluster that
/// refuses (no ACL), is not an error: the metadata loop below waits for the
/// topics either way. Waits up to 10 s for the answer, less when closing.
unsafe fn create_topics(
    api: &Api,
    producer: *mut Kafka,
    topics: &[(&CString, Vec<(&str, String)>)],
    status: &Status,
    close_timeout_ms: u64,
) {
    // Only what is missing: a CreateTopics request costs a round trip to the
    // controller, and clusters (and librdkafka's mock) that do not answer it
    // would hold every start for the whole wait below.
    // SAFETY: producer is live.
    let existing =
        unsafe { topic_names(api, producer, status.budget_ms(SLICE_MS, close_timeout_ms)) };
    let mut nts: Vec<*mut api::NewTopic> = Vec::new();
    for (topic, configs) in topics {
        if existing.iter().any(|t| t.as_c_str() == topic.as_c_str()) {
            continue;
        }
        let mut err = [0 as std::ffi::c_char; 256];
        // SAFETY: topic is NUL-terminated; err is a writable buffer.
        let nt = unsafe { (api.new_topic_new)(topic.as_ptr(), 1, -1, err.as_mut_ptr(), err.len()) };
        if nt.is_null() {
            continue;
        }
        for (k, v) in configs {
            let (Ok(k), Ok(v)) = (CString::new(*k), CString::new(v.as_str())) else {
                continue;
            };
            // SAFETY: nt is ours; strings are NUL-terminated and copied.
            let _ = unsafe { (api.new_topic_set_config)(nt, k.as_ptr(), v.as_ptr()) };
        }
        nts.push(nt);
    }
    // SAFETY: producer is live; the queue is ours until destroyed.
    let queue = if nts.is_empty() {
        std::ptr::null_mut()
    } else {
        unsafe { (api.queue_new)(producer) }
    };
    if !queue.is_null() {
        // SAFETY: nts holds live NewTopics; null options = defaults.
        unsafe {
            (api.create_topics)(
                producer,
                nts.as_mut_ptr(),
                nts.len(),
                std::ptr::null(),
                queue,
            )
        };
        // In slices, so a close (whose deadline may be near) is not held up.
        let until = now_ms().saturating_add(10_000);
        while now_ms() < until && !status.give_up(close_timeout_ms) {
            // SAFETY: the result event, if any, is ours to destroy.
            let ev = unsafe { (api.queue_poll)(queue, 100) };
            if !ev.is_null() {
                // SAFETY: as above.
                unsafe { (api.event_destroy)(ev) };
                break;
            }
        }
        // SAFETY: ours; a result still to come is dropped with it.
        unsafe { (api.queue_destroy)(queue) };
    }
    for nt in nts {
        // SAFETY: ours (CreateTopics copied what it needed).
        unsafe { (api.new_topic_destroy)(nt) };
    }
}

/// The names of the cluster's topics (none if the metadata request fails:
/// then every topic is created, and an existing one is refused harmlessly).
/// Asked for all topics, so the request auto-creates none.
unsafe fn topic_names(api: &Api, producer: *mut Kafka, timeout_ms: c_int) -> Vec<CString> {
    let mut md: *const api::Metadata = std::ptr::null();
    // SAFETY: producer is live; md is written on success.
    let err = unsafe { (api.metadata)(producer, 1, std::ptr::null_mut(), &mut md, timeout_ms) };
    let mut out = Vec::new();
    if err == api::ERR_NO_ERROR && !md.is_null() {
        // SAFETY: a successful metadata result: `topic_cnt` topics, each
        // with a NUL-terminated name, alive until metadata_destroy.
        unsafe {
            let m = &*md;
            if !m.topics.is_null() {
                for i in 0..usize::try_from(m.topic_cnt).unwrap_or(0) {
                    let t = &*m.topics.add(i);
                    if !t.topic.is_null() {
                        out.push(std::ffi::CStr::from_ptr(t.topic).to_owned());
                    }
                }
            }
            (api.metadata_destroy)(md);
        }
    }
    out
}

/// The partition count of `rkt`'s topic, if the cluster knows the topic.
unsafe fn partition_count(
    api: &Api,
    producer: *mut Kafka,
    rkt: *mut Topic,
    timeout_ms: c_int,
) -> Option<i32> {
    let mut md: *const api::Metadata = std::ptr::null();
    // SAFETY: handles are live; md is written on success.
    let err = unsafe { (api.metadata)(producer, 0, rkt, &mut md, timeout_ms) };
    let mut partitions = 0;
    if err == api::ERR_NO_ERROR && !md.is_null() {
        // SAFETY: a successful metadata result for one topic.
        unsafe {
            let m = &*md;
            if m.topic_cnt >= 1 && !m.topics.is_null() {
                let t = &*m.topics;
                if t.err == api::ERR_NO_ERROR {
                    partitions = t.partition_cnt;
                }
            }
            (api.metadata_destroy)(md);
        }
    }
    (partitions > 0).then_some(partitions)
}

/// How far the keys topic has been read, against the end offsets it had
/// when reading started.
#[derive(Debug, Default)]
struct KeysProgress {
    /// (partition, end offset as of start, reached)
    partitions: Vec<(i32, i64, bool)>,
}

impl KeysProgress {
    /// A partition whose start and end offsets were `lo` and `hi`.
    fn add(&mut self, partition: i32, lo: i64, hi: i64) {
        self.partitions.push((partition, hi, hi <= lo));
    }
    /// A record at `offset` was read from `partition`.
    fn read(&mut self, partition: i32, offset: i64) {
        for p in self.partitions.iter_mut().filter(|p| p.0 == partition) {
            if offset.saturating_add(1) >= p.1 {
                p.2 = true;
            }
        }
    }
    /// The consumer reached the end of `partition` (gaps left by compaction
    /// or deletion count as read).
    fn at_end(&mut self, partition: i32) {
        for p in self.partitions.iter_mut().filter(|p| p.0 == partition) {
            p.2 = true;
        }
    }
    fn caught_up(&self) -> bool {
        self.partitions.iter().all(|p| p.2)
    }
}

/// Finds both topics' partitions (creating the topics first if they are
/// missing) and assigns them all: the control topic from its end offsets as
/// of now, the keys topic from the beginning. Returns the keys topic's end
/// offsets as of now, or None if stopped first.
#[allow(clippy::too_many_arguments)]
unsafe fn assign(
    api: &Api,
    producer: *mut Kafka,
    consumer: *mut Kafka,
    control: (*mut Topic, &CString),
    keys: (*mut Topic, &CString),
    status: &Status,
    close_timeout_ms: u64,
) -> Option<KeysProgress> {
    while !status.give_up(close_timeout_ms) {
        // SAFETY: handles are live.
        let counts = unsafe {
            (
                partition_count(
                    api,
                    producer,
                    control.0,
                    status.budget_ms(SLICE_MS, close_timeout_ms),
                ),
                partition_count(
                    api,
                    producer,
                    keys.0,
                    status.budget_ms(SLICE_MS, close_timeout_ms),
                ),
            )
        };
        let (Some(nc), Some(nk)) = counts else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        // SAFETY: list is ours until destroyed below.
        let list = unsafe { (api.tpl_new)(nc.saturating_add(nk)) };
        let mut progress = KeysProgress::default();
        let mut ok = true;
        'topics: for (topic, n, from_end) in [(control.1, nc, true), (keys.1, nk, false)] {
            for p in 0..n {
                let (mut lo, mut hi) = (0i64, 0i64);
                // SAFETY: consumer is live.
                let e = unsafe {
                    (api.query_watermark_offsets)(
                        consumer,
                        topic.as_ptr(),
                        p,
                        &mut lo,
                        &mut hi,
                        status.budget_ms(SLICE_MS, close_timeout_ms),
                    )
                };
                if e != api::ERR_NO_ERROR {
                    ok = false;
                    break 'topics;
                }
                // SAFETY: tpl_add returns a pointer into list.
                let tp = unsafe { &mut *(api.tpl_add)(list, topic.as_ptr(), p) };
                if from_end {
                    tp.offset = hi;
                } else {
                    tp.offset = api::OFFSET_BEGINNING;
                    progress.add(p, lo, hi);
                }
            }
        }
        // SAFETY: list and consumer are live.
        let assigned = ok && unsafe { (api.assign)(consumer, list) } == api::ERR_NO_ERROR;
        // SAFETY: ours.
        unsafe { (api.tpl_destroy)(list) };
        if assigned {
            return Some(progress);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The control thread's clients and what it tracks.
struct Io<'a> {
    api: &'a Api,
    engine: &'a Engine,
    status: &'a Status,
    keys: &'a KeySignal,
    producer: *mut Kafka,
    consumer: *mut Kafka,
    control_rkt: *mut Topic,
    keys_rkt: *mut Topic,
    keys_topic: &'a CString,
    progress: KeysProgress,
    delivery: &'a KeysDelivery,
}

impl Io<'_> {
    /// One round: read (up to `wait_ms`), tick the engine when due, send
    /// what it queued.
    unsafe fn step(&mut self, wait_ms: u64) {
        let api = self.api;
        // SAFETY: consumer is live.
        let m =
            unsafe { (api.consumer_poll)(self.consumer, c_int::try_from(wait_ms).unwrap_or(50)) };
        let mut handled = false;
        if !m.is_null() {
            // SAFETY: a message from consumer_poll, destroyed right after.
            unsafe {
                let msg = &*m;
                // SAFETY: the message's topic handle is live with it.
                let from_keys = !msg.rkt.is_null()
                    && std::ffi::CStr::from_ptr((api.topic_name)(msg.rkt))
                        == self.keys_topic.as_c_str();
                if msg.err == api::ERR_NO_ERROR {
                    if !msg.payload.is_null() {
                        let value = std::slice::from_raw_parts(msg.payload.cast::<u8>(), msg.len);
                        let _ = self.engine.handle_control(now_ms(), value);
                        handled = true;
                    }
                    if from_keys {
                        self.progress.read(msg.partition, msg.offset);
                    }
                } else if msg.err == api::ERR_PARTITION_EOF && from_keys {
                    self.progress.at_end(msg.partition);
                }
                (api.message_destroy)(m);
            }
            if self.progress.caught_up() && !self.status.caught_up.swap(true, Ordering::AcqRel) {
                // Only now may the engine conclude that a topic has no token
                // secret claimed, and found one (docs/PROTOCOL.md 5e).
                self.engine.keys_topic_read();
            }
        }
        let now = now_ms();
        if now >= self.engine.poll_timeout() {
            let _ = self.engine.handle_timeout(now);
            handled = true;
        }
        // SAFETY: handles are live.
        unsafe { self.transmit() };
        if handled {
            self.keys.notify();
        }
    }

    /// Sends every queued message to the topic its channel names.
    unsafe fn transmit(&mut self) {
        while let Some(out) = self.engine.poll_transmit() {
            // SAFETY: handles are live.
            unsafe { self.send(&out) };
        }
        // SAFETY: producer is live.
        unsafe { (self.api.poll)(self.producer, 0) };
    }

    unsafe fn send(&mut self, out: &ControlMessage) {
        let api = self.api;
        let key = out.record_key();
        let (kp, kl) = match &key {
            Some(k) => (k.as_ptr().cast::<c_void>(), k.len()),
            None => (std::ptr::null(), 0),
        };
        let (rkt, opaque) = match out.channel {
            Channel::Control => (self.control_rkt, std::ptr::null_mut()),
            Channel::Keys => {
                self.delivery.queued();
                (
                    self.keys_rkt,
                    std::ptr::from_ref(self.delivery)
                        .cast_mut()
                        .cast::<c_void>(),
                )
            }
        };
        for _ in 0..100 {
            // SAFETY: F_COPY: librdkafka copies payload and key.
            let r = unsafe {
                (api.produce)(
                    rkt,
                    api::PARTITION_UA,
                    api::MSG_F_COPY,
                    out.payload.as_ptr() as *mut c_void,
                    out.payload.len(),
                    kp,
                    kl,
                    opaque,
                )
            };
            if r == 0 {
                return;
            }
            // Queue full: serve delivery reports and retry.
            // SAFETY: producer is live.
            unsafe { (api.poll)(self.producer, 10) };
        }
        if out.channel == Channel::Keys {
            // Never handed over: no delivery report will come.
            self.delivery.reported(true);
            self.delivery.never_queued();
        }
    }

    /// Close of an engine a producer used: keep the promise that the key
    /// envelopes of what it sealed reach the keys topic (module comment).
    unsafe fn close(&mut self, settings: &Settings) {
        let deadline = self.status.deadline_ms(settings.close_timeout_ms);
        // (a) every recipient's prekey known before the last envelopes.
        while !self.status.caught_up.load(Ordering::Acquire) && now_ms() < deadline {
            let wait = deadline.saturating_sub(now_ms()).min(50);
            // SAFETY: handles are live.
            unsafe { self.step(wait) };
        }
        // (b) one more tick, and everything it queued goes out.
        let _ = self.engine.handle_timeout(now_ms());
        // SAFETY: handles are live.
        unsafe { self.transmit() };
        // (c) flush within what is left.
        let left = deadline.saturating_sub(now_ms());
        // SAFETY: producer is live.
        unsafe { (self.api.flush)(self.producer, c_int::try_from(left).unwrap_or(c_int::MAX)) };
        // (d) say what was not acknowledged.
        report_unacknowledged(self.engine, self.delivery.unacknowledged(), settings);
    }
}

/// Logs and counts key envelopes the broker did not acknowledge by the end
/// of close.
fn report_unacknowledged(engine: &Engine, n: u64, settings: &Settings) {
    if n == 0 {
        return;
    }
    host::add_key_envelopes_unacknowledged(engine, n);
    eprintln!(
        "kafka-e2ee: ERROR: {}",
        host::unacknowledged_message(n, &settings.keys_topic, settings.close_timeout_ms)
    );
}

unsafe fn run(h: &Handles, engine: &Engine, status: &Status, keys: &KeySignal, s: &Settings) {
    let api = &*h.api;
    // SAFETY: confs are ours; new_client consumes them either way.
    let producer = match unsafe { new_client(api, api::PRODUCER, h.producer_conf) } {
        Ok(p) => p,
        Err(e) => {
            // SAFETY: still ours.
            unsafe { (api.conf_destroy)(h.consumer_conf) };
            eprintln!("kafka-e2ee: control producer: {e}");
            return;
        }
    };
    // SAFETY: as above.
    let consumer = match unsafe { new_client(api, api::CONSUMER, h.consumer_conf) } {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kafka-e2ee: control consumer: {e}");
            // SAFETY: ours.
            unsafe { (api.destroy)(producer) };
            return;
        }
    };
    let control_topic = CString::new(s.control_topic.as_str()).unwrap_or_default();
    let keys_topic = CString::new(s.keys_topic.as_str()).unwrap_or_default();
    // Before the topic handles exist, so the producer's metadata requests do
    // not auto-create them with the broker's defaults first.
    // SAFETY: producer is live.
    unsafe {
        create_topics(
            api,
            producer,
            &[
                (
                    &control_topic,
                    vec![
                        ("retention.ms", "3600000".to_owned()),
                        ("cleanup.policy", "delete".to_owned()),
                    ],
                ),
                (
                    &keys_topic,
                    keys_topic_configs(s.keys_retention_ms).to_vec(),
                ),
            ],
            status,
            s.close_timeout_ms,
        );
    }
    // SAFETY: producer is live.
    let control_rkt =
        unsafe { (api.topic_new)(producer, control_topic.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: producer is live.
    let keys_rkt = unsafe { (api.topic_new)(producer, keys_topic.as_ptr(), std::ptr::null_mut()) };
    // Outlives the producer: delivery reports point at it (KeysDelivery).
    let delivery = KeysDelivery::default();
    let progress = if control_rkt.is_null() || keys_rkt.is_null() {
        None
    } else {
        // SAFETY: all live.
        unsafe {
            assign(
                api,
                producer,
                consumer,
                (control_rkt, &control_topic),
                (keys_rkt, &keys_topic),
                status,
                s.close_timeout_ms,
            )
        }
    };
    if let Some(progress) = progress {
        status
            .caught_up
            .store(progress.caught_up(), Ordering::Release);
        if progress.caught_up() {
            engine.keys_topic_read(); // an empty keys topic: read already
        }
        let mut io = Io {
            api,
            engine,
            status,
            keys,
            producer,
            consumer,
            control_rkt,
            keys_rkt,
            keys_topic: &keys_topic,
            progress,
            delivery: &delivery,
        };
        while !status.stop.load(Ordering::Acquire) {
            let wait = engine.poll_timeout().saturating_sub(now_ms()).min(50);
            // SAFETY: handles are live.
            unsafe { io.step(wait) };
        }
        if status.drain.load(Ordering::Acquire) {
            // SAFETY: handles are live.
            unsafe { io.close(s) };
        }
    } else if status.drain.load(Ordering::Acquire) {
        // Stopped before the topics could be used: whatever key envelopes
        // the engine holds were never sent.
        let _ = engine.handle_timeout(now_ms());
        let mut lost = 0u64;
        while let Some(out) = engine.poll_transmit() {
            if out.channel == Channel::Keys {
                lost += 1;
            }
        }
        report_unacknowledged(engine, lost, s);
    }
    // SAFETY: all handles are ours; nothing else uses them. Anything still
    // queued after the flush above is purged by destroy; its delivery
    // reports, if any, still find `delivery` alive.
    unsafe {
        if !status.drain.load(Ordering::Acquire) {
            (api.flush)(producer, 2000);
        }
        if !control_rkt.is_null() {
            (api.topic_destroy)(control_rkt);
        }
        if !keys_rkt.is_null() {
            (api.topic_destroy)(keys_rkt);
        }
        (api.destroy)(consumer);
        (api.destroy)(producer);
    }
    // `delivery` goes out of scope only here, after the producer is gone.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of rd_kafka_conf_properties_show's table (librdkafka 2.x).
    #[test]
    fn other_kinds_properties_come_from_the_global_table_only() {
        let table = "## Global configuration properties\n\n\
            Property                                 | C/P | Range           |       Default | Importance | Description\n\
            -----------------------------------------|-----|-----------------|--------------:|------------|-------\n\
            client.id                                |  *  |                 |       rdkafka | low        | x\n\
            group.id                                 |  C  |                 |               | high       | x\n\
            group.id.extra                           |  *  |                 |               | high       | x\n\
            enable.auto.commit                       |  C  | true, false     |          true | high       | x | y\n\
            linger.ms                                |  P  | 0 .. 900000     |             5 | high       | x\n\
            \n\n## Topic configuration properties\n\n\
            Property                                 | C/P | Range           |       Default | Importance | Description\n\
            auto.offset.reset                        |  C  |                 |       largest | high       | x\n\
            acks                                     |  P  |                 |            -1 | high       | x\n";
        // group.id is a prefix of a property of both kinds: kept.
        assert_eq!(parse_other_kinds(table, "C"), vec!["enable.auto.commit"]);
        assert_eq!(parse_other_kinds(table, "P"), vec!["linger.ms"]);
    }

    #[test]
    fn other_kinds_topic_properties_come_from_the_topic_table() {
        let table = "## Global configuration properties\n\n\
            Property                                 | C/P | Range           |       Default | Importance | Description\n\
            group.id                                 |  C  |                 |               | high       | x\n\
            linger.ms                                |  P  | 0 .. 900000     |             5 | high       | x\n\
            \n\n## Topic configuration properties\n\n\
            Property                                 | C/P | Range           |       Default | Importance | Description\n\
            -----------------------------------------|-----|-----------------|--------------:|------------|-------\n\
            request.required.acks                    |  P  | -1 .. 1000      |            -1 | high       | x\n\
            acks                                     |  P  | -1 .. 1000      |            -1 | high       | x\n\
            auto.offset.reset                        |  C  |                 |       largest | high       | x\n\
            opaque                                   |  *  |                 |               | low        | x\n";
        assert_eq!(
            parse_other_kinds_in(table, "C", "Topic"),
            vec!["auto.offset.reset"]
        );
        assert_eq!(
            parse_other_kinds_in(table, "P", "Topic"),
            vec!["request.required.acks", "acks"]
        );
    }

    #[test]
    fn keys_progress_counts_each_partition_to_its_start_end() {
        let mut p = KeysProgress::default();
        p.add(0, 0, 3);
        p.add(1, 5, 5); // empty: caught up from the start
        assert!(!p.caught_up());
        p.read(0, 1);
        assert!(!p.caught_up());
        p.read(1, 9); // another partition's offset moves nothing
        p.read(0, 2);
        assert!(p.caught_up());
        let mut q = KeysProgress::default();
        q.add(0, 0, 10);
        q.at_end(0); // compacted away at the end
        assert!(q.caught_up());
        assert!(KeysProgress::default().caught_up());
    }

    #[test]
    fn keys_delivery_counts_failed_and_pending() {
        let d = KeysDelivery::default();
        d.queued();
        d.queued();
        d.queued();
        d.reported(true);
        d.reported(false);
        assert_eq!(d.unacknowledged(), 2); // one failed, one pending
        d.reported(true);
        d.reported(true); // a stray report never wraps below zero
        assert_eq!(d.unacknowledged(), 1);
        d.never_queued();
        assert_eq!(d.unacknowledged(), 2);
    }

    #[test]
    fn keys_topic_is_compacted_and_deleted_after_its_retention() {
        let c = keys_topic_configs(42);
        assert_eq!(c[0], ("retention.ms", "42".to_owned()));
        assert_eq!(c[1], ("cleanup.policy", "compact,delete".to_owned()));
    }

    #[test]
    fn blocking_calls_get_at_most_what_is_left_of_close() {
        let s = Status::default();
        assert_eq!(s.budget_ms(5000, 1000), 5000);
        s.close_started_ms.store(now_ms(), Ordering::Release);
        s.stop.store(true, Ordering::Release);
        assert!(s.budget_ms(5000, 1000) <= 1000);
        assert_eq!(s.budget_ms(5000, 0), 1);
    }

    #[test]
    fn close_gives_up_only_when_stopped_and_done_or_late() {
        let s = Status::default();
        assert!(!s.give_up(1000));
        s.close_started_ms.store(now_ms(), Ordering::Release);
        s.stop.store(true, Ordering::Release);
        assert!(s.give_up(1000)); // consumer-only: at once
        s.drain.store(true, Ordering::Release);
        assert!(!s.give_up(60_000));
        assert!(s.give_up(0));
    }
}
