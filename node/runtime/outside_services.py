"""The outside services of the local federation (issue 15): the sandbox payment gateway and courier.

Each runs as its own process (``python -m sandboxes.<name> --port P --data DIR --config FILE``), one
for the whole federation, like the providers a city contracts with: the gateway has one merchant (the
city's non-tax collection account, whose key every node of the demo shares: ``var/payments/``), and
each order names the notify URL of the node that created it; the courier has one client account per
node. After the sandboxes are up, each node gets ``payments.json`` and ``courier.json`` in its data
directory, which the node's composition root reads (:mod:`node.bootstrap`).

Layout: ``var/sandboxes/{payment_gateway,courier}/`` (their state), ``var/sandboxes/*.json`` (their
configuration), ``var/payments/merchant.pem`` (0600).
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from node.adapters.courier import CourierSettings, Party
from node.adapters.payment_gateway import GatewaySettings, ensure_merchant_key
from node.config import NodeConfig
from node.runtime.services import PROJECT_ROOT, ServiceSpec, http_ok
from tiers import yiyang

# Ports beside Redis (base) and below the first node (base + 10).
GATEWAY_PORT_OFFSET = 7
COURIER_PORT_OFFSET = 8
MERCHANT_ID = "tongban-yiyang"
COURIER_STEP_S = 5.0  # a tracking step every five seconds: the demo shows the parcel moving


def _sandbox_spec(name: str, module: str, port: int, data_dir: Path, config_path: Path, log_dir: Path) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        argv=[
            sys.executable,
            "-m",
            module,
            "--port",
            str(port),
            "--data",
            str(data_dir),
            "--config",
            str(config_path),
        ],
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
        log_path=log_dir / f"{name}.log",
        env={"PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        ports=(port,),
        start_timeout_s=30.0,
    )


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def _courier_secrets(path: Path, codes: list[str]) -> dict[str, str]:
    """One client secret per node, kept across restarts (new nodes get one)."""
    try:
        known = json.loads(path.read_text(encoding="utf-8"))["clients"]
    except (OSError, ValueError, KeyError, TypeError):
        known = {}
    return {code: str(known.get(code) or secrets.token_hex(24)) for code in codes}


def outside_service_specs(var_dir: Path, base_port: int, configs: list[NodeConfig], log_dir: Path) -> list[ServiceSpec]:
    """Write the sandboxes' configuration (and the merchant key) and return their process specs."""
    root = var_dir / "sandboxes"
    merchant_key = var_dir / "payments" / "merchant.pem"
    ensure_merchant_key(merchant_key)
    gateway_port, courier_port = base_port + GATEWAY_PORT_OFFSET, base_port + COURIER_PORT_OFFSET
    _write_json(
        root / "payment_gateway.json",
        {
            "merchant_id": MERCHANT_ID,
            "merchant_public_key": str(merchant_key.with_suffix(".pub.pem")),
            # Orders name their own node's notify URL; this default is the city's.
            "notify_url": f"{configs[0].url}/payments/notify",
        },
    )
    courier_config = root / "courier.json"
    _write_json(
        courier_config,
        {"clients": _courier_secrets(courier_config, [c.code for c in configs]), "step_seconds": COURIER_STEP_S},
    )
    return [
        _sandbox_spec(
            "payment-gateway", "sandboxes.payment_gateway", gateway_port, root / "payment_gateway",
            root / "payment_gateway.json", log_dir,
        ),
        _sandbox_spec("courier", "sandboxes.courier", courier_port, root / "courier", courier_config, log_dir),
    ]  # fmt: skip


def configure_nodes(var_dir: Path, base_port: int, configs: list[NodeConfig]) -> None:
    """Each node's ``payments.json`` and ``courier.json`` (the gateway's public key exists once it started)."""
    root = var_dir / "sandboxes"
    tree = yiyang()
    clients = json.loads((root / "courier.json").read_text(encoding="utf-8"))["clients"]
    for config in configs:
        GatewaySettings(
            url=f"http://127.0.0.1:{base_port + GATEWAY_PORT_OFFSET}",
            merchant_id=MERCHANT_ID,
            gateway_public_key=root / "payment_gateway" / "gateway_public.pem",
            notify_url=f"{config.url}/payments/notify",
            merchant_key=var_dir / "payments" / "merchant.pem",
        ).save(config.data_dir)
        name = tree.get(config.code).name
        CourierSettings(
            url=f"http://127.0.0.1:{base_port + COURIER_PORT_OFFSET}",
            client_id=config.code,
            secret=clients[config.code],
            callback_url=f"{config.url}/post/callback",
            sender=Party(f"{name}政务服务中心", "0737-12345", f"湖南省益阳市{name}政务服务中心"),
        ).save(config.data_dir)
