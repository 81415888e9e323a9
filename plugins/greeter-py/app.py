"""greeter-py: the Python example plugin. Greets each new user once, counts
the greetings in state, and rejects a user without a name."""

from evhost_sdk import Event, Context, OutgoingEvent, Plugin, Reject

plugin = Plugin("greeter-py", version="0.1.0", subscribe=[("user-events", "user.created")])


@plugin.handler
def handle(event: Event, cx: Context) -> None:
    user = event.json()
    name = user.get("name") if isinstance(user, dict) else None
    if not name:
        raise Reject(f"user.created {event.id} has no name: {event.text()}")

    def greet(cx: Context) -> None:
        count = cx.state_get("greeted", 0) + 1
        cx.state_set("greeted", count)
        greeting = cx.config("greeting", "Hello")
        cx.emit(
            OutgoingEvent("greeting.sent")
            .subject(event.subject or name)
            .json({"text": f"{greeting}, {name}!", "count": count, "lang": "python"})
        )

    cx.once(event, greet)


# What componentize-py exports as the component.
WitWorld = plugin.world()
