//! The JNI exports behind `dev.kafkae2ee.Engine` (java-interceptor/).
//!
//! Conventions (after zstd-jni and libsignal):
//! - An engine is an opaque `long`: a number, never reused, that names an
//!   `Arc<Engine>` in a table of live handles (not a pointer). A closed,
//!   stale or forged handle finds nothing and throws, so even a caller that
//!   gets around `Engine.java` (its close refuses while a call is in flight)
//!   cannot make native code touch freed memory.
//! - Java validates arguments; the natives stay a few lines each.
//! - Every entry runs inside [`entry`], which catches panics and turns every
//!   error into one Java exception type, `dev.kafkae2ee.E2eeException`, with
//!   a kind code (the `KIND_*` constants mirror `E2eeException.Kind`).
//! - `seal` and `open` work in place on the Java `byte[]` the caller owns,
//!   pinned with `GetPrimitiveArrayCritical` (no copy on HotSpot); one JNI
//!   call per record. The topic name (UTF-8, cached per topic in Java), the
//!   record header and key are copied onto the stack: the glue allocates
//!   nothing per record, and `seal` writes the header into an array Java
//!   allocated (jni_no_alloc test).
//! - No message carries key material, plaintext or ciphertext.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use jni::objects::{JByteArray, JClass, JObject, JObjectArray, JString, JValue, ReleaseMode};
use jni::sys::{jboolean, jint, jlong, jlongArray, jobjectArray, jstring};
use jni::JNIEnv;
use kafka_e2ee_core::format::{KeyBinding, KeyId, RecordHeader, HEADER_LEN};
use kafka_e2ee_core::{Channel, Engine, Error, KeyUnavailable, Opened};
use zeroize::Zeroizing;

use crate::host::{self, ConfigError, HostConfig};

const EXCEPTION: &str = "dev/kafkae2ee/E2eeException";

// Kinds of E2eeException; the same numbers as E2eeException.Kind.
const KIND_INTERNAL: jint = 0;
const KIND_CONFIG: jint = 1;
const KIND_KEY_PENDING: jint = 2;
const KIND_KEY_EXPIRED: jint = 3;
const KIND_KEY_REFUSED: jint = 4;
const KIND_KEY_UNKNOWN: jint = 5;
const KIND_MISSING_HEADER: jint = 6;
const KIND_NOT_AUTHORIZED: jint = 7;
const KIND_BAD_RECORD: jint = 8;
const KIND_NO_SEALING_KEY: jint = 9;
const KIND_STORAGE: jint = 10;
const KIND_CONTROL: jint = 11;
// 12 is Java's own NATIVE_LIBRARY.
const KIND_TOKEN_PENDING: jint = 13;

// Record-key binding codes (E2eeException-independent; see Engine.java).
const BIND_UNBOUND: jint = 0;
const BIND_NULL: jint = 1;
const BIND_BYTES: jint = 2;
// The topic of a message from pollTransmit0 (Engine.CHANNEL_* in Java).
const CHANNEL_CONTROL: u8 = 0;
const CHANNEL_KEYS: u8 = 1;

/// What an entry reports to Java.
enum Failure {
    /// A Java exception is already pending (a JNI call failed); leave it.
    Pending,
    /// Throw `E2eeException(kind, property, message)`.
    Throw {
        kind: jint,
        property: Option<String>,
        message: String,
    },
}

impl Failure {
    fn new(kind: jint, message: impl Into<String>) -> Failure {
        Failure::Throw {
            kind,
            property: None,
            message: message.into(),
        }
    }
}

impl From<jni::errors::Error> for Failure {
    fn from(e: jni::errors::Error) -> Failure {
        match e {
            jni::errors::Error::JavaException => Failure::Pending,
            other => Failure::new(KIND_INTERNAL, format!("JNI call failed: {other}")),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Throw {
            kind: KIND_CONFIG,
            property: Some(e.property),
            message: e.message,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let kind = match &e {
            Error::KeyUnavailable { reason, .. } => match reason {
                KeyUnavailable::Pending => KIND_KEY_PENDING,
                KeyUnavailable::Expired => KIND_KEY_EXPIRED,
                KeyUnavailable::Refused => KIND_KEY_REFUSED,
                _ => KIND_KEY_UNKNOWN,
            },
            Error::MissingHeader { .. } => KIND_MISSING_HEADER,
            Error::NotAuthorized { .. } => KIND_NOT_AUTHORIZED,
            Error::Format(_) => KIND_BAD_RECORD,
            Error::NoSealingKey => KIND_NO_SEALING_KEY,
            Error::Storage(_) => KIND_STORAGE,
            Error::Control(_) => KIND_CONTROL,
            Error::Config(_) => KIND_CONFIG,
            Error::TokenPending { .. } => KIND_TOKEN_PENDING,
            _ => KIND_INTERNAL,
        };
        Failure::new(kind, e.to_string())
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// The one wrapper of every JNI entry: runs `f`, catches a panic, and turns
/// a failure into a pending `E2eeException`; then returns `R::default()`
/// (which Java never sees, as an exception is pending).
fn entry<'l, R: Default>(env: &mut JNIEnv<'l>, f: impl FnOnce(&mut JNIEnv<'l>) -> Result<R>) -> R {
    let outcome = catch_unwind(AssertUnwindSafe(|| f(env)));
    let failure = match outcome {
        Ok(Ok(value)) => return value,
        Ok(Err(failure)) => failure,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Failure::new(
                KIND_INTERNAL,
                format!("internal error in libkafka_e2ee (a bug; please report it): {what}"),
            )
        }
    };
    if let Failure::Throw {
        kind,
        property,
        message,
    } = failure
    {
        throw(env, kind, property.as_deref(), &message);
    }
    R::default()
}

fn throw(env: &mut JNIEnv<'_>, kind: jint, property: Option<&str>, message: &str) {
    if env.exception_check().unwrap_or(true) {
        return;
    }
    let made = (|| -> jni::errors::Result<()> {
        let property = match property {
            Some(p) => JObject::from(env.new_string(p)?),
            None => JObject::null(),
        };
        let message = JObject::from(env.new_string(message)?);
        let exception = env.new_object(
            EXCEPTION,
            "(ILjava/lang/String;Ljava/lang/String;)V",
            &[
                JValue::Int(kind),
                JValue::Object(&property),
                JValue::Object(&message),
            ],
        )?;
        env.throw(jni::objects::JThrowable::from(exception))
    })();
    if made.is_err() && !env.exception_check().unwrap_or(true) {
        // The exception class itself is unusable; fall back to a JDK class.
        let _ = env.throw_new("java/lang/IllegalStateException", message);
    }
}

/// The engines Java holds, by handle. A read lock and an `Arc` clone per
/// call: small next to a JNI crossing and an AEAD.
fn handles() -> &'static RwLock<HashMap<jlong, Arc<Engine>>> {
    static HANDLES: OnceLock<RwLock<HashMap<jlong, Arc<Engine>>>> = OnceLock::new();
    HANDLES.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Handles count up from 1 and are never reused (0 is never a handle).
static NEXT_HANDLE: AtomicI64 = AtomicI64::new(1);

/// The engine behind a handle, kept alive for the call even if another
/// thread closes the handle meanwhile.
fn engine(handle: jlong) -> Result<Arc<Engine>> {
    handles()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&handle)
        .cloned()
        .ok_or_else(|| Failure::new(KIND_INTERNAL, "the kafka-e2ee engine is closed"))
}

fn string(env: &mut JNIEnv<'_>, s: &JString<'_>) -> Result<String> {
    if s.is_null() {
        return Err(Failure::new(KIND_INTERNAL, "a required string is null"));
    }
    Ok(env.get_string(s)?.into())
}

/// Up to this many bytes of a small Java array (topic name, record header,
/// record key) are copied onto the stack; only longer ones go to the heap.
/// Kafka topic names are at most 249 bytes and the header is 34.
const STACK_BYTES: usize = 256;

/// The bytes of a small Java `byte[]`, copied out with one
/// `GetByteArrayRegion` (no allocation up to `STACK_BYTES`).
struct Small {
    stack: [i8; STACK_BYTES],
    len: usize,
    heap: Vec<i8>,
}

impl Small {
    fn read(env: &JNIEnv<'_>, array: &JByteArray<'_>) -> Result<Small> {
        if array.is_null() {
            return Err(Failure::new(KIND_INTERNAL, "a required array is null"));
        }
        let len = usize::try_from(env.get_array_length(array)?).unwrap_or(0);
        let mut small = Small {
            stack: [0; STACK_BYTES],
            len,
            heap: Vec::new(),
        };
        if let Some(buf) = small.stack.get_mut(..len) {
            env.get_byte_array_region(array, 0, buf)?;
        } else {
            small.heap = vec![0; len];
            env.get_byte_array_region(array, 0, &mut small.heap)?;
        }
        Ok(small)
    }

    fn bytes(&self) -> &[u8] {
        let signed = self.stack.get(..self.len).unwrap_or(&self.heap);
        // SAFETY: i8 and u8 have the same size and alignment.
        unsafe { std::slice::from_raw_parts(signed.as_ptr().cast::<u8>(), signed.len()) }
    }

    /// As a topic name: Java hands over its UTF-8 encoding (Engine.java).
    fn topic(&self) -> Result<&str> {
        std::str::from_utf8(self.bytes())
            .map_err(|_| Failure::new(KIND_INTERNAL, "the topic name is not UTF-8"))
    }
}

fn binding_bytes(env: &JNIEnv<'_>, binding: jint, key: &JByteArray<'_>) -> Result<Option<Small>> {
    match binding {
        BIND_UNBOUND | BIND_NULL => Ok(None),
        BIND_BYTES if !key.is_null() => Ok(Some(Small::read(env, key)?)),
        _ => Err(Failure::new(KIND_INTERNAL, "invalid record-key binding")),
    }
}

fn key_binding(binding: jint, key: Option<&[u8]>) -> KeyBinding<'_> {
    match (binding, key) {
        (BIND_NULL, _) => KeyBinding::Null,
        (_, Some(bytes)) => KeyBinding::Bytes(bytes),
        _ => KeyBinding::Unbound,
    }
}

/// Runs `f` on the bytes of a Java `byte[]`, pinned in place; what `f` writes
/// is what Java sees afterwards.
fn with_bytes<'l, T>(
    env: &mut JNIEnv<'l>,
    array: &JByteArray<'_>,
    f: impl FnOnce(&mut [u8]) -> T,
) -> Result<T> {
    if array.is_null() {
        return Err(Failure::new(KIND_INTERNAL, "the value is null"));
    }
    // SAFETY: no other JNI call is made while the critical region is held
    // (f only touches the slice).
    let mut elements = unsafe { env.get_array_elements_critical(array, ReleaseMode::CopyBack)? };
    let signed: &mut [i8] = &mut elements;
    // SAFETY: i8 and u8 have the same size and alignment; the slice stays
    // within the pinned array.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(signed.as_mut_ptr().cast::<u8>(), signed.len()) };
    Ok(f(bytes))
}

/// `static native String version0()`: the native library's version.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_version0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
) -> jstring {
    entry(&mut env, |env| {
        Ok(env.new_string(env!("CARGO_PKG_VERSION"))?.into_raw())
    })
}

/// The `e2ee.*` properties of a `String[] {key, value, ...}` from Java.
fn properties(env: &mut JNIEnv<'_>, props: &JObjectArray<'_>) -> Result<Vec<(String, String)>> {
    let n = env.get_array_length(props)?;
    let mut pairs = Vec::new();
    for i in (0..n.saturating_sub(1)).step_by(2) {
        let k = JString::from(env.get_object_array_element(props, i)?);
        let v = JString::from(env.get_object_array_element(props, i + 1)?);
        pairs.push((string(env, &k)?, string(env, &v)?));
    }
    Ok(pairs)
}

fn host_config(pairs: &[(String, String)]) -> std::result::Result<HostConfig, ConfigError> {
    HostConfig::from_properties(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// `static native void checkProperties0(String[] keysAndValues)`: parses the
/// settings as `create0` does, without building an engine, so a client that
/// shares an engine made by another has its own settings checked too (its
/// `e2ee.topic.source.prefix` is its own). Throws CONFIG naming the property.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_checkProperties0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    props: JObjectArray<'l>,
) {
    entry(&mut env, |env| {
        let pairs = properties(env, &props)?;
        host_config(&pairs)?;
        Ok(())
    })
}

/// `static native String sourceTopic0(String prefix, String topic)`: the
/// name a consumer opens a record of `topic` under (host::source_topic):
/// `topic` without `prefix` when it starts with it, else `topic`. The
/// prefix is the client's own `e2ee.topic.source.prefix` (empty: none).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_sourceTopic0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    prefix: JString<'l>,
    topic: JString<'l>,
) -> jstring {
    entry(&mut env, |env| {
        let prefix = string(env, &prefix)?;
        let topic = string(env, &topic)?;
        let source = host::source_topic((!prefix.is_empty()).then_some(prefix.as_str()), &topic);
        Ok(env.new_string(source)?.into_raw())
    })
}

/// `static native long create0(String cluster, String[] keysAndValues)`: the
/// shared engine for this cluster and credential (see host::shared_engine).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_create0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    cluster: JString<'l>,
    props: JObjectArray<'l>,
) -> jlong {
    entry(&mut env, |env| {
        let cluster = string(env, &cluster)?;
        let pairs = properties(env, &props)?;
        let cfg = host_config(&pairs)?;
        let (engine, _new) = host::shared_engine(&cluster, &cfg)?;
        let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        handles()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(handle, engine);
        Ok(handle)
    })
}

/// `static native void destroy0(long handle)`: releases this handle's share.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_destroy0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) {
    entry(&mut env, |_| {
        let released = handles()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle);
        // Dropped outside the lock: the last share stops the engine.
        match released {
            Some(engine) => {
                drop(engine);
                Ok(())
            }
            None => Err(Failure::new(
                KIND_INTERNAL,
                "the kafka-e2ee engine is already closed",
            )),
        }
    })
}

/// `static native void seal0(long, byte[] topic, int binding, byte[] key,
/// byte[] value, byte[] header)`: encrypts `value` in place and writes the
/// `e2ee` header value into `header` (HEADER_LEN bytes, allocated by Java).
/// `topic` is the topic name in UTF-8, cached per topic by Engine.java.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_seal0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    binding: jint,
    key: JByteArray<'l>,
    value: JByteArray<'l>,
    header: JByteArray<'l>,
) {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let key = binding_bytes(env, binding, &key)?;
        if header.is_null() || env.get_array_length(&header)? != HEADER_LEN as i32 {
            return Err(Failure::new(
                KIND_INTERNAL,
                "the header array has the wrong length",
            ));
        }
        let bind = key_binding(binding, key.as_ref().map(Small::bytes));
        let topic = topic.topic()?;
        let sealed = with_bytes(env, &value, |v| engine.seal(topic, bind, v))??;
        // SAFETY: i8 and u8 have the same size and alignment.
        let signed =
            unsafe { std::slice::from_raw_parts(sealed.as_ptr().cast::<i8>(), sealed.len()) };
        env.set_byte_array_region(&header, 0, signed)?;
        Ok(())
    })
}

/// `static native boolean open0(long, byte[] topic, byte[] mirrored, byte[]
/// header, int binding, byte[] key, byte[] value)`: decrypts `value` in
/// place; true if it was decrypted, false if it is plaintext of an
/// unprotected topic. `topic` is the name the record is opened under (its
/// source topic on a mirror); `mirrored`, null when it is the same, the
/// topic the record was read from: plaintext is refused if that name is
/// protected too (host::refuse_mirrored_plaintext).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_open0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    mirrored: JByteArray<'l>,
    header: JByteArray<'l>,
    binding: jint,
    key: JByteArray<'l>,
    value: JByteArray<'l>,
) -> jboolean {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let header = if header.is_null() {
            None
        } else {
            Some(Small::read(env, &header)?)
        };
        let key = binding_bytes(env, binding, &key)?;
        let bind = key_binding(binding, key.as_ref().map(Small::bytes));
        let topic = topic.topic()?;
        let header = header.as_ref().map(Small::bytes);
        let mirrored = if mirrored.is_null() {
            None
        } else {
            Some(Small::read(env, &mirrored)?)
        };
        let opened = with_bytes(env, &value, |v| engine.open(topic, header, bind, v))??;
        if opened == Opened::Plaintext {
            if let Some(mirrored) = &mirrored {
                host::refuse_mirrored_plaintext(&engine, mirrored.topic()?, topic)?;
            }
        }
        Ok(u8::from(opened == Opened::Decrypted))
    })
}

/// `static native byte[] sealRecord0(long, byte[] topic, int binding, byte[]
/// key, byte[] value, byte[] headers)`: [`Engine::seal_record`]: encrypts
/// `value` in place and seals `headers` (an encoded header list,
/// docs/FORMAT.md section 12); returns the `e2ee` header value followed by
/// the `e2ee.h` value.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_sealRecord0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    binding: jint,
    key: JByteArray<'l>,
    value: JByteArray<'l>,
    headers: JByteArray<'l>,
) -> jni::sys::jbyteArray {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let key = binding_bytes(env, binding, &key)?;
        let bind = key_binding(binding, key.as_ref().map(Small::bytes));
        let topic = topic.topic()?;
        // The list holds plaintext headers: wiped once sealed.
        let list = Zeroizing::new(env.convert_byte_array(&headers)?);
        let (header, sealed) = with_bytes(env, &value, |v| {
            engine.seal_record(topic, bind, v, Some(&list))
        })??;
        let sealed = sealed.unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok(env.byte_array_from_slice(&out)?.into_raw())
    })
}

/// `static native byte[] openRecord0(long, byte[] topic, byte[] header,
/// byte[][] sealedHeaders, byte[] visible, int binding, byte[] key, byte[]
/// value)`: [`Engine::open_record`]: decrypts `value` in place.
/// `sealedHeaders` are the record's `e2ee.h` values, `visible` its other
/// headers (but `e2ee`) as an encoded header list. Returns one status byte
/// (0: plaintext of an unprotected topic, 1: decrypted, 2: decrypted with
/// sealed headers) followed, for 2, by the encoded header list to restore.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_dev_kafkae2ee_Engine_openRecord0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    header: JByteArray<'l>,
    sealed_headers: jni::objects::JObjectArray<'l>,
    visible: JByteArray<'l>,
    binding: jint,
    key: JByteArray<'l>,
    value: JByteArray<'l>,
) -> jni::sys::jbyteArray {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let header = if header.is_null() {
            None
        } else {
            Some(Small::read(env, &header)?)
        };
        let mut sealed: Vec<Vec<u8>> = Vec::new();
        if !sealed_headers.is_null() {
            let n = env.get_array_length(&sealed_headers)?;
            for i in 0..n {
                let item = JByteArray::from(env.get_object_array_element(&sealed_headers, i)?);
                sealed.push(if item.is_null() {
                    Vec::new()
                } else {
                    env.convert_byte_array(&item)?
                });
            }
        }
        let visible = if visible.is_null() {
            Zeroizing::new(Vec::new())
        } else {
            Zeroizing::new(env.convert_byte_array(&visible)?)
        };
        let visible = kafka_e2ee_core::format::decode_header_list(&visible).map_err(|e| {
            Failure::new(
                KIND_INTERNAL,
                format!("malformed visible headers from Java: {e}"),
            )
        })?;
        let key = binding_bytes(env, binding, &key)?;
        let bind = key_binding(binding, key.as_ref().map(Small::bytes));
        let topic = topic.topic()?;
        let header = header.as_ref().map(Small::bytes);
        let sealed: Vec<&[u8]> = sealed.iter().map(Vec::as_slice).collect();
        let (opened, list) = with_bytes(env, &value, |v| {
            engine.open_record(topic, header, &sealed, &visible, bind, v)
        })??;
        let mut out = Zeroizing::new(Vec::with_capacity(1 + list.as_ref().map_or(0, |l| l.len())));
        match (opened, &list) {
            (Opened::Plaintext, _) => out.push(0),
            (Opened::Decrypted, None) => out.push(1),
            (Opened::Decrypted, Some(l)) => {
                out.push(2);
                out.extend_from_slice(l);
            }
        }
        Ok(env.byte_array_from_slice(&out)?.into_raw())
    })
}

/// `static native int wantStatus0(long, byte[] topic, byte[] header)`: -1 if
/// the record's key is held or not asked for, else the E2eeException kind
/// of why it is missing (KEY_PENDING, KEY_REFUSED, ...).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_wantStatus0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    header: JByteArray<'l>,
) -> jint {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let header = Small::read(env, &header)?;
        let key_id: KeyId = RecordHeader::decode(header.bytes())
            .map_err(Error::Format)?
            .key_id;
        Ok(match engine.want_status(key_id, topic.topic()?) {
            None => -1,
            Some(KeyUnavailable::Pending) => KIND_KEY_PENDING,
            Some(KeyUnavailable::Expired) => KIND_KEY_EXPIRED,
            Some(KeyUnavailable::Refused) => KIND_KEY_REFUSED,
            Some(_) => KIND_KEY_UNKNOWN,
        })
    })
}

/// `static native boolean isProtected0(long, String topic)`.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_isProtected0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JString<'l>,
) -> jboolean {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = string(env, &topic)?;
        Ok(u8::from(engine.is_protected(&topic)))
    })
}

/// `static native long keyGeneration0(long)`: changes whenever a key arrives.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_keyGeneration0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) -> jlong {
    entry(&mut env, |_| Ok(engine(handle)?.key_generation() as jlong))
}

/// `static native void noteRejected0(long)`: counts a record the Java hooks
/// rejected before opening it (more than one e2ee header) in records-rejected.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_noteRejected0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) {
    entry(&mut env, |_| {
        engine(handle)?.note_record_rejected();
        Ok(())
    })
}

/// `static native String handleControl0(long, long nowMs, byte[] message)`:
/// null if accepted, else why it was rejected (safe to log).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_handleControl0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    now_ms: jlong,
    message: JByteArray<'l>,
) -> jstring {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let message = env.convert_byte_array(&message)?;
        match engine.handle_control(u64::try_from(now_ms).unwrap_or(0), &message) {
            Ok(()) => Ok(std::ptr::null_mut()),
            Err(e) => Ok(env.new_string(e.to_string())?.into_raw()),
        }
    })
}

/// `static native String handleTimeout0(long, long nowMs)`: null if all is
/// well, else what went wrong (safe to log).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_handleTimeout0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    now_ms: jlong,
) -> jstring {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        match engine.handle_timeout(u64::try_from(now_ms).unwrap_or(0)) {
            Ok(()) => Ok(std::ptr::null_mut()),
            Err(e) => Ok(env.new_string(e.to_string())?.into_raw()),
        }
    })
}

/// `static native long pollTimeout0(long)`: Unix ms of the next needed tick.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_pollTimeout0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) -> jlong {
    entry(&mut env, |_| {
        Ok(i64::try_from(engine(handle)?.poll_timeout()).unwrap_or(i64::MAX))
    })
}

/// `static native byte[][] pollTransmit0(long)`: the next message to publish
/// as {record key or null, payload, {channel}}, or null if there is none.
/// The record key is `ControlMessage::record_key` (the recipient's 8-byte
/// instance id or null for a broadcast on the control topic; always set on
/// the keys topic, which is compacted); channel is CHANNEL_CONTROL (0) or
/// CHANNEL_KEYS (1), the topic the message goes to (Engine.java).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_pollTransmit0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) -> jobjectArray {
    entry(&mut env, |env| {
        let Some(message) = engine(handle)?.poll_transmit() else {
            return Ok(std::ptr::null_mut());
        };
        let out = env.new_object_array(3, "[B", JObject::null())?;
        if let Some(key) = message.record_key() {
            let key = env.byte_array_from_slice(&key)?;
            env.set_object_array_element(&out, 0, key)?;
        }
        let payload = env.byte_array_from_slice(&message.payload)?;
        env.set_object_array_element(&out, 1, payload)?;
        let channel = match message.channel {
            Channel::Control => CHANNEL_CONTROL,
            Channel::Keys => CHANNEL_KEYS,
        };
        let channel = env.byte_array_from_slice(&[channel])?;
        env.set_object_array_element(&out, 2, channel)?;
        Ok(out.into_raw())
    })
}

/// `static native String instanceId0(long)`: this engine's instance id, hex.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_instanceId0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) -> jstring {
    entry(&mut env, |env| {
        let id = engine(handle)?.instance_id().to_string();
        Ok(env.new_string(id)?.into_raw())
    })
}

/// `static native long[] metrics0(long)`: the engine's counters, in the
/// order of Engine.METRIC_NAMES.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_metrics0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) -> jlongArray {
    entry(&mut env, |env| {
        let m = engine(handle)?.metrics();
        let values = [
            m.records_sealed,
            m.records_opened,
            m.records_rejected,
            m.records_missing_header,
            m.records_key_unavailable,
            m.control_rejected,
            m.keys_served,
            m.keys_received,
            m.keys_refused,
            m.keys_deleted,
            m.rotations,
            m.handshakes,
            m.sessions_hybrid,
            m.sessions_classical,
        ]
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let len = i32::try_from(values.len()).unwrap_or(0);
        let array = env.new_long_array(len)?;
        env.set_long_array_region(&array, 0, &values)?;
        Ok(array.into_raw())
    })
}

/// A `byte[][]` of `items` (a `None` becomes a null element).
fn byte_arrays(env: &mut JNIEnv<'_>, items: &[Option<&[u8]>]) -> Result<jobjectArray> {
    let len = i32::try_from(items.len()).unwrap_or(0);
    let out = env.new_object_array(len, "[B", JObject::null())?;
    for (i, item) in (0i32..).zip(items) {
        if let Some(bytes) = item {
            let array = env.byte_array_from_slice(bytes)?;
            env.set_object_array_element(&out, i, array)?;
        }
    }
    Ok(out.into_raw())
}

/// The elements of a Java `byte[][]` (null: none; a null element: empty).
fn arrays_of(env: &mut JNIEnv<'_>, arrays: &JObjectArray<'_>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if arrays.is_null() {
        return Ok(out);
    }
    let n = env.get_array_length(arrays)?;
    for i in 0..n {
        let item = JByteArray::from(env.get_object_array_element(arrays, i)?);
        out.push(if item.is_null() {
            Vec::new()
        } else {
            env.convert_byte_array(&item)?
        });
    }
    Ok(out)
}

/// `static native byte[] tokenize0(long, byte[] topic, byte[] key)`: the
/// token of `key` on `topic` under the topic's token secret (docs/FORMAT.md
/// 13.1), for the Java key serializer, which must return the key's
/// serialized form before the value serializer seals the record. Throws
/// TOKEN_PENDING while the secret has not arrived (the engine asks for it),
/// BAD_RECORD for a key that cannot be tokenized (1-2 bytes, over 8,160).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_tokenize0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    key: JByteArray<'l>,
) -> jni::sys::jbyteArray {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let topic = topic.topic()?;
        // The real key is plaintext: wiped once tokenized.
        let key = Zeroizing::new(env.convert_byte_array(&key)?);
        let token = engine
            .token_secret(topic)?
            .token(topic, &key)
            .map_err(Error::Format)?;
        Ok(env.byte_array_from_slice(&token)?.into_raw())
    })
}

/// `static native byte[][] sealRecordTokenized0(long, byte[] topic, byte[]
/// key, byte[] value, byte[] headers)`: [`Engine::seal_record_tokenized`]
/// (never binding the key: the Java hooks do not bind, docs/CONFIGURATION.md
/// e2ee.bind.key): encrypts `value` in place (an empty array for a
/// tombstone) and seals `headers` (an encoded header list, or null for none)
/// and the real `key`. Returns {e2ee header, e2ee.h value or null, token,
/// e2ee.k value}.
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_sealRecordTokenized0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    key: JByteArray<'l>,
    value: JByteArray<'l>,
    headers: JByteArray<'l>,
) -> jobjectArray {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let topic = topic.topic()?;
        // The real key and the header list are plaintext: wiped once sealed.
        let key = Zeroizing::new(env.convert_byte_array(&key)?);
        let list = if headers.is_null() {
            None
        } else {
            Some(Zeroizing::new(env.convert_byte_array(&headers)?))
        };
        let sealed = with_bytes(env, &value, |v| {
            engine.seal_record_tokenized(topic, &key, false, v, list.as_deref().map(Vec::as_slice))
        })??;
        byte_arrays(
            env,
            &[
                Some(&sealed.header),
                sealed.sealed_headers.as_deref(),
                Some(&sealed.token),
                Some(&sealed.sealed_key),
            ],
        )
    })
}

/// `static native byte[][] openRecordParts0(long, byte[] topic, byte[]
/// header, byte[][] sealedHeaders, byte[] visible, byte[] wireKey, byte[][]
/// sealedKeys, int binding, byte[] key, byte[] value)`:
/// [`Engine::open_record_parts`]: decrypts `value` in place. As
/// `openRecord0`, plus `wireKey` (the record's key as it came off the wire,
/// null for a null key) and `sealedKeys` (its `e2ee.k` values, in order).
/// Returns {status byte (0: plaintext of an unprotected topic, 1:
/// decrypted), the encoded header list to restore or null, the real key or
/// null (the wire key was not a token)}.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_dev_kafkae2ee_Engine_openRecordParts0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
    topic: JByteArray<'l>,
    header: JByteArray<'l>,
    sealed_headers: JObjectArray<'l>,
    visible: JByteArray<'l>,
    wire_key: JByteArray<'l>,
    sealed_keys: JObjectArray<'l>,
    binding: jint,
    key: JByteArray<'l>,
    value: JByteArray<'l>,
) -> jobjectArray {
    entry(&mut env, |env| {
        let engine = engine(handle)?;
        let topic = Small::read(env, &topic)?;
        let header = if header.is_null() {
            None
        } else {
            Some(Small::read(env, &header)?)
        };
        let sealed = arrays_of(env, &sealed_headers)?;
        let sealed_keys = arrays_of(env, &sealed_keys)?;
        let wire_key = if wire_key.is_null() {
            None
        } else {
            Some(env.convert_byte_array(&wire_key)?)
        };
        let visible = if visible.is_null() {
            Zeroizing::new(Vec::new())
        } else {
            Zeroizing::new(env.convert_byte_array(&visible)?)
        };
        let visible = kafka_e2ee_core::format::decode_header_list(&visible).map_err(|e| {
            Failure::new(
                KIND_INTERNAL,
                format!("malformed visible headers from Java: {e}"),
            )
        })?;
        let key = binding_bytes(env, binding, &key)?;
        let bind = key_binding(binding, key.as_ref().map(Small::bytes));
        let topic = topic.topic()?;
        let header = header.as_ref().map(Small::bytes);
        let sealed: Vec<&[u8]> = sealed.iter().map(Vec::as_slice).collect();
        let sealed_keys: Vec<&[u8]> = sealed_keys.iter().map(Vec::as_slice).collect();
        let extras = kafka_e2ee_core::format::RecordExtras {
            sealed_headers: &sealed,
            visible: &visible,
            wire_key: wire_key.as_deref(),
            sealed_keys: &sealed_keys,
        };
        let (opened, restored) = with_bytes(env, &value, |v| {
            engine.open_record_parts(topic, header, extras, bind, v)
        })??;
        let status = [u8::from(opened == Opened::Decrypted)];
        byte_arrays(
            env,
            &[
                Some(&status),
                restored.headers.as_deref().map(Vec::as_slice),
                restored.key.as_deref().map(Vec::as_slice),
            ],
        )
    })
}

/// `static native void keysTopicRead0(long)`: [`Engine::keys_topic_read`]:
/// the Java control plane has read the keys topic up to its end offsets, so
/// the engine may found a token secret nobody has claimed (docs/PROTOCOL.md
/// 5e).
#[no_mangle]
pub extern "system" fn Java_dev_kafkae2ee_Engine_keysTopicRead0<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    handle: jlong,
) {
    entry(&mut env, |_| {
        engine(handle)?.keys_topic_read();
        Ok(())
    })
}
