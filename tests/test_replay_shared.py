"""A replayed sync request is refused by every web process of the node, not only the one that saw it.

Two web apps bootstrapped from the same node's configuration stand for two gunicorn workers: each
has its own engine on the node's nonce log. A request the village signed once is answered by the
first and refused as a replay by the second, and the other way round.
"""

from __future__ import annotations

from pathlib import Path

from node.adapters.nonces import NONCES_DB, NonceLog
from node.bootstrap import ProcessKind, bootstrap
from node.entrypoints.web import create_app
from sync.auth import sign_request
from sync.node_peer import PREFIX
from tests.conftest import Services, make_node
from tiers.demo import HESHAN_TOWN, HESHAN_VILLAGE


def test_a_replay_to_another_worker_of_the_same_node_is_refused(
    services: Services, city_ca: Path, tmp_path: Path
) -> None:
    town = make_node(services, city_ca, tmp_path / "town", HESHAN_TOWN)
    village = make_node(services, city_ca, tmp_path / "village", HESHAN_VILLAGE)
    other_worker = bootstrap(town.config, ProcessKind.WEB, connect_mqtt=False)
    assert town.nonces is not None and other_worker.nonces is not None
    assert town.nonces is not other_worker.nonces
    first, second = create_app(town).test_client(), create_app(other_worker).test_client()
    target = f"{PREFIX}/changes?since=0&limit=5"
    for one, another in ((first, second), (second, first)):
        headers = sign_request(village.identity, "GET", target, b"", HESHAN_TOWN)
        answered = one.get(target, headers=headers)
        assert answered.status_code == 200, answered.get_json()
        replayed = another.get(target, headers=headers)
        assert replayed.status_code == 401
        assert "replay" in replayed.get_json()["message_en"]
        # and the first worker refuses it again as well
        assert one.get(target, headers=headers).status_code == 401
    # A fresh signature is a new request for both.
    fresh = sign_request(village.identity, "GET", target, b"", HESHAN_TOWN)
    assert second.get(target, headers=fresh).status_code == 200


def test_the_nonce_log_forgets_a_nonce_only_after_its_time(tmp_path: Path) -> None:
    log = NonceLog(tmp_path / NONCES_DB, ttl_s=600.0)
    other = NonceLog(tmp_path / NONCES_DB, ttl_s=600.0)
    assert log.first_use("a" * 32, now=1000.0)
    assert not other.first_use("a" * 32, now=1000.0 + 599)
    assert other.first_use("b" * 32, now=1000.0 + 599)
    # Past its time (and a sweep), the row is gone: by then the request's own time is refused anyway.
    assert other.first_use("c" * 32, now=1000.0 + 601 + 60)
    assert len(other) == 2  # a swept; b and c kept
    assert other.first_use("a" * 32, now=1000.0 + 601 + 60)
