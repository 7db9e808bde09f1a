//! The librdkafka plugin: `plugin.library.paths=libkafka_e2ee.so` plus the
//! `e2ee.*` properties turn on end-to-end encryption in any librdkafka
//! client. See docs/FFI.md ("librdkafka plugin") for the contract.
//!
//! Lifecycle, as librdkafka's own interceptor test does it: `conf_init` and
//! `on_conf_dup` attach one [`ConfState`] per configuration object; it
//! collects the `e2ee.*` values (`on_conf_set`), becomes the client's state
//! in `on_new`, and is freed in `on_conf_destroy`, which librdkafka calls
//! for the client's configuration after the client and all its messages
//! are gone.

pub mod api;
mod config_file;
mod control;
mod main_program;
mod record;

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};

use kafka_e2ee_core::trust::{Identity, TrustAnchor};
use kafka_e2ee_core::Engine;

use crate::host::{self, now_ms, ConfigError, HostConfig, PROPERTIES};
use api::{Api, Conf, Kafka, Message};

const IC_NAME: &CStr = c"kafka-e2ee";

/// Bumped in the child after `fork()`: a client made before the fork must
/// never seal in the child (its epoch counters would repeat nonces).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn register_fork_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// What `on_new` made of a configuration: the client's view of its engine.
#[derive(Debug)]
pub(crate) struct Client {
    pub engine: Option<Arc<Engine>>,
    /// Why the client cannot seal or open (bad settings found only at
    /// `on_new`, which cannot fail client creation): fail closed.
    pub broken: Option<String>,
    pub wait_ms: u64,
    /// Bind the record key into the AAD when sealing (`e2ee.bind.key`).
    pub bind_key: bool,
    /// Seal application headers (`e2ee.headers=encrypt`).
    pub seal_headers: bool,
    /// `e2ee.headers.clear`.
    pub headers_clear: Vec<String>,
    /// `e2ee.keys=tokenize`: a non-null key is sent as its token, the real
    /// key sealed in `e2ee.k` (docs/FORMAT.md section 13).
    pub tokenize_keys: bool,
    pub fork_generation: u64,
    /// The process the client was made in. A child made without
    /// `pthread_atfork` running (a raw `fork`/`clone` system call, as some
    /// runtimes and sandboxes make) leaves `fork_generation` unchanged; its
    /// pid still differs.
    pub pid: u32,
    pub keys: Option<Arc<control::KeySignal>>,
    /// `e2ee.topic.source.prefix`: the consume path opens a record of
    /// `<prefix>T` as topic `T` (docs/PROTOCOL.md, section 5c).
    pub topic_source_prefix: Option<String>,
}

impl Client {
    /// Whether this client may seal here and now: never in a child process
    /// of the one that made it, where its engine's epoch and nonce counters
    /// are copies of the parent's (sealing would repeat nonces). Checked on
    /// every seal; see [`current_pid`] for its cost.
    pub fn may_seal_in_this_process(&self) -> bool {
        self.fork_generation == fork_generation() && self.pid == current_pid()
    }
}

/// A page the kernel zeroes in every child process, however it was made
/// (MADV_WIPEONFORK, Linux 4.14+: fork, clone without CLONE_VM, with or
/// without pthread_atfork). Byte 0 is 1 while [`ARMED_PID`] is this
/// process's pid. None if the page could not be had (old kernel): then every
/// check asks getpid().
fn wipe_on_fork_page() -> Option<&'static AtomicU8> {
    static PAGE: OnceLock<Option<usize>> = OnceLock::new();
    let addr = (*PAGE.get_or_init(|| {
        // SAFETY: a fresh private anonymous page, never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: p is the page just mapped.
        if unsafe { libc::madvise(p, 4096, libc::MADV_WIPEONFORK) } != 0 {
            // SAFETY: ours, unused.
            unsafe { libc::munmap(p, 4096) };
            return None;
        }
        Some(p as usize)
    }))?;
    // SAFETY: a live, zero-initialised, page-aligned mapping kept for the
    // life of the process; AtomicU8 has the layout of u8.
    Some(unsafe { &*(addr as *const AtomicU8) })
}

/// The pid [`wipe_on_fork_page`] was armed with.
static ARMED_PID: AtomicU32 = AtomicU32::new(0);

/// This process's pid, for the seal path. getpid() is a system call (glibc
/// caches no pid since 2.25; 370 ns a call on the loaded 2-core test VM,
/// per record), so the pid is remembered next to a flag the kernel wipes in any
/// child: while the flag stands, no fork happened since it was remembered,
/// and the check is two loads. In a child the flag reads 0 and the pid is
/// asked for again (and remembered for the child).
pub(crate) fn current_pid() -> u32 {
    let Some(flag) = wipe_on_fork_page() else {
        return std::process::id();
    };
    if flag.load(Ordering::Acquire) == 1 {
        return ARMED_PID.load(Ordering::Relaxed);
    }
    let pid = std::process::id();
    // Threads that race here all store the same pid, before the flag.
    ARMED_PID.store(pid, Ordering::Relaxed);
    flag.store(1, Ordering::Release);
    pid
}

/// Per configuration object (and so per client).
pub(crate) struct ConfState {
    pub api: Arc<Api>,
    /// The settings of the `KAFKA_E2EE_CONFIG` file, read when the plugin
    /// was loaded for this configuration; `props` override them.
    base: Arc<Vec<(String, String)>>,
    /// The `e2ee.*` properties set on this configuration.
    props: Mutex<Vec<(String, String)>>,
    pub client: OnceLock<Client>,
    control: Mutex<Option<Arc<control::ControlPlane>>>,
    pub swaps: Mutex<record::Swaps>,
}

impl std::fmt::Debug for ConfState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfState")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

fn write_errstr(errstr: *mut c_char, size: usize, msg: &str) {
    if errstr.is_null() || size == 0 {
        return;
    }
    let n = msg.len().min(size - 1);
    // SAFETY: errstr has `size` bytes (librdkafka's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), errstr.cast::<u8>(), n);
        *errstr.add(n) = 0;
    }
}

/// Runs an entry point's body behind a panic boundary.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The plugin entry point librdkafka looks up. Naked so that it can hand the
/// caller's return address (an address inside the loading librdkafka) to
/// [`conf_init_impl`], which resolves every function it needs from there.
///
/// # Safety
/// Called by librdkafka's plugin loader only, with a live configuration and
/// an error buffer of `errstr_size` bytes.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn conf_init(
    _conf: *mut Conf,
    _plug_opaquep: *mut *mut c_void,
    _errstr: *mut c_char,
    _errstr_size: usize,
) -> api::Err {
    // At entry [rsp] is the return address; pass it as the 5th argument
    // and tail-call, so the callee returns straight to librdkafka.
    core::arch::naked_asm!("mov r8, [rsp]", "jmp {f}", f = sym conf_init_impl)
}

/// # Safety
/// As on x86_64.
#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn conf_init(
    _conf: *mut Conf,
    _plug_opaquep: *mut *mut c_void,
    _errstr: *mut c_char,
    _errstr_size: usize,
) -> api::Err {
    core::arch::naked_asm!("mov x4, x30", "b {f}", f = sym conf_init_impl)
}

/// # Safety
/// As on x86_64.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[no_mangle]
pub unsafe extern "C" fn conf_init(
    conf: *mut Conf,
    plug_opaquep: *mut *mut c_void,
    errstr: *mut c_char,
    errstr_size: usize,
) -> api::Err {
    // SAFETY: forwarded; an unknown caller falls back to the global scope.
    unsafe { conf_init_impl(conf, plug_opaquep, errstr, errstr_size, std::ptr::null()) }
}

/// librdkafka dlopen()s the plugin for every configuration that names it and
/// dlclose()s it when that configuration is destroyed. Unloading it would
/// unmap code that a control thread may still be running and forget the
/// plugin's process-wide state (the resolved librdkafka API, the engine
/// registry) without freeing it. So the first load pins the library for the
/// life of the process (RTLD_NODELETE), as long-lived plugins do.
fn pin_in_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: Dl_info is plain data (pointers and integers); all-zero is valid.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let here = pin_in_memory as *const c_void;
        // SAFETY: dladdr only reads; info is written on success.
        if unsafe { libc::dladdr(here, &mut info) } != 0 && !info.dli_fname.is_null() {
            // SAFETY: dli_fname is the NUL-terminated path of this library,
            // which is loaded (RTLD_NOLOAD): this only adds NODELETE. The
            // handle is kept on purpose.
            unsafe {
                libc::dlopen(
                    info.dli_fname,
                    libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
                )
            };
        }
    });
}

unsafe extern "C" fn conf_init_impl(
    conf: *mut Conf,
    _plug_opaquep: *mut *mut c_void,
    errstr: *mut c_char,
    errstr_size: usize,
    caller: *const c_void,
) -> api::Err {
    guard(-1, || {
        pin_in_memory();
        register_fork_handler();
        // SAFETY: caller is the return address of conf_init's caller.
        let found =
            unsafe { api::for_caller(caller) }.and_then(|api| Ok((api, config_file::from_env()?)));
        match found {
            Ok((api, base)) => {
                // SAFETY: conf is the live conf librdkafka is initialising.
                unsafe { attach(api, conf, Arc::new(base)) };
                api::ERR_NO_ERROR
            }
            Err(e) => {
                write_errstr(errstr, errstr_size, &e);
                // RD_KAFKA_RESP_ERR__INVALID_ARG
                -186
            }
        }
    })
}

/// Attaches a fresh state and the configuration interceptors to `conf`.
unsafe fn attach(api: Arc<Api>, conf: *mut Conf, base: Arc<Vec<(String, String)>>) {
    let state = Box::into_raw(Box::new(ConfState {
        api: api.clone(),
        base,
        props: Mutex::new(Vec::new()),
        client: OnceLock::new(),
        control: Mutex::new(None),
        swaps: Mutex::new(record::Swaps::default()),
    }))
    .cast::<c_void>();
    let name = IC_NAME.as_ptr();
    // SAFETY: conf is live; state lives until on_conf_destroy frees it.
    unsafe {
        (api.conf_add_on_conf_set)(conf, name, on_conf_set, state);
        (api.conf_add_on_conf_dup)(conf, name, on_conf_dup, state);
        (api.conf_add_on_conf_destroy)(conf, name, on_conf_destroy, state);
        (api.conf_add_on_new)(conf, name, on_new, state);
    }
}

/// # Safety
/// `p` must be the state pointer registered by [`attach`].
unsafe fn state<'a>(p: *mut c_void) -> Option<&'a ConfState> {
    // SAFETY: caller.
    unsafe { p.cast::<ConfState>().as_ref() }
}

fn cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: librdkafka passes NUL-terminated strings.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn on_conf_set(
    _conf: *mut Conf,
    name: *const c_char,
    val: *const c_char,
    errstr: *mut c_char,
    errstr_size: usize,
    ic_opaque: *mut c_void,
) -> std::ffi::c_int {
    guard(api::CONF_INVALID, || {
        let Some(name) = cstr(name) else {
            return api::CONF_UNKNOWN;
        };
        if !name.starts_with("e2ee.") {
            return api::CONF_UNKNOWN;
        }
        // SAFETY: registered by attach.
        let Some(st) = (unsafe { state(ic_opaque) }) else {
            return api::CONF_UNKNOWN;
        };
        let value = cstr(val).unwrap_or_default();
        let mut props = st.props.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: Vec<(String, String)> =
            props.iter().filter(|(k, _)| *k != name).cloned().collect();
        next.push((name.clone(), value));
        match check_partial(&merged(&st.base, &next), &name) {
            Ok(()) => {
                *props = next;
                api::CONF_OK
            }
            Err(e) => {
                write_errstr(errstr, errstr_size, &e.to_string());
                api::CONF_INVALID
            }
        }
    })
}

/// The file's settings overridden by the properties set on the configuration.
fn merged(base: &[(String, String)], props: &[(String, String)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !props.iter().any(|(p, _)| p == k))
        .cloned()
        .collect();
    all.extend(props.iter().cloned());
    all
}

/// Checks what can be checked as soon as a property is set, so that a bad
/// setting fails `rd_kafka_conf_set` (and so client creation) with a
/// message naming the property: `on_new` cannot fail `rd_kafka_new`.
fn check_partial(props: &[(String, String)], just_set: &str) -> Result<(), ConfigError> {
    let get = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // Placeholders for the two required paths let the parser check the rest.
    let mut all: Vec<(&str, &str)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for req in ["e2ee.credential", "e2ee.trust"] {
        if get(req).is_none_or(|v| v.trim().is_empty()) {
            all.retain(|(k, _)| *k != req);
            all.push((req, "-"));
        }
    }
    HostConfig::from_properties(all)?;
    let bad = |p: &str, m: String| ConfigError {
        property: p.to_owned(),
        message: m,
    };
    let identity = match get("e2ee.credential")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| bad("e2ee.credential", format!("cannot read '{path}': {e}")))?;
            Some(
                Identity::from_file_bytes(&bytes)
                    .map_err(|e| bad("e2ee.credential", format!("'{path}': {e}")))?,
            )
        }
        None => None,
    };
    let trust = match get("e2ee.trust").map(str::trim).filter(|v| !v.is_empty()) {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| bad("e2ee.trust", format!("cannot read '{path}': {e}")))?;
            Some(
                TrustAnchor::from_file_bytes(&bytes)
                    .map_err(|e| bad("e2ee.trust", format!("'{path}': {e}")))?,
            )
        }
        None => None,
    };
    if let (Some(id), Some(trust)) = (identity, trust) {
        let skew = kafka_e2ee_core::EngineConfig::default().clock_skew_ms;
        trust.verify(id.credential(), now_ms(), skew).map_err(|e| {
            bad(
                "e2ee.credential",
                format!(
                    "this credential is not valid under the trust file{}: {e}",
                    if just_set == "e2ee.trust" {
                        " just set"
                    } else {
                        ""
                    }
                ),
            )
        })?;
    }
    Ok(())
}

unsafe extern "C" fn on_conf_dup(
    new_conf: *mut Conf,
    _old_conf: *const Conf,
    filter_cnt: usize,
    filter: *mut *const c_char,
    ic_opaque: *mut c_void,
) -> api::Err {
    guard(api::ERR_NO_ERROR, || {
        // SAFETY: registered by attach.
        let Some(st) = (unsafe { state(ic_opaque) }) else {
            return api::ERR_NO_ERROR;
        };
        // A copy that filters out the plugin (ours for the control clients,
        // or an app's private copy) must not carry the interceptors.
        for i in 0..filter_cnt {
            // SAFETY: filter has filter_cnt entries.
            let f = cstr(unsafe { *filter.add(i) }).unwrap_or_default();
            if f == "plugin.library.paths" || f.starts_with("e2ee") {
                return api::ERR_NO_ERROR;
            }
        }
        // librdkafka re-applies the e2ee.* values to the copy afterwards
        // through on_conf_set.
        // SAFETY: new_conf is live.
        unsafe { attach(st.api.clone(), new_conf, st.base.clone()) };
        api::ERR_NO_ERROR
    })
}

unsafe extern "C" fn on_conf_destroy(ic_opaque: *mut c_void) -> api::Err {
    guard(api::ERR_NO_ERROR, || {
        if ic_opaque.is_null() {
            return api::ERR_NO_ERROR;
        }
        // SAFETY: made by attach with Box::into_raw; librdkafka calls this
        // once per configuration, after the client (if any) and all of its
        // messages were destroyed.
        let st = unsafe { Box::from_raw(ic_opaque.cast::<ConfState>()) };
        st.swaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release_all();
        drop(st);
        api::ERR_NO_ERROR
    })
}

unsafe extern "C" fn on_new(
    rk: *mut Kafka,
    conf: *const Conf,
    ic_opaque: *mut c_void,
    _errstr: *mut c_char,
    _errstr_size: usize,
) -> api::Err {
    guard(api::ERR_NO_ERROR, || {
        // SAFETY: registered by attach.
        let Some(st) = (unsafe { state(ic_opaque) }) else {
            return api::ERR_NO_ERROR;
        };
        let api = st.api.clone();
        // SAFETY: conf is the client's live configuration.
        let client = match unsafe { start(st, conf, (api.kind)(rk) == api::PRODUCER) } {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kafka-e2ee: {e}: this client sends and delivers no records");
                Client {
                    engine: None,
                    broken: Some(e.to_string()),
                    wait_ms: 0,
                    bind_key: true,
                    seal_headers: true,
                    headers_clear: Vec::new(),
                    tokenize_keys: false,
                    fork_generation: FORK_GENERATION.load(Ordering::SeqCst),
                    pid: current_pid(),
                    keys: None,
                    topic_source_prefix: None,
                }
            }
        };
        let _ = st.client.set(client);
        let name = IC_NAME.as_ptr();
        // SAFETY: rk is the new client; the state outlives it.
        unsafe {
            (api.add_on_send)(rk, name, record::on_send, ic_opaque);
            (api.add_on_acknowledgement)(rk, name, record::on_acknowledgement, ic_opaque);
            (api.add_on_consume)(rk, name, record::on_consume, ic_opaque);
            (api.add_on_destroy)(rk, name, on_destroy, ic_opaque);
        }
        api::ERR_NO_ERROR
    })
}

unsafe fn start(st: &ConfState, conf: *const Conf, producer: bool) -> Result<Client, ConfigError> {
    let props = merged(
        &st.base,
        &st.props.lock().unwrap_or_else(PoisonError::into_inner),
    );
    let cfg = HostConfig::from_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // SAFETY: conf is live.
    let bootstrap = unsafe { st.api.get(conf, "bootstrap.servers") }
        .or_else(|| unsafe { st.api.get(conf, "metadata.broker.list") })
        .unwrap_or_default();
    // The engine and its control plane belong to the cluster the keys are
    // exchanged on: a mirrored cluster's consumer shares them with the
    // source cluster's clients of this process, not with its own cluster's.
    let bootstrap = cfg.key_exchange_cluster(&bootstrap).to_owned();
    let (engine, _) = host::shared_engine(&bootstrap, &cfg)?;
    let key = format!(
        "{bootstrap}\u{0}{}\u{0}{}\u{0}{}",
        cfg.credential.display(),
        cfg.control_topic,
        cfg.keys_topic
    );
    let settings = control::Settings::of(&cfg);
    // SAFETY: conf is live.
    let cp =
        unsafe { control::join(&key, engine.clone(), &st.api, conf, &settings) }.map_err(|m| {
            ConfigError {
                property: "e2ee.control.topic".into(),
                message: m,
            }
        })?;
    if producer {
        cp.producer_joined();
    }
    let keys = cp.keys.clone();
    *st.control.lock().unwrap_or_else(PoisonError::into_inner) = Some(cp);
    Ok(Client {
        engine: Some(engine),
        broken: None,
        wait_ms: cfg.wait_ms,
        bind_key: cfg.bind_key,
        seal_headers: cfg.headers == crate::host::HeadersMode::Encrypt,
        headers_clear: cfg.headers_clear.clone(),
        tokenize_keys: cfg.tokenize_keys,
        fork_generation: FORK_GENERATION.load(Ordering::SeqCst),
        pid: current_pid(),
        keys: Some(keys),
        topic_source_prefix: cfg.topic_source_prefix.clone(),
    })
}

unsafe extern "C" fn on_destroy(_rk: *mut Kafka, ic_opaque: *mut c_void) -> api::Err {
    guard(api::ERR_NO_ERROR, || {
        // SAFETY: registered by attach.
        if let Some(st) = unsafe { state(ic_opaque) } {
            // The last client of an engine stops its control plane here.
            let cp = st
                .control
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(cp);
        }
        api::ERR_NO_ERROR
    })
}

/// The `e2ee.*` property table, for docs and tests.
pub fn properties() -> &'static [(&'static str, &'static str, &'static str)] {
    PROPERTIES
}

pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::SeqCst)
}

#[allow(dead_code)]
fn _assert_message_layout() {
    // rd_kafka_message_t on LP64.
    const _: () = assert!(std::mem::size_of::<Message>() == 72);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client {
            engine: None,
            broken: None,
            wait_ms: 0,
            bind_key: true,
            seal_headers: true,
            headers_clear: Vec::new(),
            tokenize_keys: false,
            fork_generation: fork_generation(),
            pid: current_pid(),
            keys: None,
            topic_source_prefix: None,
        }
    }

    /// KAFKA_E2EE_CONFIG's precedence: a property set on the configuration
    /// overrides the file's value; the file's other values stay.
    #[test]
    fn properties_override_the_config_file() {
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let base = [
            kv("e2ee.credential", "file.cred"),
            kv("e2ee.trust", "file.trust"),
        ];
        let props = [kv("e2ee.trust", "prop.trust"), kv("e2ee.topics", "a.*")];
        assert_eq!(
            merged(&base, &props),
            vec![
                kv("e2ee.credential", "file.cred"),
                kv("e2ee.trust", "prop.trust"),
                kv("e2ee.topics", "a.*")
            ]
        );
    }

    /// A child made by the raw system call (no pthread_atfork handler runs,
    /// so `fork_generation` stays as it was) still may not seal with the
    /// parent's client. The child only reads an atomic, calls getpid() and
    /// exits: nothing in it can wait for a lock some parent thread held.
    #[test]
    fn a_child_made_without_pthread_atfork_may_not_seal() {
        register_fork_handler();
        let c = client();
        assert!(c.may_seal_in_this_process());
        // Armed: the fast path answers from here on (Linux 4.14+ has
        // MADV_WIPEONFORK; without it every check would ask getpid()).
        assert!(wipe_on_fork_page().is_some(), "no MADV_WIPEONFORK page");
        assert_eq!(current_pid(), std::process::id());
        let generation = fork_generation();
        // clone(SIGCHLD) with no stack is fork() without libc's handlers
        // (x86_64 and aarch64 alike; aarch64 has no SYS_fork).
        // SAFETY: the child runs only async-signal-safe code, then _exit.
        let pid =
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
        if pid == 0 {
            let code = i32::from(c.may_seal_in_this_process())
                | (i32::from(fork_generation() != generation) << 1)
                | (i32::from(current_pid() != std::process::id()) << 2);
            // SAFETY: ends the child without running the test harness's exit.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "clone failed");
        let mut status = 0;
        // SAFETY: waits for our own child.
        let waited = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        assert_eq!(waited, pid as libc::pid_t);
        assert!(libc::WIFEXITED(status), "child status {status}");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(
            code, 1,
            "the child of a raw fork may seal with its parent's client"
        );
        assert_ne!(
            code, 2,
            "pthread_atfork ran: the test did not make a raw fork"
        );
        assert_ne!(code & 4, 4, "current_pid() in the child is not the child's");
        assert_eq!(code, 0, "child exit code");
        // The parent itself still may.
        assert!(c.may_seal_in_this_process());
    }
}
