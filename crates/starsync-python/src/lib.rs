//! `starsync._native`: the `starsync-node` library bound to Python, so a Python desktop app
//! embeds the same node the Rust programs and the `starsync-node` CLI use (one implementation
//! of the packet protocol, not a second one written by hand).
//!
//! Every call that touches the node's SQLite database or the network runs detached from the
//! interpreter (`py.detach`, the GIL released), so a UI thread keeps running while another
//! thread syncs. Data crosses as plain Python objects (see `convert`); errors become the
//! exceptions of `starsync.errors` (see `errors`). The package's Python half
//! (python/starsync) re-exports all of it as `starsync`.

#![forbid(unsafe_code)]

mod convert;
mod errors;
mod service;

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use starsync_node::InitOptions;

use convert::{report, to_json};
use errors::NodeResultExt;

/// One node: a local SQLite database (entities, the outbox of changes on their way, the
/// numbered packets kept until the server acknowledges them) and its server's address.
///
/// Local reads and writes never touch the network and work offline; :meth:`sync` exchanges
/// packets with the server. A `Node` may be shared between threads (a UI thread writing, a
/// :class:`SyncService` syncing); every call releases the GIL while it works.
#[pyclass(frozen, module = "starsync")]
pub struct Node {
    pub(crate) inner: starsync_node::Node,
}

#[pymethods]
impl Node {
    /// Sets up a node in `data_dir`: registers it with the server (once; needs the server and,
    /// unless the server runs open registration, its admin token) and stores its id and token.
    /// Afterwards open it with :meth:`open`, offline.
    #[staticmethod]
    #[pyo3(signature = (
        data_dir, server_url, code, name=None, admin_token=None, *, description=None,
        schema_version=None, packet_timeout=30, max_retries=3, batch_size=100, force=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn init(
        py: Python<'_>,
        data_dir: PathBuf,
        server_url: String,
        code: String,
        name: Option<String>,
        admin_token: Option<String>,
        description: Option<String>,
        schema_version: Option<String>,
        packet_timeout: i64,
        max_retries: i64,
        batch_size: i64,
        force: bool,
    ) -> PyResult<Node> {
        let mut opts = InitOptions::register(&server_url, &code);
        opts.name = name;
        opts.admin_token = admin_token;
        opts.description = description;
        opts.schema_version = schema_version;
        opts.packet_timeout = packet_timeout;
        opts.max_retries = max_retries;
        opts.batch_size = batch_size;
        opts.force = force;
        let inner = py
            .detach(|| starsync_node::Node::init(&data_dir, opts))
            .py_err(py)?;
        Ok(Node { inner })
    }

    /// Opens the node set up earlier in `data_dir` (no network).
    #[staticmethod]
    fn open(py: Python<'_>, data_dir: PathBuf) -> PyResult<Node> {
        let inner = py
            .detach(|| starsync_node::Node::open(&data_dir))
            .py_err(py)?;
        Ok(Node { inner })
    }

    /// The per-user default data directory (``~/.local/share/starsync-node`` on Linux...).
    #[staticmethod]
    fn default_data_dir() -> String {
        starsync_node::Node::default_data_dir()
            .display()
            .to_string()
    }

    /// The node's data directory.
    #[getter]
    fn data_dir(&self) -> String {
        self.inner.data_dir().display().to_string()
    }

    /// Who this node is and where its server is (never the token).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = py.detach(|| self.inner.info()).py_err(py)?;
        report(py, &info)
    }

    /// Changes one stored setting (``server_url``, ``packet_timeout``, ``max_retries``,
    /// ``batch_size``, ``max_packet_bytes``, ``schema_version``, ``name``); returns the new
    /// :meth:`info`.
    fn set_setting<'py>(
        &self,
        py: Python<'py>,
        key: String,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = value.str()?.to_cow()?.into_owned();
        let info = py
            .detach(|| self.inner.set_setting(&key, &value))
            .py_err(py)?;
        report(py, &info)
    }

    /// Creates or replaces an entity locally and queues the change for the server (one
    /// transaction). `data` is a dict of JSON values. Returns the queued change.
    fn put<'py>(
        &self,
        py: Python<'py>,
        entity_type: String,
        entity_uuid: String,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = to_json(data)?;
        let q = py
            .detach(|| self.inner.put(&entity_type, &entity_uuid, &data))
            .py_err(py)?;
        report(py, &q)
    }

    /// Creates an entity with a new random uuid and queues it; returns the uuid.
    fn create(
        &self,
        py: Python<'_>,
        entity_type: String,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        let data = to_json(data)?;
        let (uuid, _) = py
            .detach(|| self.inner.create(&entity_type, &data))
            .py_err(py)?;
        Ok(uuid)
    }

    /// Deletes an entity locally and queues the delete; None when it was already deleted.
    fn delete<'py>(
        &self,
        py: Python<'py>,
        entity_type: String,
        entity_uuid: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let q = py
            .detach(|| self.inner.delete(&entity_type, &entity_uuid))
            .py_err(py)?;
        q.map(|q| report(py, &q)).transpose()
    }

    /// One local entity (``data``, ``deleted``, ``sync_state``, ``server_version``...), deleted
    /// ones too; None when the node never had it.
    fn get<'py>(
        &self,
        py: Python<'py>,
        entity_type: String,
        entity_uuid: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let e = py
            .detach(|| self.inner.get(&entity_type, &entity_uuid))
            .py_err(py)?;
        e.map(|e| report(py, &e)).transpose()
    }

    /// Every live local entity of a type, ordered by uuid (``include_deleted`` adds the
    /// deleted ones).
    #[pyo3(signature = (entity_type, include_deleted=false))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        entity_type: String,
        include_deleted: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let all = py
            .detach(|| {
                if include_deleted {
                    self.inner.list_page(&entity_type, None, i64::MAX, true)
                } else {
                    self.inner.list(&entity_type)
                }
            })
            .py_err(py)?;
        report(py, &all)
    }

    /// A page of a type's entities with uuid greater than `after`, for big sets.
    #[pyo3(signature = (entity_type, after=None, limit=500, include_deleted=false))]
    fn list_page<'py>(
        &self,
        py: Python<'py>,
        entity_type: String,
        after: Option<String>,
        limit: i64,
        include_deleted: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let page = py
            .detach(|| {
                self.inner
                    .list_page(&entity_type, after.as_deref(), limit, include_deleted)
            })
            .py_err(py)?;
        report(py, &page)
    }

    /// The entity types this node holds.
    fn entity_types(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.entity_types()).py_err(py)
    }

    /// Outbox and packet counters (``pending``, ``in_flight``, ``failed``...) and the last
    /// sync times and error.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = py.detach(|| self.inner.status()).py_err(py)?;
        report(py, &s)
    }

    /// Conflicts the server reported for this node's changes, newest first.
    fn conflicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = py.detach(|| self.inner.conflicts()).py_err(py)?;
        convert::conflicts(py, &c)
    }

    /// This node's conflicts as the server's history shows them (needs the server).
    fn server_conflicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = py.detach(|| self.inner.server_conflicts()).py_err(py)?;
        report(py, &c)
    }

    /// Changes the server rejected, with its message; kept until retried or dropped.
    fn failed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let f = py.detach(|| self.inner.failed()).py_err(py)?;
        report(py, &f)
    }

    /// Queues a failed change again (by its ``id`` or ``change_id``).
    fn retry_failed<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = key.str()?.to_cow()?.into_owned();
        let q = py.detach(|| self.inner.retry_failed(&key)).py_err(py)?;
        report(py, &q)
    }

    /// Discards a failed change; the entity returns to the last state the server sent.
    fn drop_failed<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = key.str()?.to_cow()?.into_owned();
        let f = py.detach(|| self.inner.drop_failed(&key)).py_err(py)?;
        report(py, &f)
    }

    /// Writes every packet the server has not acknowledged into `out_dir` as ``.syncpkt``
    /// files to carry by hand (the server applies them with ``starsync import``).
    fn export_packets<'py>(
        &self,
        py: Python<'py>,
        out_dir: PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = py.detach(|| self.inner.export(&out_dir)).py_err(py)?;
        report(py, &r)
    }

    /// Applies server packet files (from ``starsync export --node CODE``): a file, a
    /// directory of them, or a list of either. Files already applied are skipped.
    fn import_packets<'py>(
        &self,
        py: Python<'py>,
        path: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let paths: Vec<PathBuf> =
            if path.is_instance_of::<PyList>() || path.is_instance_of::<PyTuple>() {
                path.extract()?
            } else {
                vec![path.extract()?]
            };
        let r = py
            .detach(|| self.inner.import(&paths, &mut |_| {}))
            .py_err(py)?;
        report(py, &r)
    }

    /// Exchanges packets with the server until neither side has more; returns what it did
    /// (``sent``, ``received``, ``errors``, ``conflicts``...). Raises :class:`Unreachable`
    /// when the server cannot be reached (nothing is lost: the next sync resends).
    fn sync<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let r = py.detach(|| self.inner.sync()).py_err(py)?;
        convert::sync_report(py, &r)
    }

    /// Asks a running sync (any thread's) to stop at the next safe point; everything done
    /// stays done. :meth:`clear_stop` allows syncing again.
    fn request_stop(&self) {
        self.inner.request_stop();
    }

    /// Clears a stop request.
    fn clear_stop(&self) {
        self.inner.clear_stop();
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let dir = self.inner.data_dir().display().to_string();
        match py.detach(|| self.inner.info()) {
            Ok(i) => format!("<starsync.Node {} at {dir:?}>", i.code),
            Err(_) => format!("<starsync.Node at {dir:?}>"),
        }
    }
}

/// The compiled half of the `starsync` package.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Node>()?;
    m.add_class::<service::SyncService>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
