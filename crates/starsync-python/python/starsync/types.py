"""The shapes of the plain dicts :mod:`starsync` returns (for type checkers and readers).

They are ordinary ``dict`` objects at run time; these :class:`typing.TypedDict` classes only
name their keys. Timestamps are ISO 8601 strings in UTC.
"""

from typing import Any, Dict, List, Literal, Optional, TypedDict

#: Where a local entity stands with the server.
SyncState = Literal["synced", "pending", "in_flight", "failed"]

#: What a :class:`starsync.SyncService` reports through ``on_status_changed``.
ServiceStatus = Literal["syncing", "online", "offline"]

__all__ = [
    "SyncState",
    "ServiceStatus",
    "Entity",
    "QueuedChange",
    "FailedChange",
    "ConflictRecord",
    "SyncReport",
    "Status",
    "NodeInfo",
    "ExportedFile",
    "ExportReport",
    "ImportedFile",
    "ImportReport",
]


class Entity(TypedDict):
    """One local entity (:meth:`starsync.Node.get`, :meth:`starsync.Node.list`)."""

    entity_type: str
    entity_uuid: str
    #: The local state (for a deleted entity: the last state it had).
    data: Dict[str, Any]
    deleted: bool
    #: The last server version this node received (0: none).
    server_version: int
    sync_state: SyncState
    updated_at: str


class QueuedChange(TypedDict):
    """A change queued in the outbox by a local write."""

    change_id: str
    entity_type: str
    entity_uuid: str
    #: ``"INSERT"``, ``"UPDATE"`` or ``"DELETE"``.
    operation: str
    base_version: int
    #: True when the write replaced a change already pending for the entity.
    replaced_pending: bool


class FailedChange(TypedDict):
    """A change the server rejected, kept until retried or dropped."""

    #: What :meth:`starsync.Node.retry_failed` and :meth:`starsync.Node.drop_failed` take.
    id: int
    change_id: str
    entity_type: str
    entity_uuid: str
    operation: str
    base_version: int
    data: Optional[Dict[str, Any]]
    #: The server's message.
    error: str
    #: Why, as a code: ``"invalid_entity_type"``, ``"immutable_type"``, ``"version_ahead"``...
    reason: str
    packet_no: Optional[int]
    updated_at: str


class ConflictRecord(TypedDict):
    """A conflict the server resolved on one of this node's changes."""

    conflict_id: str
    entity_type: str
    entity_uuid: str
    change_id: str
    #: The strategy that decided it: ``"server_wins"``, ``"timestamp_wins"``, ``"client_wins"``
    #: or ``"manual"``.
    resolution: str
    #: ``"<strategy>:<winner>"`` as in the server's history, e.g. ``"server_wins:server"``.
    conflict_resolution: str
    server_version: int
    #: What this node had sent (None for a delete).
    local_data: Optional[Dict[str, Any]]
    reported_at: str
    #: True when this node's change lost (the server kept or restored another state).
    node_lost: bool


class SyncReport(TypedDict):
    """What one :meth:`starsync.Node.sync` did."""

    exchanges: int
    packets_sent: int
    #: Changes in the packets delivered.
    sent: int
    duplicates: int
    #: Server changes applied to local entities.
    received: int
    #: Server changes not applied because a local change of the entity is on its way.
    kept_local: int
    #: Changes the server rejected (now in :meth:`starsync.Node.failed`).
    errors: List[FailedChange]
    conflicts: List[ConflictRecord]
    retries: int
    gaps_recovered: int
    #: The sync stopped early on a stop request; nothing is lost.
    cancelled: bool


class Status(TypedDict):
    """Outbox and packet counters, last sync times and error."""

    pending: int
    in_flight: int
    failed: int
    stored_packets: int
    sent_packet_no: int
    server_acked_packet_no: int
    received_packet_no: int
    conflicts: int
    last_attempt_at: Optional[str]
    last_success_at: Optional[str]
    last_error: Optional[str]
    last_error_at: Optional[str]
    last_export_at: Optional[str]
    last_import_at: Optional[str]


class NodeInfo(TypedDict):
    """Who a node is and where its server is (never the token)."""

    data_dir: str
    server_url: str
    node_id: str
    code: str
    name: str
    server_node_id: str
    server_code: str
    schema_version: str
    packet_timeout: int
    max_retries: int
    batch_size: int
    max_packet_bytes: int
    created_at: str


class ExportedFile(TypedDict):
    file: str
    packet_no: int
    changes: int
    bytes: int


class ExportReport(TypedDict):
    files: List[ExportedFile]


class ImportedFile(TypedDict):
    file: str
    packet_no: int
    #: Applied before (an older or repeated file): only its acknowledgment counted.
    skipped: bool
    received: int
    kept_local: int
    acked_packet_no: int


class ImportReport(TypedDict):
    files: List[ImportedFile]
    received: int
    kept_local: int
