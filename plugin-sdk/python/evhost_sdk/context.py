"""What a handler can do during one call: emit, state, config, log, and the
idempotency helper whose state-key layout is the Rust SDK's, byte for byte
(``__evhost/handled/seq``, ``__evhost/handled/id/ID``,
``__evhost/handled/slot/N``), so a plugin ported between languages keeps
its records."""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, Tuple

from .errors import JsonError, Reject
from .event import Event, OutgoingEvent

#: State keys under this prefix belong to the SDK (the idempotency records);
#: :meth:`Context.state_keys` hides them unless asked for this prefix.
RESERVED_PREFIX = "__evhost/"

#: How many handled ids :meth:`Context.once` remembers by default.
DEFAULT_DEDUPE_WINDOW = 10_000

_SEQ_KEY = "__evhost/handled/seq"


def _id_key(id: str) -> str:
    return f"{RESERVED_PREFIX}handled/id/{id}"


def _slot_key(slot: int) -> str:
    return f"{RESERVED_PREFIX}handled/slot/{slot}"


class Level:
    """Severities of a log line (the WIT enum ``level``)."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    ALL = (TRACE, DEBUG, INFO, WARN, ERROR)


def encode_json(value: Any, what: str) -> bytes:
    """Compact JSON, non-ASCII kept as UTF-8: the bytes serde_json writes."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise JsonError(f"encoding {what}: {err}") from err


class Context:
    """The handler's view of the host for one call. Its methods raise
    :class:`evhost_sdk.SdkError` subclasses, which are handler errors of the
    right kind when they escape the handler."""

    def __init__(self, host: Any):
        self._host = host
        self.dedupe_window = DEFAULT_DEDUPE_WINDOW

    # --- emit -------------------------------------------------------------
    def emit(self, event: OutgoingEvent) -> str:
        """Queues ``event`` for publication when the call succeeds; returns its id.
        Raises :class:`EmitRefused` (a reject) when the host refuses it."""
        return self._host.emit(event)

    # --- state ------------------------------------------------------------
    def state_get_bytes(self, key: str) -> Optional[bytes]:
        """The raw bytes under ``key`` (this call's own writes included)."""
        return self._host.state_get(key)

    def state_set_bytes(self, key: str, value: bytes) -> None:
        """Stores raw bytes under ``key``; committed with the call."""
        self._host.state_set(key, bytes(value))

    def state_get(self, key: str, default: Any = None) -> Any:
        """The JSON value under ``key``, or ``default`` when there is none."""
        raw = self.state_get_bytes(key)
        if raw is None:
            return default
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError as err:
            raise JsonError(f"decoding state key `{key}`: {err}") from err

    def state_set(self, key: str, value: Any) -> None:
        """Stores ``value`` as JSON under ``key``."""
        self.state_set_bytes(key, encode_json(value, f"state key `{key}`"))

    def state_delete(self, key: str) -> None:
        """Removes ``key``; removing a missing key is not an error."""
        self._host.state_delete(key)

    def state_keys(self, prefix: str = "") -> List[str]:
        """Keys starting with ``prefix`` in ascending byte order, without the
        SDK's reserved keys unless ``prefix`` asks for them."""
        keys = self._host.state_keys(prefix)
        if not prefix.startswith(RESERVED_PREFIX):
            keys = [k for k in keys if not k.startswith(RESERVED_PREFIX)]
        return keys

    # --- config -----------------------------------------------------------
    def config(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """The operator's setting ``key`` (sidecar ``[config]``), or ``default``."""
        value = self._host.config_get(key)
        return default if value is None else value

    def config_int(self, key: str, default: int) -> int:
        """Setting ``key`` as an integer; a reject naming the key when it is not one."""
        return self._typed(key, default, int, "an integer")

    def config_float(self, key: str, default: float) -> float:
        """Setting ``key`` as a number; a reject naming the key when it is not one."""
        return self._typed(key, default, float, "a number")

    def config_bool(self, key: str, default: bool) -> bool:
        """Setting ``key`` as ``true``/``false``; a reject naming the key otherwise."""

        def parse(text: str) -> bool:
            if text in ("true", "false"):
                return text == "true"
            raise ValueError(text)

        return self._typed(key, default, parse, "true or false")

    def config_entries(self) -> List[Tuple[str, str]]:
        """All settings as (key, value) pairs, sorted by key."""
        return list(self._host.config_entries())

    def _typed(self, key: str, default: Any, parse: Callable[[str], Any], what: str) -> Any:
        text = self._host.config_get(key)
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError:
            raise Reject(f"config `{key}` must be {what}, got {text!r}") from None

    # --- log --------------------------------------------------------------
    def log(self, level: str, message: str, **fields: Any) -> None:
        """One structured log line; ``fields`` become key/value strings."""
        if level not in Level.ALL:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(Level.ALL)}")
        self._host.log(level, message, [(k, str(v)) for k, v in fields.items()])

    def trace(self, message: str, **fields: Any) -> None:
        self.log(Level.TRACE, message, **fields)

    def debug(self, message: str, **fields: Any) -> None:
        self.log(Level.DEBUG, message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.log(Level.INFO, message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.log(Level.WARN, message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.log(Level.ERROR, message, **fields)

    # --- idempotency ------------------------------------------------------
    def once(self, event: Event, f: Callable[["Context"], None]) -> None:
        """Runs ``f(cx)`` unless ``event`` was already handled, then marks it
        handled; the mark commits with ``f``'s effects or not at all."""
        if self.already_handled(event):
            self.debug("skipping an event already handled", id=event.id)
            return
        f(self)
        self.mark_handled(event)

    def already_handled(self, event: Event) -> bool:
        """Whether ``event``'s id was marked in a committed call (or earlier in this one)."""
        return self.state_get_bytes(_id_key(event.id)) is not None

    def mark_handled(self, event: Event) -> None:
        """Records ``event``'s id as handled, forgetting the oldest id when the
        window is full; a no-op if it already is."""
        key = _id_key(event.id)
        if self.state_get_bytes(key) is not None:
            return
        seq = int(self.state_get(_SEQ_KEY, 0)) + 1
        if self.dedupe_window > 0:
            slot = _slot_key(seq % self.dedupe_window)
            old = self.state_get_bytes(slot)
            if old is not None:
                self.state_delete(_id_key(old.decode("utf-8", errors="replace")))
            self.state_set_bytes(slot, event.id.encode("utf-8"))
        self.state_set(key, seq)
        self.state_set(_SEQ_KEY, seq)

    def set_dedupe_window(self, window: int) -> None:
        """How many handled ids are remembered (``0``: without bound). Call it
        at the top of the handler with the same value every time."""
        self.dedupe_window = int(window)
