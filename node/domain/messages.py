"""What happened to a case at this node, as the message bus carries it to the handlers that react.

Not to be confused with :class:`node.domain.events.Event`, the signed record a case is made of:
a message here says "this node wrote these events" or "the case now reads so" and lives only for
the moment its handlers run (projection into the read model, wake-ups, notices, intake).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.domain.case import Case
from node.domain.events import Event


@dataclass(frozen=True)
class CaseWritten:
    """This node appended ``written`` to a case; ``history`` is the whole case after the write."""

    written: tuple[Event, ...]
    history: tuple[Event, ...]


@dataclass(frozen=True)
class CaseChanged:
    """The read model now shows ``case`` (written here or replicated in), folded from ``events``.

    ``from_write`` says the projection came from a write this process had in hand, not from the store.
    """

    case: Case
    events: tuple[Event, ...]
    from_write: bool = False


Message = CaseWritten | CaseChanged
