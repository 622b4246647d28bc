//! Builds the server on an already-bound listener, so callers (tests included) can bind port 0
//! and read the real port before the first request.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::api;
use crate::api::extract::BodyDeadline;
use crate::config::Settings;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::tls::ReloadableCert;
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
    Tls(#[from] crate::tls::TlsError),
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A built, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    pub engine: web::Data<Engine>,
    /// This server's metrics (`GET /metrics`); modules that record their own (the event
    /// streams' gauge) take them from here or from the app data.
    pub metrics: web::Data<Metrics>,
    pub admin_token_source: AdminTokenSource,
    /// Open connections served at once (`server.max_connections`, lowered to fit the open-file
    /// limit).
    pub max_connections: usize,
    /// The served certificate when the server speaks HTTPS (`reload` it on SIGHUP).
    pub tls: Option<Arc<ReloadableCert>>,
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
        // Before the database: a wrong certificate path should not first create a database.
        let tls = settings.tls_files().map(ReloadableCert::open).transpose()?;
        let (admin_token, admin_token_source) = resolve_admin_token(&settings)?;
        let settings = Arc::new(settings);
        let engine = {
            let settings = settings.clone();
            web::block(move || Engine::open(settings, &admin_token))
                .await
                .map_err(|e| StartupError::Io(std::io::Error::other(e.to_string())))??
        };
        let engine = web::Data::new(engine);
        let metrics = web::Data::new(Metrics::new(backend_name(&settings)));
        let budget = web::Data::new(api::budget::MemoryBudget::new(&settings));
        let port = listener.local_addr()?.port();
        set_backlog(&listener);
        let data = engine.clone();
        let app_metrics = metrics.clone();
        let body_deadline = BodyDeadline::from_settings(&settings.server);
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let max_connections = effective_max_connections(settings.server.max_connections);
        // actix counts per worker.
        let per_worker = max_connections.div_ceil(workers).max(1);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(body_deadline)
                .app_data(budget.clone())
                .app_data(app_metrics.clone())
                .wrap(actix_web::middleware::from_fn(api::middleware::guard))
                // Outermost: the request's span covers the guard and every handler.
                .wrap(actix_web::middleware::from_fn(
                    api::middleware::request_span,
                ))
                .configure(api::configure)
                .default_service(web::to(not_found))
        })
        .workers(workers)
        // Database work runs on actix's blocking threads; more of them than pooled connections
        // only park threads (and their memory) on the pool or the writer lock.
        .worker_max_blocking_threads(settings.database.pool_size.max(2) as usize)
        // Every open connection holds a descriptor: past this many, workers stop accepting and
        // new connections wait in the listen queue instead of failing with EMFILE.
        .max_connections(per_worker)
        .keep_alive(KEEP_ALIVE)
        .client_request_timeout(HEAD_TIMEOUT)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
        // Our own handlers (`run_until_stopped`): event streams must end before a graceful
        // stop, which otherwise waits its whole timeout for connections that never finish.
        .disable_signals();
        let server = match &tls {
            Some(cert) => server.listen_rustls_0_23(listener, cert.server_config()?)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Application {
            port,
            server,
            engine,
            metrics,
            admin_token_source,
            max_connections,
            tls,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that can stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// "https" or "http", for the URLs the start-up log prints.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Reads the certificate files again whenever the process gets SIGHUP (a renewal tool's
    /// usual signal), for as long as the server runs. A bad new certificate is logged and the
    /// old one kept. Call from inside the server's runtime; without TLS it does nothing.
    pub fn reload_certificate_on_sighup(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        if let Some(cert) = self.tls.clone() {
            use actix_web::rt::signal::unix::{signal, SignalKind};
            let mut hangups = signal(SignalKind::hangup())?;
            actix_web::rt::spawn(async move {
                while hangups.recv().await.is_some() {
                    match cert.reload() {
                        Ok(()) => tracing::info!(
                            cert = %cert.files().cert.display(),
                            "SIGHUP: TLS certificate reloaded; new connections use it"
                        ),
                        Err(e) => tracing::error!(
                            "SIGHUP: keeping the certificate in use, the new one is unusable: {e}"
                        ),
                    }
                }
            });
        }
        Ok(())
    }

    /// Runs until a signal stops the server: SIGTERM gracefully (requests in progress finish),
    /// SIGINT and SIGQUIT at once, like actix's own handlers; both first end every event
    /// stream (clients reconnect, to another process or after the restart).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use actix_web::rt::signal::unix::{signal, SignalKind};
            use futures_util::future::{select, Either};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut quit = signal(SignalKind::quit())?;
            let handle = self.server.handle();
            let engine = self.engine.clone();
            actix_web::rt::spawn(async move {
                let graceful = {
                    let term = std::pin::pin!(term.recv());
                    let int = std::pin::pin!(int.recv());
                    let quit = std::pin::pin!(quit.recv());
                    match select(term, select(int, quit)).await {
                        Either::Left(_) => true,
                        Either::Right(_) => false,
                    }
                };
                tracing::info!(graceful, "stopping: ending event streams");
                engine.live().end_all();
                handle.stop(graceful).await;
            });
        }
        #[cfg(not(unix))]
        {
            let handle = self.server.handle();
            let engine = self.engine.clone();
            actix_web::rt::spawn(async move {
                if actix_web::rt::signal::ctrl_c().await.is_ok() {
                    engine.live().end_all();
                    handle.stop(false).await;
                }
            });
        }
        self.server.await
    }
}

/// An idle keep-alive connection is closed after this: a node's back-to-back exchanges reuse
/// their connection, an idle one must not hold a descriptor.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Time a client has to send the request head (actix's own timer; the body has
/// [`BodyDeadline`]).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// After a response that closes the connection (an unread body, a 408), time the client has to
/// hang up before the server drops it.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Listen queue length: connections past `max_connections` wait here (Linux caps it at
/// `net.core.somaxconn`). std's `TcpListener::bind` asks for 128.
const BACKLOG: i32 = 4096;
/// Descriptors kept out of the connection budget: database files and connections, logs, the
/// admin token, blocking threads' files.
const FD_RESERVE: u64 = 256;

/// Raises the process's soft open-file limit to its hard limit, so the connection limit rather
/// than the default 1,024 descriptors decides how many clients are served. Returns the limits
/// before and after; `None` where the platform has no such limit or the call failed.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let (before, _) = rlimit::Resource::NOFILE.get().ok()?;
        let after = rlimit::increase_nofile_limit(u64::MAX).ok()?;
        Some((before, after))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection limit in force: the configured total, lowered so that every connection fits
/// the current open-file limit with [`FD_RESERVE`] to spare.
fn effective_max_connections(configured: usize) -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
        let fits = usize::try_from(soft.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
        return configured.min(fits);
    }
    configured
}

/// Sets the listen queue of an already bound listener (listening again only changes the queue
/// length); a failure leaves the system default, which still works.
fn set_backlog(listener: &TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).listen(BACKLOG) {
        tracing::warn!("cannot set the listen backlog to {BACKLOG}: {e}");
    }
}

/// The database backend's name for the build info metric.
fn backend_name(settings: &Settings) -> &'static str {
    match crate::store::DbUrl::parse(&settings.database_url()) {
        Ok(crate::store::DbUrl::Postgres(_)) => "postgres",
        _ => "sqlite",
    }
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(ErrorBody {
        error: ErrorCode::NotFound,
        message: format!("no route for {} {}", req.method(), req.path()),
        expected_packet_no: None,
        entity: None,
        conflict_id: None,
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
            let source = format!("the admin token in {}", path.display());
            crate::config::check_admin_token(&t, &source)?;
            return Ok((
                t.trim().to_string(),
                AdminTokenSource::File {
                    path,
                    created: false,
                },
            ));
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
