//! Settings from flags, environment variables and an optional TOML file.
//!
//! Two phases, as in ripgrep: `Cli` holds what was given (every field optional, so
//! we can tell "not given" from "given"), and `Config::resolve` merges it with the
//! TOML file and the defaults, validates everything, and reports *every* problem at
//! once instead of stopping at the first. Precedence: flag or environment, then the
//! file, then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "mailbeacon",
    version,
    about = "Self-hosted email engagement server: per-recipient open and click tracking"
)]
pub struct Cli {
    #[command(flatten)]
    pub opts: Opts,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage the token signing keys (in the data directory, or in Redis when
    /// Redis is configured).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Copy everything from one store to the other (embedded <-> Redis). Resumable:
    /// run it again after an interruption. Verifies counts at the end.
    Migrate {
        /// The store to copy from.
        #[arg(long, value_enum)]
        from: StoreKind,
        /// The store to copy into.
        #[arg(long, value_enum)]
        to: StoreKind,
    },
    /// The Outlook add-in.
    Addin {
        #[command(subcommand)]
        action: AddinAction,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AddinAction {
    /// Write the add-in's manifests for this deployment (needs an https:// --public-url):
    /// manifest.xml (add-in only manifest, for sideloading and admin deployment) and
    /// manifest.json with its two icons (the unified manifest's app package files).
    Manifest {
        /// Directory to write into [default: ./mailbeacon-addin].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The add-in's id (a GUID); give each deployment its own [default: the project's].
        #[arg(long)]
        id: Option<String>,
    },
}

/// A store `migrate` can read or write. "redis" means the Redis node or Cluster
/// the configuration names; "embedded" the data directory's store.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Redis,
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeysAction {
    /// Add a new signing key and mint with it from now on; old keys keep verifying.
    Rotate,
    /// List key ids and creation times (never the secrets).
    List,
}

#[derive(Args, Debug, Default, Clone)]
pub struct Opts {
    /// TOML file with any of the settings below (snake_case names).
    #[arg(long, env = "MAILBEACON_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "MAILBEACON_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Data directory for the embedded store and the key ring [default: ./data].
    #[arg(long, env = "MAILBEACON_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Base URL written into pixels and links [default: http:// + listen address].
    #[arg(long, env = "MAILBEACON_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Redis URL (single node).
    #[arg(long, env = "MAILBEACON_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed node URLs, comma-separated.
    #[arg(long, env = "MAILBEACON_REDIS_CLUSTER", global = true)]
    pub redis_cluster: Option<String>,
    /// SMTP relay URL for delivery, e.g. smtp://127.0.0.1:25 or smtps://user:pass@host.
    #[arg(long, env = "MAILBEACON_SMTP_URL", global = true)]
    pub smtp_url: Option<String>,
    /// Retention for interaction data on a fresh deployment, in days [default: 90].
    #[arg(long, env = "MAILBEACON_RETENTION_DAYS", global = true)]
    pub retention_days: Option<u32>,
    /// Largest API request body, in bytes [default: 33554432 = 32 MiB].
    #[arg(long, env = "MAILBEACON_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Proxies whose X-Forwarded-For is trusted, comma-separated IPs or CIDRs.
    #[arg(long, env = "MAILBEACON_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// File listing machine networks (security gateways, proxies): lines of `CIDR [label]`.
    #[arg(long, env = "MAILBEACON_MACHINE_NETWORKS", global = true)]
    pub machine_networks: Option<PathBuf>,
    /// Seconds between retention sweeps [default: 60].
    #[arg(long, env = "MAILBEACON_SWEEP_INTERVAL_SECS", global = true)]
    pub sweep_interval_secs: Option<u64>,
    /// PEM certificate chain: serve HTTPS (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1).
    #[arg(long, env = "MAILBEACON_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MAILBEACON_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// A click this many seconds or sooner after SMTP delivery counts as machine activity [default: 3].
    #[arg(long, env = "MAILBEACON_MACHINE_CLICK_SECS", global = true)]
    pub machine_click_secs: Option<u32>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "MAILBEACON_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Largest local spool kept while Redis is unavailable, in bytes [default: 268435456 = 256 MiB].
    #[arg(long, env = "MAILBEACON_SPOOL_MAX_BYTES", global = true)]
    pub spool_max_bytes: Option<u64>,
    /// Auto Capture: how many days back to list emails [default: 3].
    #[arg(long, env = "MAILBEACON_CAPTURE_DAYS", global = true)]
    pub capture_days: Option<u32>,
    /// Auto Capture: most emails listed at once [default: 50].
    #[arg(long, env = "MAILBEACON_CAPTURE_LIMIT", global = true)]
    pub capture_limit: Option<usize>,
    /// Entra sign-in: JWKS as an https:// URL or a file path (unset: Entra tokens are refused).
    #[arg(long, env = "MAILBEACON_ENTRA_JWKS", global = true)]
    pub entra_jwks: Option<String>,
    /// Entra sign-in: accepted audience(s), comma-separated (the add-in's client id / App ID URI).
    #[arg(long, env = "MAILBEACON_ENTRA_AUDIENCE", global = true)]
    pub entra_audience: Option<String>,
    /// Entra sign-in: accepted tenant ids, comma-separated (required with entra_jwks).
    #[arg(long, env = "MAILBEACON_ENTRA_TENANTS", global = true)]
    pub entra_tenants: Option<String>,
    /// Entra sign-in: scope the token must carry in `scp` [default: access_as_user].
    #[arg(long, env = "MAILBEACON_ENTRA_SCOPE", global = true)]
    pub entra_scope: Option<String>,
    /// Auto Capture: PEM file of extra CA certificates trusted for IMAP TLS, in
    /// addition to the public (webpki) roots, e.g. a self-hosted server's private CA.
    #[arg(long, env = "MAILBEACON_IMAP_CA_FILE", global = true)]
    pub imap_ca_file: Option<PathBuf>,
    /// Entra sign-in in the task pane: the add-in's application (client) id, a GUID
    /// (unset: the pane offers no "Sign in with Microsoft").
    #[arg(long, env = "MAILBEACON_ENTRA_CLIENT_ID", global = true)]
    pub entra_client_id: Option<String>,
    /// Entra sign-in in the task pane: the authority MSAL signs in against
    /// [default: https://login.microsoftonline.com/{the one tenant} or …/common].
    #[arg(long, env = "MAILBEACON_ENTRA_AUTHORITY", global = true)]
    pub entra_authority: Option<String>,
    /// Serve `/metrics` on this address only (unset: on the public listener, for admin tokens).
    #[arg(long, env = "MAILBEACON_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<String>,
    /// Seconds a client may take to send a whole request body [default: 30].
    #[arg(long, env = "MAILBEACON_BODY_READ_TIMEOUT_SECS", global = true)]
    pub body_read_timeout_secs: Option<u64>,
    /// Most connections served at once; more wait to be accepted [default: 1024].
    #[arg(long, env = "MAILBEACON_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Bytes of large request bodies (64 KiB and more) handled at once, across
    /// requests; beyond it 503 `busy` [default: 2 × max_body_bytes].
    #[arg(long, env = "MAILBEACON_BODY_BUDGET_BYTES", global = true)]
    pub body_budget_bytes: Option<usize>,
    /// Outbox: copies sent at once by each process [default: 4].
    #[arg(long, env = "MAILBEACON_OUTBOX_CONCURRENCY", global = true)]
    pub outbox_concurrency: Option<usize>,
    /// Outbox: the first retry after a temporary SMTP failure comes within this many seconds, later ones wait longer [default: 60].
    #[arg(long, env = "MAILBEACON_OUTBOX_RETRY_SECS", global = true)]
    pub outbox_retry_secs: Option<u64>,
    /// Outbox: a copy still refused temporarily this many seconds after it was due is failed [default: 259200 = 3 days].
    #[arg(long, env = "MAILBEACON_OUTBOX_GIVE_UP_SECS", global = true)]
    pub outbox_give_up_secs: Option<u64>,
    /// Outbox: seconds after which a copy whose process died is sent again by another [default: 60].
    #[arg(long, env = "MAILBEACON_OUTBOX_LEASE_SECS", global = true)]
    pub outbox_lease_secs: Option<u64>,
    /// Outbound connections made for users (IMAP mailboxes, webhooks) may reach
    /// these networks too, comma-separated CIDRs (e.g. 10.0.0.0/8, fd00::/8)
    /// [default: public addresses only].
    #[arg(long, env = "MAILBEACON_OUTBOUND_ALLOW", global = true)]
    pub outbound_allow: Option<String>,
    /// Replies: seconds between INBOX checks of a watched mailbox whose server
    /// has no IDLE (or with reply_idle off), 1-3600 [default: 30].
    #[arg(long, env = "MAILBEACON_REPLY_POLL_SECS", global = true)]
    pub reply_poll_secs: Option<u64>,
    /// Replies: wait with IMAP IDLE where the server offers it, else poll
    /// [default: true].
    #[arg(long, env = "MAILBEACON_REPLY_IDLE", global = true)]
    pub reply_idle: Option<bool>,
    /// Outside insights: an http(s) URL of a JSON news feed (see
    /// `insights::feed`), read through the outbound rules [default: none].
    #[arg(long, env = "MAILBEACON_INSIGHTS_FEED_URL", global = true)]
    pub insights_feed_url: Option<String>,
    /// Outside insights: seconds between reads of the feed, 10-86400 [default: 900].
    #[arg(long, env = "MAILBEACON_INSIGHTS_FEED_SECS", global = true)]
    pub insights_feed_secs: Option<u64>,
}

/// The TOML file: the same settings as the flags.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileOpts {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    redis_url: Option<String>,
    redis_cluster: Option<String>,
    smtp_url: Option<String>,
    retention_days: Option<u32>,
    max_body_bytes: Option<usize>,
    trusted_proxies: Option<String>,
    machine_networks: Option<PathBuf>,
    sweep_interval_secs: Option<u64>,
    machine_click_secs: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_format: Option<String>,
    spool_max_bytes: Option<u64>,
    capture_days: Option<u32>,
    capture_limit: Option<usize>,
    entra_jwks: Option<String>,
    entra_audience: Option<String>,
    entra_tenants: Option<String>,
    entra_scope: Option<String>,
    imap_ca_file: Option<PathBuf>,
    entra_client_id: Option<String>,
    entra_authority: Option<String>,
    metrics_listen: Option<String>,
    body_read_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    body_budget_bytes: Option<usize>,
    outbox_concurrency: Option<usize>,
    outbox_retry_secs: Option<u64>,
    outbox_give_up_secs: Option<u64>,
    outbox_lease_secs: Option<u64>,
    outbound_allow: Option<String>,
    reply_poll_secs: Option<u64>,
    reply_idle: Option<bool>,
    insights_feed_url: Option<String>,
    insights_feed_secs: Option<u64>,
}

/// Parses a machine-network list: one `CIDR [label]` per line (a bare address
/// is a /32 or /128; the label defaults to the CIDR), `#` starts a comment,
/// blank lines are skipped. Returns every bad line at once.
pub fn machine_networks(text: &str) -> std::result::Result<Vec<(IpNet, String)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (cidr, label) = match line.split_once(char::is_whitespace) {
            Some((c, l)) => (c, l.trim()),
            None => (line, line),
        };
        match IpNet::parse(cidr) {
            Some(net) if label.len() <= 64 => out.push((net, label.to_string())),
            Some(_) => errors.push(format!("line {}: the label is longer than 64 bytes", n + 1)),
            None => errors.push(format!(
                "line {}: {cidr:?} is not an IP address or CIDR",
                n + 1
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

pub use crate::ipnet::IpNet;

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Without a trailing slash.
    pub public_url: String,
    pub redis_url: Option<String>,
    pub redis_cluster: Vec<String>,
    pub smtp_url: Option<String>,
    pub admin_token: Option<String>,
    pub default_retention_days: u32,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// Operator-listed machine networks and their labels (see `machine_networks`).
    pub machine_networks: Vec<(IpNet, String)>,
    pub sweep_interval: Duration,
    pub heuristics: Heuristics,
    /// (certificate, key) PEM paths when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_json: bool,
    /// Bound of the Redis store's local spool (bytes).
    pub spool_max_bytes: u64,
    /// Auto Capture: days listed back, and most emails listed.
    pub capture_days: u32,
    pub capture_limit: usize,
    /// Entra sign-in; `None` when no JWKS is configured.
    pub entra: Option<EntraConfig>,
    /// Auto Capture: extra trusted roots for IMAP TLS (`imap_ca_file`, already
    /// read and checked), on top of the webpki roots. Empty when not set.
    pub imap_ca: Vec<CertificateDer<'static>>,
    /// Where `/metrics` is served alone; `None`: on the public listener, to
    /// admin tokens only.
    pub metrics_listen: Option<SocketAddr>,
    /// The whole request body must arrive within this (else 408).
    pub body_read_timeout: Duration,
    /// Most connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Bytes of large bodies handled at once across requests (else 503 `busy`).
    pub body_budget_bytes: usize,
    /// The outbox (see `outbox`): copies in flight per process, retry backoff
    /// after temporary failures, and the lease that hands a dead process's
    /// copy to another.
    pub outbox: OutboxConfig,
    /// Which addresses outbound connections made for users may reach (public
    /// ones, plus `--outbound-allow`); see `outbound`.
    pub outbound: crate::outbound::OutboundPolicy,
    /// How often live event streams send a heartbeat comment
    /// (`MAILBEACON_SSE_HEARTBEAT_MS`, default 15 s; tests shorten it).
    pub sse_heartbeat: Duration,
    /// Replies: how often a watched INBOX is checked without IDLE.
    pub reply_poll: Duration,
    /// Replies: use IDLE where the server offers it.
    pub reply_idle: bool,
    /// Outside insights: the news feed's URL, if any, and how often it is read.
    pub insights_feed_url: Option<String>,
    pub insights_feed_every: Duration,
}

/// The outbox's settings.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    pub concurrency: usize,
    /// The first retry comes within this (later ones wait longer).
    pub retry_first: Duration,
    /// Counted from when a copy was due: no retry after this.
    pub give_up_after: Duration,
    pub lease: Duration,
}

/// Operator-tunable thresholds of machine-activity classification (`classify`).
#[derive(Debug, Clone, Copy)]
pub struct Heuristics {
    /// A click sooner than this many seconds after the copy was prepared is a
    /// scanner's (security gateways follow links on delivery).
    pub too_fast_s: i64,
}

impl Default for Heuristics {
    fn default() -> Self {
        Heuristics { too_fast_s: 3 }
    }
}

impl Heuristics {
    /// The thresholds for an email delivered as `deliver` says: the too-fast rule
    /// measures from delivery, so it applies only to copies mailbeacon sent itself
    /// ("smtp"); for "return" the delivery time is unknown.
    pub fn for_delivery(&self, deliver: &str) -> Heuristics {
        if deliver == "smtp" {
            *self
        } else {
            Heuristics { too_fast_s: 0 }
        }
    }
}

/// How Entra access tokens are checked (see `entra`).
#[derive(Debug, Clone)]
pub struct EntraConfig {
    /// An https:// URL or a file path.
    pub jwks: String,
    pub audiences: Vec<String>,
    /// The accepted tenants (never empty: required when Entra is on).
    pub tenants: Vec<String>,
    pub scope: String,
    /// What the task pane needs to sign in with MSAL; `None` when no client id
    /// is configured (tokens are still accepted from other clients).
    pub pane: Option<EntraPane>,
}

/// The task pane's MSAL settings, published at `GET /addin/config.json`. None
/// of it is secret: a single-page app's client id and authority are public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraPane {
    /// The add-in's application (client) id.
    pub client_id: String,
    /// E.g. `https://login.microsoftonline.com/common`, without a trailing slash.
    pub authority: String,
    /// The full scope the pane asks for, e.g. `api://…/access_as_user`.
    pub scope: String,
}

/// Returns true if and only if `s` is a GUID (8-4-4-4-12 hexadecimal digits).
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The full scope the pane requests: the App ID URI (the first audience that
/// is a URI, else Entra's default `api://{client id}`) joined with the short
/// scope the server checks in `scp`.
fn pane_scope(client_id: &str, audiences: &[String], scope: &str) -> String {
    let app_id_uri = audiences
        .iter()
        .find(|a| a.contains("://"))
        .map(|a| a.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("api://{client_id}"));
    format!("{app_id_uri}/{scope}")
}

impl Config {
    /// Merges flags/env, the TOML file and defaults; returns every problem found.
    pub fn resolve(opts: &Opts) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let file = match &opts.config {
            Some(p) => read_file(p).unwrap_or_else(|e| {
                problems.push(e);
                FileOpts::default()
            }),
            None => FileOpts::default(),
        };
        let listen_s = opts
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_s.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "listen: {listen_s:?} is not an address like 127.0.0.1:8080"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let data_dir = opts
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let tls = match (
            opts.tls_cert.clone().or(file.tls_cert),
            opts.tls_key.clone().or(file.tls_key),
        ) {
            (Some(c), Some(k)) => {
                for (what, p) in [("tls_cert", &c), ("tls_key", &k)] {
                    if !p.is_file() {
                        problems.push(format!("{what}: {} is not a readable file", p.display()));
                    }
                }
                Some((c, k))
            }
            (None, None) => None,
            _ => {
                problems.push("tls_cert and tls_key go together: set both or neither".into());
                None
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = opts
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("{scheme}://{listen}"));
        let public_url = public_url.trim_end_matches('/').to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://"))
            || public_url.len() <= "https://".len()
            || public_url.contains(['?', '#', ' '])
        {
            problems.push(format!(
                "public_url: {public_url:?} must be an absolute http:// or https:// URL without query or fragment"
            ));
        }
        let redis_url = opts
            .redis_url
            .clone()
            .or(file.redis_url)
            .filter(|s| !s.is_empty());
        let redis_cluster: Vec<String> = opts
            .redis_cluster
            .clone()
            .or(file.redis_cluster)
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if redis_url.is_some() && !redis_cluster.is_empty() {
            problems.push("redis_url and redis_cluster are both set: choose one".into());
        }
        for u in redis_url.iter().chain(&redis_cluster) {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                problems.push(format!(
                    "redis: {u:?} must start with redis:// or rediss://"
                ));
            }
        }
        let smtp_url = opts
            .smtp_url
            .clone()
            .or(file.smtp_url)
            .filter(|s| !s.is_empty());
        if let Some(u) = &smtp_url {
            if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
                problems.push(format!(
                    "smtp_url: {u:?} must start with smtp:// or smtps://"
                ));
            }
        }
        let default_retention_days = opts.retention_days.or(file.retention_days).unwrap_or(90);
        if !(1..=3650).contains(&default_retention_days) {
            problems.push(format!(
                "retention_days: {default_retention_days} must be between 1 and 3650"
            ));
        }
        let max_body_bytes = opts
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(32 * 1024 * 1024);
        if max_body_bytes < 1024 {
            problems.push(format!(
                "max_body_bytes: {max_body_bytes} is too small (at least 1024)"
            ));
        }
        let mut trusted_proxies = Vec::new();
        if let Some(list) = opts.trusted_proxies.clone().or(file.trusted_proxies) {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match IpNet::parse(item) {
                    Some(n) => trusted_proxies.push(n),
                    None => problems.push(format!(
                        "trusted_proxies: {item:?} is not an IP address or CIDR"
                    )),
                }
            }
        }
        let machine_networks = match opts.machine_networks.clone().or(file.machine_networks) {
            None => Vec::new(),
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => match machine_networks(&text) {
                    Ok(list) => list,
                    Err(errs) => {
                        problems.extend(
                            errs.into_iter()
                                .map(|e| format!("machine_networks {}: {e}", path.display())),
                        );
                        Vec::new()
                    }
                },
                Err(e) => {
                    problems.push(format!(
                        "machine_networks: cannot read {}: {e}",
                        path.display()
                    ));
                    Vec::new()
                }
            },
        };
        let sweep = opts
            .sweep_interval_secs
            .or(file.sweep_interval_secs)
            .unwrap_or(60);
        if sweep == 0 {
            problems.push("sweep_interval_secs must be at least 1".into());
        }
        let too_fast = opts
            .machine_click_secs
            .or(file.machine_click_secs)
            .unwrap_or(3);
        let log_format = opts
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            problems.push(format!("log_format: {log_format:?} must be text or json"));
        }
        let spool_max_bytes = opts
            .spool_max_bytes
            .or(file.spool_max_bytes)
            .unwrap_or(256 * 1024 * 1024);
        if spool_max_bytes < 1024 * 1024 {
            problems.push(format!(
                "spool_max_bytes: {spool_max_bytes} is too small (at least 1048576)"
            ));
        }
        let admin_token = std::env::var("MAILBEACON_ADMIN_TOKEN")
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(t) = &admin_token {
            if t.len() < 16 {
                problems.push("MAILBEACON_ADMIN_TOKEN must be at least 16 characters".into());
            }
        }
        let capture_days = opts.capture_days.or(file.capture_days).unwrap_or(3);
        if !(1..=365).contains(&capture_days) {
            problems.push(format!(
                "capture_days: {capture_days} must be between 1 and 365"
            ));
        }
        let capture_limit = opts.capture_limit.or(file.capture_limit).unwrap_or(50);
        if !(1..=500).contains(&capture_limit) {
            problems.push(format!(
                "capture_limit: {capture_limit} must be between 1 and 500"
            ));
        }
        let list = |s: Option<String>| -> Vec<String> {
            s.map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        let entra_jwks = opts
            .entra_jwks
            .clone()
            .or(file.entra_jwks)
            .filter(|s| !s.is_empty());
        let entra_audiences = list(opts.entra_audience.clone().or(file.entra_audience));
        let entra_client_id = opts
            .entra_client_id
            .clone()
            .or(file.entra_client_id)
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty());
        let entra_authority = opts
            .entra_authority
            .clone()
            .or(file.entra_authority)
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty());
        if let Some(id) = &entra_client_id {
            if !is_guid(id) {
                problems.push(format!(
                    "entra_client_id: {id:?} must be the add-in's application (client) id, a GUID"
                ));
            }
        }
        if let Some(a) = &entra_authority {
            if !a.starts_with("https://")
                || a.len() <= "https://".len()
                || a.contains(['?', '#', ' '])
            {
                problems.push(format!(
                    "entra_authority: {a:?} must be an https:// URL without query or fragment"
                ));
            }
        }
        let entra = match entra_jwks {
            Some(jwks) => {
                if entra_audiences.is_empty() {
                    problems.push("entra_audience must be set when entra_jwks is".into());
                }
                if jwks.starts_with("http://") {
                    problems.push("entra_jwks: fetch keys over https://, not http://".into());
                }
                let tenants = list(opts.entra_tenants.clone().or(file.entra_tenants));
                // Tokens of any tenant would let a stranger's directory vouch
                // for an address here ("nOAuth"): the tenants must be named.
                if tenants.is_empty() {
                    problems.push(
                        "entra_tenants must list the accepted tenant ids when entra_jwks is set"
                            .into(),
                    );
                }
                let scope = opts
                    .entra_scope
                    .clone()
                    .or(file.entra_scope)
                    .unwrap_or_else(|| "access_as_user".into());
                if scope.is_empty() || scope.contains([' ', '/']) {
                    problems.push(format!(
                        "entra_scope: {scope:?} must be the scope's short name, e.g. access_as_user"
                    ));
                }
                let pane = entra_client_id.map(|client_id| EntraPane {
                    authority: entra_authority.unwrap_or_else(|| match tenants.as_slice() {
                        [one] => format!("https://login.microsoftonline.com/{one}"),
                        _ => "https://login.microsoftonline.com/common".into(),
                    }),
                    scope: pane_scope(&client_id, &entra_audiences, &scope),
                    client_id,
                });
                Some(EntraConfig {
                    jwks,
                    audiences: entra_audiences,
                    tenants,
                    scope,
                    pane,
                })
            }
            None => {
                if entra_client_id.is_some() || entra_authority.is_some() {
                    problems.push(
                        "entra_client_id and entra_authority need entra_jwks (and entra_audience)"
                            .into(),
                    );
                }
                None
            }
        };
        let imap_ca = match opts.imap_ca_file.clone().or(file.imap_ca_file) {
            Some(p) => read_ca_file(&p).unwrap_or_else(|e| {
                problems.push(format!("imap_ca_file: {e}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let metrics_listen = match opts.metrics_listen.clone().or(file.metrics_listen) {
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    problems.push(format!(
                        "metrics_listen: {a:?} is not an address such as 127.0.0.1:9090"
                    ));
                    None
                }
            },
            None => None,
        };
        let body_read_timeout_secs = opts
            .body_read_timeout_secs
            .or(file.body_read_timeout_secs)
            .unwrap_or(30);
        if body_read_timeout_secs == 0 {
            problems.push("body_read_timeout_secs must be at least 1".into());
        }
        let max_connections = opts
            .max_connections
            .or(file.max_connections)
            .unwrap_or(1024);
        if max_connections == 0 {
            problems.push("max_connections must be at least 1".into());
        }
        let body_budget_bytes = opts
            .body_budget_bytes
            .or(file.body_budget_bytes)
            .unwrap_or(max_body_bytes.saturating_mul(2));
        if body_budget_bytes < max_body_bytes {
            problems.push(format!(
                "body_budget_bytes: {body_budget_bytes} must be at least max_body_bytes ({max_body_bytes})"
            ));
        }
        let outbox_concurrency = opts
            .outbox_concurrency
            .or(file.outbox_concurrency)
            .unwrap_or(4);
        if !(1..=64).contains(&outbox_concurrency) {
            problems.push("outbox_concurrency must be from 1 to 64".into());
        }
        let outbox_retry = opts
            .outbox_retry_secs
            .or(file.outbox_retry_secs)
            .unwrap_or(60);
        if !(1..=3600).contains(&outbox_retry) {
            problems.push("outbox_retry_secs must be from 1 to 3600".into());
        }
        let outbox_give_up = opts
            .outbox_give_up_secs
            .or(file.outbox_give_up_secs)
            .unwrap_or(3 * 86_400);
        if outbox_give_up == 0 || outbox_give_up > 30 * 86_400 {
            problems.push("outbox_give_up_secs must be from 1 to 2592000 (30 days)".into());
        }
        let outbox_lease = opts
            .outbox_lease_secs
            .or(file.outbox_lease_secs)
            .unwrap_or(60);
        if !(3..=3600).contains(&outbox_lease) {
            problems.push("outbox_lease_secs must be from 3 to 3600".into());
        }
        let outbound = crate::outbound::OutboundPolicy::parse(
            &opts
                .outbound_allow
                .clone()
                .or(file.outbound_allow)
                .unwrap_or_default(),
        )
        .unwrap_or_else(|e| {
            problems.push(format!("outbound_allow: {e}"));
            crate::outbound::OutboundPolicy::default()
        });
        let reply_poll_secs = opts.reply_poll_secs.or(file.reply_poll_secs).unwrap_or(30);
        if !(1..=3600).contains(&reply_poll_secs) {
            problems.push(format!(
                "reply_poll_secs: {reply_poll_secs} must be between 1 and 3600"
            ));
        }
        let reply_idle = opts.reply_idle.or(file.reply_idle).unwrap_or(true);
        let insights_feed_url = opts
            .insights_feed_url
            .clone()
            .or(file.insights_feed_url)
            .filter(|u| !u.trim().is_empty());
        if let Some(u) = &insights_feed_url {
            let lower = u.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                problems.push("insights_feed_url must be an http:// or https:// URL".into());
            }
        }
        let insights_feed_secs = opts
            .insights_feed_secs
            .or(file.insights_feed_secs)
            .unwrap_or(900);
        if !(10..=86_400).contains(&insights_feed_secs) {
            problems.push("insights_feed_secs must be from 10 to 86400".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let outbox = OutboxConfig {
            concurrency: outbox_concurrency,
            retry_first: Duration::from_secs(outbox_retry),
            give_up_after: Duration::from_secs(outbox_give_up),
            lease: Duration::from_secs(outbox_lease),
        };
        Ok(Config {
            listen,
            data_dir,
            public_url,
            redis_url,
            redis_cluster,
            smtp_url,
            admin_token,
            default_retention_days,
            max_body_bytes,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            trusted_proxies,
            machine_networks,
            sweep_interval: Duration::from_secs(sweep),
            heuristics: Heuristics {
                too_fast_s: i64::from(too_fast),
            },
            tls,
            log_json: log_format == "json",
            spool_max_bytes,
            capture_days,
            capture_limit,
            entra,
            imap_ca,
            metrics_listen,
            body_read_timeout: Duration::from_secs(body_read_timeout_secs),
            max_connections,
            body_budget_bytes,
            outbox,
            outbound,
            sse_heartbeat: Duration::from_millis(
                std::env::var("MAILBEACON_SSE_HEARTBEAT_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|&ms: &u64| ms > 0)
                    .unwrap_or(15_000),
            ),
            reply_poll: Duration::from_secs(reply_poll_secs),
            reply_idle,
            insights_feed_url,
            insights_feed_every: Duration::from_secs(insights_feed_secs),
        })
    }
}

/// Reads the PEM bundle of `imap_ca_file` (checked at start-up): every
/// certificate must be usable as a trust anchor, and there must be at least one.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown}: no certificate found (a PEM bundle is expected)"
        ));
    }
    let mut store = RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store.add(c.clone()).map_err(|e| {
            format!(
                "{shown}: certificate {} cannot be used as a trusted root: {e}",
                i + 1
            )
        })?;
    }
    Ok(certs)
}

fn read_file(p: &Path) -> Result<FileOpts, String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("config: cannot read {}: {e}", p.display()))?;
    toml::from_str(&text).map_err(|e| format!("config: {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let c = Config::resolve(&Opts::default()).expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.default_retention_days, 90);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let opts = Opts {
            listen: Some("nope".into()),
            public_url: Some("ftp://x".into()),
            retention_days: Some(0),
            trusted_proxies: Some("10.0.0.0/99".into()),
            ..Opts::default()
        };
        let problems = Config::resolve(&opts).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn outbound_allow_list() {
        assert!(Config::resolve(&Opts::default())
            .unwrap()
            .outbound
            .allow
            .is_empty());
        let c = Config::resolve(&Opts {
            outbound_allow: Some("127.0.0.0/8, fd00::/8".into()),
            ..Opts::default()
        })
        .unwrap();
        assert!(c.outbound.permits("127.0.0.1".parse().unwrap()));
        assert!(!c.outbound.permits("10.0.0.1".parse().unwrap()));
        let problems = Config::resolve(&Opts {
            outbound_allow: Some("127.0.0.0/8, nope".into()),
            ..Opts::default()
        })
        .unwrap_err();
        assert!(problems[0].contains("outbound_allow"), "{problems:?}");
    }

    #[test]
    fn machine_network_lists() {
        let list = machine_networks(
            "# security gateways\n\n203.0.113.0/24 mimecast eu  # comment\n2001:db8::/32\n198.51.100.7\n",
        )
        .unwrap();
        let labels: Vec<&str> = list.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["mimecast eu", "2001:db8::/32", "198.51.100.7"]);
        assert!(list[0].0.contains("203.0.113.9".parse().unwrap()));
        assert!(list[2].0.contains("198.51.100.7".parse().unwrap()));
        assert!(!list[2].0.contains("198.51.100.8".parse().unwrap()));
        let errs = machine_networks("10.0.0.0/8 ok\nnot-an-ip x\n10.0.0.0/40\n").unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("line 2:"), "{errs:?}");
        assert!(errs[1].starts_with("line 3:"), "{errs:?}");
    }

    #[test]
    fn imap_ca_file_must_exist_and_hold_a_certificate() {
        let missing = Opts {
            imap_ca_file: Some("/nonexistent/ca.pem".into()),
            ..Opts::default()
        };
        let p = Config::resolve(&missing).unwrap_err();
        assert!(
            p.len() == 1
                && p[0].starts_with("imap_ca_file: ")
                && p[0].contains("/nonexistent/ca.pem"),
            "{p:?}"
        );
        let dir = std::env::temp_dir().join(format!("mb-imap-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let p = Config::resolve(&Opts {
            imap_ca_file: Some(empty),
            ..Opts::default()
        })
        .unwrap_err();
        assert!(p[0].contains("no certificate"), "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entra_pane_settings() {
        let base = Opts {
            entra_jwks: Some("/tmp/jwks.json".into()),
            entra_audience: Some("6A1B0C9E-0000-4000-8000-000000000001".into()),
            entra_client_id: Some("6A1B0C9E-0000-4000-8000-000000000001".into()),
            entra_tenants: Some(
                "11111111-2222-3333-4444-555555555555, 22222222-2222-3333-4444-555555555555".into(),
            ),
            ..Opts::default()
        };
        // Entra without a tenant list is refused (any tenant could sign in).
        let open = Opts {
            entra_tenants: None,
            ..base.clone()
        };
        let p = Config::resolve(&open).unwrap_err();
        assert!(p[0].contains("entra_tenants"), "{p:?}");
        let c = Config::resolve(&base).expect("valid");
        let pane = c.entra.and_then(|e| e.pane).expect("pane settings");
        assert_eq!(pane.client_id, "6a1b0c9e-0000-4000-8000-000000000001");
        assert_eq!(pane.authority, "https://login.microsoftonline.com/common");
        assert_eq!(
            pane.scope,
            "api://6a1b0c9e-0000-4000-8000-000000000001/access_as_user"
        );
        // One tenant: it is the default authority; an App ID URI audience names the scope.
        let one = Opts {
            entra_tenants: Some("11111111-2222-3333-4444-555555555555".into()),
            entra_audience: Some("x, api://mb.example.com/6a1b/".into()),
            ..base.clone()
        };
        let pane = Config::resolve(&one).unwrap().entra.unwrap().pane.unwrap();
        assert_eq!(
            pane.authority,
            "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555"
        );
        assert_eq!(pane.scope, "api://mb.example.com/6a1b/access_as_user");
        // No client id: tokens are checked, the pane offers no Microsoft sign-in.
        let no_id = Opts {
            entra_client_id: None,
            ..base.clone()
        };
        assert!(Config::resolve(&no_id)
            .unwrap()
            .entra
            .unwrap()
            .pane
            .is_none());
        // Every mistake is reported.
        let bad = Opts {
            entra_client_id: Some("not-a-guid".into()),
            entra_authority: Some("http://login.example".into()),
            entra_scope: Some("api://x/access_as_user".into()),
            ..base.clone()
        };
        assert_eq!(Config::resolve(&bad).unwrap_err().len(), 3);
        let orphan = Opts {
            entra_client_id: Some("6a1b0c9e-0000-4000-8000-000000000001".into()),
            ..Opts::default()
        };
        assert_eq!(Config::resolve(&orphan).unwrap_err().len(), 1);
    }

    #[test]
    fn cidr_matching() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        let six = IpNet::parse("2001:db8::/32").unwrap();
        assert!(six.contains("2001:db8::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
