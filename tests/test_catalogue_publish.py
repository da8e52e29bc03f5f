"""The catalogue is authored at the city, versioned, and read-only below it."""

from __future__ import annotations

from pathlib import Path

from node.bootstrap import NodeContext
from node.domain.catalogue import load_seed_catalogue
from tests.conftest import Services, client_for, make_node, token_for
from tiers.demo import CITY


def next_version(promised_days: int) -> dict:
    data = load_seed_catalogue().to_dict()
    data["version"] += 1
    for matter in data["matters"]:
        if matter["code"] == "430900-JF-0001":
            matter["promised_days"] = promised_days
    return data


def test_the_city_admin_publishes_a_new_version(services: Services, city_ca: Path, tmp_path: Path) -> None:
    city = make_node(services, city_ca, tmp_path / "city", CITY)
    city.published_catalogue.ttl_s = 0
    client = client_for(city)
    admin = token_for(client, city, "admin")
    before = client.get("/api/v1/catalog/matters").get_json()["version"]
    response = client.put("/api/v1/catalog", json=next_version(7), headers=admin)
    assert response.status_code == 200, response.get_json()
    listed = client.get("/api/v1/catalog/matters").get_json()
    assert listed["version"] == before + 1
    assert next(m for m in listed["matters"] if m["code"] == "430900-JF-0001")["promised_days"] == 7
    # The same version again is refused; so is a malformed catalogue and a non-admin.
    assert client.put("/api/v1/catalog", json=next_version(7), headers=admin).status_code == 409
    assert client.put("/api/v1/catalog", json={"version": before + 2}, headers=admin).status_code == 400
    acceptor = token_for(client, city, "acceptor")
    assert client.put("/api/v1/catalog", json=next_version(5), headers=acceptor).status_code == 403


def test_below_the_city_the_catalogue_is_read_only(county_node: NodeContext) -> None:
    client = client_for(county_node)
    response = client.put("/api/v1/catalog", json=next_version(7), headers=token_for(client, county_node, "admin"))
    assert response.status_code == 403 and response.get_json()["error"] == "catalogue_read_only"
