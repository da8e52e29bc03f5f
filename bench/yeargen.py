"""A year of 益阳 cases as signed event documents, streamed into a store the way replication delivers them.

Owns the *workload model* of the city-scale benchmarks (issue 18): which matters people bring, where
they live, where they go to a window, what happens to each case and when — and the stream of real
:class:`~node.domain.events.Event` documents that results, each signed by the real key of the node that
wrote it (keys from a throw-away city CA: :func:`node.runtime.provisioning.ensure_city_authority` plus
:class:`node.adapters.pki.NodeIdentity`, so a node provisioned with the same CA directory verifies and
decrypts everything).

Model (every number is an assumption, written down here and in docs/benchmarks.md):

- **Matters by frequency**: :data:`MATTER_WEIGHTS`, relative yearly frequency per seed-catalogue matter,
  invented from what a county hall sees most (social insurance, household registration, residence
  certificates, real estate) down to rare licences. Immediate matters (即办件) get the settled-on-the-spot
  share below, independently of these weights.
- **Population**: every village/community of the tier tree is a unit of population; a community
  (社区, urban, village digits < 200) counts :data:`COMMUNITY_WEIGHT` times a village (村). Counties are thus
  weighted by their villages (安化县 334, 赫山区 249, … 高新区 52). Applicants live at one village for good;
  a person's index is drawn skewed (``population * u**2``) so some people come back several times.
- **Where a case is accepted**: :data:`WINDOW_SHARE` — the city hall 20 % (306k of 1.5M in 2017), county
  halls 35 %, township halls 30 %, village windows 15 %, each the one above the applicant's home.
- **Paths**: :data:`SETTLED_SHARE` 37.8 % settled on the spot (即办件, 115,849 of 306,000 in 2017), at the
  node holding authority for an immediate matter; :data:`REFUSED_SHARE` refused (不予受理); the rest
  accepted, routed when the handling node is elsewhere, received, then supplement (补正, some never answered
  and rejected), transfer (转办), withdrawal, late with deadline flags (预警/黄牌/红牌), approved or rejected,
  result recorded, delivered (window / post / electronic as the matter allows), evaluated (好差评).
- **Time**: cases are accepted on working days of :data:`YEAR` (the official calendar), 08:30–17:30 China
  time, spread evenly over the working days; the next events follow at realistic delays; an event after
  the year's end is not delivered, so the cases still open at New Year stay open (the inbox has work).

Delivery: documents come in the order they were written (day by day; each day's new cases, then the later
events of older cases falling due that day), certificates before the first event they sign, in batches
written with ``POST /{db}/_bulk_docs {"new_edits": false}`` and a generation-1 ``_rev`` — exactly the
request :class:`sync.replicator.StorePeer` makes when it copies one-revision event documents from a child
(their bodies come with the changes feed, no ``_revisions``).

Streaming: a case's later events are not kept; only ``(due day, case key)`` is, and the case is rebuilt
from its seed when an event falls due (it is deterministic). Memory grows with the cases open at once
(rate × duration), never with the year's total. Content (case numbers, payloads, event hashes) is
deterministic for a seed; ECDSA signatures are randomised, as the real signer's are.

    python bench/yeargen.py --cases 5000 --store http://127.0.0.1:5984 --db tongban --ca-dir /tmp/ca
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import random
import sys
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.adapters.pii import PersonalData
from node.domain.case import CaseState
from node.domain.catalogue import Catalogue, Matter, load_seed_catalogue
from node.domain.errors import DomainError
from node.domain.events import Event, EventType
from node.domain.hlc import Timestamp
from node.domain.identifiers import make_credit_code, make_id_number, mask_id_number
from node.domain.jurisdiction import handling_node
from node.domain.workdays import WorkingDayCalendar, warning_level
from tiers import DivisionTree, Tier, yiyang

YEAR = 2025
CHINA = timezone(timedelta(hours=8))
# The 2017 figure of the city-level hall and the issue's plan for all four tiers.
CASES_PER_YEAR_PLANNED = 1_500_000

SETTLED_SHARE = 0.378  # 即办件 settled on the spot: 115,849 / 306,000 (益阳, 2017)
REFUSED_SHARE = 0.015  # 不予受理 at the window
WINDOW_SHARE = {Tier.CITY: 0.20, Tier.COUNTY: 0.35, Tier.TOWNSHIP: 0.30, Tier.VILLAGE: 0.15}
COMMUNITY_WEIGHT = 2.0
# Shares of the cases that are accepted (not settled, not refused):
SUPPLEMENT_SHARE = 0.12  # 补正 requested
SUPPLEMENT_ABANDONED = 0.10  # of those: never answered, rejected after 20 working days
TRANSFER_SHARE = 0.03  # 转办 to a sibling node of the same tier
WITHDRAWAL_SHARE = 0.01
LATE_SHARE = 0.06  # decided after the promised deadline: flagged 预警 / 黄牌 / 红牌 on the way
REJECT_SHARE = 0.07  # 不予办理 among the decisions
EVALUATION_SHARE = 0.35  # 好差评 left after delivery (and after settlement)
EVALUATION_LEVELS = (1, 2, 3, 4, 5)
EVALUATION_WEIGHTS = (0.70, 0.20, 0.06, 0.03, 0.01)

# Relative yearly frequency per seed-catalogue matter (invented; see the module docstring).
MATTER_WEIGHTS: dict[str, float] = {
    "430900-QR-0001": 30,  # 出生登记
    "430900-QR-0002": 25,  # 户口迁移
    "430900-QR-0003": 60,  # 居民身份证换领
    "430900-QR-0004": 20,  # 居住证申领
    "430900-GG-0001": 40,  # 无犯罪记录证明
    "430900-QR-0005": 30,  # 死亡人员户口注销
    "430900-QR-0006": 15,  # 结婚登记
    "430900-QR-0007": 5,  # 离婚登记
    "430900-JF-0001": 20,  # 最低生活保障
    "430900-JF-0002": 4,  # 特困人员救助供养
    "430900-JF-0003": 10,  # 临时救助
    "430900-JF-0004": 25,  # 高龄津贴
    "430900-JF-0005": 12,  # 残疾人两项补贴
    "430900-GG-0002": 70,  # 居住证明（村居）
    "430900-GG-0003": 15,  # 失业登记
    "430900-JF-0006": 10,  # 失业保险金
    "430900-GG-0004": 80,  # 城乡居民养老保险参保
    "430900-JF-0007": 30,  # 养老保险待遇申领
    "430900-GG-0005": 40,  # 社会保障卡
    "430900-GG-0006": 10,  # 就业创业证
    "430900-GG-0007": 90,  # 城乡居民医保参保
    "430900-GG-0008": 35,  # 异地就医备案
    "430900-JF-0008": 30,  # 零星医疗费用报销
    "430900-QR-0008": 15,  # 门诊慢特病
    "430900-XK-0001": 25,  # 个体工商户设立
    "430900-XK-0002": 10,  # 有限责任公司变更
    "430900-XK-0003": 6,  # 企业注销
    "430900-XK-0004": 10,  # 食品经营许可
    "430900-XK-0005": 1,  # 食品生产许可
    "430900-QR-0009": 35,  # 不动产转移登记
    "430900-QR-0010": 25,  # 不动产抵押权首次登记
    "430900-GG-0009": 30,  # 不动产登记资料查询
    "430900-QR-0011": 5,  # 不动产权证书补换发
    "430900-XK-0006": 8,  # 宅基地和建房审批
    "430900-QT-0001": 8,  # 建房村级审查
    "430900-GG-0010": 15,  # 生育登记
    "430900-XK-0007": 2,  # 医师执业注册
    "430900-QT-0002": 1,  # 诊所备案
    "430900-XK-0008": 4,  # 公共场所卫生许可
    "430900-JF-0009": 6,  # 计生家庭奖励扶助
    "430900-XK-0009": 4,  # 教师资格认定（义务教育）
    "430900-XK-0010": 1,  # 教师资格认定（高中）
    "430900-GG-0011": 6,  # 学生转学
    "430900-XK-0011": 3,  # 道路货运经营许可
    "430900-QT-0003": 8,  # 道路运输证年审
    "430900-XK-0012": 1,  # 出租车驾驶员资格证
    "430900-QR-0012": 5,  # 公租房资格
    "430900-XK-0013": 2,  # 建筑工程施工许可
    "430900-GG-0012": 40,  # 公积金提取
    "430900-QT-0004": 5,  # 残疾人证新办
    "430900-QT-0005": 5,  # 残疾人证换领
    "430900-GG-0013": 5,  # 退役军人优待证
}
ENTERPRISE_DEPARTMENTS = frozenset({"market_regulation", "transport"})
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏"
    "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅志强玉兰海燕春梅文军小红"
REFUSE_REASONS = ("不属于本机关职责范围", "申请事项依法不需要取得行政许可", "申请人不具备申请资格")
SUPPLEMENT_REASONS = ("身份证复印件不清晰，请重新提供", "申请表缺少签名", "缺少户口簿原件", "证明材料已过有效期")
REJECT_REASONS = ("不符合法定条件", "经审查，申请材料内容与事实不符", "逾期未补正材料")
TRANSFER_REASON = "经核实不属于本机关管辖，转有管辖权的机关办理"


def _rng(*parts: object) -> random.Random:
    """A random generator determined by ``parts`` alone (string seeds hash the same on every run)."""
    return random.Random("|".join(map(str, parts)))


def _at(day: date, seconds: float) -> int:
    """Unix milliseconds of ``seconds`` after midnight China time on ``day``."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=CHINA)
    return int(midnight.timestamp() * 1000 + seconds * 1000)


def china_day(wall_ms: int) -> date:
    """The day in China of a wall-clock reading in Unix milliseconds."""
    return datetime.fromtimestamp(wall_ms / 1000, tz=UTC).astimezone(CHINA).date()


@dataclass(frozen=True)
class CaseKey:
    """Everything needed to rebuild a case deterministically: the day it was accepted, its index that
    day and the serial its accepting node gave it."""

    day: date
    index: int
    serial: int


@dataclass
class CasePlan:
    """One case: its events (unsigned, in order, the year's cut applied) and the state they fold to."""

    case_no: str
    path: str
    matter_code: str
    accepting_node: str
    handling_node: str
    applicant_key: str
    events: list[Event]
    times: list[int]  # each event's wall-clock milliseconds
    expected_state: CaseState
    expected_flag: str | None = None
    cut: int = 0  # events dropped because they fall after the year's end


@dataclass
class Stats:
    cases: int = 0
    events: int = 0
    certificates: int = 0
    batches: int = 0
    bytes_sent: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)
    events_by_type: Counter[str] = field(default_factory=Counter)
    max_pending: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "events": self.events,
            "certificates": self.certificates,
            "batches": self.batches,
            "bytes_sent": self.bytes_sent,
            "settled_share": round(self.paths["settled"] / self.cases, 4) if self.cases else 0.0,
            "paths": dict(sorted(self.paths.items())),
            "final_states": dict(sorted(self.states.items())),
            "events_by_type": dict(sorted(self.events_by_type.items())),
            "max_pending_cases": self.max_pending,
        }


class Signers:
    """Node identities of a throw-away city CA, created on first use, and their certificate documents.

    The only place this module touches key management (node.adapters.pki / node.runtime.provisioning).
    """

    def __init__(self, ca_dir: Path, tree: DivisionTree, valid_from: datetime | None = None) -> None:
        from node.adapters.pki import CertificateAuthority
        from node.adapters.pki.common import CA_CERT_FILE
        from node.runtime.provisioning import DATA_KEY, ensure_city_authority

        self.ca_dir = Path(ca_dir)
        self.tree = tree
        # Signatures are checked against the certificates valid when an event was signed: a year in the past
        # needs a CA and node certificates that were already valid then (a CA made today would not be).
        self.valid_from = valid_from or datetime(YEAR - 1, 12, 1, tzinfo=UTC)
        if not (self.ca_dir / CA_CERT_FILE).exists():
            CertificateAuthority.create(self.ca_dir, tree.root, tree.get(tree.root).name, not_before=self.valid_from)
        self.ca = ensure_city_authority(self.ca_dir)
        self.data_key = self.ca_dir / DATA_KEY
        self._identities: dict[str, Any] = {}

    def identity(self, code: str) -> tuple[Any, dict[str, Any] | None]:
        """``(identity, certificate document the first time, else None)``.

        Keys live in memory only (issuing through ``NodeIdentity.ensure`` writes and fsyncs three files per
        node, which on this machine cost more than the rest of a small year): a real P-256 key, certified
        by the city CA like any node's.
        """
        from node.adapters.pki import NodeIdentity, certificate_doc

        found = self._identities.get(code)
        if found is not None:
            return found, None
        division = self.tree.get(code)
        key = ec.generate_private_key(ec.SECP256R1())
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        cert_pem = self.ca.issue_node_certificate(
            code, division.name, division.tier.name.lower(), public_pem, not_before=self.valid_from
        )
        identity = NodeIdentity(
            self.ca_dir / "nodes" / code, key, x509.load_pem_x509_certificate(cert_pem), self.ca.certificate
        )
        self._identities[code] = identity
        return identity, certificate_doc(cert_pem)

    def sign(self, event: Event) -> Event:
        identity, _ = self.identity(event.node)
        return event.with_signature(identity.sign(event.hash))


class Applicants:
    """The people (and firms) of the city: deterministic, looked up by index, never all in memory."""

    def __init__(self, seed: int, villages: list[str], cumulative: list[float], data_key: Path | None) -> None:
        self.seed = seed
        self.villages = villages
        self.cumulative = cumulative
        self.pii = PersonalData.load(data_key) if data_key is not None else None

    def home(self, index: int) -> str:
        rng = _rng(self.seed, "home", index)
        return self.villages[bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]

    def payload(self, index: int, enterprise: bool, at_ms: int) -> dict[str, Any]:
        rng = _rng(self.seed, "person", index)
        home = self.home(index)
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        if enterprise:
            number = make_credit_code(f"92{home[:6]}{index % 10**9:09d}")  # 92: 个体工商户 (GB 32100)
            masked, sealed = number[:8] + "****" + number[-4:], {"name": name + "经营部", "credit_code": number}
            kind = "enterprise"
        else:
            birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 65))
            number = make_id_number(home[:6], birth, index % 1000)
            masked, sealed = mask_id_number(number), {"name": name, "id_number": number}
            kind = "person"
        sealed_text = self._seal(sealed, index, at_ms)
        applicant = {"kind": kind, "key": self.key(number), "masked": masked, "sealed": sealed_text}
        return {**applicant, "key_id": self.pii.key_id} if self.pii is not None else applicant

    def key(self, number: str) -> str:
        if self.pii is None:
            return hashlib.sha256(f"{self.seed}:{number}".encode()).hexdigest()
        return self.pii.lookup_key(number)

    def _seal(self, fields: dict[str, Any], index: int, at_ms: int) -> str:
        """Fernet with an IV and time fixed by the seed, so the payload (and the event hash) are reproducible."""
        data = json.dumps(fields, ensure_ascii=False).encode()
        if self.pii is None:
            return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        iv = hashlib.sha256(f"{self.seed}:iv:{index}:{at_ms}".encode()).digest()[:16]
        key_id, key = self.pii.keyring.current()  # "<key id>:<token>", as PersonalData.seal makes them
        return f"{key_id}:{key.fernet._encrypt_from_parts(data, at_ms // 1000, iv).decode()}"


class YearGenerator:
    """Plans and streams a year of cases; ``cases`` is the year's total (spread over its working days)."""

    def __init__(
        self,
        cases: int,
        seed: int = 1,
        signers: Signers | None = None,
        tree: DivisionTree | None = None,
        catalogue: Catalogue | None = None,
        year: int = YEAR,
        calendar: WorkingDayCalendar | None = None,
    ) -> None:
        if cases < 1:
            raise ValueError("cases must be at least 1")
        self.total = cases
        self.seed = seed
        self.signers = signers
        self.tree = tree or yiyang()
        self.catalogue = catalogue or load_seed_catalogue()
        self.year = year
        self.calendar = calendar or WorkingDayCalendar()
        self.year_end_ms = _at(date(year + 1, 1, 1), 0) - 1
        self.days = [
            date(year, 1, 1) + timedelta(days=i)
            for i in range((date(year + 1, 1, 1) - date(year, 1, 1)).days)
            if self.calendar.is_working_day(date(year, 1, 1) + timedelta(days=i))
        ]
        base, extra = divmod(cases, len(self.days))
        self.per_day = [base + (1 if i < extra else 0) for i in range(len(self.days))]
        villages = [d for d in self.tree if d.tier is Tier.VILLAGE]
        weights = [COMMUNITY_WEIGHT if d.code[9:12].isdigit() and int(d.code[9:12]) < 200 else 1.0 for d in villages]
        self.villages = [d.code for d in villages]
        self.population = max(1000, cases // 2)
        self.applicants = Applicants(
            seed, self.villages, list(accumulate(weights)), signers.data_key if signers else None
        )
        matters = [m for m in self.catalogue.matters() if m.code in MATTER_WEIGHTS]
        self.matters = matters
        self.matter_cum = list(accumulate(MATTER_WEIGHTS[m.code] for m in matters))
        immediate = [m for m in matters if m.is_immediate]
        self.immediate = immediate
        self.immediate_cum = list(accumulate(MATTER_WEIGHTS[m.code] for m in immediate))
        self.window_tiers = list(WINDOW_SHARE)
        self.window_cum = list(accumulate(WINDOW_SHARE.values()))

    # --- planning one case ---------------------------------------------------------------------------

    def _pick(self, rng: random.Random, items: list[Matter], cumulative: list[float]) -> Matter:
        return items[bisect_right(cumulative, rng.random() * cumulative[-1])]

    def _ancestor(self, code: str, tier: Tier) -> str:
        return next(c for c in self.tree.path_to_root(code) if self.tree.tier(c) is tier)

    def _handling(self, matter: Matter, accepting: str, home: str) -> str | None:
        location = None if matter.jurisdiction_rule == "nearest" else home
        try:
            return handling_node(matter, self.tree, accepting, location, self.catalogue)
        except DomainError:
            return None  # e.g. a "nearest" matter cannot be handled from a window above its tier

    def _workday_after(self, day: date, n: int) -> date:
        return self.calendar.add_working_days(day, n)

    def _head(self, day: date, index: int) -> tuple[random.Random, int, str, str, Matter, str, str]:
        """The draws that fix where a case is accepted: ``(rng, person, home, path, matter, accepting, handling)``.

        Cheap (no events built), so daily serials can be handed out before a case is planned.
        """
        rng = _rng(self.seed, "case", day.isoformat(), index)
        person = int(self.population * rng.random() ** 2)
        home = self.applicants.home(person)
        roll = rng.random()
        if roll < SETTLED_SHARE:
            path = "settled"
            matter = self._pick(rng, self.immediate, self.immediate_cum)
            accepting = self._handling(matter, home, home) or self.tree.root
            handling = accepting
        else:
            path = "refused" if roll < SETTLED_SHARE + REFUSED_SHARE else "accepted"
            matter = self._pick(rng, self.matters, self.matter_cum)
            tier = self.window_tiers[bisect_right(self.window_cum, rng.random() * self.window_cum[-1])]
            accepting = self._ancestor(home, tier)
            handling = self._handling(matter, accepting, home)
            if handling is None:  # the applicant is sent to the window of the right tier instead
                accepting = self._handling(matter, home, home) or self.tree.root
                handling = accepting
        return rng, person, home, path, matter, accepting, handling

    def plan(self, key: CaseKey) -> CasePlan:
        """The case accepted ``key.index``-th on ``key.day``: every event it will ever have in this year."""
        rng, person, home, path, matter, accepting, handling = self._head(key.day, key.index)
        case_no = f"{accepting}-{key.day:%Y%m%d}-{key.serial}"
        start_ms = _at(key.day, 8.5 * 3600 + rng.random() * 9 * 3600)
        applicant = self.applicants.payload(person, matter.department in ENTERPRISE_DEPARTMENTS, start_ms)
        builder = _CaseBuilder(case_no, start_ms)
        deadline = self._workday_after(key.day, matter.promised_days)
        location = None if matter.jurisdiction_rule == "nearest" else home
        acceptor = ("acceptor", "acceptor")
        approver = (f"approver.{matter.department}", "approver")
        materials = [m.code for m in matter.materials if m.required]
        if path == "refused":
            builder.add(
                EventType.REFUSED,
                accepting,
                acceptor,
                0,
                {
                    "matter_code": matter.code,
                    "applicant": applicant,
                    "materials": materials,
                    "reason": rng.choice(REFUSE_REASONS),
                },
            )
            return self._finish(builder, path, matter, accepting, handling, applicant, CaseState.REFUSED)
        builder.add(
            EventType.ACCEPTED,
            accepting,
            acceptor,
            0,
            {
                "matter_code": matter.code,
                "applicant": applicant,
                "materials": materials,
                "location_code": location,
                "accepting_node": accepting,
                "handling_node": handling,
                "deadline": deadline.isoformat(),
                "promised_days": matter.promised_days,
                "handling_type": matter.handling_type,
            },
        )
        if path == "settled":
            builder.add(EventType.SETTLED, accepting, acceptor, 1, {"method": "window", "summary": "即办件当场办结"})
            builder.after(rng.uniform(300, 1200))
            self._evaluate(builder, rng, accepting, acceptor)
            return self._finish(builder, path, matter, accepting, handling, applicant, CaseState.DELIVERED)
        if handling != accepting:
            builder.add(EventType.ROUTED, accepting, acceptor, 1, {"handling_node": handling})
            # Replication and the handling node's agent take it in: seconds online, hours for a slow link.
            builder.after(math.exp(rng.uniform(math.log(2), math.log(4 * 3600))))
            builder.add(EventType.RECEIVED, handling, ("system", "approver"), 0, {"auto": True})
        else:
            builder.add(EventType.RECEIVED, handling, acceptor, 1, {})
        state = CaseState.IN_REVIEW
        flag: str | None = None
        side = rng.random()
        if side < WITHDRAWAL_SHARE:
            path = "withdrawn"
            builder.to_day(self, rng.randrange(0, max(1, matter.promised_days) + 1), rng)
            builder.add(EventType.WITHDRAWAL_REQUESTED, accepting, acceptor, 0, {"reason": "申请人申请撤回"})
            builder.to_day(self, 1, rng)
            builder.add(EventType.WITHDRAWN, handling, approver, 0, {"reason": "申请人申请撤回"})
            return self._finish(builder, path, matter, accepting, handling, applicant, CaseState.WITHDRAWN)
        # A transfer goes to a sibling at the same tier (which handles the same matter; the trust rules
        # quarantine a transfer to a node that does not). A handler with no sibling keeps the case.
        parent = self.tree.parent(handling)
        siblings = [c for c in self.tree.children(parent) if c != handling] if parent else []
        if side < WITHDRAWAL_SHARE + TRANSFER_SHARE and siblings:
            path = "transferred"
            builder.to_day(self, rng.randrange(0, 3), rng)
            target = rng.choice(siblings)
            builder.add(
                EventType.TRANSFERRED, handling, approver, 0, {"new_handling_node": target, "reason": TRANSFER_REASON}
            )
            handling = target
            builder.after(math.exp(rng.uniform(math.log(2), math.log(4 * 3600))))
            builder.add(EventType.RECEIVED, handling, ("system", "approver"), 0, {"auto": True})
        days = max(0, matter.promised_days)
        late = side > 1 - LATE_SHARE and days > 0
        if WITHDRAWAL_SHARE + TRANSFER_SHARE <= side < WITHDRAWAL_SHARE + TRANSFER_SHARE + SUPPLEMENT_SHARE:
            path = "supplement"
            paused_on = builder.to_day(self, rng.randrange(0, max(1, days // 2) + 1), rng)
            builder.add(
                EventType.SUPPLEMENT_REQUESTED,
                handling,
                approver,
                0,
                {"reason": rng.choice(SUPPLEMENT_REASONS), "paused_on": paused_on.isoformat()},
            )
            if rng.random() < SUPPLEMENT_ABANDONED:
                path = "supplement_abandoned"
                builder.to_day(self, 20, rng)
                builder.add(EventType.REJECTED, handling, approver, 0, {"reason": "逾期未补正材料"})
                return self._deliver(builder, rng, matter, accepting, handling, applicant, path, CaseState.REJECTED)
            resumed_on = builder.to_day(self, rng.randrange(1, 8), rng)
            deadline = self.calendar.remaining_after_pause(deadline, paused_on, resumed_on)
            writer = accepting if rng.random() < 0.7 else handling
            builder.add(
                EventType.SUPPLEMENT_PROVIDED,
                writer,
                acceptor if writer == accepting else approver,
                0,
                {"deadline": deadline.isoformat(), "materials": materials[:1]},
            )
        if late:
            path = "late" if path == "accepted" else path
            decide_on = self._workday_after(deadline, rng.randrange(1, 9))
            for level_day in sorted(set(self._flag_days(deadline, decide_on))):
                level = warning_level(deadline, level_day, self.calendar)
                if level is not None and level != flag and _day_of(builder.now) <= level_day:
                    builder.at_day(level_day, 8 * 3600)
                    builder.add(
                        EventType.DEADLINE_FLAGGED,
                        handling,
                        ("system", "supervisor"),
                        0,
                        {"level": level, "on": level_day.isoformat()},
                    )
                    flag = level
            builder.at_day(decide_on, 9 * 3600 + rng.random() * 8 * 3600)
        else:
            spent = int(days * rng.uniform(0.2, 0.9)) if days else 0
            builder.to_day(self, spent, rng)
        rejected = rng.random() < REJECT_SHARE
        if rejected:
            builder.add(EventType.REJECTED, handling, approver, 0, {"reason": rng.choice(REJECT_REASONS)})
            state = CaseState.REJECTED
        else:
            builder.add(EventType.APPROVED, handling, approver, 0, {})
            state = CaseState.APPROVED
        if path == "accepted":
            path = "rejected" if rejected else "approved"
        return self._deliver(builder, rng, matter, accepting, handling, applicant, path, state, flag)

    def _flag_days(self, deadline: date, decide_on: date) -> list[date]:
        """The days a nightly sweep would raise the level: two working days before, after, and five after."""
        days = [self._workday_after(deadline, 0)]
        back = deadline
        for _ in range(2):
            back -= timedelta(days=1)
            while not self.calendar.is_working_day(back):
                back -= timedelta(days=1)
        days += [back, self._workday_after(deadline, 1), self._workday_after(deadline, 5)]
        return [d for d in days if d < decide_on]

    def _deliver(
        self,
        builder: _CaseBuilder,
        rng: random.Random,
        matter: Matter,
        accepting: str,
        handling: str,
        applicant: dict[str, Any],
        path: str,
        state: CaseState,
        flag: str | None = None,
    ) -> CasePlan:
        approver = (f"approver.{matter.department}", "approver")
        builder.after(rng.uniform(60, 1800))
        summary = "准予办理，证照已制发" if state is CaseState.APPROVED else "不予办理决定书已制作"
        result: dict[str, Any] = {"summary": summary}
        if state is CaseState.APPROVED:
            result["certificate_id"] = f"{handling[:6]}-{builder.case_no[-8:]}"
        builder.add(EventType.RESULT_RECORDED, handling, approver, 0, result)
        method = rng.choice(list(matter.delivery_options) or ["window"])
        if method == "window":
            builder.to_day(self, rng.randrange(0, 4), rng)
            builder.add(EventType.DELIVERED, accepting, ("acceptor", "acceptor"), 0, {"method": "window"})
        else:
            builder.after(rng.uniform(60, 2 * 86400 if method == "post" else 600))
            builder.add(EventType.DELIVERED, handling, approver, 0, {"method": method})
        builder.after(rng.uniform(600, 3 * 86400))
        self._evaluate(builder, rng, accepting, ("acceptor", "acceptor"))
        return self._finish(builder, path, matter, accepting, handling, applicant, CaseState.DELIVERED, flag)

    def _evaluate(self, builder: _CaseBuilder, rng: random.Random, node: str, actor: tuple[str, str]) -> None:
        if rng.random() < EVALUATION_SHARE:
            level = rng.choices(EVALUATION_LEVELS, EVALUATION_WEIGHTS)[0]
            builder.add(EventType.EVALUATED, node, actor, 0, {"level": level})

    def _finish(
        self,
        builder: _CaseBuilder,
        path: str,
        matter: Matter,
        accepting: str,
        handling: str,
        applicant: dict[str, Any],
        final: CaseState,
        flag: str | None = None,
    ) -> CasePlan:
        times = [t for t in builder.times if t <= self.year_end_ms]
        kept = builder.events[: len(times)]
        cut = len(builder.events) - len(kept)
        state = final if not cut else _state_after(kept)
        flags = [e.payload["level"] for e in kept if e.type is EventType.DEADLINE_FLAGGED]
        return CasePlan(
            case_no=builder.case_no,
            path=path,
            matter_code=matter.code,
            accepting_node=accepting,
            handling_node=handling,
            applicant_key=str(applicant["key"]),
            events=kept,
            times=times,
            expected_state=state,
            expected_flag=flags[-1] if flags else None,
            cut=cut,
        )

    # --- the year ------------------------------------------------------------------------------------

    def keys(self) -> Iterator[CaseKey]:
        """Every case of the year in acceptance order, with per-node daily serials (one day in memory)."""
        for day, count in zip(self.days, self.per_day, strict=True):
            serials: Counter[str] = Counter()
            for index in range(count):
                accepting = self._accepting_of(day, index)
                serials[accepting] += 1
                yield CaseKey(day, index, serials[accepting])

    def _accepting_of(self, day: date, index: int) -> str:
        return self._head(day, index)[5]

    def plans(self) -> Iterator[CasePlan]:
        for key in self.keys():
            yield self.plan(key)

    def stream(self, stats: Stats | None = None) -> Iterator[dict[str, Any]]:
        """Documents in delivery order, day by day as written, each certificate before the first event it signs.

        Without signers the events come unsigned (for checking the schedule alone; a node quarantines them).
        """
        stats = stats if stats is not None else Stats()
        pending: dict[date, list[CaseKey]] = defaultdict(list)
        days = iter(zip(self.days, self.per_day, strict=True))
        calendar_day = date(self.year, 1, 1)
        next_work = next(days, None)
        while calendar_day.year == self.year:
            todays: list[CaseKey] = []
            if next_work is not None and next_work[0] == calendar_day:
                serials: Counter[str] = Counter()
                for index in range(next_work[1]):
                    accepting = self._accepting_of(calendar_day, index)
                    serials[accepting] += 1
                    todays.append(CaseKey(calendar_day, index, serials[accepting]))
                next_work = next(days, None)
            due = pending.pop(calendar_day, [])
            for key in [*todays, *due]:
                plan = self.plan(key)
                if key.day == calendar_day:
                    stats.cases += 1
                    stats.paths[plan.path] += 1
                    stats.states[plan.expected_state.value] += 1
                later: set[date] = set()
                for event, wall_ms in zip(plan.events, plan.times, strict=True):
                    day = _day_of(wall_ms)
                    if day > calendar_day:
                        later.add(day)
                    elif day == calendar_day:
                        yield from self._signed(event, stats)
                if later:
                    pending[min(later)].append(key)
            stats.max_pending = max(stats.max_pending, sum(len(v) for v in pending.values()))
            calendar_day += timedelta(days=1)

    def offline_at(self, village: str, count: int, day: date, stats: Stats | None = None) -> Iterator[dict[str, Any]]:
        """``count`` applications accepted at ``village`` on ``day`` while its uplink is down, as it wrote them.

        Its residents only; matters drawn by frequency, except those the village cannot accept (a
        "nearest" matter of a higher tier); what the village itself writes: accepted, then routed to the
        handling node, or received when the village holds authority (village-level matters).
        """
        stats = stats if stats is not None else Stats()
        rng = _rng(self.seed, "offline", village, day.isoformat())
        acceptor = ("acceptor", "acceptor")
        produced = 0
        while produced < count:
            matter = self._pick(rng, self.matters, self.matter_cum)
            handling = self._handling(matter, village, village)
            if handling is None:
                continue
            produced += 1
            person = rng.randrange(10**6)
            start_ms = _at(day, 8.5 * 3600 + produced * 9 * 3600 / (count + 1))
            builder = _CaseBuilder(f"{village}-{day:%Y%m%d}-{produced}", start_ms)
            applicant = self.applicants.payload(person, matter.department in ENTERPRISE_DEPARTMENTS, start_ms)
            builder.add(
                EventType.ACCEPTED,
                village,
                acceptor,
                0,
                {
                    "matter_code": matter.code,
                    "applicant": applicant,
                    "materials": [m.code for m in matter.materials if m.required],
                    "location_code": None if matter.jurisdiction_rule == "nearest" else village,
                    "accepting_node": village,
                    "handling_node": handling,
                    "deadline": self._workday_after(day, matter.promised_days).isoformat(),
                    "promised_days": matter.promised_days,
                    "handling_type": matter.handling_type,
                },
            )
            if handling != village:
                builder.add(EventType.ROUTED, village, acceptor, 1, {"handling_node": handling})
            else:
                builder.add(EventType.RECEIVED, village, acceptor, 1, {})
            stats.cases += 1
            for event in builder.events:
                yield from self._signed(event, stats)

    def _signed(self, event: Event, stats: Stats) -> Iterator[dict[str, Any]]:
        if self.signers is not None:
            _, cert_doc = self.signers.identity(event.node)
            if cert_doc is not None:
                stats.certificates += 1
                yield {**cert_doc, "_rev": "1-" + hashlib.md5(cert_doc["pem"].encode()).hexdigest()}
            event = self.signers.sign(event)
        doc = event.to_doc()
        doc["_rev"] = "1-" + hashlib.md5(event.hash.encode()).hexdigest()  # a revision id, not security
        stats.events += 1
        stats.events_by_type[event.type.value] += 1
        yield doc


def _day_of(wall_ms: int) -> date:
    return china_day(wall_ms)


def _state_after(events: list[Event]) -> CaseState:
    """The state a cut-off case is left in (the fold's own answer, for the plan's record)."""
    from node.domain.case import fold

    return fold(events).state


class _CaseBuilder:
    """Appends a case's events in order, chained and strictly later each time."""

    def __init__(self, case_no: str, start_ms: int) -> None:
        self.case_no = case_no
        self.now = start_ms
        self.events: list[Event] = []
        self.times: list[int] = []

    def add(self, kind: EventType, node: str, actor: tuple[str, str], after_s: float, payload: dict[str, Any]) -> None:
        last = self.events[-1] if self.events else None
        self.now = max(self.now + int(after_s * 1000), (self.times[-1] + 1) if self.times else 0)
        event = Event(
            case_no=self.case_no,
            type=kind,
            actor_id=actor[0],
            actor_role=actor[1],
            node=node,
            hlc=Timestamp(self.now, 0, node).to_str(),
            prev_hash=last.hash if last else None,
            payload=payload,
        )
        self.events.append(event)
        self.times.append(self.now)

    def after(self, seconds: float) -> None:
        self.now += int(seconds * 1000)

    def at_day(self, day: date, seconds: float) -> None:
        self.now = max(self.now, _at(day, seconds))

    def to_day(self, generator: YearGenerator, working_days: int, rng: random.Random) -> date:
        """Move ``working_days`` working days on (0: later the same day), to office hours; returns the day."""
        today = _day_of(self.now)
        if working_days <= 0:
            self.after(rng.uniform(60, 3600))
            return _day_of(self.now)
        day = generator._workday_after(today, working_days)
        self.at_day(day, 8.5 * 3600 + rng.random() * 9 * 3600)
        return day


# --- writing into a store --------------------------------------------------------------------------------


def batches(docs: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_year(
    generator: YearGenerator,
    db_url: str,
    batch_size: int = 500,
    progress: Callable[[Stats, float], None] | None = None,
    session: requests.Session | None = None,
) -> tuple[Stats, float]:
    """Stream the year into ``db_url`` with ``_bulk_docs new_edits:false``; returns the stats and seconds."""
    session = session or requests.Session()
    session.trust_env = False
    if session.get(db_url, timeout=30).status_code == 404:
        session.put(db_url, timeout=30).raise_for_status()
    stats = Stats()
    started = time.perf_counter()
    for batch in batches(generator.stream(stats), batch_size):
        body = json.dumps({"docs": batch, "new_edits": False}, ensure_ascii=False).encode()
        response = session.post(
            f"{db_url}/_bulk_docs", data=body, headers={"Content-Type": "application/json"}, timeout=300
        )
        response.raise_for_status()
        failures = [row for row in response.json() if "error" in row]
        if failures:
            raise RuntimeError(f"the store refused documents: {failures[:3]}")
        stats.batches += 1
        stats.bytes_sent += len(body)
        if progress is not None and stats.batches % 20 == 0:
            progress(stats, time.perf_counter() - started)
    return stats, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000, help="cases in the year (1.5M planned for 益阳)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", required=True, help="document store base URL, e.g. http://127.0.0.1:5984")
    parser.add_argument("--db", default="tongban")
    parser.add_argument("--ca-dir", required=True, help="city CA directory (created if missing; reuse it for the node)")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    generator = YearGenerator(args.cases, args.seed, Signers(Path(args.ca_dir), yiyang()))

    def report(stats: Stats, seconds: float) -> None:
        print(f"  {stats.cases} cases, {stats.events} events, {stats.events / seconds:.0f} events/s", flush=True)

    stats, seconds = write_year(generator, f"{args.store.rstrip('/')}/{args.db}", args.batch, report)
    print(json.dumps({"seconds": round(seconds, 2), **stats.to_dict()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
