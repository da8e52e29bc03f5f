"""The message bus: commands to their one handler, domain messages to every handler registered for them.

The composition root (:mod:`node.bootstrap`) registers the handlers each kind of process needs, so
a use case only says what happened (``publish(CaseWritten(...))``) and never who listens. Handlers
run at once, in the publishing thread: a request returns after its case is in the read model, and
concurrent requests still share the read model's group commit. A handler's error reaches the
publisher, as a command handler's reaches its caller: the agent's catch-up must not move its
checkpoint past a case it failed to take in, so it has to hear of the failure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

MessageHandler = Callable[[Any], None]
CommandHandler = Callable[[Any], Any]


class MessageBus:
    def __init__(self) -> None:
        self.message_handlers: defaultdict[type, list[MessageHandler]] = defaultdict(list)
        self.command_handlers: dict[type, CommandHandler] = {}

    def subscribe(self, message_type: type, handler: MessageHandler) -> None:
        self.message_handlers[message_type].append(handler)

    def register(self, command_type: type, handler: CommandHandler) -> None:
        if command_type in self.command_handlers:
            raise ValueError(f"{command_type.__name__} already has a handler")
        self.command_handlers[command_type] = handler

    def handle(self, command: object) -> Any:
        """Run the command's handler and return what it returns."""
        try:
            handler = self.command_handlers[type(command)]
        except KeyError:
            raise LookupError(f"no handler for {type(command).__name__}") from None
        return handler(command)

    def publish(self, message: object) -> None:
        for handler in self.message_handlers.get(type(message), ()):
            handler(message)
