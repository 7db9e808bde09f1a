//! The control plane of one engine: a producer and an assign-only consumer
//! made from the host's own librdkafka and a filtered copy of the host's
//! configuration (so its SASL/SSL settings apply), driven by one thread.
//!
//! Contract shared with the Java host: each control record's key is the
//! recipient's 8-byte instance id (null = broadcast), its value the control
//! message; every instance reads all partitions from the end offsets as of
//! its start, with no group membership and no commits.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use kafka_e2ee_core::Engine;

use super::api::{self, Api, Conf, Kafka, Topic};
use crate::host::now_ms;

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

/// One per engine; dropped when the last client using it is destroyed.
#[derive(Debug)]
pub struct ControlPlane {
    engine: Arc<Engine>,
    pub keys: Arc<KeySignal>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let t = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The thread touches only its own handles, never a client's, so
        // joining from a client's on_destroy cannot deadlock librdkafka.
        if let Some(t) = t {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        // The last client of this engine is gone: leave its counters where
        // any app (kcat too) shows them, if something was turned away.
        let m = self.engine.metrics();
        if m.records_rejected + m.records_missing_header + m.records_failed + m.control_rejected > 0
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
    control_topic: &str,
) -> Result<Arc<ControlPlane>, String> {
    let key = format!("{key}\u{0}{}", api.library);
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|_, w| w.strong_count() > 0);
    if let Some(cp) = reg.get(&key).and_then(Weak::upgrade) {
        return Ok(cp);
    }
    // SAFETY: host_conf is live (caller).
    let producer_conf = unsafe { control_conf(api, host_conf, api::PRODUCER, &engine)? };
    // SAFETY: as above.
    let consumer_conf = match unsafe { control_conf(api, host_conf, api::CONSUMER, &engine) } {
        Ok(c) => c,
        Err(e) => {
            // SAFETY: we own producer_conf.
            unsafe { (api.conf_destroy)(producer_conf) };
            return Err(e);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(KeySignal::default());
    let handles = Handles {
        api: api.clone(),
        producer_conf,
        consumer_conf,
    };
    let (e2, s2, k2, topic) = (
        engine.clone(),
        stop.clone(),
        keys.clone(),
        control_topic.to_owned(),
    );
    let thread = std::thread::Builder::new()
        .name("kafka-e2ee-control".into())
        .spawn(move || {
            let h = handles;
            // SAFETY: the confs are ours and live; run() consumes them.
            unsafe { run(&h, &e2, &s2, &k2, &topic) }
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    let cp = Arc::new(ControlPlane {
        engine,
        keys,
        stop,
        thread: Mutex::new(Some(thread)),
    });
    reg.insert(key, Arc::downgrade(&cp));
    Ok(cp)
}

/// A copy of the host's configuration without the plugin, the e2ee.*
/// settings, the app's callbacks and anything that would make the control
/// clients part of the app's transactions or group.
unsafe fn control_conf(
    api: &Api,
    host: *const Conf,
    kind: c_int,
    engine: &Engine,
) -> Result<*mut Conf, String> {
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
    .filter_map(|s| CString::new(*s).ok())
    .collect();
    let ptrs: Vec<*const std::ffi::c_char> = filter.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: host is live; ptrs outlive the call.
    let conf = unsafe { (api.conf_dup_filter)(host, ptrs.len(), ptrs.as_ptr()) };
    if conf.is_null() {
        return Err("rd_kafka_conf_dup_filter failed".into());
    }
    // SAFETY: conf is ours.
    // (Only the callbacks that apply to the kind: setting another kind's
    // callback, even to NULL, makes librdkafka warn about it.)
    unsafe {
        (api.conf_set_error_cb)(conf, std::ptr::null());
        (api.conf_set_stats_cb)(conf, std::ptr::null());
        (api.conf_set_events)(conf, 0);
        if kind == api::PRODUCER {
            (api.conf_set_dr_msg_cb)(conf, std::ptr::null());
            (api.conf_set_dr_cb)(conf, std::ptr::null());
        } else {
            (api.conf_set_rebalance_cb)(conf, std::ptr::null());
            (api.conf_set_offset_commit_cb)(conf, std::ptr::null());
            (api.conf_set_consume_cb)(conf, std::ptr::null());
        }
    }
    let id = hex(&engine.instance_id().0);
    let mut settings: Vec<(&str, String)> = vec![("client.id", format!("kafka-e2ee-{id}"))];
    if kind == api::PRODUCER {
        settings.push(("linger.ms", "5".into()));
        settings.push(("enable.idempotence", "false".into()));
    } else {
        // assign() needs a group id; the consumer never joins or commits.
        settings.push(("group.id", format!("_e2ee-control-{id}")));
        settings.push(("enable.auto.commit", "false".into()));
        settings.push(("enable.auto.offset.store", "false".into()));
        settings.push(("enable.partition.eof", "false".into()));
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

/// Creates the control topic if it is missing — one partition, one hour of
/// retention, delete policy, the broker's default replication — through the
/// admin API of the host's librdkafka (the same as the Java host does). An
/// existing topic, or a cluster that refuses (no ACL), is not an error: the
/// metadata loop below waits for the topic either way.
unsafe fn create_control_topic(api: &Api, producer: *mut Kafka, topic: &CString) {
    let mut err = [0 as std::ffi::c_char; 256];
    // SAFETY: topic is NUL-terminated; err is a writable buffer.
    let nt = unsafe { (api.new_topic_new)(topic.as_ptr(), 1, -1, err.as_mut_ptr(), err.len()) };
    if nt.is_null() {
        return;
    }
    for (k, v) in [("retention.ms", "3600000"), ("cleanup.policy", "delete")] {
        let (Ok(k), Ok(v)) = (CString::new(k), CString::new(v)) else {
            continue;
        };
        // SAFETY: nt is ours; strings are NUL-terminated and copied.
        let _ = unsafe { (api.new_topic_set_config)(nt, k.as_ptr(), v.as_ptr()) };
    }
    // SAFETY: producer is live; the queue is ours until destroyed.
    let queue = unsafe { (api.queue_new)(producer) };
    if !queue.is_null() {
        let mut topics = [nt];
        // SAFETY: topics holds one live NewTopic; null options = defaults.
        unsafe { (api.create_topics)(producer, topics.as_mut_ptr(), 1, std::ptr::null(), queue) };
        // SAFETY: the result event, if any, is ours to destroy.
        let ev = unsafe { (api.queue_poll)(queue, 10_000) };
        if !ev.is_null() {
            // SAFETY: as above.
            unsafe { (api.event_destroy)(ev) };
        }
        // SAFETY: ours.
        unsafe { (api.queue_destroy)(queue) };
    }
    // SAFETY: ours (CreateTopics copied what it needed).
    unsafe { (api.new_topic_destroy)(nt) };
}

/// Finds the control topic's partitions (creating the topic first if it is
/// missing) and assigns them all from their end offsets as of now.
unsafe fn assign_from_end(
    api: &Api,
    producer: *mut Kafka,
    rkt: *mut Topic,
    consumer: *mut Kafka,
    topic: &str,
    stop: &AtomicBool,
) -> bool {
    let Ok(ctopic) = CString::new(topic) else {
        return false;
    };
    while !stop.load(Ordering::Acquire) {
        let mut md: *const api::Metadata = std::ptr::null();
        // SAFETY: handles are live; md is written on success.
        let err = unsafe { (api.metadata)(producer, 0, rkt, &mut md, 5000) };
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
        if partitions <= 0 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        // SAFETY: list is ours until destroyed below.
        let list = unsafe { (api.tpl_new)(partitions) };
        let mut ok = true;
        for p in 0..partitions {
            let (mut lo, mut hi) = (0i64, 0i64);
            // SAFETY: consumer is live.
            let e = unsafe {
                (api.query_watermark_offsets)(consumer, ctopic.as_ptr(), p, &mut lo, &mut hi, 5000)
            };
            if e != api::ERR_NO_ERROR {
                ok = false;
                break;
            }
            // SAFETY: tpl_add returns a pointer into list.
            unsafe { (*(api.tpl_add)(list, ctopic.as_ptr(), p)).offset = hi };
        }
        // SAFETY: list and consumer are live.
        let assigned = ok && unsafe { (api.assign)(consumer, list) } == api::ERR_NO_ERROR;
        // SAFETY: ours.
        unsafe { (api.tpl_destroy)(list) };
        if assigned {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

unsafe fn run(h: &Handles, engine: &Engine, stop: &AtomicBool, keys: &KeySignal, topic: &str) {
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
    let ctopic = CString::new(topic).unwrap_or_default();
    // Before the topic handle exists, so the producer's metadata requests do
    // not auto-create it with the broker's defaults first.
    // SAFETY: producer is live.
    unsafe { create_control_topic(api, producer, &ctopic) };
    // SAFETY: producer is live.
    let rkt = unsafe { (api.topic_new)(producer, ctopic.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: all live.
    let ready =
        !rkt.is_null() && unsafe { assign_from_end(api, producer, rkt, consumer, topic, stop) };
    while ready && !stop.load(Ordering::Acquire) {
        let now = now_ms();
        let wait = engine.poll_timeout().saturating_sub(now).min(50);
        // SAFETY: consumer is live.
        let m = unsafe { (api.consumer_poll)(consumer, c_int::try_from(wait).unwrap_or(50)) };
        let mut handled = false;
        if !m.is_null() {
            // SAFETY: a message from consumer_poll, destroyed right after.
            unsafe {
                let msg = &*m;
                if msg.err == api::ERR_NO_ERROR && !msg.payload.is_null() {
                    let value = std::slice::from_raw_parts(msg.payload.cast::<u8>(), msg.len);
                    let _ = engine.handle_control(now_ms(), value);
                    handled = true;
                }
                (api.message_destroy)(m);
            }
        }
        let now = now_ms();
        if now >= engine.poll_timeout() {
            let _ = engine.handle_timeout(now);
            handled = true;
        }
        while let Some(out) = engine.poll_transmit() {
            let key = out.to.map(|id| id.0);
            let (kp, kl) = match &key {
                Some(k) => (k.as_ptr().cast::<c_void>(), k.len()),
                None => (std::ptr::null(), 0),
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
                        std::ptr::null_mut(),
                    )
                };
                if r == 0 {
                    break;
                }
                // Queue full: serve delivery reports and retry.
                // SAFETY: producer is live.
                unsafe { (api.poll)(producer, 10) };
            }
        }
        // SAFETY: producer is live.
        unsafe { (api.poll)(producer, 0) };
        if handled {
            keys.notify();
        }
    }
    // SAFETY: all handles are ours; nothing else uses them.
    unsafe {
        (api.flush)(producer, 2000);
        if !rkt.is_null() {
            (api.topic_destroy)(rkt);
        }
        (api.destroy)(consumer);
        (api.destroy)(producer);
    }
}
