"""The year-of-cases generator (bench/yeargen.py): deterministic, valid chains, bounded memory, real signatures."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from bench.yeargen import SETTLED_SHARE, Signers, Stats, YearGenerator, china_day, write_year
from node.domain.case import CaseState, fold
from node.domain.events import Event, verify_chain
from tests.conftest import Services, make_node
from tiers import yiyang


@pytest.fixture(scope="module")
def year_plans() -> list:
    return list(YearGenerator(1200, seed=5).plans())


def _first_cases(seed: int, count: int = 150) -> list[tuple[str, list[str]]]:
    return [(p.case_no, [e.hash for e in p.events]) for p in islice(YearGenerator(1200, seed=seed).plans(), count)]


def test_same_seed_same_year_other_seed_other_year() -> None:
    first, again, other = _first_cases(5), _first_cases(5), _first_cases(6)
    assert first == again
    assert [hashes for _, hashes in first] != [hashes for _, hashes in other]


def test_every_case_is_a_valid_chain_that_folds_to_its_intended_state(year_plans: list) -> None:
    assert len(year_plans) == 1200
    assert len({p.case_no for p in year_plans}) == 1200  # daily serials per accepting node never collide
    for plan in year_plans:
        assert verify_chain(plan.events).ok, plan.case_no
        case = fold(plan.events)
        assert case.anomalies == [], (plan.case_no, plan.path, case.anomalies)
        assert case.state is plan.expected_state, (plan.case_no, plan.path)
        assert (case.flags or {}).get("level") == plan.expected_flag
        assert case.accepting_node == plan.accepting_node
        assert case.applicant["key"] == plan.applicant_key


def test_the_year_has_every_lifecycle_path_in_plausible_shares(year_plans: list) -> None:
    paths = Counter(p.path for p in year_plans)
    assert set(paths) >= {
        "settled",
        "refused",
        "approved",
        "rejected",
        "supplement",
        "supplement_abandoned",
        "transferred",
        "withdrawn",
        "late",
    }
    assert abs(paths["settled"] / len(year_plans) - SETTLED_SHARE) < 0.04
    kinds = Counter(e.type.value for p in year_plans for e in p.events)
    assert {"routed", "received", "deadline_flagged", "evaluated", "supplement_provided", "result_recorded"} <= set(
        kinds
    )
    flags = Counter(p.expected_flag for p in year_plans if p.expected_flag)
    assert {"warning", "yellow", "red"} <= set(flags)
    tiers = Counter(yiyang().tier(p.accepting_node).name for p in year_plans)
    assert all(tiers[t] > 0 for t in ("CITY", "COUNTY", "TOWNSHIP", "VILLAGE"))
    # Some cases are still open at New Year: the city's inbox has work.
    assert any(not p.expected_state.terminal for p in year_plans)
    # Some people come back: search by applicant finds several cases.
    assert Counter(p.applicant_key for p in year_plans).most_common(1)[0][1] > 1


def test_stream_delivers_each_event_once_after_its_predecessor_with_memory_bounded_by_open_cases() -> None:
    for cases in (300, 1200):
        stats = Stats()
        seen: set[str] = set()
        days: list[str] = []
        for doc in YearGenerator(cases, seed=2).stream(stats):
            event = Event.from_doc(doc)
            assert event.prev_hash is None or event.prev_hash in seen, doc["_id"]
            assert event.hash not in seen
            seen.add(event.hash)
            days.append(china_day(event.timestamp.wall_ms))
        assert stats.cases == cases and stats.events == len(seen)
        # What is held between days is the cases still open, a few weeks' worth, not the year.
        assert stats.max_pending < cases * 0.25, stats.max_pending
        assert days == sorted(days)  # day by day, as the nodes wrote them


def test_signed_year_written_as_replication_writes_it_projects_at_a_real_city_node(
    services: Services, tmp_path: Path
) -> None:
    # The year lies in the past: its CA (made by Signers, backdated) must have been valid when it was signed.
    ca_dir = tmp_path / "ca"
    generator = YearGenerator(120, seed=9, signers=Signers(ca_dir, yiyang()))
    city = make_node(services, ca_dir, tmp_path / "city", "430900000000")
    stats, _ = write_year(generator, city.store.db_url, batch_size=100)
    assert stats.cases == 120 and stats.batches >= stats.events // 100
    city.projector.catch_up()
    assert city.readmodel.quarantined() == []
    assert city.readmodel.pending() == []
    assert city.readmodel.count() == 120
    expected = {p.case_no: p for p in generator.plans()}  # the same content, rebuilt from the seed
    for row in city.readmodel.search(limit=200):
        assert row.state == expected[row.case_no].expected_state.value
        assert row.applicant_name != "（无法解密）"  # the node opens the sealed applicant with the city's data key
    sample = next(p for p in expected.values() if p.expected_state is CaseState.DELIVERED and len(p.events) > 4)
    verified = city.cases.verifier.verified_case(sample.case_no)
    assert [e.hash for e in verified.events] == [e.hash for e in sample.events]
