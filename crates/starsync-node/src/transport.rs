//! How a node talks to its server. A trait, so a desktop program can route the calls through its
//! own HTTP stack and tests can inject faults (dropped requests, dropped answers, replays, a
//! server that moved to another port); [`HttpTransport`] is the real thing over `ureq`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use starsync_protocol::api::{
    ConflictList, ErrorBody, ExchangeRequest, ExchangeResponse, NodeStatus, RegisterRequest,
    RegisterResponse, ServerStatus,
};
use starsync_protocol::ErrorCode;

use crate::NodeError;

/// Why a call did not produce an answer.
#[derive(Debug, Clone)]
pub enum TransportError {
    /// The server could not be reached or did not answer in time, or answered with a transient
    /// error (5xx, 429). Retried; nothing was lost.
    Network(String),
    /// The server answered with an error body (4xx).
    Http { status: u16, body: ErrorBody },
    /// The TLS handshake failed on the server's certificate (unknown CA, wrong host name,
    /// expired). Not retried: a configuration problem (`--ca-cert`, the server's certificate).
    Certificate(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Network(m) | TransportError::Certificate(m) => write!(f, "{m}"),
            TransportError::Http { status, body } => {
                write!(f, "HTTP {status} {}: {}", body.error, body.message)
            }
        }
    }
}

/// The server calls a node makes. `server` is the base URL stored in the node's configuration
/// (`http://host:port`, no trailing slash); an implementation may route it elsewhere.
pub trait Transport: Send + Sync {
    /// `POST /api/sync/register` (with the admin token unless the server runs open registration).
    fn register(
        &self,
        server: &str,
        admin_token: Option<&str>,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, TransportError>;

    /// `POST /api/sync/exchange`: one packet each way.
    fn exchange(
        &self,
        server: &str,
        token: &str,
        req: &ExchangeRequest,
    ) -> Result<ExchangeResponse, TransportError>;

    /// `GET /api/sync/status/{node_id}` with the node's own token.
    fn node_status(
        &self,
        server: &str,
        token: &str,
        node_id: &str,
    ) -> Result<NodeStatus, TransportError>;

    /// `GET /api/sync/status` with the admin token (used to learn the server's node id).
    fn server_status(
        &self,
        server: &str,
        admin_token: &str,
    ) -> Result<ServerStatus, TransportError>;

    /// `GET /api/sync/conflicts?node_id=…` with the node's own token.
    fn conflicts(
        &self,
        server: &str,
        token: &str,
        node_id: &str,
    ) -> Result<ConflictList, TransportError>;

    /// `GET /health`: a cheap probe while backing off.
    fn health(&self, server: &str) -> Result<(), TransportError>;

    /// `GET /api/sync/events` with the node's token (PROTOCOL §12): the open stream, read line
    /// by line by the daemon's stream thread. A read must fail (not block forever) when the
    /// server has been silent for much longer than its 25 s keep-alive, so a dead connection is
    /// noticed. `Ok(None)`: this transport has no event stream, and the daemon polls (the
    /// default, so transports written before the stream existed keep working).
    fn events(&self, server: &str, token: &str) -> Result<Option<EventStream>, TransportError> {
        let _ = (server, token);
        Ok(None)
    }
}

/// An open event stream: its text, line by line.
pub type EventStream = Box<dyn std::io::BufRead + Send>;

/// A stream read that waits this long without a byte (the server writes a comment every 25 s)
/// gives up: the connection is dead, and the daemon reconnects.
pub const EVENT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTP over `ureq`, every call bounded by the node's `packet_timeout`.
pub struct HttpTransport {
    agent: ureq::Agent,
    /// For the event stream: no deadline for the whole call (the stream is endless), only for
    /// connecting and for each read ([`EVENT_READ_TIMEOUT`]).
    stream_agent: ureq::Agent,
}

impl HttpTransport {
    /// `timeout` bounds a whole call (connect, send, answer), like `sync.packet_timeout`.
    pub fn new(timeout: Duration) -> HttpTransport {
        HttpTransport {
            agent: Self::builder(timeout).build(),
            stream_agent: Self::stream_builder(timeout).build(),
        }
    }

    /// Like [`HttpTransport::new`], trusting only the CA certificates in the PEM file at
    /// `ca_cert` (a private CA replaces the public roots: a hub on a closed network should not
    /// also accept any certificate a public CA issued for its name).
    pub fn with_ca_cert(timeout: Duration, ca_cert: &Path) -> Result<HttpTransport, NodeError> {
        let roots = read_ca(ca_cert)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| NodeError::Invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let config = Arc::new(config);
        Ok(HttpTransport {
            agent: Self::builder(timeout).tls_config(config.clone()).build(),
            stream_agent: Self::stream_builder(timeout).tls_config(config).build(),
        })
    }

    fn builder(timeout: Duration) -> ureq::AgentBuilder {
        ureq::AgentBuilder::new()
            .timeout(timeout)
            .timeout_connect(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("starsync-node/", env!("CARGO_PKG_VERSION")))
    }

    fn stream_builder(timeout: Duration) -> ureq::AgentBuilder {
        ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(10)))
            .timeout_read(EVENT_READ_TIMEOUT)
            .timeout_write(timeout)
            .user_agent(concat!("starsync-node/", env!("CARGO_PKG_VERSION")))
    }

    /// A call's outcome as this transport reports errors (see [`HttpTransport::send`]).
    fn check(
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, TransportError> {
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => Err(Self::status_error(status, resp)),
            Err(ureq::Error::Transport(t)) => match certificate_problem(&t) {
                Some(why) => Err(TransportError::Certificate(why)),
                None => Err(TransportError::Network(t.to_string())),
            },
        }
    }

    fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: ureq::Request,
        body: Option<&[u8]>,
    ) -> Result<T, TransportError> {
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        match result {
            // Read through the stream: `into_string` caps bodies at 10 MB, packets may be larger.
            Ok(resp) => serde_json::from_reader(resp.into_reader()).map_err(|e| {
                TransportError::Network(format!(
                    "the server's answer is not the expected JSON: {e}"
                ))
            }),
            Err(ureq::Error::Status(status, resp)) => Err(Self::status_error(status, resp)),
            Err(ureq::Error::Transport(t)) => match certificate_problem(&t) {
                Some(why) => Err(TransportError::Certificate(why)),
                None => Err(TransportError::Network(t.to_string())),
            },
        }
    }

    /// An error answer: its JSON body when it is one, retryable (`Network`) for 5xx and 429.
    fn status_error(status: u16, resp: ureq::Response) -> TransportError {
        let mut text = String::new();
        let _ = resp.into_reader().take(1 << 20).read_to_string(&mut text);
        // Not a starsync error body (a proxy's page, say): keep what it said.
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
            error: ErrorCode::Unknown,
            message: format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
            expected_packet_no: None,
            entity: None,
            conflict_id: None,
        });
        if status >= 500 || status == 429 {
            TransportError::Network(format!(
                "server answered {status} {}: {}",
                body.error, body.message
            ))
        } else {
            TransportError::Http { status, body }
        }
    }

    fn bearer(req: ureq::Request, token: &str) -> ureq::Request {
        req.set("Authorization", &format!("Bearer {token}"))
    }
}

impl Transport for HttpTransport {
    fn register(
        &self,
        server: &str,
        admin_token: Option<&str>,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, TransportError> {
        let mut r = self.agent.post(&format!("{server}/api/sync/register"));
        if let Some(t) = admin_token {
            r = Self::bearer(r, t);
        }
        let body = serde_json::to_vec(req).expect("serializing a request cannot fail");
        self.send(r, Some(&body))
    }

    fn exchange(
        &self,
        server: &str,
        token: &str,
        req: &ExchangeRequest,
    ) -> Result<ExchangeResponse, TransportError> {
        let r = Self::bearer(
            self.agent.post(&format!("{server}/api/sync/exchange")),
            token,
        );
        let body = serde_json::to_vec(req).expect("serializing a request cannot fail");
        self.send(r, Some(&body))
    }

    fn node_status(
        &self,
        server: &str,
        token: &str,
        node_id: &str,
    ) -> Result<NodeStatus, TransportError> {
        let r = Self::bearer(
            self.agent
                .get(&format!("{server}/api/sync/status/{node_id}")),
            token,
        );
        self.send(r, None)
    }

    fn server_status(
        &self,
        server: &str,
        admin_token: &str,
    ) -> Result<ServerStatus, TransportError> {
        let r = Self::bearer(
            self.agent.get(&format!("{server}/api/sync/status")),
            admin_token,
        );
        self.send(r, None)
    }

    fn conflicts(
        &self,
        server: &str,
        token: &str,
        node_id: &str,
    ) -> Result<ConflictList, TransportError> {
        let r = Self::bearer(
            self.agent
                .get(&format!("{server}/api/sync/conflicts"))
                .query("node_id", node_id),
            token,
        );
        self.send(r, None)
    }

    fn health(&self, server: &str) -> Result<(), TransportError> {
        let _: serde_json::Value = self.send(self.agent.get(&format!("{server}/health")), None)?;
        Ok(())
    }

    fn events(&self, server: &str, token: &str) -> Result<Option<EventStream>, TransportError> {
        let r = Self::bearer(
            self.stream_agent
                .get(&format!("{server}/api/sync/events"))
                .set("Accept", "text/event-stream"),
            token,
        );
        let resp = Self::check(r.call())?;
        Ok(Some(Box::new(std::io::BufReader::new(resp.into_reader()))))
    }
}

/// The rustls error under a failed call, when it is about the server's certificate. ureq wraps
/// it in an `io::Error`, whose `source()` skips the wrapped error, hence `get_ref`.
fn certificate_problem(t: &ureq::Transport) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Some(tls.to_string())
                }
                rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateExpired
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::UnsupportedCertificate,
                ) => Some(tls.to_string()),
                _ => None,
            };
        }
        next = e.source();
    }
    None
}

/// Checks a CA file and returns its absolute path, as stored in the node's settings (so a sync
/// run from another directory finds it).
pub(crate) fn checked_ca_path(path: &Path) -> Result<String, NodeError> {
    read_ca(path)?;
    let abs = std::path::absolute(path).map_err(|e| ca_error(path, e.to_string()))?;
    Ok(abs.display().to_string())
}

fn ca_error(path: &Path, message: String) -> NodeError {
    NodeError::Invalid(format!("CA certificate {}: {message}", path.display()))
}

/// The CA certificates of a PEM file (at least one, each usable as a trust anchor).
fn read_ca(path: &Path) -> Result<rustls::RootCertStore, NodeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| ca_error(path, format!("cannot read: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ca_error(path, format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ca_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_error(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(roots)
}
