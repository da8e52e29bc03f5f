"""The navigation offers the ops dashboard to ops staff at the city only."""

from __future__ import annotations

import re
from pathlib import Path

from node.bootstrap import NodeContext
from tests.conftest import Services, client_for, make_node
from tiers.demo import CITY


def test_ops_link_shows_at_the_city_only(
    county_node: NodeContext, services: Services, city_ca: Path, tmp_path: Path
) -> None:
    city = make_node(services, city_ca, tmp_path / "city", CITY)
    for node, expected in ((city, True), (county_node, False)):
        node.state.add_account("ops", "pw-123456", "ops")
        client = client_for(node)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
        assert token
        client.post("/login", data={"username": "ops", "password": "pw-123456", "csrf_token": token.group(1)})
        assert ("运维监控" in client.get("/").get_data(as_text=True)) is expected
