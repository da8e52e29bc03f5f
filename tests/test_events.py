"""Hybrid logical clock, case event documents, event hashes and the hash chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.errors import DomainError, ErrorKind
from node.domain.events import (
    ChainCheck,
    Event,
    EventType,
    canonical_bytes,
    event_doc_id,
    event_hash,
    event_id_range,
    parse_event_doc_id,
    verify_chain,
)
from node.domain.hlc import MAX_COUNTER, HybridLogicalClock, Timestamp
from tiers.demo import HESHAN

VILLAGE = "430902005001"
COUNTY = HESHAN
CASE_NO = "430902005001-20241127-1"

# --- hybrid logical clock -----------------------------------------------------------------------------

nodes = st.from_regex(r"[0-9A-Za-z_.\-]{1,14}", fullmatch=True)
timestamps = st.builds(
    Timestamp,
    wall_ms=st.integers(0, 4_000_000_000_000),
    counter=st.integers(0, MAX_COUNTER),
    node=nodes,
)


class FakeWall:
    """A wall clock the test moves by hand, forwards or backwards."""

    def __init__(self, start: int = 1_732_700_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def test_timestamp_string_is_fixed_width_and_parses_back() -> None:
    stamp = Timestamp(1_732_700_000_000, 0, VILLAGE)
    assert stamp.to_str() == "0001732700000000-0000-430902005001"
    assert Timestamp.parse(stamp.to_str()) == stamp
    assert stamp.iso == "2024-11-27T09:33:20.000Z"
    assert Timestamp(1_732_700_000_123, 7, VILLAGE).iso == "2024-11-27T09:33:20.123Z"


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "1732700000000-0000-430902005001", "0001732700000000-00000-430902005001",
     "0001732700000000-0000-", "0001732700000000-0000-has space", None],
)  # fmt: skip
def test_timestamp_parse_rejects_malformed_strings(text: str) -> None:
    with pytest.raises(DomainError) as caught:
        Timestamp.parse(text)
    assert caught.value.code == "malformed_hlc"


@given(timestamps, timestamps)
def test_string_order_equals_value_order(a: Timestamp, b: Timestamp) -> None:
    assert (a < b) == (a.to_str() < b.to_str())
    assert (a == b) == (a.to_str() == b.to_str())
    assert Timestamp.parse(a.to_str()) == a


@given(st.lists(st.integers(-5_000, 5_000), max_size=60))
def test_ticks_are_strictly_monotonic_even_when_the_wall_clock_goes_back(moves: list[int]) -> None:
    wall = FakeWall()
    clock = HybridLogicalClock(VILLAGE, wall)
    previous = clock.tick()
    for move in moves:
        wall.now = max(0, wall.now + move)
        current = clock.tick()
        assert current > previous
        assert current.to_str() > previous.to_str()
        assert current.wall_ms >= wall.now
        previous = current


@given(st.lists(st.tuples(st.booleans(), st.integers(-10_000, 10_000), timestamps), max_size=40))
def test_observe_makes_later_ticks_greater_than_the_remote(steps: list[tuple[bool, int, Timestamp]]) -> None:
    wall = FakeWall()
    clock = HybridLogicalClock(COUNTY, wall)
    issued = [clock.tick()]
    seen: list[Timestamp] = []
    for observe, move, remote in steps:
        wall.now = max(0, wall.now + move)
        if observe:
            reading = clock.observe(remote)
            seen.append(remote)
            assert reading > remote
        else:
            reading = clock.tick()
        assert reading > issued[-1]
        issued.append(reading)
        after = clock.tick()
        assert all(after > s for s in seen)
        issued.append(after)


def test_observe_accepts_the_string_form() -> None:
    clock = HybridLogicalClock(COUNTY, FakeWall(1_000))
    remote = "0000000000005000-0003-430902005001"
    assert clock.observe(remote) == Timestamp(5_000, 4, COUNTY)
    assert clock.tick() == Timestamp(5_000, 5, COUNTY)


def test_counter_overflow_borrows_a_millisecond() -> None:
    clock = HybridLogicalClock(VILLAGE, FakeWall(1_000))
    stamps = [clock.tick() for _ in range(MAX_COUNTER + 3)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[-1].wall_ms == 1_001


def test_the_clock_is_thread_safe() -> None:
    clock = HybridLogicalClock(VILLAGE, FakeWall())
    results: list[list[Timestamp]] = [[] for _ in range(8)]

    def work(bucket: list[Timestamp]) -> None:
        for _ in range(500):
            bucket.append(clock.tick())

    threads = [threading.Thread(target=work, args=(bucket,)) for bucket in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [stamp for bucket in results for stamp in bucket]
    assert len(set(everything)) == len(everything) == 4_000
    assert all(bucket == sorted(bucket) for bucket in results)


def test_max_drift_refuses_a_remote_clock_far_in_the_future() -> None:
    clock = HybridLogicalClock(COUNTY, FakeWall(1_000_000), max_drift_ms=60_000)
    clock.observe(Timestamp(1_050_000, 0, VILLAGE))
    with pytest.raises(DomainError) as caught:
        clock.observe(Timestamp(1_000_000 + 3_600_000, 0, VILLAGE))
    assert caught.value.code == "clock_drift"
    assert caught.value.kind is ErrorKind.CONFLICT


def test_clock_rejects_a_bad_node_code() -> None:
    with pytest.raises(DomainError):
        HybridLogicalClock("has space")


# --- events -------------------------------------------------------------------------------------------


def accepted_event(**changes: object) -> Event:
    event = Event(
        case_no=CASE_NO,
        type=EventType.ACCEPTED,
        actor_id="staff-7",
        actor_role="acceptor",
        node=VILLAGE,
        hlc="0001732700000000-0000-430902005001",
        prev_hash=None,
        payload={
            "matter_code": "11430900MB1234567X4000117001",
            "applicant": {"kind": "person", "id_masked": "430902********1234", "name": "张三", "id_hmac": "ab" * 32},
            "materials": [{"code": "M1", "name": "居民身份证", "copies": 1}],
            "location_code": VILLAGE,
            "accepting_node": VILLAGE,
            "handling_node": COUNTY,
            "deadline": "2024-12-11",
            "promised_days": 10,
            "handling_type": "promised",
        },
    )
    return dataclasses.replace(event, **changes) if changes else event


APPLICANT_FIELDS = accepted_event().payload["applicant"]


def later_event(previous: Event, kind: EventType, node: str, wall_ms: int, **payload: object) -> Event:
    return Event(
        case_no=previous.case_no,
        type=kind,
        actor_id="staff-9",
        actor_role="approver",
        node=node,
        hlc=Timestamp(wall_ms, 0, node).to_str(),
        prev_hash=event_hash(previous),
        payload=payload,
    )


def test_hash_is_stable() -> None:
    event = accepted_event()
    # Pinned: a change here means every stored signature and chain in the federation breaks.
    assert event_hash(event) == "66b0013b2dacf33a5c8508d1335f1851b2a44585b8ff63473b5b08bde7f0a928"
    assert event_hash(event) == event_hash(accepted_event())
    assert event_hash(event) == event.hash
    assert event_hash(event) == hashlib.sha256(canonical_bytes(event)).hexdigest()


def test_canonical_bytes_are_sorted_compact_utf8_without_the_signature() -> None:
    event = accepted_event(signature={"alg": "ecdsa-p256-sha256", "signer": VILLAGE, "cert_sha256": "00", "value": "x"})
    raw = canonical_bytes(event)
    text = raw.decode("utf-8")
    assert "张三" in text and "\\u" not in text
    assert ", " not in text and ": " not in text
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert "signature" not in parsed
    assert set(parsed) == {"case_no", "type", "actor_id", "actor_role", "node", "hlc", "prev_hash", "payload"}


@pytest.mark.parametrize(
    "changes",
    [
        {"case_no": "430902005001-20241127-2"},
        {"type": EventType.REFUSED, "payload": {"reason": "材料不全", "matter_code": "X"}},
        {"actor_id": "staff-8"},
        {"actor_role": "admin"},
        {"node": "430902005002", "hlc": "0001732700000000-0000-430902005002",
         "payload": {**accepted_event().payload, "accepting_node": "430902005002"}},
        {"hlc": "0001732700000001-0000-430902005001"},
        {"hlc": "0001732700000000-0001-430902005001"},
        {"prev_hash": "0" * 64},
        {"payload": {**accepted_event().payload, "promised_days": 11}},
        {"payload": {**accepted_event().payload, "applicant": {**APPLICANT_FIELDS, "name": "李四"}}},
    ],
)  # fmt: skip
def test_hash_changes_when_any_hashed_field_changes(changes: dict[str, object]) -> None:
    assert event_hash(accepted_event(**changes)) != event_hash(accepted_event())


def test_signature_is_not_hashed() -> None:
    signed = accepted_event().with_signature({"alg": "x", "signer": VILLAGE, "cert_sha256": "ab", "value": "c2ln"})
    assert signed.signature is not None and signed.signature["value"] == "c2ln"
    assert event_hash(signed) == event_hash(accepted_event())
    assert signed != accepted_event()


def test_payload_is_a_private_normalised_copy() -> None:
    payload = {"reason": "缺少材料", "items": ("a", "b")}
    event = Event(
        case_no=CASE_NO,
        type="refused",
        actor_id="s",
        actor_role="acceptor",
        node=VILLAGE,
        hlc="0001732700000000-0000-430902005001",
        prev_hash=None,
        payload=payload,
    )
    payload["reason"] = "changed"
    assert event.payload == {"reason": "缺少材料", "items": ["a", "b"]}
    assert event.type is EventType.REFUSED
    assert event_hash(event) == event_hash(Event.from_doc(event.to_doc()))


def test_doc_round_trip() -> None:
    event = accepted_event().with_signature({"alg": "a", "signer": VILLAGE, "cert_sha256": "c", "value": "v"})
    doc = event.to_doc()
    assert doc["_id"] == f"event:{CASE_NO}:0001732700000000-0000-430902005001"
    assert doc["doc_type"] == "event"
    assert doc["type"] == "accepted"
    json.dumps(doc)  # JSON-able as is
    stored = {**json.loads(json.dumps(doc)), "_rev": "1-abc", "_revisions": {"start": 1, "ids": ["abc"]}}
    back = Event.from_doc(stored)
    assert back == event
    assert event_hash(back) == event_hash(event)
    assert back.to_doc() == doc


def _doc(**changes: object) -> dict[str, object]:
    doc = accepted_event().to_doc()
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        "not a doc",
        {k: v for k, v in _doc().items() if k != "doc_type"},
        _doc(doc_type="case"),
        {k: v for k, v in _doc().items() if k != "case_no"},
        _doc(type="exploded"),
        _doc(hlc="yesterday"),
        _doc(hlc="0001732700000000-0000-430903000000"),  # stamped by another node than the writer
        _doc(_id="event:someone-else:0001732700000000-0000-430902005001"),
        _doc(prev_hash="abc"),
        _doc(payload=["not", "an", "object"]),
        _doc(payload={"matter_code": "X"}),
        _doc(type="refused", payload={}),
        _doc(type="evaluated", payload={"level": 6}),
        _doc(type="evaluated", payload={"level": True}),
        _doc(type="delivered", payload={"method": "pigeon"}),
        _doc(type="deadline_flagged", payload={"level": "purple"}),
        _doc(type="transferred", payload={"reason": "管辖错误"}),
        _doc(type="supplement_provided", payload={"deadline": "20241211"}),
        _doc(actor_id=""),
        _doc(signature="not an object"),
        _doc(case_no="has:colon"),
        {"_id": "event:x:y", "_rev": "2-a", "_deleted": True},
    ],
)
def test_from_doc_rejects_malformed_docs(doc: object) -> None:
    with pytest.raises(DomainError) as caught:
        Event.from_doc(doc)  # type: ignore[arg-type]
    assert caught.value.code == "malformed_event"
    assert caught.value.kind is ErrorKind.INVALID


def test_accepted_must_be_written_by_its_accepting_node() -> None:
    with pytest.raises(DomainError):
        accepted_event(payload={**accepted_event().payload, "accepting_node": COUNTY})


def test_doc_ids_keep_a_case_contiguous_and_in_clock_order() -> None:
    stamps = [Timestamp(w, c, n).to_str() for w, c, n in [(5, 0, VILLAGE), (5, 1, COUNTY), (40, 0, VILLAGE)]]
    ids = {
        no: [event_doc_id(no, s) for s in stamps]
        for no in ("430902005001-20241127-1", "430902005001-20241127-10", "430902005001-20241127-2")
    }
    every = sorted(i for group in ids.values() for i in group)
    for no, group in ids.items():
        positions = [every.index(i) for i in group]
        assert positions == list(range(positions[0], positions[0] + len(group))), no
        start, end = event_id_range(no)
        assert [i for i in every if start <= i <= end] == group
    assert parse_event_doc_id(ids["430902005001-20241127-2"][1]) == ("430902005001-20241127-2", stamps[1])
    with pytest.raises(DomainError):
        parse_event_doc_id("case:430902005001-20241127-2")


# --- the hash chain -----------------------------------------------------------------------------------


def chain() -> list[Event]:
    first = accepted_event()
    routed = later_event(first, EventType.ROUTED, VILLAGE, 1_732_700_000_100, handling_node=COUNTY)
    received = later_event(routed, EventType.RECEIVED, COUNTY, 1_732_700_100_000)
    approved = later_event(received, EventType.APPROVED, COUNTY, 1_732_700_200_000)
    return [first, routed, received, approved]


def test_a_good_chain_verifies_in_any_order() -> None:
    events = chain()
    assert verify_chain(events).ok
    assert verify_chain(reversed(events)).ok
    assert verify_chain(events + events).ok
    assert verify_chain([]) == ChainCheck()


def test_a_request_may_chain_to_an_older_event() -> None:
    first, routed, received, approved = chain()
    # The village had only seen its own routed event when the citizen asked to withdraw.
    request = later_event(routed, EventType.WITHDRAWAL_REQUESTED, VILLAGE, 1_732_700_300_000)
    assert verify_chain([first, routed, received, approved, request]).ok


def test_a_missing_predecessor_means_wait_not_tampered() -> None:
    first, routed, received, approved = chain()
    result = verify_chain([first, routed, approved])
    assert not result.ok
    assert result.broken == []
    assert [issue.problem for issue in result.missing] == ["missing_predecessor"]
    assert result.missing[0].event_id == approved.doc_id
    assert result.missing_hashes == {event_hash(received)}
    # Without the first event everything waits; nothing is called tampered.
    later_only = verify_chain([routed, received, approved])
    assert later_only.broken == [] and later_only.missing_hashes == {event_hash(first)}


def test_broken_chains_are_reported() -> None:
    first, routed, received, approved = chain()
    second_first = accepted_event(hlc="0001732700000500-0000-430902005001")
    no_predecessor = dataclasses.replace(approved, prev_hash=None)
    genesis_with_prev = dataclasses.replace(second_first, prev_hash=event_hash(first))
    backwards = later_event(approved, EventType.RESULT_RECORDED, COUNTY, 1_732_700_000_050, summary="准予")
    stray = dataclasses.replace(routed, case_no="430902005001-20241127-9")
    result = verify_chain([first, routed, received, no_predecessor, second_first, genesis_with_prev, stray])
    problems = sorted(issue.problem for issue in result.broken)
    assert problems == ["genesis_with_predecessor", "no_predecessor", "second_genesis", "wrong_case"]
    assert result.missing == []
    assert any("no_predecessor" in text for text in result.problems())
    assert [i.problem for i in verify_chain([first, routed, received, approved, backwards]).broken] == [
        "predecessor_not_earlier"
    ]
    early = later_event(first, EventType.ROUTED, VILLAGE, 1_732_699_999_000, handling_node=COUNTY)
    assert [i.problem for i in verify_chain([first, early]).broken] == ["before_genesis"]
