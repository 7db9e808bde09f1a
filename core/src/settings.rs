//! The `e2ee.*` client settings the native hosts understand: one table,
//! shared by the librdkafka plugin and JNI host (which parse it), and by the
//! CLI (which checks configurations and generates docs/CONFIGURATION.md).
//! The Java ConfigDef defines the same names on the Java side.

/// (name, default, documentation); an empty default means "none".
pub const PROPERTIES: &[(&str, &str, &str)] = &[
    ("e2ee.credential", "", "Path of this client's credential file (kafka-e2ee credential issue). Required."),
    ("e2ee.trust", "", "Path of the trust file (kafka-e2ee authority init). Required."),
    ("e2ee.topics", "*", "Comma-separated topic patterns whose records are encrypted; `*` = all, `prefix.*` = a prefix."),
    ("e2ee.key.rotation.ms", "900000", "A producer moves to a new epoch key after this long."),
    ("e2ee.key.rotation.records", "100000000", "... or after this many records, whichever comes first."),
    ("e2ee.key.retention.ms", "604800000", "Keys are deleted everywhere this long after their epoch ended."),
    ("e2ee.key.wait.ms", "30000", "How long a consumer waits for a key it lacks before failing the record."),
    ("e2ee.state.dir", "", "Directory for this client's encrypted key state; empty = keys in memory only."),
    ("e2ee.control.topic", "_e2ee_control", "The topic that carries the live key exchange between running clients (delete policy, 1 h retention)."),
    ("e2ee.keys.topic", "_e2ee_keys", "The topic that keeps consumers' prekeys and the key envelopes producers seal to them, so records stay readable after their producer has exited (compact,delete; retention covers e2ee.key.retention.ms)."),
    ("e2ee.control.bootstrap.servers", "", "The cluster whose e2ee.control.topic and e2ee.keys.topic this client exchanges keys on; empty = its own (bootstrap.servers). For consumers of a mirrored cluster (MirrorMaker 2): the source cluster's bootstrap servers, reached with the client's own security settings (docs/PROTOCOL.md, section 5c)."),
    ("e2ee.topic.source.prefix", "", "Consumers of a mirrored cluster: a record of a topic named with this prefix is opened, authorized and key-requested as the topic named by the rest, its source topic (MirrorMaker 2's DefaultReplicationPolicy: `<source alias>.`); other topics under their own name. Empty = none (and for the identity replication policy). Producers ignore it (docs/PROTOCOL.md, section 5c)."),
    ("e2ee.close.timeout.ms", "30000", "How long a producer's close/flush waits for the broker to acknowledge the key envelopes of every epoch it sealed under; what is still unacknowledged then is logged at ERROR and counted."),
    ("e2ee.cipher", "auto", "The cipher producers seal values with: `auto` (AES-256-GCM where the CPU has AES and carry-less-multiply instructions, ChaCha20-Poly1305 elsewhere), `aes-256-gcm` (2.6x faster for 1 KiB values with AES-NI, see docs/PERFORMANCE.md) or `chacha20-poly1305` (fast and constant-time on every CPU). Each record's header names its cipher, so consumers open both whatever they set."),
    ("e2ee.compression", "none", "Producers compress each value before sealing it: `none`, `zstd` or `lz4`. The value keeps its length (the saved bytes become zero padding), so set the client's compression.type (e.g. zstd or lz4) too: that is what removes them on the wire and on disk. Caution: a compressed value's size reveals something about its content; do not enable it for values that mix attacker-influenced data with secrets (CRIME/BREACH-style attacks)."),
    ("e2ee.kex.hybrid", "prefer", "The key exchange mixes an ML-KEM-768 (post-quantum) secret into every X25519 Noise session and every key envelope on the keys topic, so the topic keys stay secret from a broker that records them until it has a quantum computer (docs/PROTOCOL.md, sections 4a and 5d): `prefer` (hybrid with every party that speaks it, classical only with earlier versions; two hybrid-capable parties never settle for classical in a session), `require` (refuse classical sessions and envelopes: set once every client is upgraded) or `off` (the wire behaviour of the previous version; only for a measured reason, see docs/PERFORMANCE.md). `kafka-e2ee doctor` lists the parties on the control topic that still speak classical only."),
    ("e2ee.headers", "encrypt", "What producers do with a record's application headers: `encrypt` (seal them with the value in one extra header, `e2ee.h`; consumers get exactly the original headers back, in order, duplicates and nulls kept, and any tampering is rejected) or `clear` (leave them readable and unauthenticated, as before). Consumers follow each record, whatever they set. Consumers of the previous version reject records with sealed headers: upgrade consumers first, or set `clear` until they are (docs/FORMAT.md, section 12)."),
    ("e2ee.headers.clear", "", "With `e2ee.headers=encrypt`: comma-separated header names that stay readable on the record for the broker and tooling (routing, tracing). They are still authenticated: consumers reject a record whose clear copies were changed, removed, added or reordered. Empty = none."),
    ("e2ee.bind.key", "true", "librdkafka producers bind the record key into each record's authentication, so a broker cannot move a value to another key; consumers that cannot see keys (Java's DecryptingDeserializer) cannot open such records: set false where they read."),
];
