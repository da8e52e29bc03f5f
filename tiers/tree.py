"""The division tree of a city: tiers, parents, children, paths and lowest common ancestors.

The tree is data, not code: the real city, county and township units come from
``tiers/data/yiyang_divisions.csv``; villages are generated deterministically under every
township (no public list of Yiyang's villages was at hand) and are marked ``synthetic``.
Codes are 12 characters: 6 county digits (GB/T 2260) + 3 township + 3 village. Non-numeric
alias codes such as ``4309A1000000`` are accepted wherever a numeric code is.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
DIVISIONS_CSV = DATA_DIR / "yiyang_divisions.csv"
CODE_PATTERN = re.compile(r"^[0-9A-Z]{12}$")


class Tier(IntEnum):
    """Administrative tier; the value is the depth below the city."""

    CITY = 0
    COUNTY = 1
    TOWNSHIP = 2
    VILLAGE = 3

    @property
    def key(self) -> str:
        """The tier as configuration, certificates and the APIs name it: city, county, township or village."""
        return self.name.lower()

    @property
    def label_zh(self) -> str:
        return ("市", "县/区", "乡/镇/街道", "村/社区")[self.value]


class UnknownDivisionError(KeyError):
    """A division code that is not in the tree (or not a well-formed code at all)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return (
            f"未知的区划代码 {self.code!r} / unknown division code {self.code!r}: "
            "use a 12-character code from the tier tree (e.g. 430902000000)"
        )


@dataclass(frozen=True)
class Division:
    code: str
    name: str
    tier: Tier
    parent: str | None
    synthetic: bool = False
    children: tuple[str, ...] = field(default=(), compare=False)


def is_well_formed(code: str) -> bool:
    return bool(CODE_PATTERN.match(code))


def infer_tier(code: str) -> Tier:
    """Tier from the code's structure alone (works for alias codes too)."""
    if not is_well_formed(code):
        raise UnknownDivisionError(code)
    if code[9:] != "000":
        return Tier.VILLAGE
    if code[6:9] != "000":
        return Tier.TOWNSHIP
    if code[4:6] != "00":
        return Tier.COUNTY
    return Tier.CITY


def structural_parent(code: str) -> str | None:
    """The parent a code's structure implies: zero out its lowest non-zero segment."""
    tier = infer_tier(code)
    if tier is Tier.VILLAGE:
        return code[:9] + "000"
    if tier is Tier.TOWNSHIP:
        return code[:6] + "000000"
    if tier is Tier.COUNTY:
        return code[:4] + "00000000"
    return None


class DivisionTree:
    """An immutable rooted tree of divisions with path and ancestor queries."""

    def __init__(self, divisions: Iterable[Division]) -> None:
        children: dict[str, list[str]] = {}
        staged: dict[str, Division] = {}
        for division in divisions:
            if not is_well_formed(division.code):
                raise UnknownDivisionError(division.code)
            if division.code in staged:
                raise ValueError(f"duplicate division code {division.code}")
            staged[division.code] = division
            if division.parent is not None:
                children.setdefault(division.parent, []).append(division.code)
        roots = [d.code for d in staged.values() if d.parent is None]
        if len(roots) != 1:
            raise ValueError(f"the tree needs exactly one root, found {roots}")
        for parent in children:
            if parent not in staged:
                raise ValueError(f"parent {parent} of {children[parent]} is not in the tree")
        self._divisions = {
            code: Division(d.code, d.name, d.tier, d.parent, d.synthetic, tuple(sorted(children.get(code, ()))))
            for code, d in staged.items()
        }
        self.root = roots[0]
        for d in self._divisions.values():
            if d.parent is not None and self._divisions[d.parent].tier != d.tier - 1:
                raise ValueError(f"{d.code} ({d.tier.name}) sits under {d.parent} of the wrong tier")

    def __contains__(self, code: object) -> bool:
        return code in self._divisions

    def __len__(self) -> int:
        return len(self._divisions)

    def __iter__(self) -> Iterator[Division]:
        return iter(self._divisions.values())

    def get(self, code: str) -> Division:
        try:
            return self._divisions[code]
        except KeyError:
            raise UnknownDivisionError(code) from None

    def tier(self, code: str) -> Tier:
        return self.get(code).tier

    def parent(self, code: str) -> str | None:
        return self.get(code).parent

    def children(self, code: str) -> tuple[str, ...]:
        return self.get(code).children

    def path_to_root(self, code: str) -> list[str]:
        """``[code, parent, …, root]``."""
        path = [code]
        current = self.get(code)
        while current.parent is not None:
            path.append(current.parent)
            current = self._divisions[current.parent]
        return path

    def is_in_subtree(self, code: str, subtree_root: str) -> bool:
        """True when ``code`` is ``subtree_root`` or one of its descendants."""
        self.get(subtree_root)
        return subtree_root in self.path_to_root(code)

    def lowest_common_ancestor(self, a: str, b: str) -> str:
        ancestors_of_a = set(self.path_to_root(a))
        for code in self.path_to_root(b):
            if code in ancestors_of_a:
                return code
        raise AssertionError("a rooted tree always has a common ancestor")

    def path_between(self, a: str, b: str) -> list[str]:
        """Every node from ``a`` to ``b`` inclusive, through their lowest common ancestor."""
        lca = self.lowest_common_ancestor(a, b)
        up = self.path_to_root(a)
        down = self.path_to_root(b)
        return up[: up.index(lca) + 1] + list(reversed(down[: down.index(lca)]))

    def descendants(self, code: str) -> Iterator[str]:
        stack = list(self.children(code))
        while stack:
            current = stack.pop()
            yield current
            stack.extend(self._divisions[current].children)

    def of_tier(self, tier: Tier) -> list[Division]:
        return [d for d in self._divisions.values() if d.tier is tier]


def _synthetic_villages(township: Division) -> list[Division]:
    """Between 11 and 19 villages per township, the same on every machine.

    Street offices (街道, township digits 001–099) get mostly communities (社区, village digits
    001–199); towns and townships get mostly villages (村, village digits 200–399), as in the
    statistical code scheme.
    """
    digest = hashlib.sha256(township.code.encode()).digest()
    count = 11 + digest[0] % 9
    urban = int(township.code[6:9]) < 100 if township.code[6:9].isdigit() else False
    communities = count - 2 if urban else 2
    short_name = township.name.removesuffix("街道").removesuffix("镇").removesuffix("乡")
    villages = []
    for i in range(count):
        if i < communities:
            suffix, name = 1 + i, f"{short_name}第{i + 1}社区"
        else:
            suffix, name = 200 + i - communities + 1, f"{short_name}第{i - communities + 1}村"
        code = f"{township.code[:9]}{suffix:03d}"
        villages.append(Division(code, name, Tier.VILLAGE, township.code, synthetic=True))
    return villages


_LEVELS = {"city": Tier.CITY, "county": Tier.COUNTY, "township": Tier.TOWNSHIP, "village": Tier.VILLAGE}


def read_divisions_csv(path: Path) -> list[Division]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            Division(
                row["code"],
                row["name"],
                _LEVELS[row["level"]],
                row["parent_code"] or None,
                synthetic=row.get("synthetic", "") == "1",
            )
            for row in csv.DictReader(handle)
        ]


def build_tree(real: list[Division], extra: Iterable[Division] = ()) -> DivisionTree:
    """The real units, synthetic villages under every township, plus any ``extra`` units."""
    divisions = list(real)
    for township in [d for d in real if d.tier is Tier.TOWNSHIP]:
        divisions.extend(_synthetic_villages(township))
    divisions.extend(extra)
    return DivisionTree(divisions)


@lru_cache(maxsize=1)
def yiyang() -> DivisionTree:
    """The tree of 益阳市 that the product ships with."""
    return build_tree(read_divisions_csv(DIVISIONS_CSV))
