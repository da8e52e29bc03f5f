"""Appointments and queue numbers: the working plan, booking rules, shares between nodes, tickets, no-shows."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from node.adapters.appointments_store import SqliteAppointmentStore
from node.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Ticket,
    TicketStatus,
    WorkingPlan,
    booking_share,
    check_arrival,
    check_booking,
    is_no_show,
    merge,
    next_ticket,
    parse_day,
    parse_start,
    queue_view,
    reminder_due,
    slots,
)
from node.domain.errors import DomainError, ErrorKind
from node.domain.workdays import WorkingDayCalendar

VILLAGE = "430902101201"
CITY = "430900000000"
BIRTH = "430900-QR-0001"
REAL_ESTATE = "430900-QR-0009"
MONDAY = date(2026, 12, 7)
HOLIDAY = date(2026, 12, 8)  # declared a day off in the calendar below
NOW = datetime(2026, 12, 3, 10, 0)  # a Thursday
CALENDAR = WorkingDayCalendar(holidays=[HOLIDAY])

PLAN_DATA = {
    "node": VILLAGE,
    "opens": "09:00",
    "closes": "17:00",
    "breaks": [["12:00", "14:00"]],
    "slot_minutes": 30,
    "groups": [
        {"code": "estate", "name_zh": "不动产窗口", "name_en": "Real estate", "capacity": 2, "prefix": "B",
         "matters": [REAL_ESTATE]},
        {"code": "general", "name_zh": "综合窗口", "name_en": "General", "capacity": 12, "prefix": "A",
         "lent": {CITY: 2}},
    ],
    "min_lead_minutes": 60,
    "max_lead_days": 14,
    "cancel_minutes": 120,
    "grace_minutes": 15,
}  # fmt: skip


@pytest.fixture
def plan() -> WorkingPlan:
    return WorkingPlan.from_dict(PLAN_DATA)


@pytest.fixture
def store(tmp_path: Path) -> SqliteAppointmentStore:
    opened = SqliteAppointmentStore(tmp_path / "appointments.sqlite3")
    yield opened
    opened.close()


def at(day: date, hhmm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm))


def book(store, plan, applicant, start, matter=BIRTH, holder=VILLAGE, now=NOW):
    slot = check_booking(plan, CALENDAR, matter, start, now)
    group = plan.group(slot.group)
    return store.book(slot, matter, applicant, holder, group.share(plan.node, holder), now)


def refused(code: str, call, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code
    assert caught.value.message_zh and caught.value.message_en
    return caught.value


# --- the plan and its slots -------------------------------------------------------------------------------------


def test_a_day_has_slots_around_the_lunch_break(plan: WorkingPlan) -> None:
    day = slots(plan, CALENDAR, MONDAY, NOW, {})
    starts = [s["start"][11:] for s in day]
    assert starts[0] == "09:00" and starts[-1] == "16:30"
    assert "12:00" not in starts and "13:30" not in starts and "11:30" in starts and "14:00" in starts
    assert len(day) == 12
    assert day[0] == {"start": "2026-12-07T09:00", "end": "2026-12-07T09:30", "free": 14}


def test_slots_for_a_matter_count_only_its_windows_and_what_is_taken(plan: WorkingPlan) -> None:
    taken = {("estate", at(MONDAY, "09:00")): 2, ("general", at(MONDAY, "09:00")): 5}
    estate = slots(plan, CALENDAR, MONDAY, NOW, taken, matter_code=REAL_ESTATE)
    assert estate[0]["free"] == 0 and estate[1]["free"] == 2
    general = slots(plan, CALENDAR, MONDAY, NOW, taken, matter_code=BIRTH)
    assert general[0]["free"] == 7


def test_no_slots_on_a_day_off_and_none_bookable_beyond_the_horizon(plan: WorkingPlan) -> None:
    assert slots(plan, CALENDAR, HOLIDAY, NOW, {}) == []
    assert slots(plan, CALENDAR, date(2026, 12, 5), NOW, {}) == []  # Saturday
    far = slots(plan, CALENDAR, date(2026, 12, 21), NOW, {})
    assert far and all(s["free"] == 0 for s in far)
    today = slots(plan, CALENDAR, NOW.date(), NOW, {})
    assert next(s["start"][11:] for s in today if s["free"]) == "11:00"  # an hour's lead from 10:00


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"opens": "18:00"}, "opens"),
        ({"slot_minutes": 0}, "slot_minutes"),
        ({"breaks": [["08:00", "09:30"]]}, "break"),
        ({"opens": "9am"}, "HH:MM"),
        ({"groups": []}, "window group"),
        ({"max_lead_days": 1000}, "max_lead_days"),
    ],
)
def test_a_bad_plan_is_refused_with_the_reason(change: dict, fragment: str) -> None:
    error = refused("invalid_working_plan", WorkingPlan.from_dict, {**PLAN_DATA, **change})
    assert fragment in error.message_en


def test_a_group_cannot_lend_more_than_it_has() -> None:
    groups = [{**PLAN_DATA["groups"][1], "lent": {CITY: 13}}]
    refused("invalid_working_plan", WorkingPlan.from_dict, {**PLAN_DATA, "groups": groups})


def test_the_plan_round_trips(plan: WorkingPlan) -> None:
    assert WorkingPlan.from_dict(plan.to_dict()) == plan


# --- booking rules --------------------------------------------------------------------------------------------------


def test_bad_booking_times_are_refused_bilingually(plan: WorkingPlan) -> None:
    refused("appointment_in_past", check_booking, plan, CALENDAR, BIRTH, at(NOW.date(), "09:00"), NOW)
    refused("appointment_too_soon", check_booking, plan, CALENDAR, BIRTH, at(NOW.date(), "10:30"), NOW)
    refused("appointment_beyond_horizon", check_booking, plan, CALENDAR, BIRTH, at(date(2026, 12, 21), "09:00"), NOW)
    refused("appointment_day_off", check_booking, plan, CALENDAR, BIRTH, at(HOLIDAY, "09:00"), NOW)
    refused("appointment_not_a_slot", check_booking, plan, CALENDAR, BIRTH, at(MONDAY, "12:30"), NOW)
    refused("appointment_not_a_slot", check_booking, plan, CALENDAR, BIRTH, at(MONDAY, "09:10"), NOW)
    error = refused("matter_not_served_here", WorkingPlan.from_dict({**PLAN_DATA, "groups": PLAN_DATA["groups"][:1]})
                    .group_for, BIRTH)  # fmt: skip
    assert error.kind is ErrorKind.NOT_FOUND


@pytest.mark.parametrize("value", ["2026-12-07", "2026-12-07T09:00:30", "tomorrow", 20261207, "2026-12-07T09:00+08:00"])
def test_a_malformed_start_is_refused(value: object) -> None:
    refused("appointment_start_format", parse_start, value)


def test_parse_start_reads_local_minutes() -> None:
    assert parse_start("2026-12-07T09:00") == at(MONDAY, "09:00")


@pytest.mark.parametrize("value", ["2026-12-7", "2026-13-01", "", None, "2026-12-07T09:00"])
def test_a_malformed_day_is_refused(value: object) -> None:
    refused("appointment_day_format", parse_day, value)
    assert parse_day("2026-12-07") == MONDAY


def test_a_full_slot_refuses_the_next_booking(store, plan) -> None:
    start = at(MONDAY, "09:00")
    first = book(store, plan, "person-1", start, REAL_ESTATE)
    book(store, plan, "person-2", start, REAL_ESTATE)
    error = refused("slot_full", book, store, plan, "person-3", start, REAL_ESTATE)
    assert error.kind is ErrorKind.CONFLICT
    assert first.status is AppointmentStatus.BOOKED and first.group == "estate"
    assert store.taken(VILLAGE, MONDAY) == {("estate", start): 2}


def test_the_same_person_cannot_book_the_same_slot_twice(store, plan) -> None:
    start = at(MONDAY, "09:00")
    book(store, plan, "person-1", start)
    error = refused("appointment_duplicate", book, store, plan, "person-1", start, REAL_ESTATE)
    assert error.kind is ErrorKind.CONFLICT
    book(store, plan, "person-1", at(MONDAY, "09:30"))  # another slot is fine


def test_cancelling_frees_the_place_and_only_the_owner_may_cancel(store, plan) -> None:
    start = at(MONDAY, "09:00")
    mine = book(store, plan, "person-1", start, REAL_ESTATE)
    book(store, plan, "person-2", start, REAL_ESTATE)
    error = refused("appointment_not_yours", store.cancel, mine.appointment_id, "person-2", NOW, plan)
    assert error.kind is ErrorKind.FORBIDDEN
    assert store.get(mine.appointment_id).status is AppointmentStatus.BOOKED
    assert store.cancel(mine.appointment_id, "person-1", NOW, plan).status is AppointmentStatus.CANCELLED
    refused("appointment_not_active", store.cancel, mine.appointment_id, "person-1", NOW, plan)
    assert book(store, plan, "person-3", start, REAL_ESTATE).status is AppointmentStatus.BOOKED


def test_cancelling_closes_before_the_slot(store, plan) -> None:
    mine = book(store, plan, "person-1", at(MONDAY, "09:00"))
    late = at(MONDAY, "07:30")
    refused("appointment_cancel_too_late", store.cancel, mine.appointment_id, "person-1", late, plan)
    refused("appointment_not_found", store.get, "no-such-id")


def test_exactly_the_free_places_are_taken_by_concurrent_bookings(tmp_path: Path, plan: WorkingPlan) -> None:
    """40 threads, each with its own connection, race for the last 10 places of the owner's share."""
    path = tmp_path / "race.sqlite3"
    setup = SqliteAppointmentStore(path)
    start = at(MONDAY, "10:00")
    outcomes: list[str] = []
    barrier = threading.Barrier(40)

    def attempt(i: int) -> None:
        own = SqliteAppointmentStore(path)
        barrier.wait()
        try:
            book(own, plan, f"racer-{i}", start)
            outcomes.append("ok")
        except DomainError as exc:
            outcomes.append(exc.code)
        finally:
            own.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 10  # 12 places, 2 lent to the city
    assert outcomes.count("slot_full") == 30
    assert store_count(setup, start) == 10
    setup.close()


def store_count(store: SqliteAppointmentStore, start: datetime) -> int:
    return store.taken(VILLAGE, start.date()).get(("general", start), 0)


# --- shares between nodes (offline convergence) -----------------------------------------------------------------


def test_the_city_confirms_only_within_its_lent_share(store, plan) -> None:
    start = at(MONDAY, "09:00")
    for i in range(2):
        assert book(store, plan, f"city-{i}", start, holder=CITY).booked_at == CITY
    refused("slot_full", book, store, plan, "city-2", start, holder=CITY)
    for i in range(10):
        book(store, plan, f"local-{i}", start)
    refused("slot_full", book, store, plan, "local-10", start)


def test_a_request_is_confirmed_by_the_window_node_while_it_has_places_then_rejected(store, plan) -> None:
    start = at(MONDAY, "09:00")
    slot = check_booking(plan, CALENDAR, BIRTH, start, NOW)
    owner_share = plan.group("general").share(VILLAGE, VILLAGE)
    for i in range(owner_share - 1):
        book(store, plan, f"local-{i}", start)
    first = store.request(slot, BIRTH, "township-1", "430902101000", NOW)
    second = store.request(slot, BIRTH, "township-2", "430902101000", NOW)
    assert first.status is AppointmentStatus.REQUESTED
    refused("appointment_duplicate", store.request, slot, BIRTH, "township-1", "430902101000", NOW)
    confirmed = store.decide(first.appointment_id, owner_share, NOW)
    assert confirmed.status is AppointmentStatus.BOOKED and confirmed.booked_at == VILLAGE
    assert store.decide(second.appointment_id, owner_share, NOW).status is AppointmentStatus.REJECTED
    assert store.decide(first.appointment_id, owner_share, NOW).status is AppointmentStatus.BOOKED  # idempotent


# --- arrival, queue numbers, no-shows ---------------------------------------------------------------------------


def test_taking_numbers_with_and_without_an_appointment_and_calling_them(store, plan) -> None:
    day = MONDAY
    booking = book(store, plan, "person-1", at(day, "10:00"))
    general = plan.group("general")
    walk_in = store.issue_ticket(VILLAGE, day, general, at(day, "09:40"))
    assert walk_in.number == "A001"
    arrival = at(day, "09:45")
    check_arrival(store.get(booking.appointment_id), "person-1", VILLAGE, arrival, plan)
    booked = store.issue_ticket(VILLAGE, day, general, arrival, store.get(booking.appointment_id))
    assert booked.number == "A002" and store.get(booking.appointment_id).status is AppointmentStatus.ARRIVED
    refused("appointment_already_used", store.issue_ticket, VILLAGE, day, general, arrival, booking)
    # Before 09:50 the walk-in is first; from 09:50 the appointment holder goes ahead.
    first = store.call_next(VILLAGE, day, "general", "window-1", at(day, "09:46"))
    assert first.number == "A001" and first.window == "window-1" and first.status is TicketStatus.CALLED
    later_walk_in = store.issue_ticket(VILLAGE, day, general, at(day, "09:47"))
    second = store.call_next(VILLAGE, day, "general", "window-2", at(day, "09:55"))
    assert second.number == "A002"
    assert store.call_next(VILLAGE, day, "general", "window-1", at(day, "09:56")).number == later_walk_in.number
    assert store.call_next(VILLAGE, day, "general", "window-1", at(day, "09:57")) is None
    assert store.finish_ticket(first.ticket_id, TicketStatus.SERVED, at(day, "10:00")).status is TicketStatus.SERVED
    assert store.finish_ticket(second.ticket_id, TicketStatus.NO_SHOW, at(day, "10:00")).status is TicketStatus.NO_SHOW
    refused("ticket_state", store.finish_ticket, first.ticket_id, TicketStatus.NO_SHOW, at(day, "10:01"))
    view = queue_view(store.tickets(VILLAGE, day))
    assert view == {"groups": {"general": {"waiting": 0, "called": [{"number": "A003", "window": "window-1"}]}}}


def test_numbers_restart_each_day_and_per_group(store, plan) -> None:
    estate = plan.group("estate")
    assert store.issue_ticket(VILLAGE, MONDAY, estate, at(MONDAY, "09:00")).number == "B001"
    assert store.issue_ticket(VILLAGE, MONDAY, estate, at(MONDAY, "09:01")).number == "B002"
    assert store.issue_ticket(VILLAGE, date(2026, 12, 9), estate, at(date(2026, 12, 9), "09:00")).number == "B001"


def test_two_windows_calling_at_once_never_get_the_same_number(tmp_path: Path, plan: WorkingPlan) -> None:
    path = tmp_path / "queue.sqlite3"
    setup = SqliteAppointmentStore(path)
    for minute in range(20):
        setup.issue_ticket(VILLAGE, MONDAY, plan.group("general"), at(MONDAY, "09:00") + timedelta(minutes=minute))
    called: list[str] = []
    barrier = threading.Barrier(8)

    def window(i: int) -> None:
        own = SqliteAppointmentStore(path)
        barrier.wait()
        while (ticket := own.call_next(VILLAGE, MONDAY, "general", f"w{i}", at(MONDAY, "10:00"))) is not None:
            called.append(ticket.number)
        own.close()

    threads = [threading.Thread(target=window, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(called) == [f"A{i:03d}" for i in range(1, 21)]
    setup.close()


def test_arrival_rules(store, plan) -> None:
    booking = book(store, plan, "person-1", at(MONDAY, "10:00"))
    refused("appointment_not_yours", check_arrival, booking, "person-2", VILLAGE, at(MONDAY, "09:50"), plan)
    refused("appointment_other_node", check_arrival, booking, "person-1", CITY, at(MONDAY, "09:50"), plan)
    refused("appointment_other_day", check_arrival, booking, "person-1", VILLAGE, at(date(2026, 12, 4), "09:50"), plan)
    refused("appointment_missed", check_arrival, booking, "person-1", VILLAGE, at(MONDAY, "10:16"), plan)
    check_arrival(booking, "person-1", VILLAGE, at(MONDAY, "10:15"), plan)


def test_no_shows_are_recorded_after_the_grace_period(store, plan) -> None:
    absent = book(store, plan, "person-1", at(MONDAY, "10:00"))
    present = book(store, plan, "person-2", at(MONDAY, "10:00"))
    store.issue_ticket(VILLAGE, MONDAY, plan.group("general"), at(MONDAY, "09:55"), present)
    assert not is_no_show(absent, at(MONDAY, "10:15"), plan) and is_no_show(absent, at(MONDAY, "10:16"), plan)
    assert store.record_no_shows(VILLAGE, at(MONDAY, "10:10"), plan) == []
    assert store.record_no_shows(VILLAGE, at(MONDAY, "10:20"), plan) == [absent.appointment_id]
    assert store.get(absent.appointment_id).status is AppointmentStatus.NO_SHOW
    assert store.get(present.appointment_id).status is AppointmentStatus.ARRIVED


def test_next_ticket_prefers_due_appointments_then_the_earliest_number() -> None:
    def ticket(number: str, issued: str, slot: str | None = None, status=TicketStatus.WAITING) -> Ticket:
        return Ticket(
            ticket_id=number, node=VILLAGE, day=MONDAY, group="general", number=number,
            issued_at=at(MONDAY, issued), status=status,
            appointment_id=f"ap-{number}" if slot else None, appointment_start=at(MONDAY, slot) if slot else None,
        )  # fmt: skip

    waiting = [
        ticket("A001", "09:00"),
        ticket("A002", "09:01", slot="10:30"),
        ticket("A003", "09:02", slot="10:00"),
        ticket("A000", "08:59", status=TicketStatus.CALLED),
    ]
    assert next_ticket([], NOW) is None
    assert next_ticket(waiting, at(MONDAY, "09:30")).number == "A001"
    assert next_ticket(waiting, at(MONDAY, "09:50")).number == "A003"
    assert next_ticket(waiting, at(MONDAY, "10:25")).number == "A003"
    assert next_ticket(waiting[1:2], at(MONDAY, "09:30")).number == "A002"  # early holder waits like everyone


# --- convergence between nodes, reminders ---------------------------------------------------------------------------


def copy(appointment: Appointment, status: AppointmentStatus, minute: int) -> Appointment:
    return replace(appointment, status=status, changed_at=at(MONDAY, "08:00") + timedelta(minutes=minute))


def test_copies_of_an_appointment_converge_in_any_order(store, plan) -> None:
    booked = book(store, plan, "person-1", at(MONDAY, "10:00"), holder=CITY)
    copies = [
        booked,
        copy(booked, AppointmentStatus.CANCELLED, 1),
        copy(booked, AppointmentStatus.NO_SHOW, 2),
        copy(booked, AppointmentStatus.ARRIVED, 3),
    ]
    for a in copies:
        for b in copies:
            assert merge(a, b) == merge(b, a)
            assert merge(a, a) == a
            for c in copies:
                assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(copies[1], copies[3]).status is AppointmentStatus.ARRIVED  # the person at the window wins
    assert merge(copies[1], copies[2]).status is AppointmentStatus.CANCELLED  # the earlier change stands
    with pytest.raises(ValueError):
        merge(booked, replace(booked, appointment_id="other"))


def test_a_village_store_receives_the_citys_booking_and_its_cancellation(tmp_path: Path, plan) -> None:
    city = SqliteAppointmentStore(tmp_path / "city.sqlite3")
    village = SqliteAppointmentStore(tmp_path / "village.sqlite3")
    start = at(MONDAY, "10:00")
    slot = check_booking(plan, CALENDAR, BIRTH, start, NOW)
    assert booking_share(plan, slot, CITY) == 2 and booking_share(plan, slot, "430902000000") == 0
    made = city.book(slot, BIRTH, "person-1", CITY, booking_share(plan, slot, CITY), NOW)
    assert village.receive(made) == made
    assert village.taken(VILLAGE, MONDAY) == {("general", start): 1}
    cancelled = city.cancel(made.appointment_id, "person-1", NOW, plan)
    assert village.receive(cancelled).status is AppointmentStatus.CANCELLED
    assert village.receive(made).status is AppointmentStatus.CANCELLED  # a stale copy changes nothing
    assert village.taken(VILLAGE, MONDAY) == {}
    city.close()
    village.close()


def test_reminders_go_out_the_day_before_for_confirmed_bookings(store, plan) -> None:
    tomorrow = book(store, plan, "person-1", at(MONDAY, "10:00"))
    later = book(store, plan, "person-2", at(date(2026, 12, 9), "10:00"))
    cancelled = store.cancel(book(store, plan, "person-3", at(MONDAY, "11:00")).appointment_id, "person-3", NOW, plan)
    evening = at(date(2026, 12, 6), "18:00")
    due = [a for a in store.on_day(VILLAGE, MONDAY) if reminder_due(a, evening)]
    assert [a.appointment_id for a in due] == [tomorrow.appointment_id]
    assert not reminder_due(later, evening) and not reminder_due(cancelled, evening)


def test_another_nodes_record_round_trips_and_a_bad_one_is_refused(store, plan) -> None:
    made = book(store, plan, "person-1", at(MONDAY, "10:00"), holder=CITY)
    assert Appointment.from_record(made.to_record()) == made
    record = made.to_record()
    for bad in (
        {**record, "status": "confirmed"},
        {**record, "appointment_id": "x" * 65},
        {**record, "start": "tomorrow"},
        {**record, "end": record["start"]},
        {**record, "start": "2026-12-07T10:00+08:00"},
        {key: value for key, value in record.items() if key != "node"},
        ["not", "an", "object"],
    ):
        refused("appointment_record_invalid", Appointment.from_record, bad)
    assert "applicant_key" not in made.to_dict()  # the API view never shows it
