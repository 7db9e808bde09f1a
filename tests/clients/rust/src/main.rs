//! A rust-rdkafka client for the plugin tests, built the default way
//! (librdkafka from source, linked statically, no `-rdynamic`): the plugin
//! must find librdkafka's functions in the main program. `ClientConfig` is a
//! HashMap, so properties reach librdkafka in no fixed order; the e2ee.*
//! settings therefore come from `KAFKA_E2EE_CONFIG` (a file the plugin reads
//! when it loads), and only `plugin.library.paths` is a property.
//!
//!   e2ee-rust produce -b BOOTSTRAP -t TOPIC [-hold FILE] [-X k=v]...  < hex values, one a line
//!       prints ACKED once every record is acknowledged; with -hold it then
//!       stays up (serving its keys to consumers) until FILE exists
//!   e2ee-rust consume -b BOOTSTRAP -t TOPIC -n COUNT [-X k=v]...  > hex values
//!   e2ee-rust create  -b BOOTSTRAP -t TOPIC -n TIMES [-X k=v]...
//!       makes a producer and a consumer TIMES times, each producer sends one
//!       record (`create-<i>`) and must have it acknowledged
//!   e2ee-rust version

use std::io::{BufRead, Write};
use std::process::exit;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

fn fail(msg: String) -> ! {
    eprintln!("e2ee-rust: {msg}");
    exit(1)
}

struct Args {
    bootstrap: String,
    topic: String,
    count: usize,
    hold: Option<String>,
    props: Vec<(String, String)>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        bootstrap: String::new(),
        topic: String::new(),
        count: 0,
        hold: None,
        props: Vec::new(),
    };
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| fail(format!("{flag}: needs a value")));
        match flag.as_str() {
            "-b" => a.bootstrap = v,
            "-t" => a.topic = v,
            "-hold" => a.hold = Some(v),
            "-n" => a.count = v.parse().unwrap_or_else(|_| fail(format!("-n {v}"))),
            "-X" => {
                let (k, v) = v
                    .split_once('=')
                    .unwrap_or_else(|| fail(format!("-X {v}: want k=v")));
                a.props.push((k.to_owned(), v.to_owned()));
            }
            _ => fail(format!("unknown flag {flag}")),
        }
    }
    a
}

fn config(a: &Args) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &a.bootstrap);
    for (k, v) in &a.props {
        c.set(k, v);
    }
    c
}

/// Counts delivery reports: rust-rdkafka's default context drops failed
/// ones, and a record the plugin refuses to seal fails only there.
#[derive(Default)]
struct Deliveries {
    acked: AtomicUsize,
    failed: AtomicUsize,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.acked.fetch_add(1, Ordering::SeqCst),
            Err((e, _)) => {
                eprintln!("e2ee-rust: delivery: {e}");
                self.failed.fetch_add(1, Ordering::SeqCst)
            }
        };
    }
}

type Prod = BaseProducer<Deliveries>;

fn producer(a: &Args) -> Prod {
    config(a)
        .create_with_context(Deliveries::default())
        .unwrap_or_else(|e| fail(format!("producer: {e}")))
}

/// Sends `values` and waits for every delivery report; any failure ends the
/// process.
fn send(p: &Prod, topic: &str, values: &[Vec<u8>]) {
    for (i, v) in values.iter().enumerate() {
        let key = format!("k{i}");
        let rec = BaseRecord::to(topic).partition(0).key(&key).payload(v);
        if let Err((e, _)) = p.send(rec) {
            fail(format!("send: {e}"));
        }
    }
    if let Err(e) = p.flush(Duration::from_secs(60)) {
        fail(format!("flush: {e}"));
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_default();
    if mode == "version" {
        println!("{}", rdkafka::util::get_rdkafka_version().1);
        return;
    }
    let a = parse(argv);
    match mode.as_str() {
        "produce" => {
            let values: Vec<Vec<u8>> = std::io::stdin()
                .lock()
                .lines()
                .map(|l| {
                    let l = l.unwrap_or_else(|e| fail(format!("stdin: {e}")));
                    hex_decode(l.trim())
                })
                .collect();
            let p = producer(&a);
            send(&p, &a.topic, &values);
            check_deliveries(&p, values.len());
            println!("ACKED {}", values.len());
            let stop = Instant::now() + Duration::from_secs(300);
            while let Some(hold) = &a.hold {
                if std::path::Path::new(hold).exists() || Instant::now() > stop {
                    break;
                }
                p.poll(Duration::from_millis(100));
            }
        }
        "consume" => consume(&a),
        "create" => {
            for i in 0..a.count {
                let p = producer(&a);
                send(&p, &a.topic, &[format!("create-{i}").into_bytes()]);
                check_deliveries(&p, 1);
                let c: BaseConsumer = config(&a)
                    .set("group.id", "e2ee-rust")
                    .create()
                    .unwrap_or_else(|e| fail(format!("consumer {i}: {e}")));
                drop(c);
                drop(p);
                eprintln!("e2ee-rust: clients {i} made");
            }
        }
        _ => fail(format!("unknown mode {mode}")),
    }
}

/// flush() returning Ok means the queue drained, not that every record was
/// taken: the context counts.
fn check_deliveries(p: &Prod, n: usize) {
    let (acked, failed) = (
        p.context().acked.swap(0, Ordering::SeqCst),
        p.context().failed.swap(0, Ordering::SeqCst),
    );
    if acked != n || failed != 0 {
        fail(format!(
            "{acked} of {n} records acknowledged, {failed} failed"
        ));
    }
}

fn consume(a: &Args) {
    let c: BaseConsumer = config(a)
        .set("group.id", "e2ee-rust")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| fail(format!("consumer: {e}")));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&a.topic, 0, Offset::Beginning)
        .unwrap_or_else(|e| fail(format!("assign: {e}")));
    c.assign(&tpl)
        .unwrap_or_else(|e| fail(format!("assign: {e}")));
    let out = std::io::stdout();
    let mut out = out.lock();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got < a.count {
        if Instant::now() > deadline {
            fail(format!("{got} of {} records in 60 s", a.count));
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            // A record the plugin could not open: fail closed, loudly.
            Some(Err(e)) => fail(format!("consume: {e}")),
            Some(Ok(m)) => {
                let _ = writeln!(out, "{}", hex_encode(m.payload().unwrap_or_default()));
                got += 1;
            }
        }
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    if s.len() % 2 != 0 {
        fail(format!("odd hex length {}", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| fail(format!("bad hex {s}")))
        })
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
