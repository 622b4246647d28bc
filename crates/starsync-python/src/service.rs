//! `SyncService`: the node's daemon on a background thread, its events turned into Python
//! callbacks.
//!
//! Two threads per running service:
//! - the *sync thread* runs `Node::run_daemon` (sync at start, every `interval`, right after a
//!   local write, at once on `sync_now()`, backing off and probing while the server is down).
//!   It never touches Python, so it never waits for the GIL.
//! - the *callback thread* (what the docs call the service thread) reads the node's events
//!   and calls the app's callbacks. It takes the GIL only to call them and holds no Rust lock
//!   while one runs, so a callback may call back into the node (read, write, even `sync()`,
//!   which then waits for the running sync to finish, or `stop()`). Because the sync thread
//!   never waits for the callback thread, a slow callback delays later callbacks, not syncing.
//!
//! Statuses: "syncing" when a sync starts (any thread's), "online" when it ends with an
//! answer from the server (success, or a refusal: the server is there but said no), "offline"
//! when it could not reach the server. `on_status_changed` fires only when the status changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use starsync_node::{DaemonOptions, NodeEvent};

use crate::convert::{conflict, sync_report};
use crate::errors::invalid;
use crate::Node;

/// How long the callback thread waits for an event before looking at its stop flag.
const POLL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
enum Callback {
    StatusChanged,
    SyncCompleted,
    SyncFailed,
    ConflictDetected,
    DataChanged,
}

const CALLBACKS: usize = 5;

/// What the two threads and the Python object share. Holds no reference to the Python
/// `SyncService` object, so dropping that object stops the service.
struct Core {
    node: starsync_node::Node,
    options: DaemonOptions,
    /// The app's callables. Locked only to read or replace one, never while one runs.
    callbacks: Mutex<[Option<Py<PyAny>>; CALLBACKS]>,
    status: Mutex<Option<&'static str>>,
    running: Mutex<Option<Running>>,
}

struct Running {
    sync_thread: JoinHandle<()>,
    callback_thread: JoinHandle<()>,
    callback_thread_id: ThreadId,
    /// Set once the sync thread has ended: the callback thread delivers what is queued and ends.
    callbacks_done: Arc<AtomicBool>,
    /// The `atexit` hook that stops this run if the app exits without `stop()`.
    atexit_hook: Py<PyAny>,
}

impl Core {
    /// Calls one callback with the GIL and no Rust lock held (the callback table is locked
    /// only to take a reference to the callable).
    fn fire(
        &self,
        which: Callback,
        arg: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>>,
    ) {
        Python::attach(|py| {
            let f = self.callbacks.lock()[which as usize]
                .as_ref()
                .map(|f| f.clone_ref(py));
            let Some(f) = f else {
                return;
            };
            if let Err(e) = arg(py).and_then(|a| f.call1(py, (a,))) {
                // Reported like an exception in a thread (sys.unraisablehook); the service
                // goes on.
                e.write_unraisable(py, Some(f.bind(py)));
            }
        });
    }

    fn set_status(&self, status: &'static str) {
        let changed = {
            let mut current = self.status.lock();
            let changed = *current != Some(status);
            *current = Some(status);
            changed
        };
        if changed {
            self.fire(Callback::StatusChanged, |py| {
                Ok(status.into_pyobject(py)?.into_any())
            });
        }
    }

    fn dispatch(&self, event: NodeEvent) {
        match event {
            NodeEvent::SyncStarted => self.set_status("syncing"),
            NodeEvent::SyncCompleted(r) => {
                self.set_status("online");
                self.fire(Callback::SyncCompleted, |py| sync_report(py, &r));
            }
            NodeEvent::SyncFailed { reason, retryable } => {
                self.set_status(if retryable { "offline" } else { "online" });
                self.fire(Callback::SyncFailed, |py| {
                    Ok(reason.into_pyobject(py)?.into_any())
                });
            }
            NodeEvent::ConflictDetected(c) => {
                self.fire(Callback::ConflictDetected, |py| conflict(py, &c));
            }
            NodeEvent::DataChanged { entity_types, .. } => {
                self.fire(Callback::DataChanged, |py| {
                    Ok(entity_types.into_pyobject(py)?.into_any())
                });
            }
            NodeEvent::LocalConflict { .. }
            | NodeEvent::ChangeRejected(_)
            | NodeEvent::StatusChanged(_)
            | NodeEvent::LiveStream { .. } => {}
        }
    }

    fn callback_loop(
        &self,
        events: Receiver<NodeEvent>,
        daemon_result: Receiver<Result<(), String>>,
        done: &AtomicBool,
    ) {
        loop {
            match events.recv_timeout(POLL) {
                Ok(e) => self.dispatch(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Ok(Err(message)) = daemon_result.try_recv() {
                // The daemon itself stopped (its local database failed): say so once.
                self.fire(Callback::SyncFailed, |py| {
                    Ok(message.into_pyobject(py)?.into_any())
                });
            }
            if done.load(Ordering::SeqCst) {
                while let Ok(e) = events.try_recv() {
                    self.dispatch(e);
                }
                return;
            }
        }
    }

    fn start(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        // An app that exits without stop(): stop at exit, before the interpreter goes away
        // under the callback thread. Registered before taking `running`: no Python code runs
        // while a lock is held (another thread could hold the GIL and wait for the lock).
        let weak = Arc::downgrade(self);
        let hook = PyCFunction::new_closure(
            py,
            Some(c"stop_sync_service"),
            None,
            move |args: &Bound<'_, PyTuple>, _: Option<&Bound<'_, PyDict>>| {
                if let Some(core) = weak.upgrade() {
                    core.stop(args.py());
                }
            },
        )?
        .into_any();
        let atexit = py.import("atexit")?;
        atexit.call_method1("register", (&hook,))?;
        let started = self.spawn(py, hook.clone().unbind());
        if started.is_err() {
            let _ = atexit.call_method1("unregister", (&hook,));
        }
        started
    }

    fn spawn(self: &Arc<Self>, py: Python<'_>, atexit_hook: Py<PyAny>) -> PyResult<()> {
        let mut running = self.running.lock();
        if running.is_some() {
            return Err(PyRuntimeError::new_err(
                "the SyncService is already running",
            ));
        }
        // Subscribed before the daemon starts, so its first "syncing" is not missed.
        let events = self.node.subscribe();
        let (result_tx, result_rx) = mpsc::channel();
        let callbacks_done = Arc::new(AtomicBool::new(false));

        let node = self.node.clone();
        let options = self.options.clone();
        let sync_thread = std::thread::Builder::new()
            .name("starsync-sync".into())
            .spawn(move || {
                let r = node.run_daemon(options, &mut |_| {});
                // The stop request was for this daemon; the node can sync again.
                node.clear_stop();
                let _ = result_tx.send(r.map_err(|e| e.to_string()));
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the sync thread: {e}")))?;

        let core = Arc::clone(self);
        let done = Arc::clone(&callbacks_done);
        let callback_thread = std::thread::Builder::new()
            .name("starsync-callbacks".into())
            .spawn(move || core.callback_loop(events, result_rx, &done));
        let callback_thread = match callback_thread {
            Ok(t) => t,
            Err(e) => {
                self.node.request_stop();
                let _ = py.detach(|| sync_thread.join());
                return Err(PyRuntimeError::new_err(format!(
                    "cannot start the callback thread: {e}"
                )));
            }
        };
        let callback_thread_id = callback_thread.thread().id();
        *running = Some(Running {
            sync_thread,
            callback_thread,
            callback_thread_id,
            callbacks_done,
            atexit_hook,
        });
        Ok(())
    }

    /// Stops both threads. From the app's threads it waits for them (with the GIL released,
    /// so a callback in progress can finish); from a callback it waits for the sync thread
    /// only, and the callback thread ends once that callback returns.
    fn stop(&self, py: Python<'_>) {
        let Some(run) = self.running.lock().take() else {
            return;
        };
        let Running {
            sync_thread,
            callback_thread,
            callback_thread_id,
            callbacks_done,
            atexit_hook,
        } = run;
        if let Ok(atexit) = py.import("atexit") {
            let _ = atexit.call_method1("unregister", (atexit_hook,));
        }
        self.node.request_stop();
        let on_callback_thread = std::thread::current().id() == callback_thread_id;
        py.detach(|| {
            let _ = sync_thread.join();
            // Only now: the last events of the stopped sync are queued and get delivered.
            callbacks_done.store(true, Ordering::SeqCst);
            if !on_callback_thread {
                let _ = callback_thread.join();
            }
        });
    }

    /// When the Python object goes away: signal both threads, do not wait for them (the
    /// callback thread may be waiting for the GIL this thread holds).
    fn stop_without_waiting(&self, py: Python<'_>) {
        let Some(run) = self.running.lock().take() else {
            return;
        };
        self.node.request_stop();
        // The callback thread delivers what is queued and ends; the sync thread ends after
        // its current exchange.
        run.callbacks_done.store(true, Ordering::SeqCst);
        if let Ok(atexit) = py.import("atexit") {
            let _ = atexit.call_method1("unregister", (run.atexit_hook,));
        }
    }
}

/// Syncs a :class:`Node` in the background and tells the app what happens.
///
/// ``SyncService(node, interval=300, on_status_changed=..., ...)`` starts at once (pass
/// ``start=False`` to set callbacks first, then call :meth:`start`). It syncs at start, every
/// `interval` seconds, right after every local write made through this process's `Node`
/// objects, within a second of writes by another process, and at once on :meth:`sync_now`.
/// While the server is unreachable it backs off (1 s doubling up to `max_backoff`) and probes
/// it every `probe_interval` seconds, syncing as soon as it answers.
///
/// Callbacks (each takes one argument; None to unset) run on the service's own thread, never
/// the thread that created it: in a Qt app, forward them to signals (see
/// ``examples/pyside6_sync.py``). They may call back into the node. An exception in one is
/// reported through ``sys.unraisablehook`` and the service goes on.
///
/// - ``on_status_changed(status)``: ``"syncing"``, ``"online"`` (the server answered) or
///   ``"offline"`` (it could not be reached); only on a change.
/// - ``on_sync_completed(report)``: a :class:`SyncReport` dict.
/// - ``on_sync_failed(message)``: why a sync stopped early (nothing is lost).
/// - ``on_conflict_detected(conflict)``: a :class:`ConflictRecord` dict: the server resolved
///   a conflict on one of this node's changes.
/// - ``on_data_changed(entity_types)``: changes from the server were applied to these types
///   (refresh their views).
///
/// Call :meth:`stop` when the app closes (or use ``with SyncService(...) as service:``); after
/// it returns no callback runs. Dropping the last reference stops it too, without waiting.
#[pyclass(frozen, module = "starsync")]
pub struct SyncService {
    node: Py<Node>,
    core: Arc<Core>,
}

#[pymethods]
impl SyncService {
    #[new]
    #[pyo3(signature = (
        node, interval=300.0, *, on_status_changed=None, on_sync_completed=None,
        on_sync_failed=None, on_conflict_detected=None, on_data_changed=None,
        max_backoff=60.0, probe_interval=5.0, start=true
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        node: Py<Node>,
        interval: f64,
        on_status_changed: Option<Py<PyAny>>,
        on_sync_completed: Option<Py<PyAny>>,
        on_sync_failed: Option<Py<PyAny>>,
        on_conflict_detected: Option<Py<PyAny>>,
        on_data_changed: Option<Py<PyAny>>,
        max_backoff: f64,
        probe_interval: f64,
        start: bool,
    ) -> PyResult<SyncService> {
        let seconds = |name: &str, v: f64| -> PyResult<Duration> {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(invalid(
                    py,
                    format!("{name} must be a positive number of seconds"),
                ))
            }
        };
        let options = DaemonOptions {
            interval: seconds("interval", interval)?,
            max_backoff: seconds("max_backoff", max_backoff)?,
            probe_interval: seconds("probe_interval", probe_interval)?,
            ..DaemonOptions::default()
        };
        let callbacks = [
            on_status_changed,
            on_sync_completed,
            on_sync_failed,
            on_conflict_detected,
            on_data_changed,
        ];
        for f in callbacks.iter().flatten() {
            check_callable(f.bind(py))?;
        }
        let core = Arc::new(Core {
            node: node.get().inner.clone(),
            options,
            callbacks: Mutex::new(callbacks),
            status: Mutex::new(None),
            running: Mutex::new(None),
        });
        if start {
            core.start(py)?;
        }
        Ok(SyncService { node, core })
    }

    /// Starts the service (when created with ``start=False``, or after :meth:`stop`).
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.core.start(py)
    }

    /// Syncs now, even while backing off from an unreachable server (a "Sync now" button).
    /// Returns at once; the callbacks tell the outcome.
    fn sync_now(&self) {
        self.core.node.request_sync();
    }

    /// Stops syncing (a sync in progress stops at its next safe point; nothing is lost) and
    /// waits for both threads. Safe to call twice, and from a callback.
    fn stop(&self, py: Python<'_>) {
        self.core.stop(py);
    }

    /// True between start and stop.
    #[getter]
    fn running(&self) -> bool {
        self.core.running.lock().is_some()
    }

    /// The last status (``"syncing"``, ``"online"``, ``"offline"``), None before the first
    /// sync.
    #[getter]
    fn status(&self) -> Option<&'static str> {
        *self.core.status.lock()
    }

    /// The node this service syncs.
    #[getter]
    fn node(&self, py: Python<'_>) -> Py<Node> {
        self.node.clone_ref(py)
    }

    /// Seconds between syncs when nothing happens.
    #[getter]
    fn interval(&self) -> f64 {
        self.core.options.interval.as_secs_f64()
    }

    #[getter]
    fn on_status_changed(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get(py, Callback::StatusChanged)
    }
    #[setter]
    fn set_on_status_changed(&self, f: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.set(Callback::StatusChanged, f)
    }
    #[getter]
    fn on_sync_completed(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get(py, Callback::SyncCompleted)
    }
    #[setter]
    fn set_on_sync_completed(&self, f: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.set(Callback::SyncCompleted, f)
    }
    #[getter]
    fn on_sync_failed(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get(py, Callback::SyncFailed)
    }
    #[setter]
    fn set_on_sync_failed(&self, f: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.set(Callback::SyncFailed, f)
    }
    #[getter]
    fn on_conflict_detected(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get(py, Callback::ConflictDetected)
    }
    #[setter]
    fn set_on_conflict_detected(&self, f: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.set(Callback::ConflictDetected, f)
    }
    #[getter]
    fn on_data_changed(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get(py, Callback::DataChanged)
    }
    #[setter]
    fn set_on_data_changed(&self, f: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.set(Callback::DataChanged, f)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) {
        self.core.stop(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "<starsync.SyncService {} status={:?}>",
            if self.running() { "running" } else { "stopped" },
            self.status().unwrap_or("none")
        )
    }

    // Garbage-collector support: a callback that refers back to the service (a bound method
    // of a window that owns it) forms a cycle the collector must see to break.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.node)?;
        if let Some(callbacks) = self.core.callbacks.try_lock() {
            for f in callbacks.iter().flatten() {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let old = std::mem::take(&mut *self.core.callbacks.lock());
        // Released after the lock: a destructor may run Python code that reads a callback.
        drop(old);
    }
}

impl SyncService {
    fn get(&self, py: Python<'_>, which: Callback) -> Option<Py<PyAny>> {
        self.core.callbacks.lock()[which as usize]
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    fn set(&self, which: Callback, f: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let f = match f {
            Some(f) if !f.is_none() => {
                check_callable(&f)?;
                Some(f.unbind())
            }
            _ => None,
        };
        let old = std::mem::replace(&mut self.core.callbacks.lock()[which as usize], f);
        // Released after the lock (its destructor may run Python code).
        drop(old);
        Ok(())
    }
}

impl Drop for SyncService {
    fn drop(&mut self) {
        Python::attach(|py| self.core.stop_without_waiting(py));
    }
}

fn check_callable(f: &Bound<'_, PyAny>) -> PyResult<()> {
    if f.is_callable() {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "a callback must be callable or None, not {}",
            f.get_type().name()?
        )))
    }
}
