"""starsync: offline-first sync for Python desktop apps.

The node library of the starsync hub, compiled from the same Rust crate (``starsync-node``)
that the ``starsync-node`` command line uses, so a Python app keeps its data in a local node
that works offline and exchanges numbered packets with a starsync server.

>>> import starsync
>>> node = starsync.Node.init("data/node", "http://hub:8080", "DESK-1", admin_token="...")
>>> uuid = node.create("Estimate", {"name": "Roof", "value": 150})
>>> node.sync()["sent"]
1

Later runs open the node offline with ``starsync.Node.open("data/node")``; a
:class:`SyncService` keeps it in sync in the background and reports through callbacks.
"""

from ._native import Node, SyncService, __version__
from .errors import (
    AlreadyInitialized,
    ConfigError,
    InvalidInput,
    NotFound,
    NotInitialized,
    ProtocolError,
    Rejected,
    StarsyncError,
    StorageError,
    Unreachable,
)
from .types import (
    ConflictRecord,
    Entity,
    ExportReport,
    FailedChange,
    ImportReport,
    NodeInfo,
    QueuedChange,
    Status,
    SyncReport,
)

__all__ = [
    "Node",
    "SyncService",
    "__version__",
    "StarsyncError",
    "Unreachable",
    "Rejected",
    "ConfigError",
    "NotInitialized",
    "AlreadyInitialized",
    "InvalidInput",
    "NotFound",
    "ProtocolError",
    "StorageError",
    "Entity",
    "QueuedChange",
    "Status",
    "SyncReport",
    "ConflictRecord",
    "FailedChange",
    "NodeInfo",
    "ExportReport",
    "ImportReport",
]
