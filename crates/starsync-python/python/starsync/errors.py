"""Exceptions raised by :mod:`starsync`.

Every error is a :class:`StarsyncError`; catch the subclasses to decide what to do:

- :class:`Unreachable` -- the server could not be reached. Nothing is lost: sync again later
  (a :class:`starsync.SyncService` does, with backoff).
- :class:`Rejected` -- the server answered and refused; ``.code`` says why
  (``"unauthorized"``, ``"schema_mismatch"``, ``"packet_too_large"``...; ``"unknown"`` for a
  code newer than this package) and ``.status`` is the HTTP status.
- :class:`ConfigError` -- the node is not set up (:class:`NotInitialized`) or already is
  (:class:`AlreadyInitialized`).
- :class:`InvalidInput` -- a bad argument (also a :class:`ValueError`).
- :class:`NotFound` -- no such failed change, no packet files... (also a :class:`LookupError`).
- :class:`ProtocolError` -- the server sent something this node cannot use.
- :class:`StorageError` -- the node's local database or a file could not be read or written.
"""

from typing import Optional

__all__ = [
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
]


class StarsyncError(Exception):
    """Base class of every error this package raises."""

    #: True when trying again later may succeed without changing anything.
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(StarsyncError):
    """The server could not be reached or did not answer in time (nothing is lost)."""

    retryable = True

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        #: The server URL the node tried.
        self.url = url


class Rejected(StarsyncError):
    """The server answered with an error: ``.code`` (its ``error`` string) and ``.status``."""

    def __init__(self, message: str, status: int = 0, code: str = "unknown") -> None:
        super().__init__(message)
        #: HTTP status of the answer (401, 409, 413...).
        self.status = status
        #: The server's error code, e.g. ``"unauthorized"`` or ``"schema_mismatch"``.
        self.code = code


class ConfigError(StarsyncError):
    """The node's setup does not allow the call (not set up, or set up already)."""


class NotInitialized(ConfigError):
    """No node is set up in ``.data_dir``: call :meth:`starsync.Node.init` first."""

    def __init__(self, message: str, data_dir: str = "") -> None:
        super().__init__(message)
        self.data_dir = data_dir


class AlreadyInitialized(ConfigError):
    """A node (``.node_code``) is already set up in ``.data_dir``: open it, or pass ``force=True``."""

    def __init__(self, message: str, data_dir: str = "", node_code: Optional[str] = None) -> None:
        super().__init__(message)
        self.data_dir = data_dir
        self.node_code = node_code


class InvalidInput(StarsyncError, ValueError):
    """A bad argument: an entity type or id, data JSON cannot hold, an unknown setting..."""


class NotFound(StarsyncError, LookupError):
    """The thing asked for does not exist (a failed change, packet files to import...)."""


class ProtocolError(StarsyncError):
    """The server (or a packet file) sent something this node cannot use."""


class StorageError(StarsyncError):
    """The node's local database or a file could not be read or written."""
