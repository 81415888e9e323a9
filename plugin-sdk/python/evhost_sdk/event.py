"""The delivered event and the builder for emitted ones."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from .errors import JsonError, MissingData


def topic_for_type(ty: str) -> str:
    """The topic an event type goes to when none is given: the part before
    the first ``.`` plus ``-events`` (``user.created`` -> ``user-events``).

    >>> topic_for_type("user.created")
    'user-events'
    """
    head = ty.split(".", 1)[0]
    return f"{head}-events"


@dataclass
class Event:
    """One event as delivered to a handler (the WIT record ``event``)."""

    id: str
    type: str
    source: str = "test"
    specversion: str = "1.0"
    subject: Optional[str] = None
    time: str = "2025-01-01T00:00:00Z"
    datacontenttype: Optional[str] = None
    dataschema: Optional[str] = None
    data: Optional[bytes] = None
    correlationid: str = ""
    causationid: Optional[str] = None
    actor: Optional[str] = None
    extensions: List[Tuple[str, str]] = field(default_factory=list)
    topic: str = ""
    partition: int = 0
    offset: int = 0
    stream: Optional[str] = None
    streamversion: Optional[int] = None
    attempt: int = 1

    def text(self) -> str:
        """The payload as UTF-8 text; :class:`MissingData` or a reject when it is not text."""
        if self.data is None:
            raise MissingData()
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonError(f"the event data is not UTF-8: {err}") from err

    def json(self) -> Any:
        """The payload decoded as JSON; a reject (:class:`JsonError`) when it is not JSON."""
        text = self.text()
        try:
            return json.loads(text)
        except ValueError as err:
            raise JsonError(f"decoding the data of event {self.id} ({self.type}): {err}") from err

    def extension(self, name: str) -> Optional[str]:
        """The value of extension attribute ``name``, if present."""
        for key, value in self.extensions:
            if key == name:
                return value
        return None


class OutgoingEvent:
    """An event to publish with :meth:`Context.emit`. Only the type is
    required; the host fills in id, time, source, correlationid, causationid,
    topic (derived from the type) and actor (inherited). Setters return the
    event, so they chain:

    >>> OutgoingEvent("order.created").subject("o-1").json({"total": 42}).type
    'order.created'
    """

    def __init__(self, type: str):
        self.type = type
        self.subject_: Optional[str] = None
        self.id_: Optional[str] = None
        self.topic_: Optional[str] = None
        self.datacontenttype: Optional[str] = None
        self.dataschema_: Optional[str] = None
        self.data: Optional[bytes] = None
        self.actor_: Optional[str] = None
        self.extensions: List[Tuple[str, str]] = []

    def subject(self, subject: str) -> "OutgoingEvent":
        """The partition key: events with the same subject stay in order."""
        self.subject_ = subject
        return self

    def id(self, id: str) -> "OutgoingEvent":
        """An explicit id; a deterministic one makes the emit idempotent across retries."""
        self.id_ = id
        return self

    def topic(self, topic: str) -> "OutgoingEvent":
        """Publish to ``topic`` instead of the one derived from the type."""
        self.topic_ = topic
        return self

    def dataschema(self, schema: str) -> "OutgoingEvent":
        """Sets ``dataschema``."""
        self.dataschema_ = schema
        return self

    def actor(self, actor: str) -> "OutgoingEvent":
        """Sets the ``actor`` extension (by default inherited from the handled event)."""
        self.actor_ = actor
        return self

    def extension(self, name: str, value: str) -> "OutgoingEvent":
        """Adds a CloudEvents extension attribute."""
        self.extensions.append((name, value))
        return self

    def json(self, value: Any) -> "OutgoingEvent":
        """The payload: ``value`` encoded as compact JSON (``application/json``)."""
        try:
            text = json.dumps(value, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            raise JsonError(f"encoding the data of emitted event {self.type}: {err}") from err
        self.data = text.encode("utf-8")
        self.datacontenttype = "application/json"
        return self

    def text(self, text: str) -> "OutgoingEvent":
        """The payload: UTF-8 text (``text/plain; charset=utf-8``)."""
        self.data = text.encode("utf-8")
        self.datacontenttype = "text/plain; charset=utf-8"
        return self

    def bytes(self, data: bytes, content_type: str) -> "OutgoingEvent":
        """The payload: raw bytes with the given content type."""
        self.data = bytes(data)
        self.datacontenttype = content_type
        return self

    def __repr__(self) -> str:
        return f"OutgoingEvent({self.type!r}, subject={self.subject_!r})"
