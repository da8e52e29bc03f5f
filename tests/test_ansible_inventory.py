"""The generated Ansible inventory, read back by the real ``ansible-inventory`` binary of the venv."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.config import ConfigError
from node.runtime.inventory import write_inventory
from tiers import Division, Tier, yiyang
from tiers.tree import DIVISIONS_CSV, build_tree, read_divisions_csv

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[1]
TREE = yiyang()


def ansible_list(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
        env={**os.environ, "ANSIBLE_INVENTORY_ENABLED": "yaml", "ANSIBLE_NOCOLOR": "1"},
    )
    return json.loads(result.stdout)


def tongban(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )


def test_whole_tree_groups_parents_and_addresses(tmp_path: Path) -> None:
    output = tmp_path / "inventory" / "hosts.yml"
    done = tongban("ansible", "inventory", "--output", str(output))
    assert done.returncode == 0, done.stderr
    listed = ansible_list(output)
    hostvars = listed["_meta"]["hostvars"]
    assert len(hostvars) == len(TREE) == 1571
    for tier, group in [(Tier.CITY, "city"), (Tier.COUNTY, "county"), (Tier.TOWNSHIP, "township")]:
        assert sorted(listed[group]["hosts"]) == sorted(d.code for d in TREE.of_tier(tier))
    assert len(listed["village"]["hosts"]) == len(TREE.of_tier(Tier.VILLAGE)) == 1464
    assert listed["city"]["hosts"] == ["430900000000"]

    addresses = [v["ansible_host"] for v in hostvars.values()]
    assert len(set(addresses)) == len(addresses)
    network = ipaddress.IPv4Network("10.43.0.0/20")
    assert all(ipaddress.IPv4Address(a) in network for a in addresses)
    for code, v in hostvars.items():
        division = TREE.get(code)
        assert v["tongban_code"] == code
        assert v["tongban_name"] == division.name
        assert v["tongban_parent"] == division.parent
        assert v["tongban_city"] == "430900000000"
        if division.parent:
            assert v["tongban_parent_address"] == hostvars[division.parent]["ansible_host"]
        assert [c["code"] for c in v["tongban_children"]] == list(division.children)
    village = hostvars["430902005001"]
    assert village["tongban_tier"] == "village"
    assert village["tongban_parent"] == "430902005000"
    assert village["tongban_topic_path"] == "4309/02/005/001"
    assert village["tongban_children"] == []
    # A county with everything beneath it, for `--limit subtree_<county>`.
    subtree = listed["subtree_430902000000"]["hosts"]
    assert sorted(subtree) == sorted(["430902000000", *TREE.descendants("430902000000")])


def test_subtree_and_codes_keep_the_addresses_of_the_full_plan(tmp_path: Path) -> None:
    full, county, picked = tmp_path / "full.yml", tmp_path / "county.yml", tmp_path / "picked.yml"
    write_inventory(TREE, full)
    township = TREE.children("430903000000")[0]
    assert write_inventory(TREE, county, root=township) == 1 + len(TREE.children(township))
    codes = ["430900000000", "430903000000", township, TREE.children(township)[0]]
    assert write_inventory(TREE, picked, codes=codes) == 4

    full_vars = ansible_list(full)["_meta"]["hostvars"]
    county_list = ansible_list(county)
    assert sorted(county_list["_meta"]["hostvars"]) == sorted([township, *TREE.children(township)])
    assert "city" not in county_list and "county" not in county_list
    picked_vars = ansible_list(picked)["_meta"]["hostvars"]
    assert sorted(picked_vars) == sorted(codes)
    for code, v in {**county_list["_meta"]["hostvars"], **picked_vars}.items():
        assert v["ansible_host"] == full_vars[code]["ansible_host"]


def test_a_new_village_gets_a_free_address_and_moves_no_one(tmp_path: Path) -> None:
    output = tmp_path / "hosts.yml"
    write_inventory(TREE, output)
    before = ansible_list(output)["_meta"]["hostvars"]
    # Codes sort in the middle of the tree: a plain sequential plan would shift every later host.
    township = "430902005000"
    free = next(f"{township[:9]}{n:03d}" for n in range(1, 999) if f"{township[:9]}{n:03d}" not in TREE)
    grown = build_tree(
        read_divisions_csv(DIVISIONS_CSV), extra=[Division(free, "新设村", Tier.VILLAGE, township, synthetic=True)]
    )
    write_inventory(grown, output)
    after = ansible_list(output)["_meta"]["hostvars"]
    assert len(after) == len(before) + 1
    assert all(after[code]["ansible_host"] == v["ansible_host"] for code, v in before.items())
    assert after[free]["ansible_host"] not in {v["ansible_host"] for v in before.values()}
    assert free in [c["code"] for c in after[township]["tongban_children"]]


def test_bad_selections_and_networks_are_refused_with_a_reason(tmp_path: Path) -> None:
    output = tmp_path / "hosts.yml"
    unknown = tongban("ansible", "inventory", "--output", str(output), "--root", "430999999999")
    assert unknown.returncode == 2
    assert "unknown division code '430999999999'" in unknown.stderr
    assert not output.exists()
    public = tongban("ansible", "inventory", "--output", str(output), "--network", "8.8.0.0/16")
    assert public.returncode == 2 and "private network" in public.stderr
    with pytest.raises(ConfigError, match="too small for 1571 nodes"):
        write_inventory(TREE, output, network="10.43.0.0/24")
    with pytest.raises(ConfigError, match="either --root or --codes"):
        write_inventory(TREE, output, root="430902000000", codes=["430903000000"])
    assert not output.exists()
