//! Configuration from the environment: the database DSN (DB1–DB3) and the server settings.
//!
//! Everything here is a pure function over an environment lookup (`Fn(&str) -> Option<String>`),
//! so every precedence case is testable without touching the process environment;
//! [`Config::from_env`] is the one place that reads the real one.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cidr::{self, IpRange};
use crate::secret::constant_time_eq;

/// The DSN used when neither `MONOIZE_DATABASE_DSN` nor `DATABASE_URL` is set (DB2).
pub const DEFAULT_DSN: &str = "sqlite://./data/monoize.db";
/// The address the server listens on when `MONOIZE_LISTEN` is unset.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// The cache directory's name beside a file database when `MONOIZE_PLUGIN_CACHE_DIR` is unset.
pub const PLUGIN_CACHE_DIR_NAME: &str = "plugin-cache";

/// Where compiled plugin components are cached (`MONOIZE_PLUGIN_CACHE_DIR`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PluginCacheDir {
    /// `plugin-cache/` beside a file database; no cache for an in-memory one (the default).
    #[default]
    BesideDatabase,
    /// This directory.
    Path(PathBuf),
    /// No cache (`off`): every start compiles the plugins again.
    Off,
}

impl PluginCacheDir {
    /// The directory to cache in for a server on `dsn`, if any.
    pub fn resolve(&self, dsn: &Dsn) -> Option<PathBuf> {
        match self {
            PluginCacheDir::BesideDatabase => {
                let database = dsn.path()?;
                let directory = database.parent().unwrap_or_else(|| Path::new("."));
                Some(directory.join(PLUGIN_CACHE_DIR_NAME))
            }
            PluginCacheDir::Path(path) => Some(path.clone()),
            PluginCacheDir::Off => None,
        }
    }
}
/// The time bound of one plugin call when `MONOIZE_PLUGIN_TIMEOUT_MS` is unset.
pub const DEFAULT_PLUGIN_TIMEOUT_MS: u64 = 50;
/// The memory cap of one plugin instance when `MONOIZE_PLUGIN_MEMORY_MB` is unset.
pub const DEFAULT_PLUGIN_MEMORY_MB: u64 = 64;
/// The largest request body the gateway reads when `MONOIZE_HTTP_BODY_MAX_BYTES` is unset
/// (50 MiB); a larger one is answered `413`.
pub const DEFAULT_HTTP_BODY_MAX_BYTES: u64 = 50 << 20;
/// How long a client may take to send a request's headers, and how long a keep-alive HTTP/1
/// connection may sit idle before its next request, when `MONOIZE_HTTP_HEADER_TIMEOUT_MS` is
/// unset.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_MS: u64 = 30_000;
/// How long a request body may stay silent between two of its pieces when
/// `MONOIZE_HTTP_BODY_TIMEOUT_MS` is unset.
pub const DEFAULT_HTTP_BODY_TIMEOUT_MS: u64 = 30_000;
/// How long connecting to an upstream may take when `MONOIZE_UPSTREAM_CONNECT_TIMEOUT_MS` is
/// unset.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long an upstream may take to start answering (its headers, and a stream's first
/// chunk) when `MONOIZE_UPSTREAM_FIRST_BYTE_TIMEOUT_MS` is unset.
pub const DEFAULT_UPSTREAM_FIRST_BYTE_TIMEOUT_MS: u64 = 120_000;
/// How long an upstream body may stay silent between two chunks when
/// `MONOIZE_UPSTREAM_IDLE_TIMEOUT_MS` is unset.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS: u64 = 120_000;
/// How often an idle upstream connection is probed when `MONOIZE_UPSTREAM_KEEPALIVE_MS` is
/// unset: well under the minutes after which NATs and load balancers forget a silent one.
pub const DEFAULT_UPSTREAM_KEEPALIVE_MS: u64 = 30_000;
/// The most requests in flight on one upstream HTTP/2 connection when
/// `MONOIZE_UPSTREAM_STREAMS_PER_CONNECTION` is unset: under what hosts allow one connection
/// (SETTINGS_MAX_CONCURRENT_STREAMS, commonly 100 to 256).
pub const DEFAULT_UPSTREAM_STREAMS_PER_CONNECTION: u64 = 64;

/// How many served Responses API responses the gateway remembers the channel and user of
/// when `MONOIZE_RESPONSE_AFFINITY_CAPACITY` is unset (~50 bytes each; see
/// [`crate::gateway::affinity`]).
pub const DEFAULT_RESPONSE_AFFINITY_CAPACITY: u64 = 100_000;
/// How many days the owner of a served Responses API response is kept in the database when
/// `MONOIZE_STORED_RESPONSE_RETENTION_DAYS` is unset: OpenAI keeps a stored response 30 days.
pub const DEFAULT_STORED_RESPONSE_RETENTION_DAYS: u64 = 30;
/// How often housekeeping deletes the rows past their retention when
/// `MONOIZE_HOUSEKEEPING_INTERVAL_MS` is unset (see [`crate::db::housekeeping`]).
pub const DEFAULT_HOUSEKEEPING_INTERVAL_MS: u64 = 3_600_000;

/// Consecutive retryable failures that mark a channel unhealthy when
/// `MONOIZE_HEALTH_FAILURE_THRESHOLD` is unset.
pub const DEFAULT_HEALTH_FAILURE_THRESHOLD: u64 = 3;
/// How long an unhealthy channel cools down when `MONOIZE_HEALTH_COOLDOWN_MS` is unset.
pub const DEFAULT_HEALTH_COOLDOWN_MS: u64 = 60_000;
/// How often key uses are written to `api_keys.last_used_at` when
/// `MONOIZE_LAST_USED_FLUSH_MS` is unset.
pub const DEFAULT_LAST_USED_FLUSH_MS: u64 = 1_000;
/// How long in-flight requests may run on after a shutdown signal when
/// `MONOIZE_SHUTDOWN_GRACE_MS` is unset.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// The DSN forms we accept, for error messages.
const SUPPORTED_DSNS: &str =
    "sqlite://relative/path.db, sqlite:///absolute/path.db or sqlite::memory:";

/// Why the configuration was refused. Messages are one line and never repeat a DSN, so they
/// cannot leak a password written into one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A DSN with a scheme other than `sqlite`.
    #[error("unsupported database scheme `{scheme}`: only SQLite is supported ({SUPPORTED_DSNS})")]
    UnsupportedScheme {
        /// The scheme as written (`postgres`), never the rest of the DSN.
        scheme: String,
    },
    /// A DSN that is not `scheme:…` at all.
    #[error("the database DSN is not a URL with a scheme: use {SUPPORTED_DSNS}")]
    MissingScheme,
    /// A `sqlite` DSN that names no file or has an unknown shape.
    #[error("malformed sqlite DSN: {reason} (use {SUPPORTED_DSNS})")]
    MalformedSqlite {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An environment variable whose value cannot be used.
    #[error("{variable} must be {expected}, got `{value}`")]
    InvalidValue {
        /// The variable's name.
        variable: &'static str,
        /// What it must hold.
        expected: &'static str,
        /// The value found (only for variables that hold no secrets).
        value: String,
    },
    /// An upstream proxy URL that cannot be used; the message never repeats it, since it may
    /// hold the proxy's password.
    #[error(
        "MONOIZE_UPSTREAM_PROXY must be an http:// proxy URL (http://[user:password@]host:port): {reason}"
    )]
    InvalidProxy {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A secret too short to use; the message never repeats it.
    #[error(
        "{variable} must be at least {min_chars} characters (a random token, e.g. `openssl rand -hex 32`)"
    )]
    WeakSecret {
        /// The variable's name.
        variable: &'static str,
        /// The fewest characters it may have.
        min_chars: usize,
    },
}

/// The shortest `MONOIZE_METRICS_TOKEN` accepted.
pub const METRICS_TOKEN_MIN_CHARS: usize = 16;

/// The bearer token `GET /metrics` asks for (`MONOIZE_METRICS_TOKEN`). Only its SHA-256 is
/// kept, so neither `Debug` nor a dump of the configuration shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken {
    digest: [u8; 32],
}

impl MetricsToken {
    /// The token whose text is `token`.
    pub fn new(token: &str) -> MetricsToken {
        MetricsToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token, compared in time that does not depend on where the
    /// two differ.
    pub fn admits(&self, presented: &str) -> bool {
        constant_time_eq(&self.digest, &Sha256::digest(presented.as_bytes()))
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MetricsToken(..)")
    }
}

/// The HTTP proxy upstream connections go through (`MONOIZE_UPSTREAM_PROXY`), by `CONNECT`
/// tunnels, except to the hosts of `MONOIZE_UPSTREAM_NO_PROXY` (curl's rules: names with their
/// subdomains, addresses, CIDR ranges, `*`). Its password never prints: `Debug` shows the URL
/// without its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamProxy {
    url: String,
    no_proxy: String,
}

impl UpstreamProxy {
    /// A proxy at `url` (`http://[user:password@]host[:port]`, credentials percent-encoded),
    /// bypassed for the hosts of `no_proxy`.
    pub fn new(url: &str, no_proxy: &str) -> Result<UpstreamProxy, ConfigError> {
        let invalid = |reason| ConfigError::InvalidProxy { reason };
        let url = url.trim();
        let uri: hyper::Uri = url.parse().map_err(|_| invalid("it is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => {
                return Err(invalid(
                    "its scheme must be http (a proxy reached over TLS is not supported)",
                ));
            }
            None => return Err(invalid("it must start with http://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("it names no host"));
        }
        if uri.path() != "/" || uri.query().is_some() {
            return Err(invalid("it must name only the proxy, with no path"));
        }
        // `Uri` takes any digits for a port; a bracketed IPv6 host has colons of its own.
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        if authority.matches('@').count() > 1 {
            return Err(invalid("an @ in its user or password must be written %40"));
        }
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if let Some((_, port)) = host_port.rsplit_once(':')
            && !port.contains(']')
            && port.parse::<u16>().is_err()
        {
            return Err(invalid("its port is not a number from 0 to 65535"));
        }
        Ok(UpstreamProxy {
            url: url.to_owned(),
            no_proxy: no_proxy.trim().to_owned(),
        })
    }

    /// The URL, credentials included: for the upstream connector only.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The hosts reached without the proxy, as configured.
    pub fn no_proxy(&self) -> &str {
        &self.no_proxy
    }

    /// The URL without its credentials, for logs.
    pub fn redacted(&self) -> String {
        let rest = self.url.strip_prefix("http://").unwrap_or(&self.url);
        match rest.rsplit_once('@') {
            Some((_, host)) => format!("http://…@{host}"),
            None => self.url.clone(),
        }
    }
}

impl fmt::Debug for UpstreamProxy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UpstreamProxy")
            .field("url", &self.redacted())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dsn {
    /// A database file; a relative path is relative to the working directory.
    File(PathBuf),
    /// A private in-memory database that lives as long as its `Database` handle.
    Memory,
}

impl Dsn {
    /// Parses a DSN: `sqlite://relative/path.db`, `sqlite:///absolute/path.db`,
    /// `sqlite::memory:`, `sqlite://:memory:`, or any of them with `?mode=memory`. Query
    /// parameters are never part of the path.
    pub fn parse(text: &str) -> Result<Dsn, ConfigError> {
        let text = text.trim();
        let (scheme, rest) = split_scheme(text).ok_or(ConfigError::MissingScheme)?;
        if !scheme.eq_ignore_ascii_case("sqlite") {
            return Err(ConfigError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            });
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        if location == ":memory:" || query_says_memory(query) {
            return Ok(Dsn::Memory);
        }
        let path = location
            .strip_prefix("//")
            .ok_or(ConfigError::MalformedSqlite {
                reason: "expected `sqlite://` followed by a path",
            })?;
        match path {
            "" => Err(ConfigError::MalformedSqlite {
                reason: "no database file is named",
            }),
            ":memory:" => Ok(Dsn::Memory),
            _ => Ok(Dsn::File(PathBuf::from(path))),
        }
    }

    /// The database file, if this is a file DSN.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Dsn::File(path) => Some(path),
            Dsn::Memory => None,
        }
    }

    /// Whether this names an in-memory database.
    pub fn is_memory(&self) -> bool {
        matches!(self, Dsn::Memory)
    }
}

impl fmt::Display for Dsn {
    /// The DSN in its canonical form (safe to log: SQLite DSNs carry no credentials).
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dsn::File(path) => write!(out, "sqlite://{}", path.display()),
            Dsn::Memory => out.write_str("sqlite::memory:"),
        }
    }
}

/// Splits `scheme:rest` when `scheme` is a syntactically valid URL scheme (RFC 3986 §3.1).
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid = starts_with_letter && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some((scheme, rest))
}

fn query_says_memory(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.eq_ignore_ascii_case("mode=memory"))
}

/// The value of `name`, treating an empty or whitespace-only value as unset (DB1).
fn non_empty(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The DSN text by precedence (DB1): `MONOIZE_DATABASE_DSN`, then `DATABASE_URL`, then the
/// default (DB2).
pub fn resolve_dsn_text(env: impl Fn(&str) -> Option<String>) -> String {
    non_empty(&env, "MONOIZE_DATABASE_DSN")
        .or_else(|| non_empty(&env, "DATABASE_URL"))
        .unwrap_or_else(|| DEFAULT_DSN.to_owned())
}

/// The DSN by precedence (DB1, DB2), parsed.
pub fn resolve_dsn(env: impl Fn(&str) -> Option<String>) -> Result<Dsn, ConfigError> {
    Dsn::parse(&resolve_dsn_text(env))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything the host is configured with. Later features add fields here; every field has a
/// default, so an empty environment is a working configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The database (`MONOIZE_DATABASE_DSN`, `DATABASE_URL`).
    pub dsn: Dsn,
    /// The address to listen on (`MONOIZE_LISTEN`), `host:port`.
    pub listen: String,
    /// The log format (`MONOIZE_LOG_FORMAT`: `json` or `text`).
    pub log_format: LogFormat,
    /// A routing plugin to load instead of the default (`MONOIZE_ROUTING_PLUGIN`).
    pub routing_plugin: Option<PathBuf>,
    /// A billing plugin to load instead of the default (`MONOIZE_BILLING_PLUGIN`).
    pub billing_plugin: Option<PathBuf>,
    /// A dashboard plugin to load instead of the default (`MONOIZE_DASHBOARD_PLUGIN`).
    pub dashboard_plugin: Option<PathBuf>,
    /// The time bound of one plugin call in milliseconds (`MONOIZE_PLUGIN_TIMEOUT_MS`).
    pub plugin_timeout_ms: u64,
    /// The memory cap of one plugin instance in MiB (`MONOIZE_PLUGIN_MEMORY_MB`).
    pub plugin_memory_mb: u64,
    /// Where compiled components are cached (`MONOIZE_PLUGIN_CACHE_DIR`; `off` disables it).
    pub plugin_cache_dir: PluginCacheDir,
    /// The largest request body the gateway accepts, in bytes (`MONOIZE_HTTP_BODY_MAX_BYTES`);
    /// larger is `413`.
    pub http_body_max_bytes: u64,
    /// How long a client may take to send a request's headers in ms, counted from when the
    /// connection is ready for them, so it also bounds an idle keep-alive HTTP/1 connection
    /// (`MONOIZE_HTTP_HEADER_TIMEOUT_MS`); past it the connection is closed. A client that
    /// trickles its headers (slowloris) cannot hold connections open.
    pub http_header_timeout_ms: u64,
    /// How long a request body may stay silent between two of its pieces in ms
    /// (`MONOIZE_HTTP_BODY_TIMEOUT_MS`); past it the request is answered `408`. A client that
    /// withholds its body cannot hold a request open.
    pub http_body_timeout_ms: u64,
    /// The upstream connect timeout in ms (`MONOIZE_UPSTREAM_CONNECT_TIMEOUT_MS`).
    pub upstream_connect_timeout_ms: u64,
    /// How long an upstream may take to send its response headers (and a stream its first
    /// chunk) in ms (`MONOIZE_UPSTREAM_FIRST_BYTE_TIMEOUT_MS`); past it the next attempt is tried.
    pub upstream_first_byte_timeout_ms: u64,
    /// How long an upstream body may stay silent between chunks in ms
    /// (`MONOIZE_UPSTREAM_IDLE_TIMEOUT_MS`); past it the response is cut. A streaming client
    /// that takes nothing of what waits for it for as long is treated as gone.
    pub upstream_idle_timeout_ms: u64,
    /// How often an upstream connection is probed, in ms (`MONOIZE_UPSTREAM_KEEPALIVE_MS`):
    /// TCP keep-alive probes start after it is this long idle and repeat at this interval, and
    /// an HTTP/2 connection is pinged as often and dropped from the pool when a ping goes
    /// unanswered for as long, so no request is sent on a connection that died silently.
    pub upstream_keepalive_ms: u64,
    /// The most requests in flight on one upstream HTTP/2 connection
    /// (`MONOIZE_UPSTREAM_STREAMS_PER_CONNECTION`); past it a thread opens another connection
    /// to the host rather than queue behind streams that may last minutes. At most what the
    /// host allows on a connection.
    pub upstream_streams_per_connection: u64,
    /// How many served Responses API responses are remembered, each with the channel that
    /// stored it and the user it was served to (`MONOIZE_RESPONSE_AFFINITY_CAPACITY`), so that a
    /// request continuing one (`previous_response_id`) reaches that channel and no other user.
    pub response_affinity_capacity: u64,
    /// How many days the database keeps the owner and channel of a served Responses API
    /// response (`MONOIZE_STORED_RESPONSE_RETENTION_DAYS`): past it a continuation of the
    /// response is refused as one of a response the gateway never served. At least as long as
    /// the upstreams keep stored responses.
    pub stored_response_retention_days: u64,
    /// How often housekeeping runs (`MONOIZE_HOUSEKEEPING_INTERVAL_MS`): it deletes stored
    /// responses past their retention and expired sessions, and runs once at start.
    pub housekeeping_interval_ms: u64,
    /// A PEM file of certificates trusted as roots for upstream TLS besides the Mozilla roots
    /// (`MONOIZE_UPSTREAM_CA_FILE`): for upstreams behind a private CA.
    pub upstream_ca_file: Option<PathBuf>,
    /// The HTTP proxy upstream connections go through (`MONOIZE_UPSTREAM_PROXY`), and the
    /// hosts that bypass it (`MONOIZE_UPSTREAM_NO_PROXY`); unset, upstreams are reached
    /// directly. The standard `HTTPS_PROXY` and its kin are not read, so the gateway's egress
    /// never changes with a variable exported for something else.
    pub upstream_proxy: Option<UpstreamProxy>,
    /// Peers whose `X-Forwarded-For` is believed (`MONOIZE_TRUSTED_PROXY_CIDRS`, comma
    /// separated addresses or CIDRs); empty: the peer address is the client's.
    pub trusted_proxy_cidrs: Vec<IpRange>,
    /// Consecutive retryable failures that mark a channel unhealthy
    /// (`MONOIZE_HEALTH_FAILURE_THRESHOLD`).
    pub health_failure_threshold: u64,
    /// How long an unhealthy channel cools down, in ms (`MONOIZE_HEALTH_COOLDOWN_MS`); a `429`
    /// uses its `retry-after` instead when it gives one.
    pub health_cooldown_ms: u64,
    /// How often key uses are written to `api_keys.last_used_at`, in ms
    /// (`MONOIZE_LAST_USED_FLUSH_MS`).
    pub last_used_flush_ms: u64,
    /// How long in-flight requests may run on after a shutdown signal, in ms
    /// (`MONOIZE_SHUTDOWN_GRACE_MS`). Streams still open after it are cut and charged for what
    /// they relayed before the process stops.
    pub shutdown_grace_ms: u64,
    /// Whether the dashboard's session cookie is marked `Secure` (`MONOIZE_SESSION_COOKIE_SECURE`,
    /// `true` or `false`): set it when clients reach Monoize over HTTPS (a TLS-terminating proxy
    /// in front), so the browser never sends the session over plain HTTP.
    pub session_cookie_secure: bool,
    /// The bearer token `GET /metrics` asks for (`MONOIZE_METRICS_TOKEN`, at least
    /// [`METRICS_TOKEN_MIN_CHARS`] characters); unset, `/metrics` answers anyone.
    pub metrics_token: Option<MetricsToken>,
    /// How many threads serve connections (`MONOIZE_SERVER_THREADS`, at most
    /// [`MAX_SERVER_THREADS`]); unset, one per core.
    pub server_threads: Option<usize>,
}

impl Config {
    /// The configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from an environment lookup; unset, empty and whitespace-only
    /// variables take their defaults.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let path = |name| non_empty(&env, name).map(PathBuf::from);
        Ok(Config {
            dsn: resolve_dsn(&env)?,
            listen: non_empty(&env, "MONOIZE_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            log_format: log_format(&env)?,
            routing_plugin: path("MONOIZE_ROUTING_PLUGIN"),
            billing_plugin: path("MONOIZE_BILLING_PLUGIN"),
            dashboard_plugin: path("MONOIZE_DASHBOARD_PLUGIN"),
            plugin_timeout_ms: positive(
                &env,
                "MONOIZE_PLUGIN_TIMEOUT_MS",
                DEFAULT_PLUGIN_TIMEOUT_MS,
            )?,
            plugin_memory_mb: plugin_memory_mb(&env)?,
            plugin_cache_dir: match path("MONOIZE_PLUGIN_CACHE_DIR") {
                Some(dir) if dir.as_os_str() == "off" => PluginCacheDir::Off,
                Some(dir) => PluginCacheDir::Path(dir),
                None => PluginCacheDir::BesideDatabase,
            },
            http_body_max_bytes: positive(
                &env,
                "MONOIZE_HTTP_BODY_MAX_BYTES",
                DEFAULT_HTTP_BODY_MAX_BYTES,
            )?,
            http_header_timeout_ms: positive(
                &env,
                "MONOIZE_HTTP_HEADER_TIMEOUT_MS",
                DEFAULT_HTTP_HEADER_TIMEOUT_MS,
            )?,
            http_body_timeout_ms: positive(
                &env,
                "MONOIZE_HTTP_BODY_TIMEOUT_MS",
                DEFAULT_HTTP_BODY_TIMEOUT_MS,
            )?,
            upstream_connect_timeout_ms: positive(
                &env,
                "MONOIZE_UPSTREAM_CONNECT_TIMEOUT_MS",
                DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            )?,
            upstream_first_byte_timeout_ms: positive(
                &env,
                "MONOIZE_UPSTREAM_FIRST_BYTE_TIMEOUT_MS",
                DEFAULT_UPSTREAM_FIRST_BYTE_TIMEOUT_MS,
            )?,
            upstream_idle_timeout_ms: positive(
                &env,
                "MONOIZE_UPSTREAM_IDLE_TIMEOUT_MS",
                DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS,
            )?,
            upstream_keepalive_ms: positive(
                &env,
                "MONOIZE_UPSTREAM_KEEPALIVE_MS",
                DEFAULT_UPSTREAM_KEEPALIVE_MS,
            )?,
            upstream_streams_per_connection: positive(
                &env,
                "MONOIZE_UPSTREAM_STREAMS_PER_CONNECTION",
                DEFAULT_UPSTREAM_STREAMS_PER_CONNECTION,
            )?,
            response_affinity_capacity: positive(
                &env,
                "MONOIZE_RESPONSE_AFFINITY_CAPACITY",
                DEFAULT_RESPONSE_AFFINITY_CAPACITY,
            )?,
            stored_response_retention_days: positive(
                &env,
                "MONOIZE_STORED_RESPONSE_RETENTION_DAYS",
                DEFAULT_STORED_RESPONSE_RETENTION_DAYS,
            )?,
            housekeeping_interval_ms: positive(
                &env,
                "MONOIZE_HOUSEKEEPING_INTERVAL_MS",
                DEFAULT_HOUSEKEEPING_INTERVAL_MS,
            )?,
            upstream_ca_file: path("MONOIZE_UPSTREAM_CA_FILE"),
            upstream_proxy: match non_empty(&env, "MONOIZE_UPSTREAM_PROXY") {
                None => None,
                Some(url) => Some(UpstreamProxy::new(
                    &url,
                    &non_empty(&env, "MONOIZE_UPSTREAM_NO_PROXY").unwrap_or_default(),
                )?),
            },
            trusted_proxy_cidrs: match non_empty(&env, "MONOIZE_TRUSTED_PROXY_CIDRS") {
                None => Vec::new(),
                Some(value) => cidr::parse_list(&value).map_err(|_| ConfigError::InvalidValue {
                    variable: "MONOIZE_TRUSTED_PROXY_CIDRS",
                    expected: "comma-separated IP addresses or CIDR ranges",
                    value,
                })?,
            },
            health_failure_threshold: positive(
                &env,
                "MONOIZE_HEALTH_FAILURE_THRESHOLD",
                DEFAULT_HEALTH_FAILURE_THRESHOLD,
            )?,
            health_cooldown_ms: positive(
                &env,
                "MONOIZE_HEALTH_COOLDOWN_MS",
                DEFAULT_HEALTH_COOLDOWN_MS,
            )?,
            last_used_flush_ms: positive(
                &env,
                "MONOIZE_LAST_USED_FLUSH_MS",
                DEFAULT_LAST_USED_FLUSH_MS,
            )?,
            shutdown_grace_ms: positive(
                &env,
                "MONOIZE_SHUTDOWN_GRACE_MS",
                DEFAULT_SHUTDOWN_GRACE_MS,
            )?,
            session_cookie_secure: flag(&env, "MONOIZE_SESSION_COOKIE_SECURE")?,
            metrics_token: metrics_token(&env)?,
            server_threads: server_threads(&env)?,
        })
    }

    /// The defaults with a private in-memory database (and so no plugin cache on disk): what
    /// tests start from.
    pub fn in_memory() -> Config {
        Config {
            dsn: Dsn::Memory,
            ..Config::defaults()
        }
    }

    /// Every field at its default (the default DSN included).
    pub fn defaults() -> Config {
        Config {
            dsn: Dsn::File(PathBuf::from("./data/monoize.db")),
            listen: DEFAULT_LISTEN.to_owned(),
            log_format: LogFormat::Text,
            routing_plugin: None,
            billing_plugin: None,
            dashboard_plugin: None,
            plugin_timeout_ms: DEFAULT_PLUGIN_TIMEOUT_MS,
            plugin_memory_mb: DEFAULT_PLUGIN_MEMORY_MB,
            plugin_cache_dir: PluginCacheDir::BesideDatabase,
            http_body_max_bytes: DEFAULT_HTTP_BODY_MAX_BYTES,
            http_header_timeout_ms: DEFAULT_HTTP_HEADER_TIMEOUT_MS,
            http_body_timeout_ms: DEFAULT_HTTP_BODY_TIMEOUT_MS,
            upstream_connect_timeout_ms: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            upstream_first_byte_timeout_ms: DEFAULT_UPSTREAM_FIRST_BYTE_TIMEOUT_MS,
            upstream_idle_timeout_ms: DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS,
            upstream_keepalive_ms: DEFAULT_UPSTREAM_KEEPALIVE_MS,
            upstream_streams_per_connection: DEFAULT_UPSTREAM_STREAMS_PER_CONNECTION,
            response_affinity_capacity: DEFAULT_RESPONSE_AFFINITY_CAPACITY,
            stored_response_retention_days: DEFAULT_STORED_RESPONSE_RETENTION_DAYS,
            housekeeping_interval_ms: DEFAULT_HOUSEKEEPING_INTERVAL_MS,
            upstream_ca_file: None,
            upstream_proxy: None,
            trusted_proxy_cidrs: Vec::new(),
            health_failure_threshold: DEFAULT_HEALTH_FAILURE_THRESHOLD,
            health_cooldown_ms: DEFAULT_HEALTH_COOLDOWN_MS,
            last_used_flush_ms: DEFAULT_LAST_USED_FLUSH_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            session_cookie_secure: false,
            metrics_token: None,
            server_threads: None,
        }
    }
}

/// The most memory `MONOIZE_PLUGIN_MEMORY_MB` may give an instance: a 32-bit linear memory
/// (and the pool's reservation for it) holds 4 GiB.
pub const MAX_PLUGIN_MEMORY_MB: u64 = 4096;

fn plugin_memory_mb(env: &impl Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    const VARIABLE: &str = "MONOIZE_PLUGIN_MEMORY_MB";
    match positive(env, VARIABLE, DEFAULT_PLUGIN_MEMORY_MB)? {
        megabytes if megabytes <= MAX_PLUGIN_MEMORY_MB => Ok(megabytes),
        megabytes => Err(ConfigError::InvalidValue {
            variable: VARIABLE,
            expected: "a number of MiB from 1 to 4096",
            value: megabytes.to_string(),
        }),
    }
}

/// The most connection threads `MONOIZE_SERVER_THREADS` may ask for.
pub const MAX_SERVER_THREADS: usize = 256;

fn server_threads(env: &impl Fn(&str) -> Option<String>) -> Result<Option<usize>, ConfigError> {
    const VARIABLE: &str = "MONOIZE_SERVER_THREADS";
    if non_empty(env, VARIABLE).is_none() {
        return Ok(None);
    }
    let threads = positive(env, VARIABLE, 1)?;
    match usize::try_from(threads) {
        Ok(threads) if threads <= MAX_SERVER_THREADS => Ok(Some(threads)),
        _ => Err(ConfigError::InvalidValue {
            variable: VARIABLE,
            expected: "a number of threads from 1 to 256",
            value: threads.to_string(),
        }),
    }
}

fn metrics_token(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<MetricsToken>, ConfigError> {
    let Some(token) = non_empty(env, "MONOIZE_METRICS_TOKEN") else {
        return Ok(None);
    };
    if token.chars().count() < METRICS_TOKEN_MIN_CHARS {
        return Err(ConfigError::WeakSecret {
            variable: "MONOIZE_METRICS_TOKEN",
            min_chars: METRICS_TOKEN_MIN_CHARS,
        });
    }
    Ok(Some(MetricsToken::new(&token)))
}

fn log_format(env: &impl Fn(&str) -> Option<String>) -> Result<LogFormat, ConfigError> {
    let Some(value) = non_empty(env, "MONOIZE_LOG_FORMAT") else {
        return Ok(LogFormat::Text);
    };
    match value.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err(ConfigError::InvalidValue {
            variable: "MONOIZE_LOG_FORMAT",
            expected: "`json` or `text`",
            value,
        }),
    }
}

/// A `true`/`false` variable (also `1`/`0`, `yes`/`no`, any case); unset is `false`.
fn flag(
    env: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<bool, ConfigError> {
    let Some(value) = non_empty(env, variable) else {
        return Ok(false);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            variable,
            expected: "`true` or `false`",
            value,
        }),
    }
}

fn positive(
    env: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(value) = non_empty(env, variable) else {
        return Ok(default);
    };
    match value.parse::<u64>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err(ConfigError::InvalidValue {
            variable,
            expected: "a positive integer",
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_upstream_proxy_comes_from_the_environment_and_never_shows_its_password() {
        let config = Config::from_lookup(env_of(&[])).unwrap();
        assert_eq!(config.upstream_proxy, None);
        let config = Config::from_lookup(env_of(&[
            (
                "MONOIZE_UPSTREAM_PROXY",
                " http://ops:hunter2hunter2@proxy.internal:3128 ",
            ),
            ("MONOIZE_UPSTREAM_NO_PROXY", "localhost, 10.0.0.0/8"),
        ]))
        .unwrap();
        let proxy = config.upstream_proxy.clone().unwrap();
        assert_eq!(proxy.url(), "http://ops:hunter2hunter2@proxy.internal:3128");
        assert_eq!(proxy.no_proxy(), "localhost, 10.0.0.0/8");
        assert_eq!(proxy.redacted(), "http://…@proxy.internal:3128");
        let printed = format!("{config:?}");
        assert!(printed.contains("proxy.internal:3128"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        // Without credentials there is nothing to hide; a bare trailing slash is no path.
        let plain = UpstreamProxy::new("http://proxy.internal:3128/", "").unwrap();
        assert_eq!(plain.redacted(), "http://proxy.internal:3128/");
    }

    #[test]
    fn an_unusable_upstream_proxy_is_refused_without_repeating_it() {
        for (url, reason) in [
            (
                "https://ops:hunter2hunter2@proxy:3128",
                "scheme must be http",
            ),
            (
                "socks5://ops:hunter2hunter2@proxy:1080",
                "scheme must be http",
            ),
            ("ops:hunter2hunter2@proxy:3128", "must start with http://"),
            ("proxy.internal:3128", "must start with http://"),
            ("http://ops:hunter2hunter2@proxy:3128/path", "no path"),
            ("http://ops:hunter2hunter2@proxy:3128/?x=1", "no path"),
            (
                "http://ops:hunter2hunter2@proxy:99999",
                "port is not a number",
            ),
            ("http://ops:hunter2hunter2@proxy:", "port is not a number"),
            ("http://ops:hunter2 hunter2@proxy:3128", "not a URL"),
            ("http://ops:hunter2@hunter2@proxy:3128", "written %40"),
        ] {
            let error = Config::from_lookup(env_of(&[("MONOIZE_UPSTREAM_PROXY", url)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("MONOIZE_UPSTREAM_PROXY"), "{url}: {error}");
            assert!(error.contains(reason), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn gateway_limits_and_timeouts_come_from_the_environment() {
        let config = Config::from_lookup(env_of(&[])).unwrap();
        assert_eq!(config.http_body_max_bytes, 50 * 1024 * 1024);
        assert_eq!(config.http_header_timeout_ms, 30_000);
        assert_eq!(config.http_body_timeout_ms, 30_000);
        assert_eq!(
            config.upstream_connect_timeout_ms,
            DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS
        );
        assert!(config.trusted_proxy_cidrs.is_empty());
        assert_eq!(config.upstream_ca_file, None);
        assert_eq!(
            config.response_affinity_capacity,
            DEFAULT_RESPONSE_AFFINITY_CAPACITY
        );
        assert_eq!(
            (
                config.stored_response_retention_days,
                config.housekeeping_interval_ms
            ),
            (30, 3_600_000)
        );
        let config = Config::from_lookup(env_of(&[
            ("MONOIZE_UPSTREAM_CA_FILE", "/etc/monoize/upstream-ca.pem"),
            ("MONOIZE_HTTP_BODY_MAX_BYTES", "1024"),
            ("MONOIZE_HTTP_HEADER_TIMEOUT_MS", "4"),
            ("MONOIZE_HTTP_BODY_TIMEOUT_MS", "8"),
            ("MONOIZE_UPSTREAM_CONNECT_TIMEOUT_MS", "5"),
            ("MONOIZE_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "6"),
            ("MONOIZE_UPSTREAM_IDLE_TIMEOUT_MS", "7"),
            ("MONOIZE_UPSTREAM_KEEPALIVE_MS", "9"),
            ("MONOIZE_UPSTREAM_STREAMS_PER_CONNECTION", "3"),
            ("MONOIZE_RESPONSE_AFFINITY_CAPACITY", "11"),
            ("MONOIZE_STORED_RESPONSE_RETENTION_DAYS", "90"),
            ("MONOIZE_HOUSEKEEPING_INTERVAL_MS", "60000"),
            ("MONOIZE_TRUSTED_PROXY_CIDRS", "10.0.0.0/8, 127.0.0.1"),
        ]))
        .unwrap();
        assert_eq!(config.response_affinity_capacity, 11);
        assert_eq!(config.stored_response_retention_days, 90);
        assert_eq!(config.housekeeping_interval_ms, 60_000);
        for (variable, value) in [
            ("MONOIZE_STORED_RESPONSE_RETENTION_DAYS", "0"),
            ("MONOIZE_HOUSEKEEPING_INTERVAL_MS", "-5"),
        ] {
            let error = Config::from_lookup(env_of(&[(variable, value)])).unwrap_err();
            assert!(error.to_string().contains(variable), "{error}");
        }
        assert_eq!(config.http_body_max_bytes, 1024);
        assert_eq!(config.http_header_timeout_ms, 4);
        assert_eq!(config.http_body_timeout_ms, 8);
        assert_eq!(
            (
                config.upstream_connect_timeout_ms,
                config.upstream_first_byte_timeout_ms,
                config.upstream_idle_timeout_ms,
                config.upstream_keepalive_ms,
                config.upstream_streams_per_connection
            ),
            (5, 6, 7, 9, 3)
        );
        assert_eq!(config.trusted_proxy_cidrs.len(), 2);
        assert_eq!(
            config.upstream_ca_file.as_deref(),
            Some(Path::new("/etc/monoize/upstream-ca.pem"))
        );
        assert_eq!(
            (
                config.health_failure_threshold,
                config.health_cooldown_ms,
                config.last_used_flush_ms
            ),
            (3, 60_000, 1_000),
            "defaults"
        );
        let config = Config::from_lookup(env_of(&[
            ("MONOIZE_HEALTH_FAILURE_THRESHOLD", "5"),
            ("MONOIZE_HEALTH_COOLDOWN_MS", "250"),
            ("MONOIZE_LAST_USED_FLUSH_MS", "20"),
        ]))
        .unwrap();
        assert_eq!(
            (
                config.health_failure_threshold,
                config.health_cooldown_ms,
                config.last_used_flush_ms
            ),
            (5, 250, 20)
        );
        assert!(!config.session_cookie_secure, "off unless asked");
        assert_eq!(config.server_threads, None, "one per core unless asked");
        for (value, threads) in [("1", Some(1)), ("4", Some(4)), ("256", Some(256))] {
            let config = Config::from_lookup(env_of(&[("MONOIZE_SERVER_THREADS", value)])).unwrap();
            assert_eq!(config.server_threads, threads, "{value}");
        }
        for value in ["0", "-1", "257", "two"] {
            let error = Config::from_lookup(env_of(&[("MONOIZE_SERVER_THREADS", value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("MONOIZE_SERVER_THREADS"), "{value}: {error}");
        }
        for (value, secure) in [
            ("true", true),
            ("YES", true),
            ("0", false),
            ("false", false),
        ] {
            let config =
                Config::from_lookup(env_of(&[("MONOIZE_SESSION_COOKIE_SECURE", value)])).unwrap();
            assert_eq!(config.session_cookie_secure, secure, "{value}");
        }
        for (variable, value) in [
            ("MONOIZE_SESSION_COOKIE_SECURE", "maybe"),
            ("MONOIZE_HTTP_BODY_MAX_BYTES", "0"),
            ("MONOIZE_HTTP_BODY_MAX_BYTES", "lots"),
            ("MONOIZE_TRUSTED_PROXY_CIDRS", "10.0.0.0/99"),
            ("MONOIZE_HEALTH_FAILURE_THRESHOLD", "0"),
            ("MONOIZE_HEALTH_COOLDOWN_MS", "soon"),
            ("MONOIZE_LAST_USED_FLUSH_MS", "-1"),
        ] {
            assert!(
                matches!(
                    Config::from_lookup(env_of(&[(variable, value)])),
                    Err(ConfigError::InvalidValue { .. })
                ),
                "{variable}={value}"
            );
        }
    }

    #[test]
    fn the_metrics_token_is_kept_hashed_and_refused_when_short() {
        let token = "a-metrics-token-of-some-length";
        let config = Config::from_lookup(env_of(&[("MONOIZE_METRICS_TOKEN", token)])).unwrap();
        let kept = config.metrics_token.clone().unwrap();
        assert!(kept.admits(token));
        assert!(!kept.admits("a-metrics-token-of-some-lengtH") && !kept.admits(""));
        assert!(
            !format!("{config:?}").contains(token),
            "Debug shows no token"
        );
        assert_eq!(
            Config::from_lookup(env_of(&[])).unwrap().metrics_token,
            None
        );
        let short = "fifteen-chars!!";
        let refused = Config::from_lookup(env_of(&[("MONOIZE_METRICS_TOKEN", short)])).unwrap_err();
        assert!(matches!(refused, ConfigError::WeakSecret { .. }));
        let message = refused.to_string();
        assert!(
            message.contains("MONOIZE_METRICS_TOKEN") && !message.contains(short),
            "{message}"
        );
    }

    #[test]
    fn db1_dsn_env_takes_precedence_over_database_url() {
        let env = env_of(&[
            ("MONOIZE_DATABASE_DSN", "sqlite://first.db"),
            ("DATABASE_URL", "sqlite://second.db"),
        ]);
        assert_eq!(resolve_dsn_text(env), "sqlite://first.db");
    }

    #[test]
    fn db1_database_url_is_used_when_dsn_env_is_unset() {
        let env = env_of(&[("DATABASE_URL", "sqlite://second.db")]);
        assert_eq!(resolve_dsn_text(env), "sqlite://second.db");
    }

    #[test]
    fn db1_empty_dsn_env_counts_as_unset() {
        let env = env_of(&[
            ("MONOIZE_DATABASE_DSN", ""),
            ("DATABASE_URL", "sqlite://second.db"),
        ]);
        assert_eq!(resolve_dsn_text(env), "sqlite://second.db");
    }

    #[test]
    fn db1_whitespace_only_dsn_env_counts_as_unset() {
        let env = env_of(&[
            ("MONOIZE_DATABASE_DSN", " \t\n"),
            ("DATABASE_URL", "sqlite://second.db"),
        ]);
        assert_eq!(resolve_dsn_text(env), "sqlite://second.db");
    }

    #[test]
    fn db1_empty_and_whitespace_database_url_fall_back_to_default() {
        for blank in ["", "   "] {
            let env = env_of(&[("MONOIZE_DATABASE_DSN", blank), ("DATABASE_URL", blank)]);
            assert_eq!(resolve_dsn_text(env), DEFAULT_DSN, "{blank:?}");
        }
    }

    #[test]
    fn db2_default_dsn_when_nothing_is_set() {
        assert_eq!(resolve_dsn_text(env_of(&[])), "sqlite://./data/monoize.db");
        assert_eq!(
            resolve_dsn(env_of(&[])),
            Ok(Dsn::File(PathBuf::from("./data/monoize.db")))
        );
        assert_eq!(
            Config::from_lookup(env_of(&[])).map(|c| c.dsn),
            Ok(Config::defaults().dsn)
        );
    }

    #[test]
    fn db3_file_dsn_forms_parse_to_paths() {
        for (text, path) in [
            ("sqlite://relative/path.db", "relative/path.db"),
            ("sqlite:///absolute/path.db", "/absolute/path.db"),
            ("sqlite://./data/monoize.db", "./data/monoize.db"),
            ("sqlite://data.db?cache=private&busy=5", "data.db"),
            ("  SQLite://padded.db  ", "padded.db"),
        ] {
            assert_eq!(
                Dsn::parse(text),
                Ok(Dsn::File(PathBuf::from(path))),
                "{text}"
            );
        }
    }

    #[test]
    fn db3_memory_dsn_forms_are_memory() {
        for text in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://file.db?mode=memory",
            "sqlite://x.db?cache=shared&mode=memory",
            "sqlite::memory:?cache=shared",
        ] {
            assert_eq!(Dsn::parse(text), Ok(Dsn::Memory), "{text}");
        }
    }

    #[test]
    fn db3_sqlite_dsn_without_a_file_is_malformed() {
        for text in ["sqlite://", "sqlite:relative.db", "sqlite:"] {
            assert!(
                matches!(Dsn::parse(text), Err(ConfigError::MalformedSqlite { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn db1_other_schemes_are_refused_by_name_without_credentials() {
        let error = Dsn::parse("postgres://user:secret@host/db").unwrap_err();
        assert_eq!(
            error,
            ConfigError::UnsupportedScheme {
                scheme: "postgres".to_owned()
            }
        );
        let message = error.to_string();
        assert!(message.contains("`postgres`"), "{message}");
        assert!(message.contains("sqlite://"), "{message}");
        assert!(
            !message.contains("secret") && !message.contains("user"),
            "{message}"
        );
        assert!(!message.contains('\n'));
        let mysql = Dsn::parse("mysql://root:hunter2@db:3306/x")
            .unwrap_err()
            .to_string();
        assert!(
            mysql.contains("`mysql`") && !mysql.contains("hunter2"),
            "{mysql}"
        );
    }

    #[test]
    fn db1_garbage_dsn_is_refused_without_echoing_it() {
        for garbage in ["garbage", "/just/a/path.db", "://nothing", "1abc:xyz"] {
            let message = Dsn::parse(garbage).unwrap_err().to_string();
            assert!(!message.contains(garbage), "{message}");
        }
    }

    #[test]
    fn db1_config_refuses_postgres_dsn_from_env() {
        let env = env_of(&[("MONOIZE_DATABASE_DSN", "postgres://user:secret@db/x")]);
        let message = Config::from_lookup(env).unwrap_err().to_string();
        assert!(
            message.contains("postgres") && !message.contains("secret"),
            "{message}"
        );
    }

    #[test]
    fn dsn_display_is_canonical() {
        assert_eq!(Dsn::Memory.to_string(), "sqlite::memory:");
        assert_eq!(
            Dsn::File(PathBuf::from("/a/b.db")).to_string(),
            "sqlite:///a/b.db"
        );
    }

    #[test]
    fn server_settings_have_defaults() {
        let config = Config::from_lookup(env_of(&[])).unwrap();
        assert_eq!(config, Config::defaults());
        assert_eq!(config.listen, "0.0.0.0:8080");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.plugin_timeout_ms, 50);
        assert_eq!(config.plugin_memory_mb, 64);
        assert_eq!(
            config.plugin_cache_dir.resolve(&config.dsn),
            Some(PathBuf::from("./data/plugin-cache"))
        );
        assert_eq!(
            Config::in_memory().plugin_cache_dir.resolve(&Dsn::Memory),
            None
        );
        assert_eq!(config.routing_plugin, None);
    }

    #[test]
    fn server_settings_are_read_from_env() {
        let env = env_of(&[
            ("MONOIZE_LISTEN", "127.0.0.1:9000"),
            ("MONOIZE_LOG_FORMAT", "JSON"),
            ("MONOIZE_ROUTING_PLUGIN", "/p/router.wasm"),
            ("MONOIZE_BILLING_PLUGIN", "/p/billing.wasm"),
            ("MONOIZE_DASHBOARD_PLUGIN", "/p/dashboard.wasm"),
            ("MONOIZE_PLUGIN_TIMEOUT_MS", "250"),
            ("MONOIZE_PLUGIN_MEMORY_MB", "128"),
            ("MONOIZE_PLUGIN_CACHE_DIR", "/var/cache/monoize"),
        ]);
        let config = Config::from_lookup(env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.routing_plugin, Some(PathBuf::from("/p/router.wasm")));
        assert_eq!(
            config.billing_plugin,
            Some(PathBuf::from("/p/billing.wasm"))
        );
        assert_eq!(
            config.dashboard_plugin,
            Some(PathBuf::from("/p/dashboard.wasm"))
        );
        assert_eq!(config.plugin_timeout_ms, 250);
        assert_eq!(config.plugin_memory_mb, 128);
        assert_eq!(
            config.plugin_cache_dir,
            PluginCacheDir::Path(PathBuf::from("/var/cache/monoize"))
        );
        let off = Config::from_lookup(env_of(&[("MONOIZE_PLUGIN_CACHE_DIR", "off")])).unwrap();
        assert_eq!(off.plugin_cache_dir.resolve(&off.dsn), None);
    }

    #[test]
    fn invalid_numbers_name_their_variable() {
        for (variable, value) in [
            ("MONOIZE_PLUGIN_TIMEOUT_MS", "fast"),
            ("MONOIZE_PLUGIN_TIMEOUT_MS", "0"),
            ("MONOIZE_PLUGIN_MEMORY_MB", "-1"),
            ("MONOIZE_PLUGIN_MEMORY_MB", "1.5"),
            ("MONOIZE_PLUGIN_MEMORY_MB", "4097"),
        ] {
            let message = Config::from_lookup(env_of(&[(variable, value)]))
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(variable), "{message}");
        }
    }

    #[test]
    fn unknown_log_format_is_refused() {
        let message = Config::from_lookup(env_of(&[("MONOIZE_LOG_FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(message.contains("MONOIZE_LOG_FORMAT"), "{message}");
    }
}
