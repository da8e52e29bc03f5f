"""好差评 at a node: window ratings from the rating pad, poor ratings of cases turned into tickets, follow-up.

Two channels (GB/T 39734, :mod:`node.domain.evaluation`):
- a **case** is rated by its applicant (online, or at the window where the acceptor records the
  applicant's choice) as an ``evaluated`` event on the case; when the handling node sees a poor one
  (不满意/非常不满意) it opens a rectification ticket there (谁办理谁负责) — :meth:`take_case_evaluations`,
  run by the message bus whenever a case changes;
- a **visit** to a window (one queue ticket) is rated on the window's rating pad, once per visit.

Figures per node, window, staff member and matter never name who rated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any

from node.adapters.ratings_store import RatingStore
from node.domain.case import Case
from node.domain.errors import DomainError, ErrorKind
from node.domain.evaluation import (
    Channel,
    Level,
    RatedService,
    Rating,
    Rectification,
    RectificationPolicy,
    RectificationState,
    appeal,
    decide_appeal,
    figures,
    open_rectification,
    rate,
    record_contact,
    record_outcome,
)
from node.domain.events import Event, EventType
from node.domain.workdays import WorkingDayCalendar


def level_of_event(event_level: int) -> Level:
    """Case events number the levels 1 = 非常满意 … 5 = 非常不满意; GB/T 39734 counts stars the other way."""
    return Level(6 - event_level)


class RatingService:
    def __init__(
        self,
        here: str,
        store: RatingStore,
        calendar: WorkingDayCalendar,
        clock: Callable[[], datetime],
        policy: RectificationPolicy | None = None,
        collects_all: bool = False,
    ) -> None:
        # The node that monitors operations (the city, which holds every case) keeps every case's
        # evaluation for the figures; tickets are still opened only where the case was handled.
        self.collects_all = collects_all
        self.here = here
        self.store = store
        self.calendar = calendar
        self.clock = clock
        self.policy = policy or RectificationPolicy()

    # --- ratings ------------------------------------------------------------------------------------------

    def rate_visit(
        self, ticket_id: str, window: str | None, staff: str | None, level: object, comment: object
    ) -> Rating:
        """一次一评 on the window's rating pad: the person at the pad rates the visit of this queue ticket."""
        pad = f"visit:{ticket_id}"  # the pad speaks for the visit's holder: no ID number needed to rate
        service = RatedService(Channel.WINDOW, ticket_id, pad, self.here, "-", window=window, staff=staff)
        earlier = self.store.ratings_of(Channel.WINDOW, ticket_id)
        if earlier:
            raise DomainError(
                "already_rated",
                "本次服务已经评价过，感谢您的反馈",
                "this visit has been rated already; thank you",
                ErrorKind.CONFLICT,
            )
        rating = rate(service, pad, level, comment, self.clock(), earlier)
        self.store.add_rating(rating)
        self._open_ticket_for(rating)
        return rating

    def take_case_evaluations(self, case: Case, events: Iterable[Event]) -> list[Rectification]:
        """At the case's handling node: keep each evaluation of the case and open a ticket for a poor one.

        Idempotent: the evaluation event's hash is the rating's id, so seeing the case again adds nothing.
        """
        handled_here = case.handling_node == self.here
        if not handled_here and not self.collects_all:
            return []
        opened = []
        evaluations = sorted((e for e in events if e.type is EventType.EVALUATED), key=lambda e: e.hlc)
        for sequence, event in enumerate(evaluations, start=1):
            level = event.payload.get("level")
            if not isinstance(level, int) or not 1 <= level <= 5:
                continue
            rating = Rating(
                rating_id=event.hash,
                channel=Channel.ONLINE,
                service_id=case.case_no,
                applicant_key=f"case:{case.case_no}",
                level=level_of_event(level),
                comment="",
                node=case.handling_node,
                matter_code=case.matter_code,
                window=None,
                staff=None,
                rated_at=self.clock(),
                sequence=sequence,
            )
            if self.store.add_rating(rating) and handled_here:
                ticket = self._open_ticket_for(rating)
                if ticket is not None:
                    opened.append(ticket)
        return opened

    def _open_ticket_for(self, rating: Rating) -> Rectification | None:
        ticket = open_rectification(
            rating, self.calendar, self.policy, self.clock().date(), ticket_id=rating.rating_id[:32]
        )
        if ticket is not None and self.store.open_ticket(ticket):
            return ticket
        return None

    # --- rectification --------------------------------------------------------------------------------------

    def tickets(self) -> list[dict[str, Any]]:
        today = self.clock().date()
        return [self._view(ticket, today) for ticket in self.store.tickets()]

    def ticket(self, ticket_id: object) -> dict[str, Any]:
        return self._view(self.store.ticket(_ticket_id(ticket_id)), self.clock().date())

    def contact(self, ticket_id: object, by: str, note: object) -> dict[str, Any]:
        return self._change(ticket_id, lambda t: record_contact(t, by, note, self.clock()))

    def outcome(self, ticket_id: object, by: str, outcome: object) -> dict[str, Any]:
        return self._change(ticket_id, lambda t: record_outcome(t, by, outcome, self.clock()))

    def appeal(self, ticket_id: object, by: str, reason: object) -> dict[str, Any]:
        return self._change(ticket_id, lambda t: appeal(t, by, reason, self.clock()))

    def decide_appeal(self, ticket_id: object, by: str, role: str, upheld: object, decision: object) -> dict[str, Any]:
        return self._change(ticket_id, lambda t: decide_appeal(t, by, role, upheld, decision, self.clock()))

    def _change(self, ticket_id: object, step: Callable[[Rectification], Rectification]) -> dict[str, Any]:
        ticket = step(self.store.ticket(_ticket_id(ticket_id)))
        self.store.save_ticket(ticket)
        return self._view(ticket, self.clock().date())

    def _view(self, ticket: Rectification, today: date) -> dict[str, Any]:
        rating = self.store.rating(ticket.rating_id)
        view = ticket.to_dict()
        view["overdue"] = ticket.is_overdue(today)
        if rating is not None:
            view["rating"] = {
                "level": int(rating.level),
                "label_zh": rating.level.label_zh,
                "label_en": rating.level.label_en,
                "channel": str(rating.channel),
                "service_id": rating.service_id,
                "comment": rating.comment,
                "window": rating.window,
            }
        return view

    def figures(self, by: str) -> dict[str, dict[str, Any]]:
        tickets = self.store.tickets()
        voided = [t.rating_id for t in tickets if t.state is RectificationState.VOIDED]
        return figures(self.store.all_ratings(), by, voided, tickets)


def _ticket_id(value: object) -> str:
    if not isinstance(value, str) or not value.isalnum() or len(value) > 64:
        raise DomainError(
            "rectification_not_found", "没有找到该整改单", "no such rectification ticket", ErrorKind.NOT_FOUND
        )
    return value
