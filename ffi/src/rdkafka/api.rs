//! The part of librdkafka's public C API the plugin calls, resolved at
//! `conf_init` from the very library that loaded the plugin (Debian's
//! librdkafka.so.1, a wheel's renamed copy, ...), or from the main program
//! when librdkafka is linked statically into it (confluent-kafka-go and
//! rust-rdkafka by default). The plugin never links librdkafka: there is no
//! DT_NEEDED on it and no bundled copy, and it never mixes two librdkafkas.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Opaque librdkafka handles.
#[derive(Debug)]
pub enum Conf {}
#[derive(Debug)]
pub enum Kafka {}
#[derive(Debug)]
pub enum Topic {}
#[derive(Debug)]
pub enum Headers {}
#[derive(Debug)]
pub enum KafkaError {}
#[derive(Debug)]
pub enum TopicConf {}
#[derive(Debug)]
pub enum NewTopic {}
#[derive(Debug)]
pub enum Queue {}
#[derive(Debug)]
pub enum Event {}

pub type Err = c_int;
pub const ERR_NO_ERROR: Err = 0;
pub const ERR_VALUE_DESERIALIZATION: Err = -159;
pub const ERR_PARTITION_EOF: Err = -191;
pub const OFFSET_BEGINNING: i64 = -2;
pub const CONF_UNKNOWN: c_int = -2;
pub const CONF_INVALID: c_int = -1;
pub const CONF_OK: c_int = 0;
pub const PRODUCER: c_int = 0;
pub const CONSUMER: c_int = 1;
pub const PARTITION_UA: i32 = -1;
pub const MSG_F_FREE: c_int = 0x1;
pub const MSG_F_COPY: c_int = 0x2;

/// `rd_kafka_message_t`, public and unchanged since librdkafka 0.9.
#[repr(C)]
#[derive(Debug)]
pub struct Message {
    pub err: Err,
    pub rkt: *mut Topic,
    pub partition: i32,
    pub payload: *mut c_void,
    pub len: usize,
    pub key: *mut c_void,
    pub key_len: usize,
    pub offset: i64,
    pub private: *mut c_void,
}

/// `rd_kafka_topic_partition_t` (public).
#[repr(C)]
#[derive(Debug)]
pub struct TopicPartition {
    pub topic: *mut c_char,
    pub partition: i32,
    pub offset: i64,
    pub metadata: *mut c_void,
    pub metadata_size: usize,
    pub opaque: *mut c_void,
    pub err: Err,
    pub private: *mut c_void,
}

#[repr(C)]
#[derive(Debug)]
pub struct TopicPartitionList {
    pub cnt: c_int,
    pub size: c_int,
    pub elems: *mut TopicPartition,
}

/// `struct rd_kafka_metadata` and its topic entry (public).
#[repr(C)]
#[derive(Debug)]
pub struct Metadata {
    pub broker_cnt: c_int,
    pub brokers: *mut c_void,
    pub topic_cnt: c_int,
    pub topics: *mut MetadataTopic,
    pub orig_broker_id: i32,
    pub orig_broker_name: *mut c_char,
}

#[repr(C)]
#[derive(Debug)]
pub struct MetadataTopic {
    pub topic: *mut c_char,
    pub partition_cnt: c_int,
    pub partitions: *mut c_void,
    pub err: Err,
}

pub type OnConfSet = unsafe extern "C" fn(
    *mut Conf,
    *const c_char,
    *const c_char,
    *mut c_char,
    usize,
    *mut c_void,
) -> c_int;
pub type OnConfDup =
    unsafe extern "C" fn(*mut Conf, *const Conf, usize, *mut *const c_char, *mut c_void) -> Err;
pub type OnConfDestroy = unsafe extern "C" fn(*mut c_void) -> Err;
pub type OnNew =
    unsafe extern "C" fn(*mut Kafka, *const Conf, *mut c_void, *mut c_char, usize) -> Err;
pub type OnDestroy = unsafe extern "C" fn(*mut Kafka, *mut c_void) -> Err;
pub type OnMessage = unsafe extern "C" fn(*mut Kafka, *mut Message, *mut c_void) -> Err;

type AddConf<F> = unsafe extern "C" fn(*mut Conf, *const c_char, F, *mut c_void) -> Err;
type AddRk<F> = unsafe extern "C" fn(*mut Kafka, *const c_char, F, *mut c_void) -> Err;

macro_rules! api {
    (
        $($field:ident : $sym:literal => $ty:ty,)*
        @optional {
            $($ofield:ident : $osym:literal => $oty:ty,)*
        }
    ) => {
        /// Function pointers into the loading librdkafka. The optional ones
        /// are None where the library lacks them (a program that links
        /// librdkafka statically keeps only what its linker kept): what
        /// needs them is then skipped, never the whole plugin.
        #[allow(clippy::type_complexity)]
        pub struct Api {
            /// The file the functions were resolved from (for logs and tests).
            pub library: String,
            $(pub $field: $ty,)*
            $(pub $ofield: Option<$oty>,)*
        }

        impl std::fmt::Debug for Api {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Api").field("library", &self.library).finish_non_exhaustive()
            }
        }

        impl Api {
            /// Resolves every function through `lookup` (name without NUL
            /// to address, None if absent).
            ///
            /// # Safety
            /// Every address `lookup` returns must be the entry of the
            /// librdkafka function of that name.
            unsafe fn resolve(
                lookup: &dyn Fn(&str) -> Option<*mut c_void>,
                library: String,
            ) -> Result<Api, String> {
                Ok(Api {
                    library,
                    $($field: {
                        let Some(p) = lookup($sym).filter(|p| !p.is_null()) else {
                            return Err(format!("symbol {} not found", $sym));
                        };
                        // SAFETY: the symbol is librdkafka's function of this
                        // documented signature.
                        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
                    },)*
                    $($ofield: lookup($osym).filter(|p| !p.is_null()).map(|p| {
                        // SAFETY: as above.
                        unsafe { std::mem::transmute::<*mut c_void, $oty>(p) }
                    }),)*
                })
            }
        }
    };
}

api! {
    conf_add_on_new: "rd_kafka_conf_interceptor_add_on_new" => AddConf<OnNew>,
    conf_add_on_conf_set: "rd_kafka_conf_interceptor_add_on_conf_set" => AddConf<OnConfSet>,
    conf_add_on_conf_dup: "rd_kafka_conf_interceptor_add_on_conf_dup" => AddConf<OnConfDup>,
    conf_add_on_conf_destroy: "rd_kafka_conf_interceptor_add_on_conf_destroy" => AddConf<OnConfDestroy>,
    add_on_send: "rd_kafka_interceptor_add_on_send" => AddRk<OnMessage>,
    add_on_acknowledgement: "rd_kafka_interceptor_add_on_acknowledgement" => AddRk<OnMessage>,
    add_on_consume: "rd_kafka_interceptor_add_on_consume" => AddRk<OnMessage>,
    add_on_destroy: "rd_kafka_interceptor_add_on_destroy" => AddRk<OnDestroy>,
    conf_dup_filter: "rd_kafka_conf_dup_filter" => unsafe extern "C" fn(*const Conf, usize, *const *const c_char) -> *mut Conf,
    conf_destroy: "rd_kafka_conf_destroy" => unsafe extern "C" fn(*mut Conf),
    conf_get: "rd_kafka_conf_get" => unsafe extern "C" fn(*const Conf, *const c_char, *mut c_char, *mut usize) -> c_int,
    conf_set: "rd_kafka_conf_set" => unsafe extern "C" fn(*mut Conf, *const c_char, *const c_char, *mut c_char, usize) -> c_int,
    conf_set_dr_msg_cb: "rd_kafka_conf_set_dr_msg_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_dr_cb: "rd_kafka_conf_set_dr_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_error_cb: "rd_kafka_conf_set_error_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_stats_cb: "rd_kafka_conf_set_stats_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_rebalance_cb: "rd_kafka_conf_set_rebalance_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_offset_commit_cb: "rd_kafka_conf_set_offset_commit_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_consume_cb: "rd_kafka_conf_set_consume_cb" => unsafe extern "C" fn(*mut Conf, *const c_void),
    conf_set_events: "rd_kafka_conf_set_events" => unsafe extern "C" fn(*mut Conf, c_int),
    topic_name: "rd_kafka_topic_name" => unsafe extern "C" fn(*const Topic) -> *const c_char,
    message_headers: "rd_kafka_message_headers" => unsafe extern "C" fn(*const Message, *mut *mut Headers) -> Err,
    message_set_headers: "rd_kafka_message_set_headers" => unsafe extern "C" fn(*mut Message, *mut Headers),
    headers_new: "rd_kafka_headers_new" => unsafe extern "C" fn(usize) -> *mut Headers,
    header_add: "rd_kafka_header_add" => unsafe extern "C" fn(*mut Headers, *const c_char, isize, *const c_void, isize) -> Err,
    header_get: "rd_kafka_header_get" => unsafe extern "C" fn(*const Headers, usize, *const c_char, *mut *const c_void, *mut usize) -> Err,
    header_get_last: "rd_kafka_header_get_last" => unsafe extern "C" fn(*const Headers, *const c_char, *mut *const c_void, *mut usize) -> Err,
    header_get_all: "rd_kafka_header_get_all" => unsafe extern "C" fn(*const Headers, usize, *mut *const c_char, *mut *const c_void, *mut usize) -> Err,
    header_remove: "rd_kafka_header_remove" => unsafe extern "C" fn(*mut Headers, *const c_char) -> Err,
    new: "rd_kafka_new" => unsafe extern "C" fn(c_int, *mut Conf, *mut c_char, usize) -> *mut Kafka,
    destroy: "rd_kafka_destroy" => unsafe extern "C" fn(*mut Kafka),
    kind: "rd_kafka_type" => unsafe extern "C" fn(*const Kafka) -> c_int,
    topic_new: "rd_kafka_topic_new" => unsafe extern "C" fn(*mut Kafka, *const c_char, *mut TopicConf) -> *mut Topic,
    topic_destroy: "rd_kafka_topic_destroy" => unsafe extern "C" fn(*mut Topic),
    produce: "rd_kafka_produce" => unsafe extern "C" fn(*mut Topic, i32, c_int, *mut c_void, usize, *const c_void, usize, *mut c_void) -> c_int,
    poll: "rd_kafka_poll" => unsafe extern "C" fn(*mut Kafka, c_int) -> c_int,
    flush: "rd_kafka_flush" => unsafe extern "C" fn(*mut Kafka, c_int) -> Err,
    metadata: "rd_kafka_metadata" => unsafe extern "C" fn(*mut Kafka, c_int, *mut Topic, *mut *const Metadata, c_int) -> Err,
    metadata_destroy: "rd_kafka_metadata_destroy" => unsafe extern "C" fn(*const Metadata),
    query_watermark_offsets: "rd_kafka_query_watermark_offsets" => unsafe extern "C" fn(*mut Kafka, *const c_char, i32, *mut i64, *mut i64, c_int) -> Err,
    tpl_new: "rd_kafka_topic_partition_list_new" => unsafe extern "C" fn(c_int) -> *mut TopicPartitionList,
    tpl_add: "rd_kafka_topic_partition_list_add" => unsafe extern "C" fn(*mut TopicPartitionList, *const c_char, i32) -> *mut TopicPartition,
    tpl_destroy: "rd_kafka_topic_partition_list_destroy" => unsafe extern "C" fn(*mut TopicPartitionList),
    assign: "rd_kafka_assign" => unsafe extern "C" fn(*mut Kafka, *const TopicPartitionList) -> Err,
    consumer_poll: "rd_kafka_consumer_poll" => unsafe extern "C" fn(*mut Kafka, c_int) -> *mut Message,
    message_destroy: "rd_kafka_message_destroy" => unsafe extern "C" fn(*mut Message),
    seek_partitions: "rd_kafka_seek_partitions" => unsafe extern "C" fn(*mut Kafka, *mut TopicPartitionList, c_int) -> *mut KafkaError,
    error_destroy: "rd_kafka_error_destroy" => unsafe extern "C" fn(*mut KafkaError),
    err2str: "rd_kafka_err2str" => unsafe extern "C" fn(Err) -> *const c_char,
    new_topic_new: "rd_kafka_NewTopic_new" => unsafe extern "C" fn(*const c_char, c_int, c_int, *mut c_char, usize) -> *mut NewTopic,
    new_topic_set_config: "rd_kafka_NewTopic_set_config" => unsafe extern "C" fn(*mut NewTopic, *const c_char, *const c_char) -> Err,
    new_topic_destroy: "rd_kafka_NewTopic_destroy" => unsafe extern "C" fn(*mut NewTopic),
    create_topics: "rd_kafka_CreateTopics" => unsafe extern "C" fn(*mut Kafka, *mut *mut NewTopic, usize, *const c_void, *mut Queue),
    queue_new: "rd_kafka_queue_new" => unsafe extern "C" fn(*mut Kafka) -> *mut Queue,
    queue_poll: "rd_kafka_queue_poll" => unsafe extern "C" fn(*mut Queue, c_int) -> *mut Event,
    queue_destroy: "rd_kafka_queue_destroy" => unsafe extern "C" fn(*mut Queue),
    event_destroy: "rd_kafka_event_destroy" => unsafe extern "C" fn(*mut Event),
    conf_properties_show: "rd_kafka_conf_properties_show" => unsafe extern "C" fn(*mut libc::FILE),
    version: "rd_kafka_version" => unsafe extern "C" fn() -> c_int,
    version_str: "rd_kafka_version_str" => unsafe extern "C" fn() -> *const c_char,
    @optional {
        // The control clients' topic-level settings (control.rs,
        // copy_topic_properties).
        conf_get_default_topic_conf: "rd_kafka_conf_get_default_topic_conf" => unsafe extern "C" fn(*const Conf) -> *mut TopicConf,
        topic_conf_new: "rd_kafka_topic_conf_new" => unsafe extern "C" fn() -> *mut TopicConf,
        topic_conf_destroy: "rd_kafka_topic_conf_destroy" => unsafe extern "C" fn(*mut TopicConf),
        topic_conf_dump: "rd_kafka_topic_conf_dump" => unsafe extern "C" fn(*mut TopicConf, *mut usize) -> *mut *const c_char,
        conf_dump_free: "rd_kafka_conf_dump_free" => unsafe extern "C" fn(*mut *const c_char, usize),
    }
}

/// One resolved table per loading library, kept for the life of the process
/// (the library stays loaded while it holds the plugin anyway).
fn cache() -> &'static Mutex<HashMap<String, Arc<Api>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Api>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Resolves the API from the object containing `caller` (an address inside
/// the librdkafka that called `conf_init`): a shared library, found by name
/// with `dladdr` and taken with `dlopen(RTLD_NOLOAD)`, or the main program
/// itself when librdkafka is linked statically into it (glibc's `dlopen`
/// never matches the main program by name), see [`super::main_program`].
/// Falls back to the global scope only when the caller is unknown.
///
/// # Safety
/// `caller` must be null or a code address in this process.
pub unsafe fn for_caller(caller: *const c_void) -> Result<Arc<Api>, String> {
    let main = super::main_program::Image::of_this_process();
    if let Some(main) = main.as_ref().filter(|m| m.contains(caller as usize)) {
        // One key for the main program, whatever dladdr would call it.
        let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(api) = cache.get(MAIN_PROGRAM) {
            return Ok(api.clone());
        }
        let (lookup, how) = main.lookup()?;
        let library = format!("{MAIN_PROGRAM} {} ({how})", main.path);
        // SAFETY: lookup returns addresses of librdkafka functions of the
        // main program only (checked to lie in its code segments, and the
        // copy is checked to be librdkafka by its version below).
        let api = unsafe { Api::resolve(&|n| lookup.get(n), library.clone()) }
            .map_err(|e| format!("kafka-e2ee plugin: {library} lacks an API it needs: {e}"))?;
        check_version(&api)?;
        let api = Arc::new(api);
        cache.insert(MAIN_PROGRAM.to_owned(), api.clone());
        return Ok(api);
    }
    let mut library = String::new();
    if !caller.is_null() {
        // SAFETY: dladdr only reads the process's link map.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        if unsafe { libc::dladdr(caller, &mut info) } != 0 && !info.dli_fname.is_null() {
            // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
            library = unsafe { CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .into_owned();
        }
    }
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(api) = cache.get(&library) {
        return Ok(api.clone());
    }
    let handle = if library.is_empty() {
        libc::RTLD_DEFAULT
    } else {
        let path = CString::new(library.clone()).map_err(|e| e.to_string())?;
        // SAFETY: NOLOAD only takes a reference to an already-loaded object.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_NOW) };
        if h.is_null() {
            return Err(format!(
                "kafka-e2ee plugin: cannot dlopen the librdkafka that loaded it ('{library}')"
            ));
        }
        h
    };
    let lookup = |name: &str| -> Option<*mut c_void> {
        let name = CString::new(name).ok()?;
        // SAFETY: handle is live (never closed: the table is cached for
        // good); name is NUL-terminated.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    // SAFETY: dlsym on the loading library's handle returns its functions.
    let api = Arc::new(
        unsafe { Api::resolve(&lookup, library.clone()) }.map_err(|e| {
            format!(
                "kafka-e2ee plugin: the librdkafka that loaded it ({}) lacks an API it needs: {e}",
                if library.is_empty() {
                    "global scope"
                } else {
                    &library
                }
            )
        })?,
    );
    cache.insert(library, api.clone());
    Ok(api)
}

/// The cache key (and the start of [`Api::library`]) of a librdkafka linked
/// into the main program.
pub const MAIN_PROGRAM: &str = "main program";

/// The oldest librdkafka whose API the plugin uses (`rd_kafka_seek_partitions`
/// is 1.6.0's), as `rd_kafka_version()` encodes it (0xMMmmrrpp).
pub const MIN_VERSION: c_int = 0x0106_0000;

/// A table found through a symbol table is checked before any other function
/// is called: `rd_kafka_version()` must be a librdkafka version this plugin
/// supports, and `rd_kafka_version_str()` must spell the same version.
fn check_version(api: &Api) -> Result<(), String> {
    // SAFETY: librdkafka's rd_kafka_version() takes nothing, returns an int.
    let v = unsafe { (api.version)() };
    // SAFETY: returns a static NUL-terminated string.
    let s = unsafe { (api.version_str)() };
    let s = if s.is_null() {
        String::new()
    } else {
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    };
    let spelled = format!(
        "{}.{}.{}",
        (v >> 24) & 0xff,
        (v >> 16) & 0xff,
        (v >> 8) & 0xff
    );
    if !(MIN_VERSION..0x1000_0000).contains(&v) || !s.starts_with(&spelled) {
        return Err(format!(
            "kafka-e2ee plugin: the librdkafka in {} reports version {v:#010x} ('{s}'): \
             the plugin needs librdkafka 1.6.0 or newer",
            api.library
        ));
    }
    Ok(())
}

impl Api {
    /// `rd_kafka_conf_get` as an owned string (None if unset or unknown).
    ///
    /// # Safety
    /// `conf` must be a live configuration of this library.
    pub unsafe fn get(&self, conf: *const Conf, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        let mut size: usize = 0;
        // SAFETY: a NULL dest asks for the size.
        if unsafe { (self.conf_get)(conf, name.as_ptr(), std::ptr::null_mut(), &mut size) }
            != CONF_OK
        {
            return None;
        }
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: buf holds `size` bytes.
        if unsafe { (self.conf_get)(conf, name.as_ptr(), buf.as_mut_ptr().cast(), &mut size) }
            != CONF_OK
        {
            return None;
        }
        CStr::from_bytes_until_nul(&buf)
            .ok()
            .map(|s| s.to_string_lossy().into_owned())
    }

    /// `rd_kafka_conf_set`, returning librdkafka's message on failure.
    ///
    /// # Safety
    /// `conf` must be a live configuration of this library.
    pub unsafe fn set(&self, conf: *mut Conf, name: &str, value: &str) -> Result<(), String> {
        let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else {
            return Err(format!("{name}: contains NUL"));
        };
        let mut err = [0 as c_char; 256];
        // SAFETY: all strings NUL-terminated; errstr has its size.
        let r =
            unsafe { (self.conf_set)(conf, n.as_ptr(), v.as_ptr(), err.as_mut_ptr(), err.len()) };
        if r == CONF_OK {
            Ok(())
        } else {
            // SAFETY: librdkafka NUL-terminates errstr.
            Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        }
    }

    pub fn err_str(&self, err: Err) -> String {
        // SAFETY: rd_kafka_err2str returns a static string for any code.
        let p = unsafe { (self.err2str)(err) };
        if p.is_null() {
            return format!("error {err}");
        }
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
