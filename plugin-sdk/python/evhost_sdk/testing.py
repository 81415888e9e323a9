"""A native stand-in for the daemon, for plain ``pytest`` runs.

:class:`TestHost` calls a plugin's handler the way the daemon does: the
call's emits and state writes are committed only when the handler returns,
and — given the operator's sidecar ``NAME.toml`` — grants are enforced the
daemon's way: an emit of a type outside ``[grants] emit`` or any state access
without ``[grants] state = true`` fails at the call site with the daemon's
message, and the whole call ends as a reject whatever the handler does with
that error, committing nothing.

    host = TestHost(plugin, sidecar="greeter.toml")
    assert host.deliver(make_event("user.created", {"email": "a@b.c"})) is None
    assert host.emitted[0].type == "mail.requested"
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .context import Context, encode_json
from .errors import EmitRefused, HandlerError, Reject, StateFailed
from .event import Event, OutgoingEvent, topic_for_type
from .plugin import Plugin

#: ``time`` of every event built or emitted by the test host.
TEST_TIME = "2025-01-01T00:00:00Z"

_ids = itertools.count(1)


def _next_id() -> str:
    return f"00000000-0000-7000-8000-{next(_ids):012x}"


def make_event(
    type: str,
    data: Any = None,
    *,
    text: Optional[str] = None,
    id: Optional[str] = None,
    subject: Optional[str] = None,
    topic: Optional[str] = None,
    actor: Optional[str] = None,
    attempt: int = 1,
    extensions: Sequence[Tuple[str, str]] = (),
) -> Event:
    """An event as the daemon would deliver it; ``data`` is encoded as JSON,
    ``text`` as plain text."""
    id = id or _next_id()
    payload, content_type = None, None
    if data is not None:
        payload, content_type = encode_json(data, "the test event's data"), "application/json"
    elif text is not None:
        payload, content_type = text.encode("utf-8"), "text/plain; charset=utf-8"
    return Event(
        id=id,
        type=type,
        source="test",
        subject=subject,
        time=TEST_TIME,
        datacontenttype=content_type,
        data=payload,
        correlationid=id,
        actor=actor,
        extensions=list(extensions),
        topic=topic or topic_for_type(type),
        attempt=attempt,
    )


def glob_regex(pattern: str) -> "re.Pattern[str]":
    """The daemon's glob syntax (``*``, ``?``, ``[a-z]``, ``[!a]``, ``{a,b}``) as a regex."""
    out, i, depth = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise ValueError(f"glob {pattern!r}: unclosed '['")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError(f"glob {pattern!r}: unclosed '{{'")
    return re.compile("".join(out) + r"\Z", re.DOTALL)


_SIDECAR_KEYS = {
    "subscriptions", "retry", "timeout", "memory", "fuel", "concurrency",
    "ordering", "config", "grants",
}


@dataclass
class Grants:
    """What the operator granted: ``emit`` globs and ``state``. ``source`` is
    the sidecar path named in refusals."""

    emit: List[str] = field(default_factory=list)
    state: bool = False
    source: Optional[str] = None

    @classmethod
    def all(cls) -> "Grants":
        return cls(emit=["*"], state=True)

    def may_emit(self, ty: str) -> bool:
        return any(glob_regex(p).match(ty) for p in self.emit)

    def _how(self, edit: str) -> str:
        return f"; {edit} in {self.source}" if self.source else ""

    def refuse_emit(self, plugin: str, ty: str) -> str:
        has = (
            f"its `emit` grant allows {', '.join(self.emit)}"
            if self.emit
            else "it has no `emit` grant"
        )
        how = self._how(f'add "{ty}" (or a pattern matching it) to emit under [grants]')
        return f"plugin `{plugin}` may not emit type `{ty}`: {has}{how}"

    def refuse_state(self, plugin: str) -> str:
        how = self._how('add "state = true" under [grants]')
        return f"plugin `{plugin}` has no `state` grant{how}"


def _config_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise ValueError(f"config.{key}: values must be strings, numbers or booleans")


def read_sidecar(path: Union[str, Path]) -> Tuple[Grants, Dict[str, str]]:
    """The grants and config of sidecar ``path``; a missing file grants nothing
    (as in the daemon). Unknown keys are refused by name."""
    path = Path(path)
    grants = Grants(source=str(path))
    if not path.exists():
        return grants, {}
    with path.open("rb") as f:
        try:
            doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: {err}") from None
    for key in doc:
        if key not in _SIDECAR_KEYS:
            raise ValueError(f"{path}: unknown key `{key}`")
    spec = doc.get("grants", {})
    for key in spec:
        if key not in ("emit", "state"):
            raise ValueError(f"{path}: unknown key `grants.{key}`")
    grants.emit = [str(p) for p in spec.get("emit", [])]
    for p in grants.emit:
        glob_regex(p)
    grants.state = bool(spec.get("state", False))
    config = {k: _config_value(k, v) for k, v in doc.get("config", {}).items()}
    return grants, config


@dataclass
class LogLine:
    level: str
    message: str
    fields: List[Tuple[str, str]]

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}" + "".join(f" {k}={v}" for k, v in self.fields)


class _CallHost:
    """One call: committed state plus this call's buffered writes and emits."""

    def __init__(self, host: "TestHost", handled: Event):
        self.host = host
        self.handled = handled
        self.writes: Dict[str, Optional[bytes]] = {}
        self.emits: List[Event] = []
        self.refused: Optional[str] = None

    def _refuse(self, message: str) -> str:
        if self.refused is None:
            self.refused = message
        return message

    def emit(self, out: OutgoingEvent) -> str:
        if not out.type:
            raise EmitRefused("event type must not be empty")
        if not self.host.grants.may_emit(out.type):
            raise EmitRefused(self._refuse(self.host.grants.refuse_emit(self.host.name, out.type)))
        id = out.id_ or _next_id()
        content_type = out.datacontenttype
        if content_type is None and out.data is not None:
            content_type = "application/json"
        self.emits.append(
            Event(
                id=id,
                type=out.type,
                source=f"evhost://plugin/{self.host.name}",
                subject=out.subject_,
                time=TEST_TIME,
                datacontenttype=content_type,
                dataschema=out.dataschema_,
                data=out.data,
                correlationid=self.handled.correlationid,
                causationid=self.handled.id,
                actor=out.actor_ if out.actor_ is not None else self.handled.actor,
                extensions=list(out.extensions),
                topic=out.topic_ or topic_for_type(out.type),
            )
        )
        return id

    def _check_state(self) -> None:
        if not self.host.grants.state:
            raise StateFailed(self._refuse(self.host.grants.refuse_state(self.host.name)))

    def state_get(self, key: str) -> Optional[bytes]:
        self._check_state()
        if key in self.writes:
            return self.writes[key]
        return self.host.state.get(key)

    def state_set(self, key: str, value: bytes) -> None:
        self._check_state()
        self.writes[key] = bytes(value)

    def state_delete(self, key: str) -> None:
        self._check_state()
        self.writes[key] = None

    def state_keys(self, prefix: str) -> List[str]:
        self._check_state()
        merged = dict(self.host.state)
        merged.update(self.writes)
        return sorted(
            (k for k, v in merged.items() if v is not None and k.startswith(prefix)),
            key=lambda k: k.encode("utf-8"),
        )

    def config_get(self, key: str) -> Optional[str]:
        return self.host.config.get(key)

    def config_entries(self) -> List[Tuple[str, str]]:
        return sorted(self.host.config.items())

    def log(self, level: str, message: str, fields: List[Tuple[str, str]]) -> None:
        self.host.logs.append(LogLine(level, message, fields))


class TestHost:
    """An in-memory daemon for one plugin.

    ``sidecar``: the operator's ``NAME.toml``; its ``[grants]`` are enforced
    and its ``[config]`` applied (a path that does not exist grants nothing,
    as in the daemon). Without it every grant is given. ``config`` adds or
    overrides settings; ``state`` seeds committed state as JSON values.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        plugin: Plugin,
        *,
        sidecar: Union[str, Path, None] = None,
        config: Optional[Dict[str, str]] = None,
        state: Optional[Dict[str, Any]] = None,
    ):
        self.plugin = plugin
        self.name = plugin.name
        if sidecar is None:
            self.grants, self.config = Grants.all(), {}
        else:
            self.grants, self.config = read_sidecar(sidecar)
        self.config.update(config or {})
        self.state: Dict[str, bytes] = {
            k: encode_json(v, f"state key `{k}`") for k, v in (state or {}).items()
        }
        self.emitted: List[Event] = []
        self.logs: List[LogLine] = []
        self._offsets: Dict[str, int] = {}

    def deliver(self, event: Event) -> Optional[HandlerError]:
        """Calls the handler with ``event``. Returns ``None`` when it succeeded
        (its effects are committed) or the :class:`HandlerError` the daemon
        would see (nothing committed). Any other exception propagates; in the
        daemon it becomes a retry whose message names it."""
        call = _CallHost(self, event)
        error: Optional[HandlerError] = None
        try:
            self.plugin.call(event, Context(call))
        except HandlerError as err:
            error = err
        except Exception:
            if call.refused is None:
                raise
        if call.refused is not None:
            # A refused grant can never succeed: the daemon rejects the call
            # whatever the handler made of the error.
            return Reject(call.refused)
        if error is not None:
            return error
        for key, value in call.writes.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        for emitted in call.emits:
            emitted.offset = self._offsets.get(emitted.topic, 0)
            self._offsets[emitted.topic] = emitted.offset + 1
            self.emitted.append(emitted)
        return None

    def deliver_with_retries(self, event: Event, max_attempts: int = 5) -> Tuple[int, Optional[HandlerError]]:
        """Delivers as the daemon does under a policy of ``max_attempts``:
        again with ``attempt`` increased while the handler asks for a retry.
        Returns (attempts made, last result); backoff is not waited."""
        first = event.attempt
        while True:
            result = self.deliver(event)
            attempts = event.attempt - first + 1
            if result is not None and result.kind == "retry" and attempts < max_attempts:
                event.attempt += 1
                continue
            return attempts, result

    def state_json(self, key: str, default: Any = None) -> Any:
        """The committed JSON value under ``key``."""
        raw = self.state.get(key)
        return default if raw is None else json.loads(raw.decode("utf-8"))

    def state_keys(self) -> List[str]:
        """All committed keys in ascending order, reserved ones included."""
        return sorted(self.state, key=lambda k: k.encode("utf-8"))
