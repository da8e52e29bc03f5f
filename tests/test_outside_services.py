"""The local federation's outside services (node/runtime/outside_services.py): the sandbox gateway and
courier start under the supervisor as their own processes, and a node configured by them collects fees."""

from __future__ import annotations

from pathlib import Path

import requests

from node.bootstrap import bootstrap
from node.entrypoints.web import create_app
from node.runtime.outside_services import (
    COURIER_PORT_OFFSET,
    GATEWAY_PORT_OFFSET,
    configure_nodes,
    outside_service_specs,
)
from node.runtime.services import free_port, port_is_free
from node.runtime.supervisor import Supervisor
from tests.conftest import Services, make_node, token_for
from tests.test_payment_flow import ID_CARD, RESIDENT, required_materials
from tiers.demo import HESHAN


def test_the_federation_block_starts_both_sandboxes_and_configures_the_nodes(
    services: Services, city_ca: Path, tmp_path: Path
) -> None:
    config = make_node(services, city_ca, tmp_path / "node", HESHAN).config
    var = tmp_path / "var"
    base = next(
        port
        for port in (free_port() for _ in range(20))
        if port_is_free(port + GATEWAY_PORT_OFFSET) and port_is_free(port + COURIER_PORT_OFFSET)
    )
    supervisor = Supervisor(var / "run", progress=lambda _line: None)
    try:
        supervisor.start(outside_service_specs(var, base, [config], var / "logs"))
        configure_nodes(var, base, [config])
        assert oct((var / "payments" / "merchant.pem").stat().st_mode & 0o777) == "0o600"
        assert oct((config.data_dir / "courier.json").stat().st_mode & 0o777) == "0o600"

        node = bootstrap(config, connect_mqtt=False)
        assert node.results is not None and node.results.payments is not None and node.results.courier is not None
        client = create_app(node).test_client()
        body = {
            "matter_code": ID_CARD,
            "applicant": {"kind": "person", "id_number": RESIDENT, "name": "王建国"},
            "materials": required_materials(ID_CARD),
        }
        created = client.post("/api/v1/cases", json=body, headers=token_for(client, node, "acceptor"))
        assert created.status_code == 201, created.get_json()
        case_no = created.get_json()["case_no"]
        payment = client.get(f"/api/v1/cases/{case_no}/payment", headers=token_for(client, node, "acceptor"))
        pay_url = payment.get_json()["payment"]["pay_url"]
        assert pay_url.startswith(f"http://127.0.0.1:{base + GATEWAY_PORT_OFFSET}/pay/")
        assert "20.00" in requests.get(pay_url, timeout=10).text
    finally:
        supervisor.stop_all()
