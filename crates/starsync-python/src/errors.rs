//! `NodeError` → the Python exceptions of `starsync.errors`.
//!
//! The classes are written in Python (python/starsync/errors.py) so they can also be a
//! `ValueError` or a `LookupError` where that is what they are, and carry plain attributes
//! (`.code`, `.status`, `.url`…) an app branches on; the message is the node's own text.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use starsync_node::NodeError;

/// Builds `starsync.errors.<class>(message)` with the given attributes set.
fn build(py: Python<'_>, class: &str, message: String, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let cls = py.import("starsync.errors")?.getattr(class)?;
        let kwargs = PyDict::new(py);
        for (k, v) in attrs {
            kwargs.set_item(k, v)?;
        }
        let instance = cls.call((message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    })();
    // Only when the Python half of the package is missing (the extension imported alone).
    made.unwrap_or_else(|_| PyRuntimeError::new_err(message))
}

/// `InvalidInput` (a `StarsyncError` and a `ValueError`) for bad arguments found on this side.
pub fn invalid(py: Python<'_>, message: String) -> PyErr {
    build(py, "InvalidInput", message, &[])
}

/// The Python exception for a node error.
pub fn to_py(py: Python<'_>, e: NodeError) -> PyErr {
    let message = e.to_string();
    let s = |v: &str| -> Py<PyAny> {
        v.into_pyobject(py)
            .map(|o| o.into_any().unbind())
            .unwrap_or_else(|_| py.None())
    };
    match e {
        NodeError::NotInitialized { dir } => build(
            py,
            "NotInitialized",
            message,
            &[("data_dir", s(&dir.display().to_string()))],
        ),
        NodeError::AlreadyInitialized { dir, code } => build(
            py,
            "AlreadyInitialized",
            message,
            &[
                ("data_dir", s(&dir.display().to_string())),
                ("node_code", s(&code)),
            ],
        ),
        NodeError::Unreachable { url, .. } => {
            build(py, "Unreachable", message, &[("url", s(&url))])
        }
        NodeError::Rejected { status, code, .. } => {
            let status = status
                .into_pyobject(py)
                .map(|o| o.into_any().unbind())
                .unwrap_or_else(|_| py.None());
            build(
                py,
                "Rejected",
                message,
                &[("status", status), ("code", s(code.as_str()))],
            )
        }
        // The server's certificate is not trusted: a configuration problem (the CA to trust),
        // not a network failure to retry.
        NodeError::Certificate { url, .. } => {
            build(py, "ConfigError", message, &[("url", s(&url))])
        }
        NodeError::Invalid(_) => build(py, "InvalidInput", message, &[]),
        NodeError::NotFound(_) => build(py, "NotFound", message, &[]),
        NodeError::Protocol(_) => build(py, "ProtocolError", message, &[]),
        NodeError::Open { .. } | NodeError::Db(_) | NodeError::Io(_) => {
            build(py, "StorageError", message, &[])
        }
    }
}

/// `.py_err(py)?` on a node result, after the GIL is taken back.
pub trait NodeResultExt<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> NodeResultExt<T> for Result<T, NodeError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
