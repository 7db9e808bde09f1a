//! Talking to the cluster for `doctor` and `inspect`, with rskafka (pure
//! Rust, TLS by rustls). Connection settings come from the client's own
//! configuration, Java or librdkafka style. Supported: PLAINTEXT, SSL,
//! SASL_PLAINTEXT and SASL_SSL; SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512;
//! server certificates checked against a PEM CA file or the system CAs, with
//! hostname verification always on. Not supported, and refused with a plain
//! message: client certificates (mutual TLS), JKS/PKCS12 truststores,
//! OAUTHBEARER, GSSAPI, AWS_MSK_IAM.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::RecordAndOffset;
use rskafka::BackoffConfig;

use crate::props::{self, Property};

/// How to reach the cluster.
/// rskafka runs its connections as tasks on the runtime, so one runtime
/// lives as long as the connection.
#[derive(Debug)]
pub struct Connection {
    pub bootstrap: Vec<String>,
    sasl: Option<SaslConfig>,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
    rt: tokio::runtime::Runtime,
}

impl Connection {
    /// From `--bootstrap` (wins) and/or the client configuration.
    pub fn from_config(
        bootstrap: Option<&str>,
        config: &[Property],
        timeout: Duration,
    ) -> Result<Connection, String> {
        let servers = bootstrap
            .map(str::to_owned)
            .or_else(|| props::get(config, "bootstrap.servers").map(str::to_owned))
            .or_else(|| props::get(config, "metadata.broker.list").map(str::to_owned))
            .ok_or(
                "no broker address: pass --bootstrap HOST:PORT or set bootstrap.servers in the \
                 client configuration",
            )?;
        let bootstrap: Vec<String> = servers
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err("bootstrap.servers is empty: set it to HOST:PORT[,HOST:PORT...]".into());
        }
        for b in &bootstrap {
            if !b.contains(':') {
                return Err(format!(
                    "bootstrap address '{b}' has no port: write it as HOST:PORT"
                ));
            }
        }
        let protocol = props::get(config, "security.protocol")
            .unwrap_or("PLAINTEXT")
            .trim()
            .to_ascii_uppercase();
        let (sasl, tls) = match protocol.as_str() {
            "PLAINTEXT" => (None, None),
            "SASL_PLAINTEXT" => (Some(sasl_config(config)?), None),
            "SSL" => (None, Some(tls_config(config)?)),
            "SASL_SSL" => (Some(sasl_config(config)?), Some(tls_config(config)?)),
            other => {
                return Err(format!(
                    "security.protocol={other} is not a Kafka security protocol; use PLAINTEXT, \
                     SASL_PLAINTEXT, SSL or SASL_SSL"
                ))
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        Ok(Connection {
            bootstrap,
            sasl,
            tls,
            timeout,
            rt,
        })
    }

    /// Connects and fetches metadata, within the timeout.
    pub fn connect(&self) -> Result<Client, String> {
        let mut builder = ClientBuilder::new(self.bootstrap.clone())
            .client_id("kafka-e2ee-cli")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(self.timeout),
            });
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        self.run(builder.build()).map_err(|e| {
            format!(
                "cannot reach the cluster at {}: {e}. Check bootstrap.servers, that the broker \
                 is up, and that this host may connect to it",
                self.bootstrap.join(",")
            )
        })
    }

    /// Runs one Kafka operation to completion, bounded by the timeout.
    pub fn run<T, E: std::fmt::Display>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs_f32())),
            }
        })
    }
}

/// System CA bundles, Debian/Ubuntu first.
const SYSTEM_CAS: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn tls_config(config: &[Property]) -> Result<Arc<rustls::ClientConfig>, String> {
    for key in [
        "ssl.certificate.location",
        "ssl.certificate.pem",
        "ssl.keystore.location",
        "ssl.keystore.certificate.chain",
    ] {
        if props::get(config, key).is_some_and(|v| !v.trim().is_empty()) {
            return Err(format!(
                "{key} is set: client certificates (mutual TLS) are not supported by this \
                 kafka-e2ee build; run doctor with --offline for the local checks"
            ));
        }
    }
    if let Some(v) = props::get(config, "ssl.endpoint.identification.algorithm")
        .filter(|v| !v.trim().eq_ignore_ascii_case("https"))
    {
        return Err(format!(
            "ssl.endpoint.identification.algorithm='{}': kafka-e2ee always verifies the \
             broker's host name; remove the setting",
            v.trim()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut add = |certs: Vec<CertificateDer<'static>>, from: &str| -> Result<(), String> {
        if certs.is_empty() {
            return Err(format!("{from} holds no PEM certificate"));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{from}: a certificate cannot be used: {e}"))?;
        }
        Ok(())
    };
    let pem_file = |path: &str| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| format!("cannot read PEM certificates from {path}: {e}"))
    };
    let truststore_type = props::get(config, "ssl.truststore.type").map(str::trim);
    if let Some(ca) = props::get(config, "ssl.ca.location").map(str::trim) {
        add(pem_file(ca)?, ca)?;
    } else if let Some(pem) = props::get(config, "ssl.truststore.certificates") {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ssl.truststore.certificates: {e}"))?;
        add(certs, "ssl.truststore.certificates")?;
    } else if let Some(store) = props::get(config, "ssl.truststore.location").map(str::trim) {
        if !truststore_type.is_some_and(|t| t.eq_ignore_ascii_case("PEM")) {
            return Err(format!(
                "ssl.truststore.location={store} is a {} truststore, which kafka-e2ee cannot \
                 read: export its CA to PEM (keytool -exportcert -rfc) and use that file with \
                 ssl.truststore.type=PEM, or remove the setting to use the system CAs",
                truststore_type.unwrap_or("JKS")
            ));
        }
        add(pem_file(store)?, store)?;
    } else {
        let bundle = SYSTEM_CAS
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or("no system CA bundle found: set ssl.ca.location to a PEM file of CAs")?;
        add(pem_file(bundle)?, bundle)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn sasl_config(config: &[Property]) -> Result<SaslConfig, String> {
    let mechanism = props::get(config, "sasl.mechanism")
        .or_else(|| props::get(config, "sasl.mechanisms"))
        .unwrap_or("GSSAPI")
        .trim()
        .to_ascii_uppercase();
    let make: fn(Credentials) -> SaslConfig = match mechanism.as_str() {
        "PLAIN" => SaslConfig::Plain,
        "SCRAM-SHA-256" => SaslConfig::ScramSha256,
        "SCRAM-SHA-512" => SaslConfig::ScramSha512,
        other => {
            return Err(format!(
                "sasl.mechanism={other} is not supported by this kafka-e2ee build (PLAIN, \
                 SCRAM-SHA-256 and SCRAM-SHA-512 are); run doctor with --offline for the \
                 local checks"
            ))
        }
    };
    let (user, pass) = match (
        props::get(config, "sasl.username"),
        props::get(config, "sasl.password"),
    ) {
        (Some(u), Some(p)) => (u.to_owned(), p.to_owned()),
        _ => props::get(config, "sasl.jaas.config")
            .and_then(jaas_user_password)
            .ok_or(
                "SASL needs a user name and password: set sasl.username and sasl.password \
                 (librdkafka) or sasl.jaas.config with username=\"...\" password=\"...\" (Java)",
            )?,
    };
    Ok(make(Credentials::new(user, pass)))
}

/// `username="u" password="p"` out of a JAAS line.
fn jaas_user_password(jaas: &str) -> Option<(String, String)> {
    let field = |name: &str| -> Option<String> {
        let at = jaas.find(&format!("{name}=\""))?;
        let rest = jaas.get(at + name.len() + 2..)?;
        let end = rest.find('"')?;
        rest.get(..end).map(str::to_owned)
    };
    Some((field("username")?, field("password")?))
}

/// A partition's offsets and the records read from it.
pub struct PartitionSample {
    pub partition: i32,
    pub earliest: i64,
    pub latest: i64,
    pub records: Vec<RecordAndOffset>,
}

/// Topic names, or an error.
pub fn topics(conn: &Connection, client: &Client) -> Result<Vec<(String, usize)>, String> {
    let list = conn.run(client.list_topics())?;
    Ok(list
        .into_iter()
        .map(|t| (t.name, t.partitions.len()))
        .collect())
}

/// Reads up to `max` of the newest records of `topic`, split over its
/// partitions. `progress` is told after each partition.
pub fn sample(
    conn: &Connection,
    client: &Client,
    topic: &str,
    partitions: &[i32],
    max: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<PartitionSample>, String> {
    let share = (max / partitions.len().max(1)).max(1);
    let mut out = Vec::new();
    let mut total = 0usize;
    for (i, &p) in partitions.iter().enumerate() {
        let pc = conn.run(client.partition_client(topic, p, UnknownTopicHandling::Error))?;
        let earliest = conn.run(pc.get_offset(OffsetAt::Earliest))?;
        let latest = conn.run(pc.get_offset(OffsetAt::Latest))?;
        let share_i64 = i64::try_from(share).unwrap_or(i64::MAX);
        let mut offset = earliest.max(latest.saturating_sub(share_i64));
        let mut records = Vec::new();
        while offset < latest && records.len() < share {
            let (batch, _high) = conn.run(pc.fetch_records(offset, 1..1_048_576, 500))?;
            let Some(last) = batch.last().map(|r| r.offset) else {
                break;
            };
            for r in batch {
                if r.offset >= offset && r.offset < latest && records.len() < share {
                    records.push(r);
                }
            }
            offset = last + 1;
        }
        total += records.len();
        out.push(PartitionSample {
            partition: p,
            earliest,
            latest,
            records,
        });
        progress(i + 1, total);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas() {
        let j = "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 username=\"alice\" password=\"s3cr=t\";";
        assert_eq!(
            jaas_user_password(j),
            Some(("alice".into(), "s3cr=t".into()))
        );
        assert_eq!(jaas_user_password("x required;"), None);
    }

    fn conn(text: &str) -> Result<Connection, String> {
        Connection::from_config(None, &props::parse(text), Duration::from_secs(1))
    }

    #[test]
    fn tls_settings() {
        // System CAs (present on this kind of machine) with SASL over TLS.
        let c = conn(
            "bootstrap.servers=h:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n\
             sasl.username=k\nsasl.password=s\n",
        );
        if SYSTEM_CAS.iter().any(|p| Path::new(p).is_file()) {
            assert!(c.unwrap().tls.is_some());
        }
        // An explicit PEM CA file: librdkafka and Java (PEM truststore) names.
        let bundle = SYSTEM_CAS.iter().find(|p| Path::new(p).is_file());
        if let Some(b) = bundle {
            assert!(conn(&format!(
                "bootstrap.servers=h:1\nsecurity.protocol=SSL\nssl.ca.location={b}\n"
            ))
            .is_ok());
            assert!(conn(&format!(
                "bootstrap.servers=h:1\nsecurity.protocol=SSL\nssl.truststore.type=PEM\n\
                 ssl.truststore.location={b}\n"
            ))
            .is_ok());
        }
        let e =
            conn("bootstrap.servers=h:1\nsecurity.protocol=SSL\nssl.truststore.location=/x.jks\n")
                .unwrap_err();
        assert!(e.contains("JKS truststore"), "{e}");
        let e =
            conn("bootstrap.servers=h:1\nsecurity.protocol=SSL\nssl.ca.location=/no/such.pem\n")
                .unwrap_err();
        assert!(e.contains("/no/such.pem"), "{e}");
        let e = conn("bootstrap.servers=h:1\nsecurity.protocol=SSL\nssl.key.location=k\nssl.certificate.location=c\n")
            .unwrap_err();
        assert!(e.contains("mutual TLS"), "{e}");
        let e = conn("bootstrap.servers=h:1\nsecurity.protocol=SSL\nssl.endpoint.identification.algorithm=\n")
            .unwrap_err();
        assert!(e.contains("host name"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let e = conn("bootstrap.servers=h:1\nsecurity.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\nsasl.username=a\nsasl.password=b\n").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let cfg = props::parse("bootstrap.servers=h\n");
        assert!(Connection::from_config(None, &cfg, Duration::from_secs(1)).is_err());
        let cfg = props::parse("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n");
        let e = Connection::from_config(Some("h:1"), &cfg, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("sasl.username"), "{e}");
    }
}
