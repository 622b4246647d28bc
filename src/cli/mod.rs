//! The `starsync` command line: `serve`, `migrate`, offline `export`/`import`, and admin
//! commands that work on the database directly (run them on the server machine).

mod admin;
mod offline;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> CliResult {
    let settings = Settings::load()?;
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

/// An engine for CLI work on the database (no HTTP, so no admin token is needed).
fn open_engine(
    mut settings: Settings,
    batch: Option<usize>,
) -> Result<Engine, Box<dyn std::error::Error>> {
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

fn serve(settings: Settings) -> CliResult {
    // Before anything opens a file: every client connection is a descriptor.
    let open_files = crate::startup::raise_open_file_limit();
    actix_web::rt::System::new().block_on(async move {
        let db = crate::store::redact_url(&settings.database_url());
        let app = Application::build(settings).await?;
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
            "starsync listening on http://{}:{}",
            app.engine.settings().server.bind.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1"),
            app.port()
        );
        app.run_until_stopped().await?;
        tracing::info!("starsync stopped");
        Ok(ExitCode::SUCCESS)
    })
}
