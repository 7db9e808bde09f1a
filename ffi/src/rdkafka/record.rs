//! The data path: seal in `on_send`, restore in `on_acknowledgement`,
//! verify and decrypt in `on_consume`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError};

use kafka_e2ee_core::format::{
    decode_header_list, encode_header_list, AppHeader, KeyBinding, RecordExtras, COMPRESSION_MASK,
    HEADER_LEN,
};
use kafka_e2ee_core::{Error, KeyUnavailable, Opened};
use rand_core::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::api::{self, Api, Headers, Kafka, Message};
use super::{guard, state, Client, ConfState};
use crate::host::{self, now_ms};

const HEADER: &CStr = c"e2ee";
/// The sealed application headers (docs/FORMAT.md section 12).
const SEALED_HEADERS: &CStr = c"e2ee.h";
/// A tokenized record's real key, sealed (docs/FORMAT.md section 13).
const SEALED_KEY: &CStr = c"e2ee.k";
/// Added by `on_consume` after a successful decrypt, so that a second run
/// for the same message recognises it. Its value is a MAC under a key that
/// never leaves this process: a broker cannot forge it to pass a plaintext
/// injection off as decrypted. Two forms, told apart by length and by the
/// top bit of the nonce, which is part of what the tag covers:
/// - the header form (every uncompressed record): nonce (top bit set) ||
///   the record's `e2ee` header || tag over the record's position, value
///   length and that header. Cheap (about 60 bytes MACed, whatever the value
///   size). It does not cover the value, so a second run also checks that
///   the value is the plaintext of that header: it seals a copy under the
///   record's key and compares tags (`Engine::is_plaintext_of`), a full
///   seal, paid only on the rare second run instead of a MAC over the whole
///   value on every record;
/// - the value form (compressed records, whose sealing cannot be
///   reproduced from the plaintext): nonce (top bit clear) || tag over the
///   record's position and the whole plaintext.
const OPENED: &CStr = c"e2ee.opened";
/// The value form: nonce (u64 BE) || tag.
const MARKER_LEN: usize = 8 + 16;
/// The header form: nonce (u64 BE) || e2ee header || tag.
const HEADER_MARKER_LEN: usize = 8 + HEADER_LEN + 16;
/// Set in the nonce of every header-form marker and clear in every value
/// form's, so a tag of one form never verifies as the other (a value-form
/// check of a 42-byte injected value equal to a header form's MAC input
/// would otherwise pass). The counter never reaches it.
const HEADER_FORM: u64 = 1 << 63;
const RD_KAFKA_MSG_F_FREE: i32 = 0x1;
const RD_KAFKA_MSG_F_COPY: i32 = 0x2;
const RD_KAFKA_MSG_F_PRODUCER: i32 = 0x40000;

/// A ciphertext buffer swapped in for a payload by `on_send`.
#[derive(Debug)]
struct Swap {
    original: usize,
    ours: usize,
    len: usize,
    /// Whether librdkafka will free() the message's payload (the app gave it
    /// RD_KAFKA_MSG_F_FREE); None if that could not be told.
    payload_freed_by_librdkafka: Option<bool>,
}

/// The swaps of one client that have not been acknowledged yet.
#[derive(Debug, Default)]
pub(crate) struct Swaps(HashMap<usize, Swap>);

/// How many swaps of all clients in this process are outstanding. When
/// none is, `on_acknowledgement` skips the swap map's lock and lookup: the
/// usual producer (RD_KAFKA_MSG_F_COPY, sealed in place) never makes one,
/// and the lock was then taken on librdkafka's broker thread for every
/// record for nothing. A swap's own insert (in `on_send`, before librdkafka
/// queues the message) happens before its acknowledgement, so a count of
/// zero there means this message has none.
static OUTSTANDING_SWAPS: AtomicUsize = AtomicUsize::new(0);

impl Swaps {
    fn insert(&mut self, swap: Swap) {
        OUTSTANDING_SWAPS.fetch_add(1, Ordering::AcqRel);
        if let Some(_replaced) = self.0.insert(swap.ours, swap) {
            // A malloc'd address is never live twice; keep the count right anyway.
            OUTSTANDING_SWAPS.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn remove(&mut self, ours: usize) -> Option<Swap> {
        let s = self.0.remove(&ours);
        if s.is_some() {
            OUTSTANDING_SWAPS.fetch_sub(1, Ordering::AcqRel);
        }
        s
    }

    /// Called once librdkafka has destroyed every message of the client
    /// (destroy without flush: purged messages never reach on_ack).
    pub(crate) fn release_all(&mut self) {
        OUTSTANDING_SWAPS.fetch_sub(self.0.len(), Ordering::AcqRel);
        for (_, s) in self.0.drain() {
            match s.payload_freed_by_librdkafka {
                // librdkafka freed our buffer as the payload; the original,
                // which it owned, is ours to free now.
                // SAFETY: the app passed ownership with F_FREE (malloc'd).
                Some(true) => unsafe { libc::free(s.original as *mut c_void) },
                // SAFETY: ours, allocated with malloc in on_send.
                Some(false) => unsafe { scrub_free(s.ours as *mut u8, s.len) },
                // Unknown: leak rather than risk a double free.
                None => {}
            }
        }
    }
}

unsafe fn scrub_free(p: *mut u8, len: usize) {
    // SAFETY: p has len bytes (caller).
    unsafe {
        std::ptr::write_bytes(p, 0, len);
        libc::free(p.cast());
    }
}

/// The flags of the message that embeds `rkm` (librdkafka's private
/// rd_kafka_msg_t: `rkm_rkmessage; TAILQ_ENTRY rkm_link; int rkm_flags`,
/// unchanged from 2.0 to 2.16), checked for the producer bit.
unsafe fn private_flags(rkm: *const Message) -> Option<i32> {
    let off = std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>();
    // SAFETY: producer messages are rd_kafka_msg_t; read-only peek.
    let flags = unsafe { std::ptr::read_unaligned(rkm.cast::<u8>().add(off).cast::<i32>()) };
    (flags & RD_KAFKA_MSG_F_PRODUCER != 0 && flags & !0xF_FFFF == 0).then_some(flags)
}

/// The message's topic name, borrowed from its topic handle (no copy; Kafka
/// topic names are ASCII, so the lossy branch only meets names no broker
/// accepts, which the engine then refuses).
/// # Safety
/// The name lives as long as the message's topic handle: `'a` must not
/// outlive the message.
unsafe fn topic_of<'a>(api: &Api, m: &Message) -> Option<Cow<'a, str>> {
    if m.rkt.is_null() {
        return None;
    }
    // SAFETY: rkt is the message's live topic handle.
    let p = unsafe { (api.topic_name)(m.rkt) };
    if p.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated, owned by the topic handle, which outlives the
    // message it is borrowed for.
    let name = unsafe { CStr::from_ptr(p) };
    // to_str first: the plain UTF-8 check is several times cheaper per
    // record than to_string_lossy's chunked scan (callgrind, PERFORMANCE.md).
    Some(
        name.to_str()
            .map_or_else(|_| name.to_string_lossy(), Cow::Borrowed),
    )
}

fn binding(m: &Message) -> KeyBinding<'_> {
    if m.key.is_null() {
        KeyBinding::Null
    } else {
        // SAFETY: key has key_len bytes for the life of the message.
        KeyBinding::Bytes(unsafe { std::slice::from_raw_parts(m.key.cast::<u8>(), m.key_len) })
    }
}

/// The record key as `on_send` binds it (`e2ee.bind.key`), and as
/// `on_acknowledgement` must give it back to unseal.
fn sealing_binding(bind_key: bool, m: &Message) -> KeyBinding<'_> {
    if bind_key {
        binding(m)
    } else {
        KeyBinding::Unbound
    }
}

/// The message's header list, created and attached if it has none.
unsafe fn headers_for_append(api: &Api, m: *mut Message) -> *mut Headers {
    let mut h: *mut Headers = std::ptr::null_mut();
    // SAFETY: m is live.
    if unsafe { (api.message_headers)(m, &mut h) } == api::ERR_NO_ERROR && !h.is_null() {
        return h;
    }
    // SAFETY: a new list, owned by the message once set.
    unsafe {
        let h = (api.headers_new)(2);
        if !h.is_null() {
            (api.message_set_headers)(m, h);
        }
        h
    }
}

pub(crate) unsafe extern "C" fn on_send(
    _rk: *mut Kafka,
    m: *mut Message,
    ic_opaque: *mut c_void,
) -> api::Err {
    let sent = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: registered by attach; m is the message being produced.
        let (Some(st), Some(msg)) = (unsafe { state(ic_opaque) }, unsafe { m.as_mut() }) else {
            return;
        };
        if msg.payload.is_null() && !tokenizes(st, msg) {
            return; // a tombstone stays null
        }
        // SAFETY: as above.
        unsafe { send(st, m) };
    }));
    if sent.is_err() {
        // A panic left the message in an unknown state: it may still hold
        // the plaintext (or the app's own buffer, which must not be written).
        // Whatever happened, it must not reach a broker, so it is failed
        // closed the one way that touches no buffer.
        // SAFETY: m is the message being produced (or null).
        if let Some(msg) = unsafe { m.as_mut() } {
            fail_closed(msg);
        }
        return ERR_FAILED_CLOSED;
    }
    api::ERR_NO_ERROR
}

/// Whether this client sends `msg`'s key as a token (`e2ee.keys=tokenize`
/// and a non-null key): then even a tombstone is sealed (an empty value,
/// and the real key in `e2ee.k`; its payload stays null).
fn tokenizes(st: &ConfState, msg: &Message) -> bool {
    !msg.key.is_null() && st.client.get().is_some_and(|c| c.tokenize_keys)
}

/// What `on_send` returns when it failed a message closed after a panic:
/// librdkafka only logs an interceptor's error (the message is failed by its
/// partition), so the log names the plugin (RD_KAFKA_RESP_ERR__FAIL).
const ERR_FAILED_CLOSED: api::Err = -196;

/// Faults that only debug builds can be told to inject (tests/plugin's
/// faults_test drives them through `KAFKA_E2EE_TEST_FAULT`), so that the
/// fail-closed paths for states no real librdkafka produces are tested
/// end to end. Release builds compile this to `false`: no switch exists.
#[cfg(debug_assertions)]
fn injected_fault(name: &str) -> bool {
    std::env::var("KAFKA_E2EE_TEST_FAULT").is_ok_and(|v| v.split(',').any(|f| f == name))
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn injected_fault(_name: &str) -> bool {
    false
}

/// Panics if a debug build is told to (`on_send_panic`): the test of the
/// panic boundary of `on_send`.
#[cfg(debug_assertions)]
#[allow(clippy::panic)]
fn injected_panic() {
    if injected_fault("on_send_panic") {
        panic!("kafka-e2ee: injected on_send panic (debug build, KAFKA_E2EE_TEST_FAULT)");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn injected_panic() {}

unsafe fn send(st: &ConfState, m: *mut Message) {
    let api = &*st.api;
    // SAFETY: caller.
    let msg = unsafe { &mut *m };
    injected_panic();
    // Without its topic name the message cannot be told to be unprotected,
    // so it is treated as protected and unsealable: failed closed below.
    let topic = if injected_fault("topic_unreadable") {
        None
    } else {
        // SAFETY: the topic is used only during this call.
        unsafe { topic_of(api, msg) }
    };
    let client = st.client.get();
    let engine = client.and_then(|c| c.engine.as_ref());
    if let (Some(e), Some(topic)) = (engine, topic.as_deref()) {
        if !e.is_protected(topic) {
            return;
        }
    }
    let len = msg.len;
    let usable = client.is_some_and(|c| c.broken.is_none() && c.may_seal_in_this_process());
    let bind = sealing_binding(client.is_some_and(|c| c.bind_key), msg);
    // SAFETY: m is live.
    let flags = unsafe { private_flags(m) };
    if let (Some(engine), true, true, Some(topic)) =
        (engine, usable, copied_payload(flags, len), topic.as_deref())
    {
        // SAFETY: m is live; its payload is librdkafka's own copy of len bytes.
        if unsafe { seal_librdkafkas_copy(api, engine, client, topic, bind, m) } {
            return;
        }
    }
    // Our own buffer: never write into the app's (it may be shared or
    // read-only, and the delivery report must see the original).
    let ours = if len == 0 {
        std::ptr::null_mut()
    } else {
        // SAFETY: plain allocation, checked below.
        unsafe { libc::malloc(len) }.cast::<u8>()
    };
    if len != 0 && ours.is_null() {
        fail_closed(msg);
        return;
    }
    let sealed = match (engine, usable, topic.as_deref()) {
        (Some(engine), true, Some(topic)) => {
            let value: &mut [u8] = if len == 0 {
                &mut []
            } else {
                // SAFETY: both buffers have len bytes and do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.payload.cast::<u8>(), ours, len);
                    std::slice::from_raw_parts_mut(ours, len)
                }
            };
            // SAFETY: m is live; value is our copy of its payload.
            let sealed = unsafe { seal_message(api, engine, client, topic, bind, m, value) };
            matches!(sealed, Sealed::Attached)
        }
        _ => false,
    };
    if len != 0 {
        if !sealed {
            // SAFETY: ours has len bytes. The plaintext copy is wiped.
            unsafe { std::ptr::write_bytes(ours, 0, len) };
        }
        let freed = flags.map(|f| f & RD_KAFKA_MSG_F_FREE != 0);
        let swap = Swap {
            original: msg.payload as usize,
            ours: ours as usize,
            len,
            payload_freed_by_librdkafka: freed,
        };
        st.swaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(swap);
        msg.payload = ours.cast();
    }
    if !sealed {
        fail_closed(msg);
    }
}

/// Whether the payload is librdkafka's own copy (the app produced with
/// RD_KAFKA_MSG_F_COPY, as confluent-kafka's bindings and kcat do): then it
/// lives in librdkafka's allocation of the message, the app holds no
/// reference to it, and it can be sealed where it is.
fn copied_payload(flags: Option<i32>, len: usize) -> bool {
    len != 0 && flags.is_some_and(|f| f & RD_KAFKA_MSG_F_COPY != 0)
}

/// Adds the record header to the message's list; false if it could not.
/// An `e2ee` header the app set is removed first, as the Java producer
/// interceptor does: a record carries exactly one, and readers reject a
/// record with two (docs/FORMAT.md section 9). So is an `e2ee.h` header
/// the app set (section 12): only a sealed record's own may travel.
unsafe fn attach_header(api: &Api, m: *mut Message, header: &[u8]) -> bool {
    // SAFETY: m is live (caller).
    let h = unsafe { headers_for_append(api, m) };
    if !h.is_null() {
        // SAFETY: h is the message's list. NOENT (none there) is the usual answer.
        unsafe {
            (api.header_remove)(h, HEADER.as_ptr());
            (api.header_remove)(h, SEALED_HEADERS.as_ptr());
            (api.header_remove)(h, SEALED_KEY.as_ptr());
        }
    }
    !h.is_null()
        // SAFETY: h is the message's list; header has header.len() bytes.
        && unsafe {
            (api.header_add)(
                h,
                HEADER.as_ptr(),
                -1,
                header.as_ptr().cast(),
                header.len() as isize,
            )
        } == api::ERR_NO_ERROR
}

/// Seals librdkafka's copy of the payload in place: no buffer, no copy and
/// nothing to track; `on_acknowledgement` unseals it for the delivery report.
/// False if it could not be sealed, and then the payload is unchanged (the
/// caller fails the message closed the usual way). If the header cannot be
/// attached (out of memory), the sealed payload is zeroed and the message
/// failed closed here.
unsafe fn seal_librdkafkas_copy(
    api: &Api,
    engine: &kafka_e2ee_core::Engine,
    client: Option<&Client>,
    topic: &str,
    bind: KeyBinding<'_>,
    m: *mut Message,
) -> bool {
    // SAFETY: m is live (caller).
    let msg = unsafe { &mut *m };
    // SAFETY: librdkafka's own copy, len bytes, not referenced by the app.
    let value = unsafe { std::slice::from_raw_parts_mut(msg.payload.cast::<u8>(), msg.len) };
    // SAFETY: m is live; value is its payload.
    match unsafe { seal_message(api, engine, client, topic, bind, m, value) } {
        Sealed::Not => false,
        Sealed::Attached => true,
        Sealed::NotAttached => {
            value.fill(0);
            fail_closed(msg);
            true
        }
    }
}

/// What [`seal_message`] did.
enum Sealed {
    /// Nothing: the value is unchanged, the message must not be sent.
    Not,
    /// The value is sealed but its headers could not be attached (out of
    /// memory): the caller wipes it and fails the message closed.
    NotAttached,
    /// Sealed, headers attached.
    Attached,
}

/// One header of a message's list, borrowed from it: valid until the list
/// is changed.
struct RawHeader<'a> {
    name: &'a CStr,
    value: Option<&'a [u8]>,
}

/// Every header of the list, in order (librdkafka's names are
/// NUL-terminated: a name with a NUL byte in it is cut there).
///
/// # Safety
/// `h` is a live header list or null; the result is used before it changes.
unsafe fn all_headers<'a>(api: &Api, h: *mut Headers) -> Vec<RawHeader<'a>> {
    let mut out = Vec::new();
    if h.is_null() {
        return out;
    }
    for idx in 0.. {
        let mut name: *const std::ffi::c_char = std::ptr::null();
        let mut v: *const c_void = std::ptr::null();
        let mut n: usize = 0;
        // SAFETY: h is live; outputs written on success.
        if unsafe { (api.header_get_all)(h, idx, &mut name, &mut v, &mut n) } != api::ERR_NO_ERROR
            || name.is_null()
        {
            break;
        }
        // SAFETY: NUL-terminated, owned by the list (caller: unchanged meanwhile).
        let name = unsafe { CStr::from_ptr(name) };
        let value = if v.is_null() {
            None
        } else {
            // SAFETY: v has n bytes while the list is unchanged.
            Some(unsafe { std::slice::from_raw_parts(v.cast::<u8>(), n) })
        };
        out.push(RawHeader { name, value });
    }
    out
}

/// Whether a header is kafka-e2ee's own (never an application header).
fn is_ours(name: &CStr) -> bool {
    name == HEADER || name == SEALED_HEADERS || name == SEALED_KEY
}

/// Seals `value` (the message's payload, or this plugin's copy of it) and
/// attaches the `e2ee` header; with `e2ee.headers=encrypt` and application
/// headers on the message, seals them too: they are removed from the
/// message but for the `e2ee.headers.clear` ones, and `e2ee.h` is added
/// (docs/FORMAT.md section 12). The app's own list is changed in place,
/// never replaced: librdkafka hands it back to the app if produce() fails.
///
/// # Safety
/// `m` is the live message being produced; `value` is its payload or a copy.
unsafe fn seal_message(
    api: &Api,
    engine: &kafka_e2ee_core::Engine,
    client: Option<&Client>,
    topic: &str,
    bind: KeyBinding<'_>,
    m: *mut Message,
    value: &mut [u8],
) -> Sealed {
    let seal_headers = client.is_some_and(|c| c.seal_headers);
    let clear: &[String] = client.map_or(&[], |c| &c.headers_clear);
    let mut h: *mut Headers = std::ptr::null_mut();
    // SAFETY: m is live; NOENT (no headers) leaves h null.
    if !seal_headers || unsafe { (api.message_headers)(m, &mut h) } != api::ERR_NO_ERROR {
        h = std::ptr::null_mut();
    }
    // SAFETY: h is the message's list or null, unchanged until attached.
    let raw = unsafe { all_headers(api, h) };
    let mut app = Vec::with_capacity(raw.len());
    for r in raw.iter().filter(|r| !is_ours(r.name)) {
        // A header that cannot be sealed fails the record closed: it must
        // not travel in the clear.
        let Ok(name) = r.name.to_str() else {
            return Sealed::Not;
        };
        app.push(AppHeader {
            name,
            value: r.value,
            clear: clear.iter().any(|c| c == name),
        });
    }
    let list: Option<Zeroizing<Vec<u8>>> = if app.is_empty() {
        None
    } else {
        match encode_header_list(&app) {
            Ok(list) => Some(list),
            Err(_) => return Sealed::Not,
        }
    };
    let list = list.as_deref().map(|l| &l[..]);
    // SAFETY: m is live (caller).
    let msg = unsafe { &mut *m };
    let tokenize = client.is_some_and(|c| c.tokenize_keys) && !msg.key.is_null();
    let (header, sealed, sealed_key) = if tokenize {
        let Some(client) = client else {
            return Sealed::Not;
        };
        // SAFETY: librdkafka's own copy of the key (produce() always copies
        // it into the message), key_len bytes, written below in place: the
        // token has the key's length, so its queue accounting holds.
        let key = unsafe { std::slice::from_raw_parts_mut(msg.key.cast::<u8>(), msg.key_len) };
        let Ok(r) = seal_tokenized(engine, client, topic, key, value, list) else {
            return Sealed::Not;
        };
        if r.token.len() != key.len() {
            return Sealed::Not; // never: tokens keep the key's length
        }
        // From here the message carries the token; its delivery report
        // gets the key back (`on_acknowledgement`).
        key.copy_from_slice(&r.token);
        (r.header, r.sealed_headers, Some(r.sealed_key))
    } else {
        let Ok((header, sealed)) = engine.seal_record(topic, bind, value, list) else {
            return Sealed::Not;
        };
        (header, sealed, None)
    };
    if sealed.is_some() {
        // Names copied before the list changes.
        let mut remove: Vec<std::ffi::CString> = Vec::new();
        for a in app.iter().filter(|a| !a.clear) {
            if !remove.iter().any(|r| r.as_bytes() == a.name.as_bytes()) {
                if let Ok(n) = std::ffi::CString::new(a.name) {
                    remove.push(n);
                }
            }
        }
        drop(app);
        drop(raw);
        for name in &remove {
            // SAFETY: h is the message's list (it has headers, so it is
            // not null).
            unsafe { (api.header_remove)(h, name.as_ptr()) };
        }
    }
    // SAFETY: m is live.
    if !unsafe { attach_header(api, m, &header) } {
        return Sealed::NotAttached;
    }
    // SAFETY: m is live; the list exists (attach_header made sure).
    let h = unsafe { headers_for_append(api, m) };
    for (name, v) in [(SEALED_HEADERS, sealed), (SEALED_KEY, sealed_key)] {
        let Some(v) = v else {
            continue;
        };
        // SAFETY: h is the message's list; v has v.len() bytes.
        let added = !h.is_null()
            && unsafe {
                (api.header_add)(h, name.as_ptr(), -1, v.as_ptr().cast(), v.len() as isize)
            } == api::ERR_NO_ERROR;
        if !added {
            return Sealed::NotAttached;
        }
    }
    Sealed::Attached
}

/// Seals with a tokenized key, waiting (up to `e2ee.key.wait.ms`) while the
/// topic's token secret is not there yet: the first record of a topic waits
/// for it once (docs/PROTOCOL.md 5e), on the thread that called produce().
fn seal_tokenized(
    engine: &kafka_e2ee_core::Engine,
    client: &Client,
    topic: &str,
    key: &[u8],
    value: &mut [u8],
    list: Option<&[u8]>,
) -> Result<kafka_e2ee_core::TokenizedRecord, Error> {
    let mut deadline = None;
    loop {
        let generation = engine.key_generation();
        match engine.seal_record_tokenized(topic, key, client.bind_key, value, list) {
            Err(Error::TokenPending { .. })
                if now_ms()
                    < *deadline.get_or_insert_with(|| now_ms().saturating_add(client.wait_ms)) =>
            {
                let deadline = deadline.unwrap_or(0);
                if let Some(k) = client.keys.as_ref() {
                    k.wait_until(deadline, || engine.key_generation() != generation);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            other => return other,
        }
    }
}

/// Gives the delivery report back the plaintext of a payload sealed by
/// [`seal_librdkafkas_copy`]. Only this instance's own seal opens (the
/// record key binding, topic and tag must all match), so an app header that
/// happens to be named `e2ee` changes nothing; on any failure the payload
/// stays as it is.
unsafe fn unseal_librdkafkas_copy(st: &ConfState, m: *mut Message) {
    let api = &*st.api;
    let Some(client) = st.client.get() else {
        return;
    };
    let Some(engine) = client.engine.as_ref() else {
        return;
    };
    // SAFETY: m is live (caller).
    let msg = unsafe { &mut *m };
    // SAFETY: used only during this call.
    let Some(topic) = (unsafe { topic_of(api, msg) }) else {
        return;
    };
    let mut h: *mut Headers = std::ptr::null_mut();
    // SAFETY: m is live; h stays owned by the message.
    if unsafe { (api.message_headers)(m, &mut h) } != api::ERR_NO_ERROR {
        return;
    }
    // SAFETY: h is the message's list, unchanged during this call.
    let Some(header) = (unsafe { header_value(api, h, HEADER) }) else {
        return;
    };
    let bind = sealing_binding(client.bind_key, msg);
    // SAFETY: librdkafka's own copy of len bytes, which it sent already.
    let value = unsafe { std::slice::from_raw_parts_mut(msg.payload.cast::<u8>(), msg.len) };
    let _ = engine.unseal(&topic, header, bind, value);
}

/// Gives the delivery report back the real key of a message whose key
/// `on_send` replaced by its token: opens its `e2ee.k` under this
/// instance's own epoch. On any failure the key stays as it is.
///
/// # Safety
/// `m` is a live message handed to `on_acknowledgement`.
unsafe fn restore_own_key(st: &ConfState, m: *mut Message) {
    let api = &*st.api;
    let Some(engine) = st.client.get().and_then(|c| c.engine.as_ref()) else {
        return;
    };
    // SAFETY: m is live (caller).
    let msg = unsafe { &mut *m };
    // SAFETY: used only during this call.
    let Some(topic) = (unsafe { topic_of(api, msg) }) else {
        return;
    };
    let mut h: *mut Headers = std::ptr::null_mut();
    // SAFETY: m is live; h stays owned by the message.
    if unsafe { (api.message_headers)(m, &mut h) } != api::ERR_NO_ERROR {
        return;
    }
    // SAFETY: h is the message's list, unchanged during this call.
    let (Some(header), Some(sealed)) = (unsafe { header_value(api, h, HEADER) }, unsafe {
        header_value(api, h, SEALED_KEY)
    }) else {
        return;
    };
    // SAFETY: librdkafka's own copy of the key, key_len bytes.
    let key = unsafe { std::slice::from_raw_parts_mut(msg.key.cast::<u8>(), msg.key_len) };
    if let Ok(real) = engine.unseal_key(&topic, header, key, sealed) {
        if real.len() == key.len() {
            key.copy_from_slice(&real);
        }
    }
}

/// on_send cannot veto a message. Instead the message is pointed at a
/// partition that cannot exist, so librdkafka's partitioner fails it
/// (UNKNOWN_PARTITION, from produce() or in the delivery report) before it
/// is ever queued for a broker; its payload is already zeros.
fn fail_closed(msg: &mut Message) {
    msg.partition = i32::MAX;
}

pub(crate) unsafe extern "C" fn on_acknowledgement(
    _rk: *mut Kafka,
    m: *mut Message,
    ic_opaque: *mut c_void,
) -> api::Err {
    guard(api::ERR_NO_ERROR, || {
        // SAFETY: registered by attach; m is the acknowledged message.
        let (Some(st), Some(msg)) = (unsafe { state(ic_opaque) }, unsafe { m.as_mut() }) else {
            return api::ERR_NO_ERROR;
        };
        let swap = if OUTSTANDING_SWAPS.load(Ordering::Acquire) == 0 {
            None
        } else {
            st.swaps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(msg.payload as usize)
        };
        if let Some(s) = swap {
            // The delivery report sees the app's original payload.
            msg.payload = s.original as *mut c_void;
            // SAFETY: ours, from malloc in on_send, no longer referenced.
            unsafe { scrub_free(s.ours as *mut u8, s.len) };
        // SAFETY: m is live.
        } else if copied_payload(unsafe { private_flags(m) }, msg.len) {
            // SAFETY: as above.
            unsafe { unseal_librdkafkas_copy(st, m) };
        }
        if tokenizes(st, msg) {
            // SAFETY: m is live.
            unsafe { restore_own_key(st, m) };
        }
        api::ERR_NO_ERROR
    })
}

/// The marker's key: a random AES-256-GCM key that never leaves the
/// process, used as a MAC: the record's position and plaintext are sealed
/// in a scratch copy and only the tag is kept. Each marker takes the next
/// nonce of a counter, so no nonce repeats under the key. A copy plus
/// AES-GCM's bulk path costs a third of the HMAC-SHA256 this replaced
/// (which was 27% of a plugin consumer's CPU at 1 KiB), and half of ring's
/// GCM over the value as associated data, which it hashes block by block
/// (perf/aead-compare).
struct MarkerKey {
    key: LessSafeKey,
    next_nonce: AtomicU64,
}

/// Largest scratch buffer a thread keeps between markers.
const KEPT_SCRATCH_LEN: usize = 1 << 20;

thread_local! {
    /// Where a marker's input is sealed; it holds only ciphertext after.
    static MARKER_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// None only if the marker key could not be made: then no record is marked,
/// and none is taken as marked.
fn marker_key() -> Option<&'static MarkerKey> {
    static KEY: OnceLock<Option<MarkerKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::OsRng.try_fill_bytes(&mut key[..]).ok()?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key[..]).ok()?);
        Some(MarkerKey {
            key,
            next_nonce: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// The tag over (topic, partition, offset, value) under `nonce`.
fn marker_tag(
    key: &MarkerKey,
    nonce: u64,
    topic: &str,
    m: &Message,
    value: &[u8],
) -> Option<[u8; 16]> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&nonce.to_be_bytes());
    let seal = |scratch: &mut Vec<u8>| {
        scratch.clear();
        scratch.extend_from_slice(&(topic.len() as u64).to_be_bytes());
        scratch.extend_from_slice(topic.as_bytes());
        scratch.extend_from_slice(&m.partition.to_be_bytes());
        scratch.extend_from_slice(&m.offset.to_be_bytes());
        scratch.extend_from_slice(value);
        let tag = key.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(n),
            Aad::empty(),
            scratch,
        );
        if tag.is_err() {
            // Too long for GCM: the plaintext copy must not stay behind.
            scratch.fill(0);
        }
        if scratch.capacity() > KEPT_SCRATCH_LEN {
            *scratch = Vec::new();
        }
        tag.ok()
    };
    let tag = MARKER_SCRATCH
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| seal(&mut s)))
        .ok()
        .flatten();
    let tag = match tag {
        Some(tag) => tag,
        None => seal(&mut Vec::new()),
    }?;
    tag.as_ref().try_into().ok()
}

/// A new value-form marker for a message just decrypted.
fn marker(topic: &str, m: &Message, value: &[u8]) -> Option<[u8; MARKER_LEN]> {
    let key = marker_key()?;
    let nonce = key.next_nonce.fetch_add(1, Ordering::Relaxed);
    if nonce & HEADER_FORM != 0 {
        return None; // never: 2^63 markers
    }
    let tag = marker_tag(key, nonce, topic, m, value)?;
    let mut out = [0u8; MARKER_LEN];
    let (n, t) = out.split_at_mut(8);
    n.copy_from_slice(&nonce.to_be_bytes());
    t.copy_from_slice(&tag);
    Some(out)
}

/// Whether `mark` is a value-form marker this process made for this
/// message as it is.
fn is_our_marker(mark: &[u8], topic: &str, m: &Message, value: &[u8]) -> bool {
    let (Some(key), Some((nonce, tag))) = (marker_key(), mark.split_first_chunk::<8>()) else {
        return false;
    };
    let nonce = u64::from_be_bytes(*nonce);
    tag.len() == 16
        && nonce & HEADER_FORM == 0
        && marker_tag(key, nonce, topic, m, value).is_some_and(|ours| bool::from(ours.ct_eq(tag)))
}

/// What a header-form marker's tag covers besides the position: the value's
/// length and the record's header.
fn header_marker_input(len: usize, header: &[u8; HEADER_LEN]) -> [u8; 8 + HEADER_LEN] {
    let mut input = [0u8; 8 + HEADER_LEN];
    let (l, h) = input.split_at_mut(8);
    l.copy_from_slice(&(len as u64).to_be_bytes());
    h.copy_from_slice(header);
    input
}

/// A new header-form marker for a message just decrypted from a record
/// sealed uncompressed under `header`.
fn header_marker(
    topic: &str,
    m: &Message,
    len: usize,
    header: &[u8; HEADER_LEN],
) -> Option<[u8; HEADER_MARKER_LEN]> {
    let key = marker_key()?;
    let nonce = key.next_nonce.fetch_add(1, Ordering::Relaxed) | HEADER_FORM;
    let tag = marker_tag(key, nonce, topic, m, &header_marker_input(len, header))?;
    let mut out = [0u8; HEADER_MARKER_LEN];
    let (n, rest) = out.split_at_mut(8);
    let (h, t) = rest.split_at_mut(HEADER_LEN);
    n.copy_from_slice(&nonce.to_be_bytes());
    h.copy_from_slice(header);
    t.copy_from_slice(&tag);
    Some(out)
}

/// Whether the tag of a header-form marker verifies for this message's
/// position and length: this process decrypted a record with that header
/// here. Says nothing yet about the value now in the message.
fn header_marker_vouches(
    mark: &[u8],
    topic: &str,
    m: &Message,
    len: usize,
) -> Option<[u8; HEADER_LEN]> {
    let key = marker_key()?;
    let (nonce, rest) = mark.split_first_chunk::<8>()?;
    let (header, tag) = rest.split_first_chunk::<HEADER_LEN>()?;
    let nonce = u64::from_be_bytes(*nonce);
    if tag.len() != 16 || nonce & HEADER_FORM == 0 {
        return None;
    }
    let ours = marker_tag(key, nonce, topic, m, &header_marker_input(len, header))?;
    bool::from(ours.ct_eq(tag)).then_some(*header)
}

/// Whether `mark` is a header-form marker this process made for this
/// message, and the value is still the plaintext of that record.
fn is_our_header_marker(
    engine: &kafka_e2ee_core::Engine,
    mark: &[u8],
    topic: &str,
    m: &Message,
    value: &[u8],
) -> bool {
    header_marker_vouches(mark, topic, m, value.len())
        .is_some_and(|header| engine.is_plaintext_of(topic, &header, binding(m), value))
}

/// The value of the last header `name`, borrowed from the message's header
/// list: valid until that list is changed, so callers use it before they
/// remove or add a header.
unsafe fn header_value<'a>(api: &Api, h: *mut Headers, name: &CStr) -> Option<&'a [u8]> {
    if h.is_null() {
        return None;
    }
    let mut v: *const c_void = std::ptr::null();
    let mut n: usize = 0;
    // SAFETY: h is live; outputs written on success.
    if unsafe { (api.header_get_last)(h, name.as_ptr(), &mut v, &mut n) } != api::ERR_NO_ERROR {
        return None;
    }
    if v.is_null() {
        return Some(&[]);
    }
    // SAFETY: v has n bytes while the list is unchanged (caller).
    Some(unsafe { std::slice::from_raw_parts(v.cast::<u8>(), n) })
}

/// Whether the list holds at least two headers named `name`.
unsafe fn has_second(api: &Api, h: *mut Headers, name: &CStr) -> bool {
    if h.is_null() {
        return false;
    }
    let mut v: *const c_void = std::ptr::null();
    let mut n: usize = 0;
    // SAFETY: h is live; index 1 is the second header of that name.
    unsafe { (api.header_get)(h, 1, name.as_ptr(), &mut v, &mut n) == api::ERR_NO_ERROR }
}

pub(crate) unsafe extern "C" fn on_consume(
    rk: *mut Kafka,
    m: *mut Message,
    ic_opaque: *mut c_void,
) -> api::Err {
    guard(api::ERR_NO_ERROR, || {
        // SAFETY: registered by attach; m is the message about to reach the app.
        let (Some(st), Some(msg)) = (unsafe { state(ic_opaque) }, unsafe { m.as_mut() }) else {
            return api::ERR_NO_ERROR;
        };
        if msg.err != api::ERR_NO_ERROR {
            return api::ERR_NO_ERROR;
        }
        // SAFETY: as above.
        if let Err(reason) = unsafe { consume(st, m) } {
            // SAFETY: as above.
            unsafe { reject(st, rk, m, &reason) };
        }
        api::ERR_NO_ERROR
    })
}

unsafe fn consume(st: &ConfState, m: *mut Message) -> Result<(), String> {
    let api = &*st.api;
    // SAFETY: caller.
    let msg = unsafe { &mut *m };
    // SAFETY: the topic is used only during this call.
    let Some(topic) = (unsafe { topic_of(api, msg) }) else {
        return Ok(());
    };
    let Some(client) = st.client.get() else {
        return Err("the plugin has no client state".into());
    };
    let Some(engine) = client.engine.as_ref() else {
        return Err(client.broken.clone().unwrap_or_default());
    };
    let mut h: *mut Headers = std::ptr::null_mut();
    // SAFETY: m is live; h stays owned by the message.
    if unsafe { (api.message_headers)(m, &mut h) } != api::ERR_NO_ERROR {
        h = std::ptr::null_mut();
    }
    // A tombstone is not encrypted (docs/FORMAT.md section 9), unless its
    // key is tokenized (section 13.5): then it carries `e2ee` and `e2ee.k`,
    // sealed over an empty value, and opens as one.
    // SAFETY: h is the message's list or null.
    if msg.payload.is_null() && unsafe { header_value(api, h, SEALED_KEY) }.is_none() {
        return Ok(());
    }
    // A mirrored topic's records are bound to their source topic: opened,
    // authorized and asked for under that name, mapped by this client's own
    // e2ee.topic.source.prefix only (docs/PROTOCOL.md, section 5c).
    let mirrored = topic;
    let topic = host::source_topic(client.topic_source_prefix.as_deref(), &mirrored);
    // SAFETY: h is the message's list or null.
    let header = unsafe { header_value(api, h, HEADER) };
    // SAFETY: as above.
    if header.is_some() && unsafe { has_second(api, h, HEADER) } {
        // Which one the producer meant cannot be told; taking either would
        // let whoever added the other choose what is opened.
        engine.note_record_rejected();
        return Err(
            "the record has more than one e2ee header (a sealed record has exactly one)".into(),
        );
    }
    let len = msg.len;
    let value: &mut [u8] = if len == 0 || msg.payload.is_null() {
        &mut []
    } else {
        // SAFETY: each message's slice of the fetch buffer is its own.
        unsafe { std::slice::from_raw_parts_mut(msg.payload.cast::<u8>(), len) }
    };
    if header.is_none() {
        // Second run for a message already decrypted here?
        // SAFETY: h is the message's list or null.
        if let Some(mark) = unsafe { header_value(api, h, OPENED) } {
            if is_our_marker(mark, topic, msg, value)
                || is_our_header_marker(engine, mark, topic, msg, value)
            {
                return Ok(());
            }
        }
    }
    // The header, copied before the list changes: a header-form marker
    // carries it. None if it is not a header's length (open then fails).
    let sealed_header: Option<[u8; HEADER_LEN]> = header.and_then(|h| h.try_into().ok());
    // Sealed application headers (docs/FORMAT.md section 12): every e2ee.h
    // value, and the record's other headers, whose clear copies the engine
    // checks. Gathered only if the record has an e2ee.h (a flag without
    // one fails in the engine): most records pay one lookup.
    // Likewise every e2ee.k value (tokenized keys, section 13).
    // SAFETY: h is the message's list or null, unchanged until opened.
    let has_sealed_key = unsafe { header_value(api, h, SEALED_KEY) }.is_some();
    // SAFETY: as above.
    let raw = if has_sealed_key || unsafe { header_value(api, h, SEALED_HEADERS) }.is_some() {
        // SAFETY: as above.
        unsafe { all_headers(api, h) }
    } else {
        Vec::new()
    };
    let sealed_headers: Vec<&[u8]> = raw
        .iter()
        .filter(|r| r.name == SEALED_HEADERS)
        .map(|r| r.value.unwrap_or_default())
        .collect();
    let sealed_keys: Vec<&[u8]> = raw
        .iter()
        .filter(|r| r.name == SEALED_KEY)
        .map(|r| r.value.unwrap_or_default())
        .collect();
    // The key as it came off the wire (a token if the record has e2ee.k:
    // then copied, since the fetch buffer's copy is restored in place
    // below; borrowed otherwise, so most records allocate nothing here).
    // SAFETY: key has key_len bytes for the life of the message.
    let borrowed = (!msg.key.is_null())
        .then(|| unsafe { std::slice::from_raw_parts(msg.key.cast::<u8>(), msg.key_len) });
    let copied: Option<Zeroizing<Vec<u8>>> = borrowed
        .filter(|_| has_sealed_key)
        .map(|k| Zeroizing::new(k.to_vec()));
    let wire_key: Option<&[u8]> = match &copied {
        Some(k) => Some(&k[..]),
        None => borrowed,
    };
    // A header whose name is not UTF-8 is no application header's copy:
    // left out (and dropped with the others once opened).
    let visible: Vec<AppHeader<'_>> = raw
        .iter()
        .filter(|r| !is_ours(r.name))
        .filter_map(|r| {
            Some(AppHeader {
                name: r.name.to_str().ok()?,
                value: r.value,
                clear: false,
            })
        })
        .collect();
    let mut deadline = None;
    loop {
        let generation = engine.key_generation();
        let extras = RecordExtras {
            sealed_headers: &sealed_headers,
            visible: &visible,
            wire_key,
            sealed_keys: &sealed_keys,
        };
        let bind = match wire_key {
            Some(k) => KeyBinding::Bytes(k),
            None => KeyBinding::Null,
        };
        match engine.open_record_parts(topic, header, extras, bind, value) {
            // e2ee.topics may name the mirrored topic rather than its source
            // (A.* instead of orders): plaintext is refused if either name is
            // protected, so the mapping never lets plaintext in.
            Ok((Opened::Plaintext, _)) => {
                return host::refuse_mirrored_plaintext(engine, &mirrored, topic)
                    .map_err(|e| e.to_string())
            }
            Ok((Opened::Decrypted, opened)) => {
                if let Some(real) = &opened.key {
                    if real.len() != msg.key_len || msg.key.is_null() {
                        return Err("the record's real key does not fit its token".into());
                    }
                    // SAFETY: the message's slice of the fetch buffer holds
                    // key_len bytes, its own; the real key has that length.
                    unsafe { std::slice::from_raw_parts_mut(msg.key.cast::<u8>(), msg.key_len) }
                        .copy_from_slice(real);
                    // SAFETY: h is the message's list (it held e2ee.k).
                    unsafe { (api.header_remove)(h, SEALED_KEY.as_ptr()) };
                }
                if let Some(list) = opened.headers {
                    // SAFETY: h is the message's list (it held the headers).
                    unsafe { restore_headers(api, h, &list) }?;
                }
                // SAFETY: h is the message's list (it held the header).
                unsafe { (api.header_remove)(h, HEADER.as_ptr()) };
                let uncompressed =
                    sealed_header.filter(|sh| sh.get(1).is_some_and(|f| f & COMPRESSION_MASK == 0));
                let mut long = [0u8; HEADER_MARKER_LEN];
                let mark: Option<&[u8]> = match uncompressed {
                    Some(sh) => header_marker(topic, msg, value.len(), &sh).map(|m| {
                        long = m;
                        &long[..]
                    }),
                    None => marker(topic, msg, value).map(|m| {
                        long[..MARKER_LEN].copy_from_slice(&m);
                        &long[..MARKER_LEN]
                    }),
                };
                if let Some(mark) = mark {
                    // SAFETY: as above; mark has mark.len() bytes.
                    unsafe {
                        (api.header_add)(
                            h,
                            OPENED.as_ptr(),
                            -1,
                            mark.as_ptr().cast(),
                            mark.len() as isize,
                        )
                    };
                }
                return Ok(());
            }
            Err(Error::KeyUnavailable {
                reason: KeyUnavailable::Pending,
                ..
            }) if now_ms()
                < *deadline.get_or_insert_with(|| now_ms().saturating_add(client.wait_ms)) =>
            {
                // The clock is read only once a key is missing, never per record.
                let deadline = deadline.unwrap_or(0);
                let waited = client.keys.as_ref().is_some_and(|k| {
                    k.wait_until(deadline, || engine.key_generation() != generation)
                });
                if !waited && now_ms() >= deadline {
                    continue; // one last try, then fail below
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Replaces every header of the list with the opened application headers,
/// in their order (docs/FORMAT.md section 12.4, step 6): the `e2ee.h`
/// header, the clear copies and any header added on the way go; the
/// caller then removes `e2ee` and adds its marker. In place: names are
/// removed one by one (a consumed message owns its list).
///
/// # Safety
/// `h` is the live header list of the message being consumed.
unsafe fn restore_headers(api: &Api, h: *mut Headers, list: &[u8]) -> Result<(), String> {
    let entries =
        decode_header_list(list).map_err(|e| format!("sealed headers do not decode: {e}"))?;
    // Names copied before the list changes.
    // SAFETY: h is live (caller).
    let names: Vec<std::ffi::CString> = unsafe { all_headers(api, h) }
        .iter()
        .filter(|r| r.name != HEADER)
        .map(|r| r.name.to_owned())
        .collect();
    for name in &names {
        // SAFETY: h is live. NOENT for a name removed already.
        unsafe { (api.header_remove)(h, name.as_ptr()) };
    }
    for e in &entries {
        let (v, n) = match e.value {
            Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: h is live; name and value have the lengths given.
        let added =
            unsafe { (api.header_add)(h, e.name.as_ptr().cast(), e.name.len() as isize, v, n) };
        if added != api::ERR_NO_ERROR {
            return Err("the record's headers could not be restored (out of memory)".into());
        }
    }
    Ok(())
}

/// Gives an error message the whole reason the way librdkafka's own
/// consumer errors carry theirs: the payload is the NUL-terminated text and
/// `len` its length, which rd_kafka_message_errstr() (kcat, confluent-kafka)
/// returns. The record's slice of the fetch buffer is too short for it (it
/// cut the reason to the value's length), so the text gets its own malloc'd
/// buffer, and the message's RD_KAFKA_MSG_F_FREE flag makes librdkafka
/// free() it with the message (rd_kafka_msg_destroy, 2.0 to 2.16; the
/// flag is the private rd_kafka_msg_t field [`private_flags`] reads). Only a
/// message that is plainly a consumed one is changed: its flags are all
/// clear (librdkafka sets none on fetched records it hands to an app) and
/// its `_private` is the fetch op that embeds it, just before it in memory.
/// False (nothing changed) otherwise, or if out of memory.
///
/// # Safety
/// `m` must be a live message handed to `on_consume`.
unsafe fn hand_reason_to_librdkafka(m: *mut Message, text: &str) -> bool {
    // How far into its op librdkafka's rd_kafka_op_t embeds the message
    // (rko_u.fetch.rkm, under 300 bytes in; a margin for growth).
    const MAX_EMBED_OFFSET: usize = 1024;
    // SAFETY: caller.
    let op = unsafe { (*m).private } as usize;
    let at = m as usize;
    if op == 0 || at <= op || at - op > MAX_EMBED_OFFSET {
        return false;
    }
    let off = std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>();
    // SAFETY: m is the rd_kafka_msg_t embedded in its fetch op (checked
    // above); rkm_flags follows rd_kafka_message_t and the TAILQ link.
    let flags_at = unsafe { m.cast::<u8>().add(off).cast::<i32>() };
    // SAFETY: as above; read-only.
    if unsafe { std::ptr::read_unaligned(flags_at) } != 0 {
        return false;
    }
    // SAFETY: plain allocation, checked; text.len() + 1 bytes.
    let buf = unsafe { libc::malloc(text.len() + 1) }.cast::<u8>();
    if buf.is_null() {
        return false;
    }
    // SAFETY: buf has text.len() + 1 bytes; the old payload (the fetch
    // buffer's slice, zeroed) is librdkafka's and freed with that buffer.
    // From here librdkafka owns buf.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len());
        *buf.add(text.len()) = 0;
        std::ptr::write_unaligned(flags_at, RD_KAFKA_MSG_F_FREE);
        (*m).payload = buf.cast();
        (*m).len = text.len();
    }
    true
}

/// The reason written over the record's own (zeroed) slice, cut to fit,
/// NUL-terminated: for a message [`hand_reason_to_librdkafka`] cannot vouch for.
fn write_reason_in_place(msg: &mut Message, text: &str) {
    if msg.payload.is_null() || msg.len == 0 {
        return;
    }
    let n = text.len().min(msg.len - 1);
    // SAFETY: the message's own writable slice of msg.len > n bytes.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), msg.payload.cast::<u8>(), n) };
}

/// A record that cannot be decrypted reaches the app as an error message
/// with no ciphertext left in it, and is not committed past: librdkafka
/// stores `offset + 1` of every message it hands out (it checks the op's
/// error, not the one set here), so the message's offset is moved back by
/// one for that store and the partition is sought back to the record, which
/// is fetched (and waited for) again, as Java's consumer does with a
/// record that fails to deserialize.
unsafe fn reject(st: &ConfState, rk: *mut Kafka, m: *mut Message, reason: &str) {
    let api = &*st.api;
    // SAFETY: caller.
    let (offset, payload, len) = unsafe { ((*m).offset, (*m).payload, (*m).len) };
    let text = format!("kafka-e2ee: record at offset {offset} rejected: {reason}");
    if let Some(engine) = st.client.get().and_then(|c| c.engine.as_ref()) {
        engine.note_record_failed();
    }
    if !payload.is_null() && len > 0 {
        // SAFETY: the message's own writable slice of the fetch buffer: no
        // ciphertext (or injected plaintext) stays in it.
        unsafe { std::ptr::write_bytes(payload.cast::<u8>(), 0, len) };
    }
    // SAFETY: m is a consumed message (caller).
    let handed = unsafe { hand_reason_to_librdkafka(m, &text) };
    // SAFETY: caller; no other reference to the message is live.
    let msg = unsafe { &mut *m };
    if !handed {
        // Fallback: the reason in the record's own slice, as much as fits.
        write_reason_in_place(msg, &text);
    }
    msg.err = api::ERR_VALUE_DESERIALIZATION;
    if offset >= 0 && !msg.rkt.is_null() {
        // SAFETY: the topic is used only during this call.
        if let Some(topic) = unsafe { topic_of(api, msg) } {
            if let Ok(ct) = std::ffi::CString::new(topic.into_owned()) {
                // SAFETY: rk is the consuming client; list is ours.
                unsafe {
                    let list = (api.tpl_new)(1);
                    let tp = (api.tpl_add)(list, ct.as_ptr(), msg.partition);
                    if !tp.is_null() {
                        (*tp).offset = offset;
                    }
                    let e = (api.seek_partitions)(rk, list, 0);
                    if !e.is_null() {
                        (api.error_destroy)(e);
                    }
                    (api.tpl_destroy)(list);
                }
            }
        }
        msg.offset = offset - 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> Message {
        Message {
            err: api::ERR_NO_ERROR,
            rkt: std::ptr::null_mut(),
            partition,
            payload: std::ptr::null_mut(),
            len: 0,
            key: std::ptr::null_mut(),
            key_len: 0,
            offset,
            private: std::ptr::null_mut(),
        }
    }

    #[test]
    fn a_marker_vouches_only_for_its_own_message_as_it_is() {
        let (m, value) = (message(3, 42), b"the plaintext".as_slice());
        let mark = marker("orders", &m, value).unwrap();
        assert!(is_our_marker(&mark, "orders", &m, value));
        // Each marker has a fresh nonce, and still verifies.
        let again = marker("orders", &m, value).unwrap();
        assert_ne!(mark, again);
        assert!(is_our_marker(&again, "orders", &m, value));

        // Anything else about the record: another value (a plaintext
        // injection reusing a marker), topic, partition or offset.
        assert!(!is_our_marker(&mark, "orders", &m, b"the plaintexT"));
        assert!(!is_our_marker(&mark, "orders", &m, b""));
        assert!(!is_our_marker(&mark, "orderz", &m, value));
        assert!(!is_our_marker(&mark, "orders", &message(4, 42), value));
        assert!(!is_our_marker(&mark, "orders", &message(3, 43), value));
        // A forged, truncated, extended or bit-flipped marker.
        assert!(!is_our_marker(&[0; MARKER_LEN], "orders", &m, value));
        assert!(!is_our_marker(&mark[..MARKER_LEN - 1], "orders", &m, value));
        assert!(!is_our_marker(
            &[&mark[..], &[0]].concat(),
            "orders",
            &m,
            value
        ));
        assert!(!is_our_marker(&[], "orders", &m, value));
        for i in 0..MARKER_LEN {
            let mut flipped = mark;
            flipped[i] ^= 1;
            assert!(!is_our_marker(&flipped, "orders", &m, value), "byte {i}");
        }
        // A topic longer than any Kafka allows takes the heap path, alike.
        let long = "t".repeat(300);
        let mark = marker(&long, &m, value).unwrap();
        assert!(is_our_marker(&mark, &long, &m, value));
        assert!(!is_our_marker(&mark, &long[1..], &m, value));
    }

    #[test]
    fn a_header_marker_vouches_only_for_its_own_position_length_and_header() {
        let m = message(3, 42);
        let header = [7u8; HEADER_LEN];
        let mark = header_marker("orders", &m, 1024, &header).unwrap();
        assert_eq!(
            header_marker_vouches(&mark, "orders", &m, 1024),
            Some(header)
        );
        assert_ne!(
            mark,
            header_marker("orders", &m, 1024, &header).unwrap(),
            "fresh nonce"
        );

        assert_eq!(header_marker_vouches(&mark, "orders", &m, 1023), None);
        assert_eq!(header_marker_vouches(&mark, "orderz", &m, 1024), None);
        assert_eq!(
            header_marker_vouches(&mark, "orders", &message(4, 42), 1024),
            None
        );
        assert_eq!(
            header_marker_vouches(&mark, "orders", &message(3, 43), 1024),
            None
        );
        assert_eq!(
            header_marker_vouches(&mark[..HEADER_MARKER_LEN - 1], "orders", &m, 1024),
            None
        );
        assert_eq!(
            header_marker_vouches(&[&mark[..], &[0]].concat(), "orders", &m, 1024),
            None
        );
        for i in 0..HEADER_MARKER_LEN {
            let mut flipped = mark;
            flipped[i] ^= 1;
            assert_eq!(
                header_marker_vouches(&flipped, "orders", &m, 1024),
                None,
                "byte {i}"
            );
        }
    }

    #[test]
    fn the_two_marker_forms_never_verify_as_each_other() {
        let m = message(3, 42);
        let header = [7u8; HEADER_LEN];
        let long = header_marker("orders", &m, 1024, &header).unwrap();
        // The header form's nonce and tag as a value-form marker, over the
        // very bytes its tag covers as an injected value: refused.
        let short: Vec<u8> = [&long[..8], &long[8 + HEADER_LEN..]].concat();
        let input = header_marker_input(1024, &header);
        assert!(!is_our_marker(&short, "orders", &m, &input));
        // And a value-form marker (nonce top bit clear) with a header put in
        // the middle: refused as a header form.
        let v = marker("orders", &m, &input).unwrap();
        let forged: Vec<u8> = [&v[..8], &header[..], &v[8..]].concat();
        assert_eq!(header_marker_vouches(&forged, "orders", &m, 1024), None);
    }

    #[test]
    fn header_name_is_the_formats() {
        assert_eq!(
            super::HEADER.to_str(),
            Ok(kafka_e2ee_core::format::HEADER_NAME)
        );
    }
}
