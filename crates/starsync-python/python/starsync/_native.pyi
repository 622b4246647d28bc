"""Type stubs of the compiled half of :mod:`starsync` (``starsync._native``)."""

import os
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Sequence, Type, Union

from .types import (
    ConflictRecord,
    Entity,
    ExportReport,
    FailedChange,
    ImportReport,
    NodeInfo,
    QueuedChange,
    ServiceStatus,
    Status,
    SyncReport,
)

__version__: str

StrPath = Union[str, "os.PathLike[str]"]
#: Entity data: a dict of JSON values (dict, list, str, int up to 64 bits, float, bool, None).
JsonObject = Dict[str, Any]

class Node:
    """One node: a local SQLite database and its server's address.

    Local reads and writes never touch the network; :meth:`sync` exchanges packets with the
    server. Shareable between threads; every call releases the GIL while it works.
    """

    @staticmethod
    def init(
        data_dir: StrPath,
        server_url: str,
        code: str,
        name: Optional[str] = None,
        admin_token: Optional[str] = None,
        *,
        description: Optional[str] = None,
        schema_version: Optional[str] = None,
        packet_timeout: int = 30,
        max_retries: int = 3,
        batch_size: int = 100,
        force: bool = False,
    ) -> "Node":
        """Registers a node with the server (once) and stores it in ``data_dir``.

        Raises :class:`~starsync.AlreadyInitialized` when a node is there (``force=True``
        replaces it, losing its unsynced changes), :class:`~starsync.Unreachable`,
        :class:`~starsync.Rejected` (``code == "unauthorized"``: wrong admin token;
        ``"code_taken"``: the code is registered already).
        """
    @staticmethod
    def open(data_dir: StrPath) -> "Node":
        """Opens a node set up earlier (no network). :class:`~starsync.NotInitialized` if none."""
    @staticmethod
    def default_data_dir() -> str:
        """The per-user default data directory."""
    @property
    def data_dir(self) -> str: ...
    def info(self) -> NodeInfo:
        """Who this node is and where its server is (never the token)."""
    def set_setting(self, key: str, value: Union[str, int]) -> NodeInfo:
        """Changes ``server_url``, ``packet_timeout``, ``max_retries``, ``batch_size``,
        ``max_packet_bytes``, ``schema_version`` or ``name``."""
    def put(self, entity_type: str, entity_uuid: str, data: JsonObject) -> QueuedChange:
        """Creates or replaces an entity locally and queues the change (one transaction)."""
    def create(self, entity_type: str, data: JsonObject) -> str:
        """Creates an entity with a new random uuid and queues it; returns the uuid."""
    def delete(self, entity_type: str, entity_uuid: str) -> Optional[QueuedChange]:
        """Deletes locally and queues the delete; None when it was already deleted."""
    def get(self, entity_type: str, entity_uuid: str) -> Optional[Entity]:
        """One local entity (deleted ones too, with ``deleted=True``); None if never seen."""
    def list(self, entity_type: str, include_deleted: bool = False) -> List[Entity]:
        """Every live local entity of a type, ordered by uuid."""
    def list_page(
        self,
        entity_type: str,
        after: Optional[str] = None,
        limit: int = 500,
        include_deleted: bool = False,
    ) -> List[Entity]:
        """A page of entities with uuid greater than ``after``."""
    def entity_types(self) -> List[str]: ...
    def status(self) -> Status:
        """Outbox and packet counters, last sync times and error."""
    def conflicts(self) -> List[ConflictRecord]:
        """Conflicts the server reported for this node's changes, newest first."""
    def server_conflicts(self) -> List[Dict[str, Any]]:
        """This node's conflicts in the server's history (needs the server)."""
    def failed(self) -> List[FailedChange]:
        """Changes the server rejected, until retried or dropped."""
    def retry_failed(self, id: Union[int, str]) -> QueuedChange:
        """Queues a failed change again (by ``id`` or ``change_id``)."""
    def drop_failed(self, id: Union[int, str]) -> FailedChange:
        """Discards a failed change; the entity returns to the last server state."""
    def export_packets(self, out_dir: StrPath) -> ExportReport:
        """Writes every unacknowledged packet into ``out_dir`` as ``.syncpkt`` files."""
    def import_packets(self, path: Union[StrPath, Sequence[StrPath]]) -> ImportReport:
        """Applies server packet files (a file, a directory, or a list of them)."""
    def sync(self) -> SyncReport:
        """Exchanges packets until neither side has more.

        Raises :class:`~starsync.Unreachable` (nothing lost; sync again later) or
        :class:`~starsync.Rejected`.
        """
    def request_stop(self) -> None:
        """Asks a running sync (any thread's) to stop at the next safe point."""
    def clear_stop(self) -> None: ...

class SyncService:
    """Syncs a :class:`Node` in the background and reports through callbacks.

    Callbacks run on the service's own thread (in Qt, forward them to signals) and may call
    back into the node. After :meth:`stop` returns, no callback runs.
    """

    def __init__(
        self,
        node: Node,
        interval: float = 300.0,
        *,
        on_status_changed: Optional[Callable[[ServiceStatus], Any]] = None,
        on_sync_completed: Optional[Callable[[SyncReport], Any]] = None,
        on_sync_failed: Optional[Callable[[str], Any]] = None,
        on_conflict_detected: Optional[Callable[[ConflictRecord], Any]] = None,
        on_data_changed: Optional[Callable[[List[str]], Any]] = None,
        max_backoff: float = 60.0,
        probe_interval: float = 5.0,
        start: bool = True,
    ) -> None: ...
    on_status_changed: Optional[Callable[[ServiceStatus], Any]]
    on_sync_completed: Optional[Callable[[SyncReport], Any]]
    on_sync_failed: Optional[Callable[[str], Any]]
    on_conflict_detected: Optional[Callable[[ConflictRecord], Any]]
    on_data_changed: Optional[Callable[[List[str]], Any]]
    @property
    def running(self) -> bool: ...
    @property
    def status(self) -> Optional[ServiceStatus]: ...
    @property
    def node(self) -> Node: ...
    @property
    def interval(self) -> float: ...
    def start(self) -> None:
        """Starts the service (after ``start=False`` or :meth:`stop`)."""
    def sync_now(self) -> None:
        """Syncs at once, even while backing off from an unreachable server."""
    def stop(self) -> None:
        """Stops syncing and waits for the service's threads (safe from a callback)."""
    def __enter__(self) -> "SyncService": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
