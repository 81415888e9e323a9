"""__NAME__: an evhost plugin in Python.

Handles `__NAME__.requested` events: counts them in state, emits
`__NAME__.done`, and rejects an event without an `item` (it goes to the
dead-letter store with this plugin's message)."""

from evhost_sdk import Context, Event, OutgoingEvent, Plugin, Reject, RetryPolicy

plugin = Plugin(
    "__NAME__",
    version="0.1.0",
    subscribe=[("__NAME__-events", "__NAME__.requested")],
    # A `Retry` (or an unexpected exception) is tried 3 times in all, then parked.
    retry=RetryPolicy(max_attempts=3),
)


@plugin.handler
def handle(event: Event, cx: Context) -> None:
    data = event.json()
    item = data.get("item") if isinstance(data, dict) else None
    if not item:
        raise Reject(f"{event.type} {event.id} has no item")
    # State needs `state = true` and emitting needs the type under `emit`, in
    # the operator's sidecar (__NAME__.toml).
    count = cx.state_get("handled", 0) + 1
    cx.state_set("handled", count)
    cx.info("handled", id=event.id, count=count)
    cx.emit(OutgoingEvent("__NAME__.done").subject(event.subject or item).json({"item": item, "count": count}))


# What componentize-py builds the component from.
WitWorld = plugin.world()
