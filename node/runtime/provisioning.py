"""Provisioning: the city CA and data keyring, each node's key, certificate and own keyring, the demo staff accounts.

In production the city CA signs node certificates out of band; in the local federation the city's
directory is on the same machine, so provisioning does it directly. Provisioning is the only place
that creates personal-data keys (node.adapters.pii): each exactly once, atomically, 0600; a process
that finds one missing later stops with an error instead of making a new one (which would leave every
older event and row unreadable).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.adapters.nodestate import NodeState, new_password
from node.adapters.pii import CITY_SCOPE, NODE_SCOPE, PersonalData, create_keyring, install_keyring
from node.adapters.pki import CertificateAuthority, NodeIdentity
from node.config import DATA_KEY, NodeConfig
from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR
from node.domain.catalogue import load_seed_catalogue
from tiers import yiyang

DEMO_ACCOUNTS = "demo-accounts.json"


def ensure_city_authority(ca_dir: Path) -> CertificateAuthority:
    tree = yiyang()
    ca = CertificateAuthority.ensure(ca_dir, tree.root, tree.get(tree.root).name)
    create_keyring(ca_dir / DATA_KEY, CITY_SCOPE)  # once: False (and untouched) when it exists
    return ca


def ensure_node_keys(config: NodeConfig) -> None:
    """The node's own keyring (created once) in its identity directory, under a data directory of mode 0700."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config.data_dir, 0o700)
    create_keyring(config.local_key_path, NODE_SCOPE)


def provision_node(config: NodeConfig, ca: CertificateAuthority) -> NodeIdentity:
    division = yiyang().get(config.code)
    ensure_node_keys(config)
    identity = NodeIdentity.ensure(config.identity_dir, config.code, division.name, division.tier.name.lower(), ca)
    install_keyring(ca.directory / DATA_KEY, config.data_key_path)  # the city's keyring, copied once
    if config.demo_accounts:
        seed_demo_accounts(config)
    return identity


def seed_demo_accounts(config: NodeConfig) -> list[dict[str, Any]]:
    """One account per role, approvers one per department; their passwords kept beside the node's data,
    sealed with the node's own keyring (never in plaintext: `tongban demo accounts` opens them)."""
    path = config.data_dir / DEMO_ACCOUNTS
    if not path.exists():
        ensure_node_keys(config)  # seeding is provisioning; later, a lost key is an error (MissingKey), not a new one
    keys = PersonalData.load(config.local_key_path)
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if any("password" in account for account in stored):  # a file from before: seal its passwords
            _write_demo_accounts(path, keys, [_open(keys, a) for a in stored])
        return [_open(keys, account) for account in stored]
    state = NodeState(config.data_dir / "state.sqlite3")
    accounts: list[dict[str, Any]] = []
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
    _write_demo_accounts(path, keys, accounts)
    return accounts


def _open(keys: PersonalData, account: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in account.items() if k != "password_sealed"}
    if "password_sealed" in account:
        opened = keys.open(account["password_sealed"]) or {}
        shown["password"] = opened.get("password")
    return shown


def _write_demo_accounts(path: Path, keys: PersonalData, accounts: list[dict[str, Any]]) -> None:
    sealed = [
        {**{k: v for k, v in a.items() if k != "password"}, "password_sealed": keys.seal({"password": a["password"]})}
        for a in accounts
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(sealed, handle, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def reseal_demo_accounts(config: NodeConfig) -> int:
    """After a rotation of the node's keyring: the demo passwords sealed again under the current key."""
    path = config.data_dir / DEMO_ACCOUNTS
    if not path.exists():
        return 0
    keys = PersonalData.load(config.local_key_path)
    accounts = [_open(keys, a) for a in json.loads(path.read_text(encoding="utf-8"))]
    _write_demo_accounts(path, keys, accounts)
    return len(accounts)


def provision_federation(configs: list[NodeConfig], progress: Callable[[str], None]) -> None:
    ca_dir = configs[0].ca_dir
    if ca_dir is None:
        raise ValueError("the federation's node configs must name the CA directory")
    ca = ensure_city_authority(ca_dir)
    for config in configs:
        provision_node(config, ca)
    progress(f"  certificates issued by the city CA for {len(configs)} nodes; demo accounts ready")
