"""Provisioning: the city CA and data key, each node's key and certificate, the demo staff accounts.

In production the city CA signs node certificates out of band; in the local federation the city's
directory is on the same machine, so provisioning does it directly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from node.adapters.nodestate import NodeState, new_password
from node.adapters.pki import CertificateAuthority, NodeIdentity
from node.config import NodeConfig
from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR
from node.domain.catalogue import load_seed_catalogue
from tiers import yiyang

DATA_KEY = "data.key"
DEMO_ACCOUNTS = "demo-accounts.json"


def identity_dir(config: NodeConfig) -> Path:
    return config.data_dir / "identity"


def ensure_city_authority(ca_dir: Path) -> CertificateAuthority:
    tree = yiyang()
    ca = CertificateAuthority.ensure(ca_dir, tree.root, tree.get(tree.root).name)
    from node.adapters.pii import PersonalData

    PersonalData.ensure(ca_dir / DATA_KEY)
    return ca


def provision_node(config: NodeConfig, ca: CertificateAuthority) -> NodeIdentity:
    division = yiyang().get(config.code)
    identity = NodeIdentity.ensure(identity_dir(config), config.code, division.name, division.tier.name.lower(), ca)
    key_copy = identity_dir(config) / DATA_KEY
    if not key_copy.exists():
        shutil.copyfile(ca.directory / DATA_KEY, key_copy)
        os.chmod(key_copy, 0o600)
    if config.demo_accounts:
        seed_demo_accounts(config)
    return identity


def seed_demo_accounts(config: NodeConfig) -> list[dict[str, str | None]]:
    """One account per role, approvers one per department; passwords kept beside the node's data."""
    path = config.data_dir / DEMO_ACCOUNTS
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    state = NodeState(config.data_dir / "state.sqlite3")
    accounts: list[dict[str, str | None]] = []
    plan: list[tuple[str, str | None, str]] = [
        (ACCEPTOR, None, "综合窗口受理员"),
        (SUPERVISOR, None, "效能监督员"),
        (OPS, None, "运维值班员"),
        (ADMIN, None, "系统管理员"),
    ]
    plan += [(APPROVER, d.code, f"{d.name_zh}审批员") for d in load_seed_catalogue().departments()]
    for role, department, display in plan:
        username = f"{role}.{department}" if department else role
        password = new_password()
        state.add_account(username, password, role, department, display, generated=True)
        accounts.append(
            {"node": config.code, "role": role, "department": department, "username": username, "password": password}
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(accounts, handle, ensure_ascii=False, indent=1)
    return accounts


def provision_federation(configs: list[NodeConfig], progress: Callable[[str], None]) -> None:
    ca_dir = configs[0].ca_dir
    if ca_dir is None:
        raise ValueError("the federation's node configs must name the CA directory")
    ca = ensure_city_authority(ca_dir)
    for config in configs:
        provision_node(config, ca)
    progress(f"  certificates issued by the city CA for {len(configs)} nodes; demo accounts ready")
