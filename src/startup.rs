//! Builds the server on an already-bound listener, so callers (tests included) can bind port 0
//! and read the real port before the first request.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::api;
use crate::config::Settings;
use crate::engine::Engine;
use starsync_protocol::api::ErrorBody;
use starsync_protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source} (set STARSYNC_BIND to a free address)")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin token file {path}: {source}")]
    AdminToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A built, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    pub engine: web::Data<Engine>,
    pub admin_token_source: AdminTokenSource,
}

/// Where the admin token came from (for the start-up log; never the token itself).
#[derive(Debug, Clone)]
pub enum AdminTokenSource {
    Configured,
    File { path: PathBuf, created: bool },
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let listener =
            TcpListener::bind(&settings.server.bind).map_err(|source| StartupError::Bind {
                addr: settings.server.bind.clone(),
                source,
            })?;
        Self::build_with_listener(settings, listener).await
    }

    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> Result<Application, StartupError> {
        let (admin_token, admin_token_source) = resolve_admin_token(&settings)?;
        let settings = Arc::new(settings);
        let engine = {
            let settings = settings.clone();
            web::block(move || Engine::open(settings, &admin_token))
                .await
                .map_err(|e| StartupError::Io(std::io::Error::other(e.to_string())))??
        };
        let engine = web::Data::new(engine);
        let budget = web::Data::new(api::budget::MemoryBudget::new(&settings));
        let port = listener.local_addr()?.port();
        let data = engine.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(budget.clone())
                .wrap(tracing_actix())
                .configure(api::configure)
                .default_service(web::to(not_found))
        })
        // Database work runs on actix's blocking threads; more of them than pooled connections
        // only park threads (and their memory) on the pool or the writer lock.
        .worker_max_blocking_threads(settings.database.pool_size.max(2) as usize)
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.run();
        Ok(Application {
            port,
            server,
            engine,
            admin_token_source,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that can stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Request logging without headers or bodies (tokens and packet content never reach logs).
fn tracing_actix() -> actix_web::middleware::Logger {
    actix_web::middleware::Logger::new("%r %s %Dms").log_target("starsync::http")
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(ErrorBody {
        error: ErrorCode::NotFound,
        message: format!("no route for {} {}", req.method(), req.path()),
        expected_packet_no: None,
    })
}

/// The configured admin token, or the one stored under the data directory (generated with
/// mode 0600 on first start).
pub fn resolve_admin_token(
    settings: &Settings,
) -> Result<(String, AdminTokenSource), StartupError> {
    let configured = settings.server.admin_token.trim();
    if !configured.is_empty() {
        return Ok((configured.to_string(), AdminTokenSource::Configured));
    }
    let path = admin_token_path(&settings.server.data_dir);
    let err = |source| StartupError::AdminToken {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            return Ok((
                t.trim().to_string(),
                AdminTokenSource::File {
                    path,
                    created: false,
                },
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::create_dir_all(&settings.server.data_dir).map_err(err)?;
    let token = crate::engine::auth::new_token();
    write_private(&path, &token).map_err(err)?;
    Ok((
        token,
        AdminTokenSource::File {
            path,
            created: true,
        },
    ))
}

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin_token")
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
