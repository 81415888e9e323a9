"""A plugin: its name, version, subscriptions, retry policy and handler."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from .context import Context
from .event import Event

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def check_name(name: str) -> str:
    """Checks the one naming rule for plugins — 1 to 64 lowercase letters,
    digits or '-', not starting with '-' — and returns ``name``; otherwise a
    ``ValueError`` that suggests a valid name."""
    if _NAME.match(name):
        return name
    suggestion = re.sub(r"[^a-z0-9-]+", "-", name.lower()).lstrip("-")[:64] or "my-plugin"
    raise ValueError(
        f"plugin name {name!r} must be 1 to 64 lowercase letters, digits or '-', "
        f"not starting with '-'; try {suggestion!r}"
    )


@dataclass
class RetryPolicy:
    """The plugin's default retry policy (the operator's sidecar may override it)."""

    max_attempts: int = 5
    initial_backoff_ms: int = 200
    max_backoff_ms: int = 30_000
    multiplier: float = 2.0
    jitter: float = 0.2


Handler = Callable[[Event, Context], None]


class Plugin:
    """Who the plugin is and what it consumes; ``@plugin.handler`` registers
    the handler and ``plugin.world()`` makes the class componentize-py exports.

    >>> Plugin("greeter", subscribe=[("user-events", "user.*")]).name
    'greeter'
    """

    def __init__(
        self,
        name: str,
        version: str = "0.1.0",
        subscribe: Sequence[Tuple[str, str]] = (),
        retry: Optional[RetryPolicy] = None,
    ):
        self.name = check_name(name)
        self.version = version
        self.subscriptions: List[Tuple[str, str]] = [(t, ty) for t, ty in subscribe]
        self.retry = retry
        self._handler: Optional[Handler] = None

    def handler(self, f: Handler) -> Handler:
        """Decorator: registers ``f(event, cx)`` as the plugin's handler."""
        self._handler = f
        return f

    def call(self, event: Event, cx: Context) -> None:
        """Runs the registered handler (what both hosts call)."""
        if self._handler is None:
            raise RuntimeError(f"plugin {self.name!r} has no handler: decorate one with @plugin.handler")
        self._handler(event, cx)

    def world(self) -> type:
        """The class componentize-py instantiates (assign it to ``WitWorld`` in
        the app module). Outside a component, where the generated bindings do
        not exist, a placeholder that says so when used."""
        if importlib.util.find_spec("wit_world") is None:

            class NotInAComponent:
                def __init__(self) -> None:
                    raise RuntimeError("WitWorld only works inside a component built by componentize-py")

            return NotInAComponent
        from . import _wasm

        return _wasm.world_class(self)
