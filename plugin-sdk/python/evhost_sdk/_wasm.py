"""The glue between the SDK and the bindings componentize-py generates for
the ``evhost:plugin/plugin`` world. Importable only inside a component: the
``wit_world`` package exists only there."""

from __future__ import annotations

from typing import List, Optional, Tuple

import wit_world  # noqa: F401  (fails outside a component: Plugin.world() relies on it)
from componentize_py_types import Err
from wit_world.imports import config as wit_config
from wit_world.imports import emit as wit_emit
from wit_world.imports import log as wit_log
from wit_world.imports import state as wit_state
from wit_world.imports import types

from .context import Context
from .errors import EmitRefused, HandlerError, StateFailed
from .event import Event, OutgoingEvent

_LEVELS = {
    "trace": types.Level.TRACE,
    "debug": types.Level.DEBUG,
    "info": types.Level.INFO,
    "warn": types.Level.WARN,
    "error": types.Level.ERROR,
}


class _WitHost:
    """Context's host over the WIT imports; refusals become SDK errors."""

    def emit(self, out: OutgoingEvent) -> str:
        try:
            return wit_emit.emit(
                types.OutgoingEvent(
                    type=out.type,
                    subject=out.subject_,
                    id=out.id_,
                    topic=out.topic_,
                    datacontenttype=out.datacontenttype,
                    dataschema=out.dataschema_,
                    data=out.data,
                    actor=out.actor_,
                    extensions=list(out.extensions),
                )
            )
        except Err as err:
            raise EmitRefused(str(err.value)) from None

    def state_get(self, key: str) -> Optional[bytes]:
        try:
            return wit_state.get(key)
        except Err as err:
            raise StateFailed(str(err.value)) from None

    def state_set(self, key: str, value: bytes) -> None:
        try:
            wit_state.set(key, value)
        except Err as err:
            raise StateFailed(str(err.value)) from None

    def state_delete(self, key: str) -> None:
        try:
            wit_state.delete(key)
        except Err as err:
            raise StateFailed(str(err.value)) from None

    def state_keys(self, prefix: str) -> List[str]:
        try:
            return list(wit_state.list_keys(prefix))
        except Err as err:
            raise StateFailed(str(err.value)) from None

    def config_get(self, key: str) -> Optional[str]:
        return wit_config.get(key)

    def config_entries(self) -> List[Tuple[str, str]]:
        return list(wit_config.entries())

    def log(self, level: str, message: str, fields: List[Tuple[str, str]]) -> None:
        wit_log.log(_LEVELS[level], message, fields)


def _event(e: "types.Event") -> Event:
    return Event(
        id=e.id,
        type=e.type,
        source=e.source,
        specversion=e.specversion,
        subject=e.subject,
        time=e.time,
        datacontenttype=e.datacontenttype,
        dataschema=e.dataschema,
        data=e.data,
        correlationid=e.correlationid,
        causationid=e.causationid,
        actor=e.actor,
        extensions=list(e.extensions),
        topic=e.topic,
        partition=e.partition,
        offset=e.offset,
        stream=e.stream,
        streamversion=e.streamversion,
        attempt=e.attempt,
    )


def world_class(plugin) -> type:
    class WitWorld(wit_world.WitWorld):
        def describe(self) -> "types.PluginInfo":
            retry = None
            if plugin.retry is not None:
                r = plugin.retry
                retry = types.RetryPolicy(
                    max_attempts=r.max_attempts,
                    initial_backoff_ms=r.initial_backoff_ms,
                    max_backoff_ms=r.max_backoff_ms,
                    multiplier=float(r.multiplier),
                    jitter=float(r.jitter),
                )
            return types.PluginInfo(
                name=plugin.name,
                version=plugin.version,
                subscriptions=[types.Subscription(topic=t, event_type=ty) for t, ty in plugin.subscriptions],
                retry=retry,
            )

        def handle(self, event: "types.Event") -> None:
            try:
                plugin.call(_event(event), Context(_WitHost()))
            except HandlerError as err:
                if err.kind == "retry":
                    raise Err(types.HandlerError_Retry(err.message)) from None
                raise Err(types.HandlerError_Reject(err.message)) from None
            except Exception as err:  # noqa: BLE001
                # A bug in the handler: retried like a trap, but with the
                # Python error in the message the operator sees.
                raise Err(types.HandlerError_Retry(f"unhandled {type(err).__name__}: {err}")) from None

    return WitWorld
