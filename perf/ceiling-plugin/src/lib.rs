//! The cipher-only ceiling of the librdkafka plugin path: what a plugin at
//! the same hook points as kafka-e2ee's (`on_send`, `on_acknowledgement`,
//! `on_consume`) costs when all it does is AES-256-GCM over each value, with
//! ring, in place. No engine, no header, no marker, no lookups, no locks.
//!
//! NOT ENCRYPTION. The key is a constant and every value uses the same nonce;
//! the tag is computed and dropped (there is no header to carry it). It
//! exists only so that `scripts/bench` can put the product's encrypted
//! throughput next to the cost of the cipher alone, in the same run. It
//! refuses to load unless `KAFKA_E2EE_BENCH_CEILING=not-encryption` is in the
//! environment, so no configuration file can enable it by itself.
//!
//! What each hook does (the product's work at the same place, minus the rest):
//! - `on_send`: seals the payload in place (the bench produces with
//!   RD_KAFKA_MSG_F_COPY, so the payload is librdkafka's own copy, as in the
//!   product's in-place path);
//! - `on_acknowledgement`: the same pass again, which restores the plaintext
//!   for the delivery report (the product unseals there too);
//! - `on_consume`: the same pass over the fetched value: AES-CTR is its own
//!   inverse, and GCM's GHASH runs over as many bytes as a decryption's.
//!   A decryption would check its tag against the header's (16 bytes,
//!   constant time): negligible next to the pass itself.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

type Err = i32;
const ERR_NO_ERROR: Err = 0;
/// RD_KAFKA_RESP_ERR__INVALID_ARG
const ERR_INVALID_ARG: Err = -186;
const ENV: &str = "KAFKA_E2EE_BENCH_CEILING";
const ENV_VALUE: &str = "not-encryption";
const NAME: &CStr = c"e2ee-bench-ceiling";

#[repr(C)]
struct Message {
    err: Err,
    rkt: *mut c_void,
    partition: i32,
    payload: *mut c_void,
    len: usize,
    key: *mut c_void,
    key_len: usize,
    offset: i64,
    private: *mut c_void,
}

type OnNew =
    unsafe extern "C" fn(*mut c_void, *const c_void, *mut c_void, *mut c_char, usize) -> Err;
type OnConfDup = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    usize,
    *const *const c_char,
    *mut c_void,
) -> Err;
type OnMessage = unsafe extern "C" fn(*mut c_void, *mut Message, *mut c_void) -> Err;

#[link(name = "rdkafka")]
extern "C" {
    fn rd_kafka_conf_interceptor_add_on_new(
        conf: *mut c_void,
        name: *const c_char,
        f: OnNew,
        opaque: *mut c_void,
    ) -> Err;
    fn rd_kafka_conf_interceptor_add_on_conf_dup(
        conf: *mut c_void,
        name: *const c_char,
        f: OnConfDup,
        opaque: *mut c_void,
    ) -> Err;
    fn rd_kafka_interceptor_add_on_send(
        rk: *mut c_void,
        name: *const c_char,
        f: OnMessage,
        opaque: *mut c_void,
    ) -> Err;
    fn rd_kafka_interceptor_add_on_acknowledgement(
        rk: *mut c_void,
        name: *const c_char,
        f: OnMessage,
        opaque: *mut c_void,
    ) -> Err;
    fn rd_kafka_interceptor_add_on_consume(
        rk: *mut c_void,
        name: *const c_char,
        f: OnMessage,
        opaque: *mut c_void,
    ) -> Err;
}

fn key() -> &'static LessSafeKey {
    static KEY: OnceLock<LessSafeKey> = OnceLock::new();
    KEY.get_or_init(|| {
        #[allow(clippy::expect_used)] // a 32-byte key is always accepted
        let k = UnboundKey::new(&AES_256_GCM, &[0x42; 32]).expect("AES-256 key");
        LessSafeKey::new(k)
    })
}

/// The one AEAD pass over the message's value, in place.
unsafe fn pass(m: *mut Message) {
    // SAFETY: librdkafka hands a live message (or null).
    let Some(msg) = (unsafe { m.as_mut() }) else {
        return;
    };
    if msg.err != ERR_NO_ERROR || msg.payload.is_null() || msg.len == 0 {
        return;
    }
    // SAFETY: the payload has len bytes, writable by the hook (see the module doc).
    let value = unsafe { std::slice::from_raw_parts_mut(msg.payload.cast::<u8>(), msg.len) };
    let tag = key().seal_in_place_separate_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::empty(),
        value,
    );
    std::hint::black_box(tag.ok());
}

unsafe extern "C" fn on_message(_rk: *mut c_void, m: *mut Message, _opaque: *mut c_void) -> Err {
    // A panic must not unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { pass(m) }));
    ERR_NO_ERROR
}

unsafe extern "C" fn on_new(
    rk: *mut c_void,
    _conf: *const c_void,
    _opaque: *mut c_void,
    _errstr: *mut c_char,
    _errstr_size: usize,
) -> Err {
    // SAFETY: rk is the client being created; the name is static.
    unsafe {
        rd_kafka_interceptor_add_on_send(rk, NAME.as_ptr(), on_message, std::ptr::null_mut());
        rd_kafka_interceptor_add_on_acknowledgement(
            rk,
            NAME.as_ptr(),
            on_message,
            std::ptr::null_mut(),
        );
        rd_kafka_interceptor_add_on_consume(rk, NAME.as_ptr(), on_message, std::ptr::null_mut());
    }
    ERR_NO_ERROR
}

unsafe extern "C" fn on_conf_dup(
    new_conf: *mut c_void,
    _old: *const c_void,
    _filter_cnt: usize,
    _filter: *const *const c_char,
    _opaque: *mut c_void,
) -> Err {
    // SAFETY: new_conf is the copy being made.
    unsafe { register(new_conf) }
}

unsafe fn register(conf: *mut c_void) -> Err {
    // SAFETY: conf is live; the name is static.
    unsafe {
        let e =
            rd_kafka_conf_interceptor_add_on_new(conf, NAME.as_ptr(), on_new, std::ptr::null_mut());
        if e != ERR_NO_ERROR {
            return e;
        }
        rd_kafka_conf_interceptor_add_on_conf_dup(
            conf,
            NAME.as_ptr(),
            on_conf_dup,
            std::ptr::null_mut(),
        )
    }
}

fn write_err(errstr: *mut c_char, size: usize, text: &str) {
    if errstr.is_null() || size == 0 {
        return;
    }
    let n = text.len().min(size - 1);
    // SAFETY: errstr has size bytes (librdkafka).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), errstr.cast::<u8>(), n);
        *errstr.add(n) = 0;
    }
}

/// librdkafka's plugin entry point.
///
/// # Safety
/// Called by librdkafka with a live configuration.
#[no_mangle]
pub unsafe extern "C" fn conf_init(
    conf: *mut c_void,
    _plug_opaquep: *mut *mut c_void,
    errstr: *mut c_char,
    errstr_size: usize,
) -> Err {
    let r = catch_unwind(AssertUnwindSafe(|| {
        if std::env::var(ENV).as_deref() != Ok(ENV_VALUE) {
            write_err(
                errstr,
                errstr_size,
                "e2ee-bench-ceiling is a benchmark instrument that does NOT encrypt (fixed key); \
                 it loads only with KAFKA_E2EE_BENCH_CEILING=not-encryption",
            );
            return ERR_INVALID_ARG;
        }
        // SAFETY: conf is live (librdkafka).
        unsafe { register(conf) }
    }));
    r.unwrap_or(ERR_INVALID_ARG)
}
