//! Layered configuration (PROTOCOL §9): `config/default.toml` (or the copy built into the
//! binary when the file is absent), then the file named by `STARSYNC_CONFIG`, then environment
//! variables. The result is an immutable [`Settings`] value passed to whoever needs it: no
//! global mutable configuration.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The defaults shipped with the source, used when `config/default.toml` is not on disk.
const BUILTIN_DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    /// A key of a configuration file that is unknown, of the wrong type or out of its allowed
    /// values: names the file and the dotted key, and says what is allowed.
    #[error("configuration file {file}: {key}: {message}")]
    Key {
        file: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var}={value:?} is invalid: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub sync: SyncSettings,
    pub conflicts: ConflictSettings,
    /// `[scopes]` (PROTOCOL §10). Absent: one shared data set, every node sees everything,
    /// and nothing of the scope machinery runs.
    #[serde(default)]
    pub scopes: Option<ScopeSettings>,
}

/// `[scopes] field = "tenant_id"`: the field of `data` that holds an entity's scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSettings {
    pub field: String,
}

/// `scope = "global"` on a type: every node receives it; only the admin and `*` nodes write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeScope {
    Global,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub open_registration: bool,
    pub max_body_bytes: usize,
    pub max_packet_bytes: usize,
    /// Largest entity `data` (bytes of JSON text) the server accepts from a node or an admin.
    #[serde(default = "default_max_entity_bytes")]
    pub max_entity_bytes: usize,
    /// Most decompressed bytes in one packet the server builds (answers and exported files);
    /// 0 = half of `max_packet_bytes`. Use [`Settings::answer_budget`].
    #[serde(default)]
    pub max_answer_bytes: usize,
    /// Memory that exchange bodies, decoded packets and answers may hold at once (bytes).
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: usize,
    pub workers: usize,
    /// Seconds a request body may take before it must keep up with `body_min_bytes_per_sec`:
    /// a body that stalls or trickles is answered 408 `request_timeout` and its connection is
    /// freed, so slow clients cannot hold connections (and file descriptors) forever.
    pub body_timeout_secs: u64,
    /// The slowest upload kept after the first `body_timeout_secs`: the body must arrive
    /// within `body_timeout_secs + bytes received / body_min_bytes_per_sec` seconds.
    pub body_min_bytes_per_sec: u64,
    /// Most open client connections (all workers together); more wait in the listen backlog.
    /// Lowered at start to what the open-file limit allows.
    pub max_connections: usize,
    /// Most live-notification streams (`GET /api/sync/events`) open at once; one more is
    /// answered 503 `too_many_streams`. Each costs a task and a few hundred bytes, no polling.
    #[serde(default = "default_max_event_streams")]
    pub max_event_streams: usize,
    /// Seconds between the comment lines that keep a quiet event stream open through proxies
    /// (PROTOCOL §12 says 25). Also how soon a client that vanished without closing its
    /// connection is noticed (a write fails) and its place in `max_event_streams` freed.
    #[serde(default = "default_event_keepalive_secs")]
    pub event_keepalive_secs: u64,
    /// PEM certificate chain (leaf first) for HTTPS; empty: plain HTTP. Set with `tls_key`.
    #[serde(default)]
    pub tls_cert: String,
    /// PEM private key of `tls_cert`. Both files are read again on SIGHUP.
    #[serde(default)]
    pub tls_key: String,
    /// `GET /metrics` without the admin token, for a scraper on a private network that should
    /// not hold the token that manages every node.
    #[serde(default)]
    pub metrics_open: bool,
    /// `text` for people, `json` for a log collector: one JSON object per line.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// How log lines are written (`server.log_format`, `STARSYNC_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and `span` with the `request_id` on every line logged while handling a request.
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

fn default_max_entity_bytes() -> usize {
    8 * 1024 * 1024
}

fn default_max_event_streams() -> usize {
    10_000
}

fn default_event_keepalive_secs() -> u64 {
    25
}

fn default_max_inflight_bytes() -> usize {
    384 * 1024 * 1024
}

/// Room an answer keeps beside its largest entity: the packet envelope and one change's other
/// fields (ids, timestamps, operation) take well under this, so an entity of
/// `max_entity_bytes` always fits in an answer alone.
pub const ANSWER_HEADROOM_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: u32,
    pub wal_autocheckpoint: u32,
    /// Group commit (docs/design.md): most milliseconds a batch of writes stays open before
    /// its commit while more writers are queued (a lone write commits at once).
    #[serde(default = "default_group_commit_max_ms")]
    pub group_commit_max_ms: u64,
}

fn default_group_commit_max_ms() -> u64 {
    crate::store::group::GroupLimits::default()
        .max_open
        .as_millis() as u64
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    pub batch_size: usize,
    pub schema_version: String,
    pub packet_timeout: u64,
    pub max_retries: u32,
    /// How far (seconds) a change's `updated_at` may be ahead of the server's clock; later
    /// ones are rejected per change (`invalid_updated_at`), so a wrong clock cannot win
    /// `timestamp_wins` forever.
    pub max_clock_skew_secs: u64,
}

/// Conflict strategies of PROTOCOL §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    ServerWins,
    TimestampWins,
    ClientWins,
    Manual,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::ServerWins => "server_wins",
            Strategy::TimestampWins => "timestamp_wins",
            Strategy::ClientWins => "client_wins",
            Strategy::Manual => "manual",
        }
    }

    /// The same strategy in the protocol's vocabulary (which adds `delete_wins`, never
    /// configured: the server applies it to deletes on its own).
    pub fn wire(self) -> starsync_protocol::Strategy {
        match self {
            Strategy::ServerWins => starsync_protocol::Strategy::ServerWins,
            Strategy::TimestampWins => starsync_protocol::Strategy::TimestampWins,
            Strategy::ClientWins => starsync_protocol::Strategy::ClientWins,
            Strategy::Manual => starsync_protocol::Strategy::Manual,
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "server_wins" => Some(Strategy::ServerWins),
            "timestamp_wins" => Some(Strategy::TimestampWins),
            "client_wins" => Some(Strategy::ClientWins),
            "manual" => Some(Strategy::Manual),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictSettings {
    pub default: Strategy,
    #[serde(default, deserialize_with = "type_rules")]
    pub types: BTreeMap<String, TypeRules>,
}

/// The `[conflicts.types.<Type>]` tables, whose names must be entity type names: checked while
/// reading the file, so the error names the file like any other bad key.
fn type_rules<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, TypeRules>, D::Error> {
    let types = BTreeMap::<String, TypeRules>::deserialize(d)?;
    for name in types.keys() {
        if let Err(e) = starsync_protocol::EntityType::parse(name) {
            return Err(serde::de::Error::custom(format!(
                "[conflicts.types.{name}] does not name an entity type: {}",
                e.message
            )));
        }
    }
    Ok(types)
}

/// Rules for one entity type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRules {
    /// Strategy for this type; the default strategy when absent.
    pub strategy: Option<Strategy>,
    /// Field → value that survives any conflict ("done wins").
    #[serde(default)]
    pub priority_values: BTreeMap<String, serde_json::Value>,
    /// Server-only type: node changes are rejected per change.
    #[serde(default)]
    pub immutable: bool,
    /// An UPDATE revives a deleted entity instead of losing to the tombstone.
    #[serde(default)]
    pub resurrect: bool,
    /// The field holding this type's scope, instead of `[scopes] field`.
    #[serde(default)]
    pub scope_field: Option<String>,
    /// `"global"`: reference data shared by every node (PROTOCOL §10).
    #[serde(default)]
    pub scope: Option<TypeScope>,
}

impl ConflictSettings {
    /// The rules for a type (an empty rule set when the type is not configured).
    pub fn rules(&self, entity_type: &str) -> Option<&TypeRules> {
        self.types.get(entity_type)
    }

    pub fn strategy_for(&self, entity_type: &str) -> Strategy {
        self.rules(entity_type)
            .and_then(|r| r.strategy)
            .unwrap_or(self.default)
    }
}

impl Settings {
    /// Loads the layers from the real process environment.
    pub fn load() -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(Path::new("config/default.toml"), &env)
    }

    /// Loads the layers with an explicit defaults path and environment (testable, no globals).
    pub fn load_from(
        defaults_path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let (base_text, base_name) = match std::fs::read_to_string(defaults_path) {
            Ok(t) => (t, defaults_path.display().to_string()),
            Err(_) => (
                BUILTIN_DEFAULTS.to_string(),
                "built-in defaults".to_string(),
            ),
        };
        let base = parse_toml(&base_text, &base_name)?;
        let mut merged = base.clone();
        let mut layers = vec![(base_name, base)];
        if let Some(path) = env.get("STARSYNC_CONFIG").filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: PathBuf::from(path),
                source,
            })?;
            let overlay = parse_toml(&text, path)?;
            merge(&mut merged, overlay.clone());
            layers.push((path.clone(), overlay));
        }
        let mut settings = deserialize_layers(merged, &layers)?;
        settings.apply_env(env)?;
        settings.validate()?;
        Ok(settings)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        fn get<'a>(env: &'a HashMap<String, String>, k: &str) -> Option<&'a String> {
            env.get(k)
        }
        fn num<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                var,
                value: v.to_string(),
                message: "expected a whole number".into(),
            })
        }
        if let Some(v) = get(env, "STARSYNC_BIND") {
            self.server.bind = v.clone();
        }
        if let Some(v) = get(env, "STARSYNC_DATA_DIR") {
            self.server.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get(env, "DATABASE_URL") {
            self.database.url = v.clone();
        }
        if let Some(v) = get(env, "STARSYNC_ADMIN_TOKEN") {
            self.server.admin_token = v.clone();
        }
        fn boolean(var: &'static str, v: &str) -> Result<bool, ConfigError> {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                _ => Err(ConfigError::Env {
                    var,
                    value: v.to_string(),
                    message: "expected true or false".into(),
                }),
            }
        }
        if let Some(v) = get(env, "STARSYNC_OPEN_REGISTRATION") {
            self.server.open_registration = boolean("STARSYNC_OPEN_REGISTRATION", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_METRICS_OPEN") {
            self.server.metrics_open = boolean("STARSYNC_METRICS_OPEN", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_LOG_FORMAT") {
            self.server.log_format = LogFormat::parse(v).ok_or(ConfigError::Env {
                var: "STARSYNC_LOG_FORMAT",
                value: v.clone(),
                message: "expected text or json".into(),
            })?;
        }
        if let Some(v) = get(env, "STARSYNC_BATCH_SIZE") {
            self.sync.batch_size = num("STARSYNC_BATCH_SIZE", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_SCHEMA_VERSION") {
            self.sync.schema_version = v.clone();
        }
        if let Some(v) = get(env, "STARSYNC_CONFLICT_STRATEGY") {
            self.conflicts.default = Strategy::parse(v.trim()).ok_or(ConfigError::Env {
                var: "STARSYNC_CONFLICT_STRATEGY",
                value: v.clone(),
                message: "expected server_wins, timestamp_wins, client_wins or manual".into(),
            })?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_BODY_BYTES") {
            self.server.max_body_bytes = num("STARSYNC_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_PACKET_BYTES") {
            self.server.max_packet_bytes = num("STARSYNC_MAX_PACKET_BYTES", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_GROUP_COMMIT_MAX_MS") {
            self.database.group_commit_max_ms = num("STARSYNC_GROUP_COMMIT_MAX_MS", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_BODY_TIMEOUT_SECS") {
            self.server.body_timeout_secs = num("STARSYNC_BODY_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_BODY_MIN_BYTES_PER_SEC") {
            self.server.body_min_bytes_per_sec = num("STARSYNC_BODY_MIN_BYTES_PER_SEC", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_TLS_CERT") {
            self.server.tls_cert = v.clone();
        }
        if let Some(v) = get(env, "STARSYNC_TLS_KEY") {
            self.server.tls_key = v.clone();
        }
        if let Some(v) = get(env, "STARSYNC_MAX_CONNECTIONS") {
            self.server.max_connections = num("STARSYNC_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_EVENT_STREAMS") {
            self.server.max_event_streams = num("STARSYNC_MAX_EVENT_STREAMS", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_EVENT_KEEPALIVE_SECS") {
            self.server.event_keepalive_secs = num("STARSYNC_EVENT_KEEPALIVE_SECS", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_CLOCK_SKEW_SECS") {
            self.sync.max_clock_skew_secs = num("STARSYNC_MAX_CLOCK_SKEW_SECS", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_ENTITY_BYTES") {
            self.server.max_entity_bytes = num("STARSYNC_MAX_ENTITY_BYTES", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_ANSWER_BYTES") {
            self.server.max_answer_bytes = num("STARSYNC_MAX_ANSWER_BYTES", v)?;
        }
        if let Some(v) = get(env, "STARSYNC_MAX_INFLIGHT_BYTES") {
            self.server.max_inflight_bytes = num("STARSYNC_MAX_INFLIGHT_BYTES", v)?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_scopes()?;
        check_admin_token(
            &self.server.admin_token,
            "STARSYNC_ADMIN_TOKEN (or server.admin_token)",
        )?;
        if self.sync.max_clock_skew_secs > MAX_CLOCK_SKEW_SECS {
            return Err(ConfigError::Invalid(format!(
                "sync.max_clock_skew_secs (STARSYNC_MAX_CLOCK_SKEW_SECS) must be at most \
                 {MAX_CLOCK_SKEW_SECS} (one year)"
            )));
        }
        if self.sync.batch_size == 0 || self.sync.batch_size > 100_000 {
            return Err(ConfigError::Invalid(
                "sync.batch_size must be between 1 and 100000".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 || self.server.max_packet_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes and server.max_packet_bytes must be at least 1024".into(),
            ));
        }
        if self.server.body_timeout_secs == 0 || self.server.body_min_bytes_per_sec == 0 {
            return Err(ConfigError::Invalid(
                "server.body_timeout_secs and server.body_min_bytes_per_sec must be at least 1"
                    .into(),
            ));
        }
        if self.server.event_keepalive_secs == 0 {
            return Err(ConfigError::Invalid(
                "server.event_keepalive_secs (STARSYNC_EVENT_KEEPALIVE_SECS) must be at least 1"
                    .into(),
            ));
        }
        if self.server.max_connections < 16 {
            return Err(ConfigError::Invalid(
                "server.max_connections must be at least 16".into(),
            ));
        }
        self.validate_size_chain()?;
        if self.server.max_inflight_bytes < 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "server.max_inflight_bytes (STARSYNC_MAX_INFLIGHT_BYTES) must be at least 1048576 \
                 (1 MiB)"
                    .into(),
            ));
        }
        let (cert, key) = (
            self.server.tls_cert.trim().is_empty(),
            self.server.tls_key.trim().is_empty(),
        );
        if cert != key {
            return Err(ConfigError::Invalid(
                "HTTPS needs both a certificate and its key: set both STARSYNC_TLS_CERT and \
                 STARSYNC_TLS_KEY (server.tls_cert and server.tls_key), or neither for plain HTTP"
                    .into(),
            ));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "database.pool_size must be at least 1".into(),
            ));
        }
        // A URL of no known kind is a setting to fix, found before anything opens a database
        // (an unreachable database, by contrast, is a failure worth retrying).
        if let Err(e) = crate::store::DbUrl::parse(&self.database_url()) {
            return Err(ConfigError::Invalid(format!(
                "DATABASE_URL (database.url): {e}"
            )));
        }
        Ok(())
    }

    /// Every accepted entity must be deliverable: entity limit + headroom <= answer budget <=
    /// packet limit. Otherwise a node could be sent a packet it refuses, forever (packets go
    /// oldest first, so nothing behind it would arrive either).
    /// Scope settings name fields that exist in JSON (non-empty), and only make sense with
    /// `[scopes]`: a `scope_field` or `scope = "global"` without it would be silently ignored.
    fn validate_scopes(&self) -> Result<(), ConfigError> {
        let field_ok = |f: &str| !f.is_empty() && f.chars().count() <= 128;
        if let Some(sc) = &self.scopes {
            if !field_ok(&sc.field) {
                return Err(ConfigError::Invalid(
                    "scopes.field must name a field of data (1-128 characters)".into(),
                ));
            }
        }
        for (t, r) in &self.conflicts.types {
            if (r.scope_field.is_some() || r.scope.is_some()) && self.scopes.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "conflicts.types.{t} sets scope_field or scope, but there is no [scopes] \
                     section (add [scopes] field = \"tenant_id\" to turn scopes on)"
                )));
            }
            if let Some(f) = &r.scope_field {
                if !field_ok(f) {
                    return Err(ConfigError::Invalid(format!(
                        "conflicts.types.{t}.scope_field must name a field of data (1-128 characters)"
                    )));
                }
                if r.scope.is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "conflicts.types.{t}: a global type has no scope_field; set one of them"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_size_chain(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let answer = self.answer_budget();
        let answer_src = if s.max_answer_bytes == 0 {
            format!("{answer}, half of server.max_packet_bytes")
        } else {
            answer.to_string()
        };
        if s.max_entity_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_entity_bytes (STARSYNC_MAX_ENTITY_BYTES) must be at least 1024".into(),
            ));
        }
        if answer > s.max_packet_bytes {
            return Err(ConfigError::Invalid(format!(
                "server.max_answer_bytes ({answer}) is over server.max_packet_bytes ({}): nodes \
                 refuse packets over their packet limit; set STARSYNC_MAX_ANSWER_BYTES to at most \
                 {} (or 0 for half of it)",
                s.max_packet_bytes, s.max_packet_bytes
            )));
        }
        if s.max_entity_bytes.saturating_add(ANSWER_HEADROOM_BYTES) > answer {
            return Err(ConfigError::Invalid(format!(
                "server.max_entity_bytes ({}) does not fit in an answer packet: the answer budget \
                 is {answer_src}, and an entity needs {ANSWER_HEADROOM_BYTES} bytes of room beside \
                 it. Set STARSYNC_MAX_ENTITY_BYTES to at most {}, or raise \
                 STARSYNC_MAX_ANSWER_BYTES / STARSYNC_MAX_PACKET_BYTES",
                s.max_entity_bytes,
                answer.saturating_sub(ANSWER_HEADROOM_BYTES)
            )));
        }
        Ok(())
    }

    /// Most decompressed bytes in one packet the server builds (exchange answers and exported
    /// files): `server.max_answer_bytes`, or half of `server.max_packet_bytes` when that is 0.
    /// Below every node's packet limit, so a node can always receive what it is sent.
    pub fn answer_budget(&self) -> usize {
        match self.server.max_answer_bytes {
            0 => self.server.max_packet_bytes / 2,
            n => n,
        }
    }

    /// The certificate and key files when HTTPS is configured.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        let (cert, key) = (self.server.tls_cert.trim(), self.server.tls_key.trim());
        (!cert.is_empty() && !key.is_empty()).then(|| crate::tls::TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })
    }

    /// The database URL in force: the configured one, or the SQLite file under `data_dir`.
    pub fn database_url(&self) -> String {
        if self.database.url.trim().is_empty() {
            self.server
                .data_dir
                .join("starsync.db")
                .display()
                .to_string()
        } else {
            self.database.url.trim().to_string()
        }
    }
}

/// Shortest admin token accepted. Why: the admin token guards every node and entity; a short
/// one can be guessed over HTTP. Generated tokens have 256 random bits (68 characters).
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Upper bound of `sync.max_clock_skew_secs` (one year), far beyond any real clock error.
const MAX_CLOCK_SKEW_SECS: u64 = 366 * 24 * 3600;

/// A configured admin token (empty: none configured) must have at least
/// [`MIN_ADMIN_TOKEN_CHARS`] characters; `source` names where it came from.
pub fn check_admin_token(token: &str, source: &str) -> Result<(), ConfigError> {
    let len = token.trim().chars().count();
    if len > 0 && len < MIN_ADMIN_TOKEN_CHARS {
        return Err(ConfigError::Invalid(format!(
            "{source} is {len} characters long; an admin token must have at least \
             {MIN_ADMIN_TOKEN_CHARS} (unset it to have one generated)"
        )));
    }
    Ok(())
}

fn parse_toml(text: &str, name: &str) -> Result<toml::Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })
}

/// The merged layers as [`Settings`]; an error names the dotted key
/// (`conflicts.types.Task.strategy`) and the file that set it, and keeps serde's account of what
/// is allowed (`expected one of ...`).
///
/// Why the path is tracked: serde's own error on the merged table said only "unknown variant",
/// and with two files and a dozen tables an operator had to guess where.
fn deserialize_layers(
    merged: toml::Value,
    layers: &[(String, toml::Value)],
) -> Result<Settings, ConfigError> {
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let mut segments: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.into_inner().message().trim().to_string();
        // The path of an unknown key usually ends with the key; when it stops at the table,
        // name the key itself.
        if let Some(unknown) = unknown_field(&message) {
            if segments.last().map(String::as_str) != Some(unknown) {
                segments.push(unknown.to_string());
            }
        }
        let file = layers
            .iter()
            // The last of the layers that define the most of the path (`max_by_key` keeps the
            // last maximum): the overlay wins over the defaults, as in the merge.
            .max_by_key(|(_, table)| defined_depth(table, &segments))
            .map_or_else(|| "configuration".to_string(), |(name, _)| name.clone());
        ConfigError::Key {
            file,
            key: if segments.is_empty() {
                "(top level)".into()
            } else {
                segments.join(".")
            },
            message,
        }
    })
}

/// The key named by serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// How many leading segments of `path` the table defines (the layer that defines the most of
/// it is the one that set the key; the last such layer when several do).
fn defined_depth(table: &toml::Value, path: &[String]) -> usize {
    let mut at = table;
    for (depth, key) in path.iter().enumerate() {
        match at.get(key.as_str()) {
            Some(next) => at = next,
            None => return depth,
        }
    }
    path.len()
}

/// Recursive table merge: values in `overlay` replace those in `base`.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("extra.toml");
        std::fs::write(
            &file,
            "[sync]\nbatch_size = 7\n[conflicts.types.Task]\nstrategy = \"manual\"\n",
        )
        .unwrap();
        let mut env = HashMap::new();
        env.insert("STARSYNC_CONFIG".into(), file.display().to_string());
        env.insert("STARSYNC_BIND".into(), "127.0.0.1:0".into());
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(s.sync.batch_size, 7);
        assert_eq!(s.server.bind, "127.0.0.1:0");
        assert_eq!(s.conflicts.strategy_for("Task"), Strategy::Manual);
        assert_eq!(s.conflicts.strategy_for("Other"), Strategy::ServerWins);
        env.insert("STARSYNC_BATCH_SIZE".into(), "9".into());
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(s.sync.batch_size, 9);
    }

    #[test]
    fn body_deadline_and_connection_settings_come_from_the_environment() {
        let mut env = HashMap::new();
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(
            (s.server.body_timeout_secs, s.server.body_min_bytes_per_sec),
            (30, 16384)
        );
        assert_eq!(s.server.max_connections, 25_000);
        env.insert("STARSYNC_BODY_TIMEOUT_SECS".into(), "5".into());
        env.insert("STARSYNC_BODY_MIN_BYTES_PER_SEC".into(), "100".into());
        env.insert("STARSYNC_MAX_CONNECTIONS".into(), "500".into());
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(
            (s.server.body_timeout_secs, s.server.body_min_bytes_per_sec),
            (5, 100)
        );
        assert_eq!(s.server.max_connections, 500);
        assert_eq!(s.server.max_event_streams, 10_000);
        env.insert("STARSYNC_MAX_EVENT_STREAMS".into(), "2".into());
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(s.server.max_event_streams, 2);
        env.remove("STARSYNC_MAX_EVENT_STREAMS");
        // No deadline at all would bring back connections held forever.
        env.insert("STARSYNC_BODY_TIMEOUT_SECS".into(), "0".into());
        let err = Settings::load_from(Path::new("/nonexistent"), &env).unwrap_err();
        assert!(err.to_string().contains("body_timeout_secs"), "{err}");
    }

    #[test]
    fn short_admin_tokens_and_skew() {
        let mut env = HashMap::new();
        env.insert("STARSYNC_ADMIN_TOKEN".into(), "x".into());
        let err = Settings::load_from(Path::new("/nonexistent"), &env).unwrap_err();
        assert!(err.to_string().contains("STARSYNC_ADMIN_TOKEN"), "{err}");
        env.insert(
            "STARSYNC_ADMIN_TOKEN".into(),
            "x".repeat(MIN_ADMIN_TOKEN_CHARS),
        );
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(s.sync.max_clock_skew_secs, 600);
        env.insert("STARSYNC_MAX_CLOCK_SKEW_SECS".into(), "5".into());
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert_eq!(s.sync.max_clock_skew_secs, 5);
    }

    fn load_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(Path::new("/nonexistent"), &env)
    }

    #[test]
    fn size_limits_default_to_a_deliverable_chain() {
        let s = load_env(&[]).unwrap();
        assert_eq!(s.server.max_entity_bytes, 8 << 20);
        assert_eq!(s.answer_budget(), 32 << 20);
        assert_eq!(s.server.max_packet_bytes, 64 << 20);
        let s = load_env(&[("STARSYNC_MAX_ANSWER_BYTES", "16777216")]).unwrap();
        assert_eq!(s.answer_budget(), 16 << 20);
    }

    #[test]
    fn an_entity_limit_that_cannot_be_delivered_is_refused() {
        // The default 8 MiB entity does not fit in half of a 1 MiB packet limit.
        let err = load_env(&[("STARSYNC_MAX_PACKET_BYTES", "1048576")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_entity_bytes"), "{msg}");
        assert!(
            msg.contains("STARSYNC_MAX_ENTITY_BYTES to at most 458752"),
            "{msg}"
        );
        load_env(&[
            ("STARSYNC_MAX_PACKET_BYTES", "1048576"),
            ("STARSYNC_MAX_ENTITY_BYTES", "458752"),
        ])
        .unwrap();
        let err = load_env(&[
            ("STARSYNC_MAX_PACKET_BYTES", "1048576"),
            ("STARSYNC_MAX_ENTITY_BYTES", "458753"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        // An answer budget over the packet limit.
        let err = load_env(&[("STARSYNC_MAX_ANSWER_BYTES", "67108865")]).unwrap_err();
        assert!(err.to_string().contains("max_answer_bytes"), "{err}");
        let err = load_env(&[("STARSYNC_MAX_ENTITY_BYTES", "12")]).unwrap_err();
        assert!(err.to_string().contains("at least 1024"), "{err}");
        let err = load_env(&[("STARSYNC_MAX_INFLIGHT_BYTES", "1000")]).unwrap_err();
        assert!(err.to_string().contains("max_inflight_bytes"), "{err}");
    }

    #[test]
    fn tls_needs_both_files_or_neither() {
        let mut env = HashMap::new();
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        assert!(s.tls_files().is_none());
        env.insert("STARSYNC_TLS_CERT".into(), "/etc/starsync/cert.pem".into());
        let err = Settings::load_from(Path::new("/nonexistent"), &env).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("STARSYNC_TLS_CERT") && text.contains("STARSYNC_TLS_KEY"),
            "{text}"
        );
        env.insert("STARSYNC_TLS_KEY".into(), "/etc/starsync/key.pem".into());
        let s = Settings::load_from(Path::new("/nonexistent"), &env).unwrap();
        let files = s.tls_files().unwrap();
        assert_eq!(files.key, PathBuf::from("/etc/starsync/key.pem"));
    }

    /// Loads the built-in defaults under `toml` (as the STARSYNC_CONFIG file `extra.toml`).
    fn load_file(toml: &str) -> (String, Result<Settings, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("extra.toml");
        std::fs::write(&file, toml).unwrap();
        let name = file.display().to_string();
        let env = HashMap::from([("STARSYNC_CONFIG".to_string(), name.clone())]);
        (name, Settings::load_from(Path::new("/nonexistent"), &env))
    }

    #[test]
    fn a_bad_key_in_a_file_names_the_file_the_dotted_key_and_what_is_allowed() {
        for (toml, key, allowed) in [
            (
                "[conflicts.types.Task]\nstrategy = \"bogus\"\n",
                "conflicts.types.Task.strategy",
                "`server_wins`",
            ),
            ("[server]\nbnid = \"0.0.0.0:1\"\n", "server.bnid", "`bind`"),
            (
                "[sync]\nbatch_size = \"many\"\n",
                "sync.batch_size",
                "expected",
            ),
            (
                "[conflicts.types.Task]\nimmutable = \"yes\"\n",
                "conflicts.types.Task.immutable",
                "a boolean",
            ),
            (
                "[server]\nlog_format = \"xml\"\n",
                "server.log_format",
                "`json`",
            ),
            (
                "[conflicts.types.\"Bad Name\"]\nimmutable = true\n",
                "conflicts.types",
                "must match ^[A-Za-z][A-Za-z0-9_]{0,63}$",
            ),
        ] {
            let (file, result) = load_file(toml);
            let text = result.unwrap_err().to_string();
            assert!(
                text.starts_with(&format!("configuration file {file}: {key}: ")),
                "{toml}: {text}"
            );
            assert!(text.contains(allowed), "{toml}: {text}");
        }
    }

    #[test]
    fn metrics_open_and_log_format_come_from_file_or_environment() {
        let (_, s) = load_file("[server]\nmetrics_open = true\nlog_format = \"json\"\n");
        let s = s.unwrap();
        assert!(s.server.metrics_open);
        assert_eq!(s.server.log_format, LogFormat::Json);
        let s = load_env(&[]).unwrap();
        assert!(!s.server.metrics_open);
        assert_eq!(s.server.log_format, LogFormat::Text);
        let s = load_env(&[
            ("STARSYNC_METRICS_OPEN", "true"),
            ("STARSYNC_LOG_FORMAT", "JSON"),
        ])
        .unwrap();
        assert!(s.server.metrics_open);
        assert_eq!(s.server.log_format, LogFormat::Json);
        for (var, value) in [
            ("STARSYNC_METRICS_OPEN", "maybe"),
            ("STARSYNC_LOG_FORMAT", "xml"),
        ] {
            let err = load_env(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn bad_env_names_the_variable() {
        let mut env = HashMap::new();
        env.insert("STARSYNC_CONFLICT_STRATEGY".into(), "random".into());
        let err = Settings::load_from(Path::new("/nonexistent"), &env).unwrap_err();
        assert!(err.to_string().contains("STARSYNC_CONFLICT_STRATEGY"));
    }
}
