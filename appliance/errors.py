"""One error hierarchy; the web layer maps each class to an HTTP status in one place."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class InvalidInput(ApplianceError):
    """Input that cannot be accepted; `field` names the offending field (dotted path)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ApplianceError):
    """A product, customer or other resource that does not exist."""


class NotReady(ApplianceError):
    """A part the request needs (model, index) is still loading."""


class ModelUnreadable(ApplianceError):
    """A stored model (checkpoint, its metadata or the serving pointer) cannot be read."""


class StoreLocked(ApplianceError):
    """Another process (usually a running server) holds the DuckDB file."""


class NotEnoughData(ApplianceError):
    """Too few events to train or evaluate; the message says what is missing (no traceback, CLI exit 2)."""


class StoreUnavailable(ApplianceError):
    """The store cannot write (disk read-only, full or failing): nothing was acknowledged; try again later."""


class QueueUnavailable(ApplianceError):
    """The message queue (SQS) cannot be reached or refuses: messages wait (in SQS or the outbox); try again later."""
