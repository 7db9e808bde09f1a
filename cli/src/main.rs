//! `kafka-e2ee`: set up trust (authority, credentials, pinned keys, deny
//! lists), check client configurations, look at a topic from the broker's
//! side, and shred stored keys. File formats are in docs/TRUST.md; all
//! cryptography is in kafka-e2ee-core.

#![forbid(unsafe_code)]
// The global allocator is kafka_e2ee's (ffi/src/lib.rs), linked with the
// host code the keeper shares: every freed block is zeroized first.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
mod doctor;
mod files;
mod inspect;
mod json;
mod kafka;
mod keeper;
mod keys;
mod props;
mod settings;
mod timefmt;
mod trustcmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use json::Value;
use kafka_e2ee_core::trust::{
    fingerprint, Authority, Identity, TopicPattern, TrustAnchor, DEFAULT_SKEW_MS,
};

const AUTHORITY_KEY_FILE: &str = "authority.key";
const TRUST_FILE: &str = "trust";

#[derive(Parser)]
#[command(
    name = "kafka-e2ee",
    version,
    about = "End-to-end encryption for Kafka clients: trust, credentials, checks, key shredding"
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the offline authority that signs credentials.
    #[command(subcommand)]
    Authority(AuthorityCommand),
    /// Issue and inspect credentials.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Trust files: pin credentials, deny (revoke) keys, show.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// The keys a client's state directory holds; crypto-shredding.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check a client configuration (Java or librdkafka properties) end to end.
    Doctor {
        /// The client's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Skip the broker checks.
        #[arg(long)]
        offline: bool,
        /// Seconds to wait for the broker.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Read a sample of a topic's records without keys and report what is encrypted.
    Inspect {
        /// Broker address (default: bootstrap.servers of --config).
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: Option<String>,
        /// The topic to look at.
        #[arg(long)]
        topic: String,
        /// A client configuration: connection settings and e2ee.topics.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How many of the newest records to read (split over partitions).
        #[arg(long, value_name = "N", default_value_t = 1000)]
        max: usize,
        /// Seconds to wait for the broker.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Run a keeper: a long-running consumer identity that holds every epoch's keys
    /// its credential may read and serves them to authorized newcomers (docs/KEEPER.md).
    Keeper {
        /// A client configuration: connection settings and e2ee.* (e2ee.state.dir required).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Serve GET /health and /metrics here: HOST:PORT, or a PORT on 127.0.0.1.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Seconds each broker call may take.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Rotate a topic's token secret (e2ee.keys=tokenize): found its next generation and
    /// seal it to every producer and consumer of the topic. Every key gets a new token;
    /// see docs/PROTOCOL.md section 5e for the migration. Needs a producer credential.
    RotateToken {
        /// A client configuration: connection settings and e2ee.* (a producer credential).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The topic whose token secret to rotate.
        #[arg(long)]
        topic: String,
        /// Seconds to keep running after founding, sealing the secret on.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        hold: u64,
        /// Seconds each broker call may take.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Client configuration reference.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Write a trust file that pins these credentials (no authority needed).
    Pin {
        /// The trust file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Add to an existing trust file (keeps its authorities, pins and denies).
        #[arg(long)]
        append: bool,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        /// Credential files to pin (only their public part is written).
        #[arg(value_name = "CREDENTIAL", required = true)]
        credentials: Vec<PathBuf>,
    },
    /// Add keys to a trust file's deny list (revocation).
    Deny {
        /// The trust file to update.
        #[arg(long, value_name = "FILE")]
        trust: PathBuf,
        /// Deny the key of this credential file. Repeatable.
        #[arg(long, value_name = "FILE")]
        credential: Vec<PathBuf>,
        /// Deny this X25519 public key (base64). Repeatable.
        #[arg(long, value_name = "BASE64")]
        public_key: Vec<String>,
    },
    /// List a trust file's authorities, pinned credentials and denied keys.
    Show {
        /// The trust file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the stored keys (never their bytes).
    List(KeysArgs),
    /// Delete stored keys for good (asks first unless --yes).
    Shred {
        #[command(flatten)]
        args: KeysArgs,
        /// Only keys of epochs that started before this TIME (default: all).
        #[arg(long, value_name = "TIME")]
        before: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct KeysArgs {
    /// The client's e2ee.state.dir.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// The client's credential file (the state is encrypted under its key).
    #[arg(long, value_name = "FILE")]
    credential: PathBuf,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the e2ee.* property reference as markdown (docs/CONFIGURATION.md).
    Docs,
}

#[derive(Subcommand)]
enum AuthorityCommand {
    /// Create a new authority: DIR/authority.key (secret) and DIR/trust.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Generate a key pair and write a credential file signed by the authority.
    Issue(IssueArgs),
    /// Show a credential file's name, topics, validity and fingerprint.
    Show {
        /// The credential file.
        file: PathBuf,
        /// Also check the credential against this trust file.
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
}

#[derive(Args)]
struct IssueArgs {
    /// The authority directory made by `kafka-e2ee authority init`.
    #[arg(long, value_name = "DIR", required_unless_present = "unsigned")]
    authority: Option<PathBuf>,
    /// Issue an unsigned credential, for pinned trust (`kafka-e2ee trust pin`).
    #[arg(long, conflicts_with = "authority")]
    unsigned: bool,
    /// The participant's name (shown in logs and `credential show`).
    #[arg(long)]
    name: String,
    /// Topics it may produce to: `*`, a topic, or a prefix like `orders.*`. Repeatable.
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    produce: Vec<TopicPattern>,
    /// Topics it may consume from: `*`, a topic, or a prefix like `orders.*`. Repeatable.
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    consume: Vec<TopicPattern>,
    /// How long it is valid after --not-before: 90d, 12h, 30m, 45s.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = timefmt::parse_duration)]
    expires: u64,
    /// Start of validity: `now`, 2025-01-31, 2025-01-31T12:00:00Z or Unix ms.
    #[arg(long, value_name = "TIME", default_value = "now")]
    not_before: String,
    /// The credential file to write (secret: it holds the private key).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

fn parse_pattern(s: &str) -> Result<TopicPattern, String> {
    TopicPattern::parse(s).map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a command prints: text for people, JSON for machines. `failed`
/// makes the exit code 1 (e.g. doctor found problems) with output printed.
pub(crate) struct Output {
    text: String,
    json: String,
    failed: bool,
}

/// Progress on stderr, for anything that may take more than a second.
pub(crate) fn progress(msg: &str) {
    eprintln!("... {msg}");
}

fn timeout(secs: u64) -> Duration {
    Duration::from_secs(secs.max(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Authority(AuthorityCommand::Init { out, force }) => authority_init(&out, force),
        Command::Credential(CredentialCommand::Issue(args)) => credential_issue(&args),
        Command::Credential(CredentialCommand::Show { file, trust }) => {
            credential_show(&file, trust.as_deref())
        }
        Command::Trust(TrustCommand::Pin {
            out,
            append,
            force,
            credentials,
        }) => trustcmd::pin(&out, &credentials, append, force),
        Command::Trust(TrustCommand::Deny {
            trust,
            credential,
            public_key,
        }) => trustcmd::deny(&trust, &credential, &public_key),
        Command::Trust(TrustCommand::Show { file }) => trustcmd::show(&file),
        Command::Keys(KeysCommand::List(a)) => keys::list(&a.state_dir, &a.credential, now_ms()),
        Command::Keys(KeysCommand::Shred { args, before, yes }) => {
            let now = now_ms();
            before
                .map(|b| timefmt::parse_instant(&b, now).map_err(|e| format!("--before: {e}")))
                .transpose()
                .and_then(|before| keys::shred(&args.state_dir, &args.credential, before, yes, now))
        }
        Command::Doctor {
            config,
            offline,
            timeout: secs,
        } => doctor::run(&doctor::Options {
            config: &config,
            offline,
            timeout: timeout(secs),
            now: now_ms(),
        }),
        Command::Inspect {
            bootstrap,
            topic,
            config,
            max,
            timeout: secs,
        } => inspect::run(&inspect::Options {
            bootstrap: bootstrap.as_deref(),
            topic: &topic,
            config: config.as_deref(),
            max: max.max(1),
            timeout: timeout(secs),
            now: now_ms(),
        }),
        Command::Keeper {
            config,
            listen,
            timeout: secs,
        } => keeper::run(&keeper::Options {
            config: &config,
            listen: listen.as_deref(),
            timeout: timeout(secs),
        }),
        Command::RotateToken {
            config,
            topic,
            hold,
            timeout: secs,
        } => keeper::rotate(&keeper::RotateOptions {
            config: &config,
            topic: &topic,
            hold: Duration::from_secs(hold),
            timeout: timeout(secs),
        }),
        Command::Config(ConfigCommand::Docs) => {
            let md = settings::markdown();
            Ok(Output {
                json: json::object(&[("markdown", Value::Str(md.clone()))]),
                text: md,
                failed: false,
            })
        }
    };
    match result {
        Ok(out) => {
            if cli.json {
                println!("{}", out.json);
            } else {
                print!("{}", out.text);
            }
            if out.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(msg) => {
            if cli.json {
                println!("{}", json::object(&[("error", Value::Str(msg.clone()))]));
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn authority_init(dir: &Path, force: bool) -> Result<Output, String> {
    let key_path = dir.join(AUTHORITY_KEY_FILE);
    let trust_path = dir.join(TRUST_FILE);
    // Check both before writing either, so a refusal leaves nothing half done.
    if !force {
        for p in [&key_path, &trust_path] {
            files::refuse_existing(p)?;
        }
    }
    files::create_private_dir(dir)?;
    let authority = Authority::generate(&mut rand_core::OsRng);
    let anchor = TrustAnchor::from_authorities(vec![authority.public_key()]);
    files::write(
        &key_path,
        &authority.to_file_bytes(),
        files::Mode::Secret,
        force,
    )?;
    files::write(
        &trust_path,
        &anchor.to_file_bytes(),
        files::Mode::Public,
        force,
    )?;
    let fp = authority.fingerprint();
    let (k, t, d) = (key_path.display(), trust_path.display(), dir.display());
    let text = format!(
        "Created authority {fp}\n\
         \n  {k}   secret signing key: keep it offline, back it up\
         \n  {t}   trust file: distribute to every client\n\
         \nNext:\
         \n  kafka-e2ee credential issue --authority {d} --name orders-writer --produce 'orders.*' --out orders-writer.cred\
         \n  then set on each client: e2ee.credential=<its .cred file>  e2ee.trust={t}\n"
    );
    let json = json::object(&[
        ("fingerprint", Value::Str(fp)),
        ("authority_key", Value::Str(k.to_string())),
        ("trust", Value::Str(t.to_string())),
    ]);
    Ok(Output {
        text,
        json,
        failed: false,
    })
}

fn credential_issue(args: &IssueArgs) -> Result<Output, String> {
    if args.produce.is_empty() && args.consume.is_empty() {
        return Err(
            "give at least one --produce or --consume pattern; a credential without topics \
             is useless"
                .to_owned(),
        );
    }
    let now = now_ms();
    let not_before =
        timefmt::parse_instant(&args.not_before, now).map_err(|e| format!("--not-before: {e}"))?;
    let expires = not_before
        .checked_add(args.expires)
        .ok_or("--expires: too far in the future")?;
    if !args.force {
        files::refuse_existing(&args.out)?;
    }
    let (identity, trust_hint) = match &args.authority {
        None => {
            let identity = Identity::try_generate_unsigned(
                &args.name,
                args.produce.clone(),
                args.consume.clone(),
                not_before,
                expires,
                &mut rand_core::OsRng,
            )
            .map_err(|e| format!("--name/--produce/--consume: {e}"))?;
            (identity, None)
        }
        Some(dir) => {
            let identity = issue_signed(args, dir, not_before, expires)?;
            (identity, Some(dir.join(TRUST_FILE)))
        }
    };
    files::write(
        &args.out,
        &identity.to_file_bytes(),
        files::Mode::Secret,
        args.force,
    )?;
    let mut out = describe(&identity, None, now);
    let next = match &trust_hint {
        Some(t) => format!(
            "Set on the client: e2ee.credential={}  e2ee.trust={}",
            args.out.display(),
            t.display()
        ),
        None => format!(
            "Unsigned: trusted only where pinned. Pin it with: kafka-e2ee trust pin --out trust {}",
            args.out.display()
        ),
    };
    out.text = format!(
        "Wrote {} (secret: it holds the private key; mode 0600)\n{}\n{next}\n",
        args.out.display(),
        out.text,
    );
    Ok(out)
}

fn issue_signed(
    args: &IssueArgs,
    dir: &Path,
    not_before: u64,
    expires: u64,
) -> Result<Identity, String> {
    if !dir.is_dir() {
        return Err(format!(
            "authority directory {} does not exist; create one with \
             `kafka-e2ee authority init --out {}`",
            dir.display(),
            dir.display()
        ));
    }
    let key_path = dir.join(AUTHORITY_KEY_FILE);
    let key_bytes = files::read_secret(&key_path)?;
    let authority = Authority::from_file_bytes(&key_bytes).map_err(|e| e.to_string())?;
    let identity = Identity::try_generate(
        &args.name,
        args.produce.clone(),
        args.consume.clone(),
        not_before,
        expires,
        &authority,
        &mut rand_core::OsRng,
    )
    .map_err(|e| format!("--name/--produce/--consume: {e}"))?;
    // If the authority's trust file is there, make sure it accepts what we issue.
    let trust_path = dir.join(TRUST_FILE);
    if trust_path.exists() {
        let anchor = TrustAnchor::from_file_bytes(&files::read(&trust_path)?)
            .map_err(|e| format!("{}: {e}", trust_path.display()))?;
        if !anchor.authorities().contains(&authority.public_key()) {
            return Err(format!(
                "{} does not list this authority's key; is it the right directory?",
                trust_path.display()
            ));
        }
    }
    Ok(identity)
}

fn credential_show(file: &Path, trust: Option<&Path>) -> Result<Output, String> {
    let identity = Identity::from_file_bytes(&files::read_secret(file)?)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let now = now_ms();
    let verdict = match trust {
        None => None,
        Some(path) => {
            let anchor = TrustAnchor::from_file_bytes(&files::read(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(anchor.verify(identity.credential(), now, DEFAULT_SKEW_MS))
        }
    };
    let out = describe(&identity, verdict.as_ref(), now);
    match verdict {
        Some(Err(e)) => Err(format!("{}\nnot trusted: {e}", out.text.trim_end())),
        _ => Ok(out),
    }
}

/// Everything public about a credential; never the private key.
fn describe(
    identity: &Identity,
    verdict: Option<&Result<(), kafka_e2ee_core::trust::TrustError>>,
    now: u64,
) -> Output {
    let c = identity.credential();
    let list = |p: &[TopicPattern]| -> Vec<String> { p.iter().map(ToString::to_string).collect() };
    let (produce, consume) = (list(c.produce()), list(c.consume()));
    let issuer = if c.is_unsigned() {
        "unsigned (pinned trust only)".to_owned()
    } else {
        fingerprint(&c.issuer())
    };
    let signing_key = match c.signing_key_fingerprint() {
        Some(fp) => fp,
        None => "none (version 1: reissue with `kafka-e2ee credential issue` \
                 for key exchange v2)"
            .to_owned(),
    };
    let status = if now < c.not_before_ms() {
        "not yet valid"
    } else if now >= c.expires_ms() {
        "expired"
    } else {
        "valid"
    };
    let show = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut text = format!(
        "  name:        {}\n  version:     {}\n  fingerprint: {}\n  signing key: {signing_key}\n  \
         produce:     {}\n  consume:     {}\n  \
         not before:  {}\n  expires:     {}\n  status:      {status}\n  issuer:      {issuer}\n",
        c.name(),
        c.version(),
        c.fingerprint(),
        show(&produce),
        show(&consume),
        timefmt::format_instant(c.not_before_ms()),
        timefmt::format_instant(c.expires_ms()),
    );
    let mut fields = vec![
        ("name", Value::Str(c.name().to_owned())),
        ("version", Value::Num(u64::from(c.version()))),
        ("fingerprint", Value::Str(c.fingerprint())),
        (
            "signing_key",
            match c.signing_key_fingerprint() {
                Some(fp) => Value::Str(fp),
                None => Value::Null,
            },
        ),
        ("produce", Value::List(produce)),
        ("consume", Value::List(consume)),
        ("not_before_ms", Value::Num(c.not_before_ms())),
        ("expires_ms", Value::Num(c.expires_ms())),
        ("status", Value::Str(status.to_owned())),
        ("issuer", Value::Str(issuer)),
    ];
    if let Some(v) = verdict {
        fields.push(("trusted", Value::Bool(v.is_ok())));
        if v.is_ok() {
            text.push_str("  trusted:     yes\n");
        }
    }
    Output {
        text,
        json: json::object(&fields),
        failed: false,
    }
}
