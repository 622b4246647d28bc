//! The `starsync` command line: `serve`, `migrate`, offline `export`/`import`, and admin
//! commands that work on the database directly (run them on the server machine).

mod admin;
mod offline;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, Settings};
use crate::engine::Engine;
use crate::startup::{AdminTokenSource, Application};

#[derive(Debug, Parser)]
#[command(name = "starsync", version, about = "starsync replication server")]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    #[command(after_help = SERVE_ENV_HELP)]
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Write the next packet for a node as a .syncpkt file (offline transfer).
    Export {
        /// The node's code (or id).
        #[arg(long)]
        node: String,
        /// Directory to write into (created when missing).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Most changes in this packet (default: sync.batch_size). Raise it to carry a whole
        /// initial sync in one file.
        #[arg(long)]
        max_changes: Option<usize>,
    },
    /// Apply node packet files; directories are applied in packet_no order.
    Import {
        /// Packet files (`*.syncpkt`) or directories holding them.
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// Manage nodes.
    #[command(subcommand)]
    Nodes(admin::NodesCmd),
    /// Hub statistics, or one node's status.
    Status {
        /// A node id or code.
        node: Option<String>,
    },
    /// List or resolve conflicts.
    #[command(subcommand)]
    Conflicts(admin::ConflictsCmd),
}

/// Settings `serve` reads from the environment (the last layer: default file, then the file
/// named by STARSYNC_CONFIG, then these). Kept beside the command so `serve --help` is the
/// operator's reference; a test checks every variable the configuration reads is listed.
const SERVE_ENV_HELP: &str = "\
Environment (overrides config/default.toml and the STARSYNC_CONFIG file):
  STARSYNC_CONFIG             a TOML file layered over config/default.toml
  STARSYNC_BIND               address to listen on (default 127.0.0.1:8080)
  STARSYNC_DATA_DIR           where the SQLite database and the generated admin token live (data)
  DATABASE_URL                sqlite://path, a file path, or postgres://user:pass@host/db
  STARSYNC_ADMIN_TOKEN        admin token (at least 32 characters; generated under the data dir
                              when unset)
  STARSYNC_OPEN_REGISTRATION  true: nodes register without the admin token (default false)
  STARSYNC_BATCH_SIZE         most changes per packet (default 100)
  STARSYNC_SCHEMA_VERSION     the application data schema nodes must match (default 1.0.0)
  STARSYNC_CONFLICT_STRATEGY  default strategy: server_wins, timestamp_wins, client_wins, manual
  STARSYNC_MAX_BODY_BYTES     largest request body (default 16 MiB)
  STARSYNC_MAX_PACKET_BYTES   largest decompressed packet (default 64 MiB)
  STARSYNC_MAX_ENTITY_BYTES   largest entity data a node or admin may write (default 8 MiB)
  STARSYNC_MAX_ANSWER_BYTES   largest packet the server builds (default 0: half the packet limit)
  STARSYNC_MAX_INFLIGHT_BYTES memory exchange bodies and answers may hold at once (default 384 MiB)
  STARSYNC_BODY_TIMEOUT_SECS  a request body must arrive within this many seconds... (default 30)
  STARSYNC_BODY_MIN_BYTES_PER_SEC  ...plus one second per this many bytes received (default 16384)
  STARSYNC_MAX_CLOCK_SKEW_SECS  how far ahead of the server's clock an updated_at may be
                              (default 600)
  STARSYNC_MAX_CONNECTIONS    most open connections (default 25000; lowered to fit the open-file
                              limit)
  STARSYNC_MAX_EVENT_STREAMS  most open live-notification streams (default 10000; more get 503)
  STARSYNC_EVENT_KEEPALIVE_SECS  seconds between keep-alive comments on event streams (default 25)
  STARSYNC_TLS_CERT           PEM certificate chain: serve HTTPS (with STARSYNC_TLS_KEY); SIGHUP
                              reloads both files without a restart
  STARSYNC_TLS_KEY            PEM private key of STARSYNC_TLS_CERT
  STARSYNC_METRICS_OPEN       true: GET /metrics answers without the admin token (default false)
  STARSYNC_LOG_FORMAT         text (default) or json: one JSON object per log line, with the
                              request id on every line of a request
  STARSYNC_GROUP_COMMIT_MAX_MS  most milliseconds concurrent writes share one open transaction
                              before its commit (default 10; a lone write commits at once)
  RUST_LOG                    log filter (default info)

A configuration error (a bad file key or variable, a database URL of no known kind, unusable
TLS files) exits with status 78; other errors with 1.";

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let settings = Settings::load();
    let log_format = match &settings {
        Ok(s) => s.server.log_format,
        // The configuration could not be read: the environment may still say how to log.
        Err(_) => std::env::var("STARSYNC_LOG_FORMAT")
            .ok()
            .and_then(|v| LogFormat::parse(&v))
            .unwrap_or_default(),
    };
    init_tracing(log_format);
    let result = settings
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        .and_then(|settings| run(cli, settings));
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            } else if log_format == LogFormat::Json {
                // The same shape as the log lines, so a collector reading stderr gets one
                // JSON object per line to the end.
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "timestamp": starsync_protocol::now_ts(),
                        "level": "ERROR",
                        "target": "starsync",
                        "fields": {"message": format!("error: {e}")},
                    })
                );
            } else {
                eprintln!("error: {e}");
            }
            exit_code_of(e.as_ref())
        }
    }
}

/// Exit status of a configuration problem (sysexits' `EX_CONFIG`): a configuration file or
/// variable that is wrong, a database URL of no known kind, or TLS files that cannot be used.
/// Distinct from 1 (any other failure, such as an unreachable database) so a supervisor can
/// tell "fix the settings" from "try again": the systemd unit does not restart on it
/// (`RestartPreventExitStatus=78`).
pub const EXIT_CONFIG: u8 = 78;

fn exit_code_of(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    use crate::startup::StartupError;
    let config = e.is::<crate::config::ConfigError>()
        || matches!(
            e.downcast_ref::<StartupError>(),
            Some(StartupError::Config(_) | StartupError::Tls(_) | StartupError::TlsConfig(_))
        );
    if config {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

/// Logs go to standard error, as text (colours only on a terminal) or one JSON object per line
/// (`server.log_format`). JSON lines carry the current span (`span.request_id` while a request
/// is handled) but not the list of enclosing spans, which would only repeat it.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

pub type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn run(cli: Cli, settings: Settings) -> CliResult {
    match cli.command {
        Command::Serve => serve(settings),
        Command::Migrate => {
            let url = settings.database_url();
            let pool = crate::store::connect(&url, 1, settings.database.wal_autocheckpoint)?;
            drop(pool);
            println!("migrations applied to {}", crate::store::redact_url(&url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            node,
            out,
            max_changes,
        } => offline::export(&open_engine(settings, max_changes)?, &node, &out, cli.json),
        Command::Import { paths } => {
            offline::import(&open_engine(settings, None)?, &paths, cli.json)
        }
        Command::Nodes(cmd) => admin::nodes(&open_engine(settings, None)?, cmd, cli.json),
        Command::Status { node } => admin::status(&open_engine(settings, None)?, node, cli.json),
        Command::Conflicts(cmd) => admin::conflicts(&open_engine(settings, None)?, cmd, cli.json),
    }
}

/// An engine for CLI work on the server's existing database (no HTTP, so no admin token is
/// needed). It never creates a database: run in the wrong directory or with a mistyped
/// `DATABASE_URL`, an admin command would otherwise make a new empty hub and print node tokens
/// the real server rejects. Only `serve` and `migrate` create one. It says which database it
/// opened (on stderr, so `--json` output stays one document).
fn open_engine(
    mut settings: Settings,
    batch: Option<usize>,
) -> Result<Engine, Box<dyn std::error::Error>> {
    let url = settings.database_url();
    if let crate::store::DbUrl::Sqlite(path) = crate::store::DbUrl::parse(&url)? {
        if !path.is_file() {
            return Err(format!(
                "no starsync database at {}: run this where the server runs (same directory, \
                 DATABASE_URL or STARSYNC_DATA_DIR); only `starsync serve` and `starsync migrate` \
                 create a database",
                path.display()
            )
            .into());
        }
    }
    eprintln!("database: {}", crate::store::redact_url(&url));
    if let Some(b) = batch {
        if b == 0 {
            return Err("--max-changes must be at least 1".into());
        }
        settings.sync.batch_size = b;
    }
    settings.database.pool_size = 2;
    Ok(Engine::open(
        Arc::new(settings),
        &crate::engine::auth::new_token(),
    )?)
}

/// Settings that are legal but risky, said once at start so an operator notices them.
fn startup_warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    let bind = &settings.server.bind;
    let host = bind.rsplit_once(':').map(|(h, _)| h).unwrap_or(bind);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !loopback && settings.tls_files().is_none() {
        out.push(format!(
            "serving plain HTTP on {bind}: node tokens and data cross the network unencrypted; \
             set STARSYNC_TLS_CERT and STARSYNC_TLS_KEY, or put a TLS-terminating proxy in front \
             (README: Reverse proxy and TLS)"
        ));
    }
    if settings.server.open_registration {
        out.push(
            "open registration is on: anyone who can reach this server can register a node and \
             read every entity; set STARSYNC_OPEN_REGISTRATION=false unless this is a closed network"
                .into(),
        );
    }
    if !loopback && settings.server.metrics_open {
        out.push(format!(
            "GET /metrics is open (STARSYNC_METRICS_OPEN) on {bind}: anyone who can reach this              server can read its node counts and traffic; keep it on a private network, or unset              it and give the scraper the admin token"
        ));
    }
    out
}

fn serve(settings: Settings) -> CliResult {
    // Before anything opens a file: every client connection is a descriptor.
    let open_files = crate::startup::raise_open_file_limit();
    actix_web::rt::System::new().block_on(async move {
        let db = crate::store::redact_url(&settings.database_url());
        let app = Application::build(settings).await?;
        app.reload_certificate_on_sighup()?;
        if let Some(cert) = &app.tls {
            tracing::info!(
                cert = %cert.files().cert.display(),
                key = %cert.files().key.display(),
                "HTTPS with rustls; SIGHUP reloads the certificate"
            );
        }
        match &app.admin_token_source {
            AdminTokenSource::Configured => {
                tracing::info!("admin token: from configuration (STARSYNC_ADMIN_TOKEN)")
            }
            AdminTokenSource::File { path, created } => tracing::info!(
                "admin token: {} ({}; readable only by its owner)",
                path.display(),
                if *created { "generated now" } else { "existing" }
            ),
        }
        for warning in startup_warnings(app.engine.settings()) {
            tracing::warn!("{warning}");
        }
        match open_files {
            Some((before, after)) if after > before => tracing::info!(
                "open file limit raised from {before} to {after}; at most {} connections",
                app.max_connections
            ),
            Some((_, now)) => tracing::info!(
                "open file limit {now}; at most {} connections",
                app.max_connections
            ),
            None => tracing::info!("at most {} connections", app.max_connections),
        }
        tracing::info!(
            database = %db,
            server_node_id = %app.engine.server_node_id(),
            open_registration = app.engine.settings().server.open_registration,
            "starsync listening on {}://{}:{}",
            app.scheme(),
            app.engine.settings().server.bind.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1"),
            app.port()
        );
        app.run_until_stopped().await?;
        tracing::info!("starsync stopped");
        Ok(ExitCode::SUCCESS)
    })
}
