//! `kafka-e2ee`: create an offline authority, issue and inspect credentials.
//! Formats are in docs/TRUST.md; all cryptography is in kafka-e2ee-core.

#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
mod files;
mod json;
mod timefmt;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

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
    about = "End-to-end encryption for Kafka clients: authorities and credentials"
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
    #[arg(long, value_name = "DIR")]
    authority: PathBuf,
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

/// What a command prints on success: text for people, JSON for machines.
struct Output {
    text: String,
    json: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Authority(AuthorityCommand::Init { out, force }) => authority_init(&out, force),
        Command::Credential(CredentialCommand::Issue(args)) => credential_issue(&args),
        Command::Credential(CredentialCommand::Show { file, trust }) => {
            credential_show(&file, trust.as_deref())
        }
    };
    match result {
        Ok(out) => {
            if cli.json {
                println!("{}", out.json);
            } else {
                print!("{}", out.text);
            }
            ExitCode::SUCCESS
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
    Ok(Output { text, json })
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
    let dir = &args.authority;
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
    files::write(
        &args.out,
        &identity.to_file_bytes(),
        files::Mode::Secret,
        args.force,
    )?;
    let mut out = describe(&identity, None, now);
    out.text = format!(
        "Wrote {} (secret: it holds the private key; mode 0600)\n{}\
         \nSet on the client: e2ee.credential={}  e2ee.trust={}\n",
        args.out.display(),
        out.text,
        args.out.display(),
        trust_path.display()
    );
    Ok(out)
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
        "  name:        {}\n  fingerprint: {}\n  produce:     {}\n  consume:     {}\n  \
         not before:  {}\n  expires:     {}\n  status:      {status}\n  issuer:      {issuer}\n",
        c.name(),
        c.fingerprint(),
        show(&produce),
        show(&consume),
        timefmt::format_instant(c.not_before_ms()),
        timefmt::format_instant(c.expires_ms()),
    );
    let mut fields = vec![
        ("name", Value::Str(c.name().to_owned())),
        ("fingerprint", Value::Str(c.fingerprint())),
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
    }
}
