"""`tongban demo accounts --json` and `tongban readmodel rebuild` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from node.adapters.nodestate import NodeState
from node.domain.catalogue import load_seed_catalogue
from node.runtime.federation import Federation
from tiers.demo import CITY, HESHAN

ROOT = Path(__file__).resolve().parents[1]


def tongban(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_demo_accounts_lists_one_per_role_per_node_and_they_sign_in(tmp_path: Path) -> None:
    codes = [CITY, HESHAN]
    Federation(tmp_path, 18000, codes).save()
    result = tongban("demo", "accounts", "--json", "--var", str(tmp_path))
    assert result.returncode == 0, result.stderr
    accounts = json.loads(result.stdout)
    assert all(set(a) == {"node", "role", "department", "username", "password"} for a in accounts)
    departments = {d.code for d in load_seed_catalogue().departments()}
    for code in codes:
        mine = [a for a in accounts if a["node"] == code]
        assert {a["role"] for a in mine} == {"acceptor", "approver", "supervisor", "ops", "admin"}
        assert {a["department"] for a in mine if a["role"] == "approver"} == departments
        assert len({a["username"] for a in mine}) == len(mine)
    first = accounts[0]
    state = NodeState(tmp_path / "nodes" / first["node"] / "state.sqlite3")
    assert state.authenticate(first["username"], first["password"]) is not None
    assert state.authenticate(first["username"], "wrong") is None
    # Asking again shows the same accounts, not new passwords.
    again = json.loads(tongban("demo", "accounts", "--json", "--var", str(tmp_path)).stdout)
    assert again == accounts
