"""The Ansible inventory of a city's rollout, generated from the division tree.

One host per division (city, counties, townships, villages), in the groups ``city``, ``county``,
``township`` and ``village``, plus one ``subtree_<county code>`` group per county so that a county
and everything beneath it can be rolled out with ``--limit``. Every host carries its division
code, name, tier, parent, the parent's address, the MQTT topic path of the down tree and its
children (for the broker ACLs), and ``ansible_host`` from an address plan.

The address plan covers the whole tree, in code order, inside one private network, so a subtree
inventory gives a host the same address as the full one. Addresses already handed out (read from a
previous inventory file) are kept: adding a village gives it the next free address and moves no one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from node.adapters.mqtt import node_path
from node.config import ConfigError
from tiers import DivisionTree, Tier

DEFAULT_NETWORK = "10.43.0.0/20"
TIER_GROUPS = {Tier.CITY: "city", Tier.COUNTY: "county", Tier.TOWNSHIP: "township", Tier.VILLAGE: "village"}


def select_codes(tree: DivisionTree, root: str | None = None, codes: Iterable[str] = ()) -> list[str]:
    """The whole tree, the subtree under ``root`` (inclusive), or exactly ``codes``; sorted, validated."""
    wanted = [code.strip() for code in codes if code.strip()]
    if root is not None and wanted:
        raise ConfigError("--root 与 --codes 只能二选一 / give either --root or --codes, not both")
    if wanted:
        for code in wanted:
            tree.get(code)
        return sorted(set(wanted))
    if root is not None:
        tree.get(root)
        return sorted([root, *tree.descendants(root)])
    return sorted(d.code for d in tree)


def plan_addresses(tree: DivisionTree, network: str, previous: Mapping[str, str] | None = None) -> dict[str, str]:
    """An address for every division of the tree: kept from ``previous`` where valid, else the next free one."""
    try:
        net = ipaddress.IPv4Network(network, strict=True)
    except ValueError as exc:
        raise ConfigError(f"地址规划网段无效 / invalid address plan network {network!r}: {exc}") from None
    if not net.is_private:
        raise ConfigError(f"地址规划须使用私有网段 / the address plan must use a private network, not {network}")
    codes = sorted(d.code for d in tree)
    hosts = net.hosts()
    kept: dict[str, str] = {}
    for code, address in (previous or {}).items():
        if code in tree and isinstance(address, str):
            try:
                if ipaddress.IPv4Address(address) in net and address not in kept.values():
                    kept[code] = address
            except ValueError:
                continue
    taken = set(kept.values())
    plan: dict[str, str] = {}
    for code in codes:
        if code in kept:
            plan[code] = kept[code]
            continue
        address = next((str(a) for a in hosts if str(a) not in taken), None)
        if address is None:
            raise ConfigError(
                f"网段 {network} 地址不足以容纳 {len(codes)} 个节点 / network {network} is too small for "
                f"{len(codes)} nodes: choose a larger one (e.g. {DEFAULT_NETWORK})"
            )
        plan[code] = address
        taken.add(address)
    return plan


def previous_addresses(path: Path) -> dict[str, str]:
    """``{code: ansible_host}`` of an inventory written earlier by :func:`build_inventory` (empty if none)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"旧的清单文件无法读取 / the previous inventory {path} cannot be read: {exc}") from None
    addresses: dict[str, str] = {}
    groups = ((raw or {}).get("all") or {}).get("children") or {}
    for name in TIER_GROUPS.values():
        for code, hostvars in ((groups.get(name) or {}).get("hosts") or {}).items():
            if isinstance(hostvars, dict) and isinstance(hostvars.get("ansible_host"), str):
                addresses[str(code)] = hostvars["ansible_host"]
    return addresses


def build_inventory(
    tree: DivisionTree, codes: list[str], network: str = DEFAULT_NETWORK, previous: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The inventory as a YAML-ready mapping (the ``yaml`` inventory plugin's format)."""
    plan = plan_addresses(tree, network, previous)
    groups: dict[str, dict[str, Any]] = {name: {"hosts": {}} for name in TIER_GROUPS.values()}
    subtrees: dict[str, dict[str, Any]] = {}
    for code in codes:
        division = tree.get(code)
        parent = division.parent
        groups[TIER_GROUPS[division.tier]]["hosts"][code] = {
            "ansible_host": plan[code],
            "tongban_code": code,
            "tongban_name": division.name,
            "tongban_tier": TIER_GROUPS[division.tier],
            "tongban_parent": parent,
            "tongban_parent_address": plan[parent] if parent else None,
            "tongban_topic_path": node_path(code),
            # Each child's whole subtree: its bridge may carry the reports of these nodes only.
            "tongban_children": [
                {"code": c, "topic_path": node_path(c), "subtree": [c, *sorted(tree.descendants(c))]}
                for c in division.children
            ],
        }
        county = next((c for c in tree.path_to_root(code) if tree.tier(c) is Tier.COUNTY), None)
        if county is not None:
            subtrees.setdefault(f"subtree_{county}", {"hosts": {}})["hosts"][code] = None
    return {
        "all": {
            "vars": {
                "tongban_city": tree.root,
                "tongban_city_name": tree.get(tree.root).name,
                "tongban_network": network,
            },
            "children": {**{name: group for name, group in groups.items() if group["hosts"]}, **subtrees},
        }
    }


def write_inventory(
    tree: DivisionTree,
    output: Path,
    root: str | None = None,
    codes: Iterable[str] = (),
    network: str = DEFAULT_NETWORK,
) -> int:
    """Write the inventory to ``output`` (keeping the addresses it already gave); returns the host count."""
    selected = select_codes(tree, root, codes)
    inventory = build_inventory(tree, selected, network, previous_addresses(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    header = "# Generated by `tongban ansible inventory` from the division tree (tiers/); do not edit by hand.\n"
    tmp.write_text(header + yaml.safe_dump(inventory, allow_unicode=True, sort_keys=False), encoding="utf-8")
    tmp.replace(output)
    return len(selected)
