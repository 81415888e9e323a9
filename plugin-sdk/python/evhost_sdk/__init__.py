"""Write evhost event handlers in Python.

A handler is a plain function registered on a :class:`Plugin`; the module
that defines it also says ``WitWorld = plugin.world()``, which is what
componentize-py turns into a component for the ``evhost:plugin/plugin``
world. The same handler runs in plain ``pytest`` runs through
:class:`evhost_sdk.testing.TestHost`.

    from evhost_sdk import Plugin, OutgoingEvent, Reject

    plugin = Plugin("greeter", subscribe=[("user-events", "user.created")])

    @plugin.handler
    def handle(event, cx):
        user = event.json()
        if "email" not in user:
            raise Reject("user has no email")
        cx.emit(OutgoingEvent("mail.requested").subject(user["email"]).json(user))

    WitWorld = plugin.world()

Effects are transactional: the emits and state writes of one call commit
together with the consumer offset when the handler returns, and not at all
when it raises.

Layout: ``errors`` (Retry, Reject and the SDK's own failures), ``event``
(Event, OutgoingEvent, topic_for_type), ``context`` (Context: emit, state,
config, log, and the idempotency helper ``once``), ``plugin`` (Plugin, the
naming rule), ``testing`` (the native test host), ``_wasm`` (the glue to
the bindings componentize-py generates; only imported inside a component).
"""

from .context import DEFAULT_DEDUPE_WINDOW, RESERVED_PREFIX, Context, Level
from .errors import (
    EmitRefused,
    HandlerError,
    JsonError,
    MissingData,
    Reject,
    Retry,
    SdkError,
    StateFailed,
)
from .event import Event, OutgoingEvent, topic_for_type
from .plugin import Plugin, RetryPolicy, check_name

__all__ = [
    "DEFAULT_DEDUPE_WINDOW",
    "RESERVED_PREFIX",
    "Context",
    "EmitRefused",
    "Event",
    "HandlerError",
    "JsonError",
    "Level",
    "MissingData",
    "OutgoingEvent",
    "Plugin",
    "Reject",
    "Retry",
    "RetryPolicy",
    "SdkError",
    "StateFailed",
    "check_name",
    "topic_for_type",
]
