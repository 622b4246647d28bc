//! Python objects ↔ JSON values, exactly: the node stores entity data as JSON, so what an app
//! puts is what every other node gets back.
//!
//! Written out rather than through a generic serde bridge so the edge cases are ours to decide:
//! integers stay integers (up to 64 bits; a larger one is refused instead of rounded to a
//! float), `NaN`/`inf` are refused (JSON has no such numbers), dict keys must be strings
//! (JSON has no other keys), and tuples become lists.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use starsync_node::{ConflictRecord, SyncReport};

use crate::errors::invalid;

/// Nesting deeper than this is refused (a self-referencing list would otherwise recurse
/// until the stack overflows).
const MAX_DEPTH: usize = 128;

/// A Python value as JSON; `InvalidInput` (a `ValueError`) names the path of what JSON cannot hold.
pub fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json_at(obj, "data", 0)
}

fn to_json_at(obj: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(invalid(obj.py(), format!(
            "{path}: nested more than {MAX_DEPTH} levels deep (a list or dict that contains itself?)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: in Python, True is an int.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(invalid(
            obj.py(),
            format!(
                "{path}: the integer {} does not fit in 64 bits; store it as a string",
                obj.str()?
            ),
        ));
    }
    if obj.is_instance_of::<PyFloat>() {
        let f: f64 = obj.extract()?;
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| invalid(obj.py(), format!("{path}: {f} is not a JSON number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(invalid(
                    obj.py(),
                    format!(
                        "{path}: the key {} is not a string (JSON object keys are strings)",
                        k.repr()?
                    ),
                ));
            };
            let key = key.to_cow()?.into_owned();
            let value = to_json_at(&v, &format!("{path}[{key:?}]"), depth + 1)?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return seq(l.iter(), path, depth);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return seq(t.iter(), path, depth);
    }
    Err(invalid(
        obj.py(),
        format!(
            "{path}: a {} cannot be stored as JSON (use dict, list, str, int, float, bool or None)",
            obj.get_type().name()?
        ),
    ))
}

fn seq<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    path: &str,
    depth: usize,
) -> PyResult<Value> {
    items
        .enumerate()
        .map(|(i, v)| to_json_at(&v, &format!("{path}[{i}]"), depth + 1))
        .collect::<PyResult<Vec<_>>>()
        .map(Value::Array)
}

/// A JSON value as plain Python objects (dict, list, str, int, float, bool, None).
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for item in a {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(m) => {
            let dict = PyDict::new(py);
            for (k, item) in m {
                dict.set_item(k, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Any of the node's report types (all `Serialize`) as a Python dict.
pub fn report<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &value_of(value)?)
}

fn value_of<T: Serialize>(value: &T) -> PyResult<Value> {
    serde_json::to_value(value)
        .map_err(|e| PyRuntimeError::new_err(format!("cannot convert a node report: {e}")))
}

/// A conflict record, with `node_lost` spelled out (an app shows the loser a notice; the
/// rule for who lost lives in the node crate, not in every app).
fn conflict_value(c: &ConflictRecord) -> PyResult<Value> {
    let mut v = value_of(c)?;
    if let Some(m) = v.as_object_mut() {
        m.insert("node_lost".into(), Value::Bool(c.node_lost()));
    }
    Ok(v)
}

pub fn conflict<'py>(py: Python<'py>, c: &ConflictRecord) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &conflict_value(c)?)
}

pub fn conflicts<'py>(py: Python<'py>, list: &[ConflictRecord]) -> PyResult<Bound<'py, PyAny>> {
    let v = list
        .iter()
        .map(conflict_value)
        .collect::<PyResult<Vec<_>>>()?;
    to_py(py, &Value::Array(v))
}

/// A sync report whose conflicts carry `node_lost` like [`conflict`]'s.
pub fn sync_report<'py>(py: Python<'py>, r: &SyncReport) -> PyResult<Bound<'py, PyAny>> {
    let mut v = value_of(r)?;
    if let Some(m) = v.as_object_mut() {
        let list = r
            .conflicts
            .iter()
            .map(conflict_value)
            .collect::<PyResult<Vec<_>>>()?;
        m.insert("conflicts".into(), Value::Array(list));
    }
    to_py(py, &v)
}
