"""Handler failures (what the host sees) and SDK failures (what a helper reports)."""


class HandlerError(Exception):
    """Why a handler failed: ``kind`` is ``"retry"`` (transient: called again
    with backoff) or ``"reject"`` (permanent: parked in the dead-letter store
    at once). Either way nothing the call emitted or wrote is committed.

    >>> str(Retry("payment service unavailable"))
    'retry: payment service unavailable'
    """

    kind = "reject"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HandlerError)
            and other.kind == self.kind
            and other.message == self.message
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.message))


class Retry(HandlerError):
    """A transient failure: the host calls again after a backoff."""

    kind = "retry"


class Reject(HandlerError):
    """A permanent failure: the event is dead-lettered without further attempts."""

    kind = "reject"


class SdkError(HandlerError):
    """A failure reported by an SDK helper. Raised out of a handler it is a
    handler error of its own kind: a failing state call is a :class:`Retry`
    (the store may recover), everything else is deterministic and a
    :class:`Reject`."""


class MissingData(SdkError, Reject):
    """The event carries no payload."""

    def __init__(self) -> None:
        super().__init__("the event has no data")


class JsonError(SdkError, Reject):
    """A value did not encode to or decode from JSON."""


class EmitRefused(SdkError, Reject):
    """The host refused an emit (invalid event, or its type is not granted)."""

    def __init__(self, message: str):
        super().__init__(f"emit refused: {message}")


class StateFailed(SdkError, Retry):
    """The host's state store failed (or the plugin lacks the ``state`` grant)."""

    def __init__(self, message: str):
        super().__init__(f"state store failed: {message}")
