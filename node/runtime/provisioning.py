"""Provisioning a local federation: the city CA, each node's key and certificate."""

from __future__ import annotations

from collections.abc import Callable

from node.adapters.keys import CertificateAuthority, NodeIdentity
from node.config import NodeConfig
from tiers import yiyang


def provision_node(config: NodeConfig, ca: CertificateAuthority) -> NodeIdentity:
    division = yiyang().get(config.code)
    return NodeIdentity.ensure(
        config.data_dir / "identity", config.code, division.name, division.tier.name.lower(), ca
    )


def provision_federation(federation: object, configs: list[NodeConfig], progress: Callable[[str], None]) -> None:
    tree = yiyang()
    ca_dir = configs[0].ca_dir
    assert ca_dir is not None
    ca = CertificateAuthority.ensure(ca_dir, tree.root, tree.get(tree.root).name)
    for config in configs:
        provision_node(config, ca)
    progress(f"  certificates issued by the city CA for {len(configs)} nodes")
