"""The composition root: configuration → every adapter a kind of process needs, built once, and the bus.

Each process of a node calls :func:`bootstrap` once with its :class:`ProcessKind` (the collector
calls :func:`bootstrap_collector`); nothing else constructs a store, a read model, an ops model, an
MQTT link or a Redis client. Here too the message bus learns who reacts to what: which handlers
run when this node writes a case (:class:`CaseWritten`) or when the read model shows a case anew
(:class:`CaseChanged`) differs by process kind, and is decided in :func:`_subscribe` alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from node import __version__
from node.adapters.appointments_store import SqliteAppointmentStore
from node.adapters.catalogue_doc import PublishedCatalogue
from node.adapters.courier import WAYBILLS_DB, CourierSettings, WaybillBook
from node.adapters.docstore import DocStore
from node.adapters.eventstore import EventStore, EventVerifier
from node.adapters.lazy_verifier import LazyFaceVerifier
from node.adapters.library import LIBRARY_DB, MaterialsLibrary, UseLog
from node.adapters.mqtt import MqttLink, wake_topic
from node.adapters.nodestate import NodeState
from node.adapters.nonces import NONCES_DB, NonceLog
from node.adapters.opsmodel import OpsModel
from node.adapters.package_index import PACKAGES_DB, PackageIndex
from node.adapters.payment_gateway import GatewaySettings
from node.adapters.payment_store import SqlPaymentRepository
from node.adapters.pii import PersonalData
from node.adapters.pki import NodeIdentity
from node.adapters.pki.revocation import PublishedRevocations
from node.adapters.questions_store import QUESTIONS_DB, QuestionStore
from node.adapters.ratings_store import RATINGS_DB, RatingStore
from node.adapters.readmodel import READMODEL_DB, Projector, ReadModel
from node.adapters.register_docs import RegisterDocuments
from node.adapters.registers import REGISTER_DB, RegisterStore
from node.adapters.seal import SealBook
from node.adapters.seal_keys import TrustBundle
from node.adapters.signed_reports import ReportSigner
from node.adapters.sqlite import sqlite_engine
from node.config import ConfigError, NodeConfig
from node.domain.assistant import answer as answer_question
from node.domain.case import scope
from node.domain.catalogue import Catalogue, load_seed_catalogue
from node.domain.messages import CaseChanged, CaseWritten
from node.domain.workdays import WorkingDayCalendar
from node.service_layer import handlers
from node.service_layer.appointments import APPOINTMENTS_DB, OWN_PLAN_FILE, AppointmentService, WorkingPlans, china_now
from node.service_layer.cases import CaseService
from node.service_layer.catalogue import CatalogueService
from node.service_layer.commands import (
    AcceptCase,
    AcceptPackage,
    ActOnCase,
    FlagDeadline,
    PublishCatalogue,
    PublishDelegation,
    PublishMatter,
    SweepDeadlines,
)
from node.service_layer.identity import IdentityService
from node.service_layer.messagebus import MessageBus
from node.service_layer.packages import PackageService
from node.service_layer.payments import PaymentService
from node.service_layer.ratings import RatingService
from node.service_layer.registers import ensure_demo_people
from node.service_layer.results import PollPost, ReconcilePayments, ResultService
from tiers import Division, DivisionTree, yiyang

CALENDAR_OVERRIDES = "workday-overrides.json"
# The collector reads heartbeat documents with a longer patience than a request would have.
COLLECTOR_STORE_TIMEOUT_S = 10
log = logging.getLogger("tongban.bootstrap")


class ProcessKind(StrEnum):
    WEB = "web"  # gunicorn: pages and API
    WORKER = "worker"  # Celery with its beat: deadline sweep, ops alert rules
    AGENT = "agent"  # replication, presence, intake of arriving cases
    TOOL = "tool"  # a one-off command (tongban readmodel rebuild)


@dataclass
class AroundTheCase:
    """Issue 14's services of a node: appointments and numbers, 好差评, the assistant and its staff desk."""

    appointments: AppointmentService
    ratings: RatingService
    questions: QuestionStore
    catalogue: Callable[[], Catalogue]

    def assistant(self, question: object) -> dict[str, Any]:
        return answer_question(question, self.catalogue()).to_dict()


@dataclass
class NodeContext:
    config: NodeConfig
    kind: ProcessKind
    tree: DivisionTree
    division: Division
    store: DocStore
    mqtt: MqttLink | None
    identity: NodeIdentity
    state: NodeState
    readmodel: ReadModel
    projector: Projector
    cases: CaseService
    published_catalogue: PublishedCatalogue
    bus: MessageBus
    # Built only where the node monitors operations (config.monitors_operations) and the process uses it.
    ops: OpsModel | None = None
    # The task broker, for the web process's /metrics (a client connects on first use).
    redis: redis.Redis | None = None
    # Nonces of signed requests from children, shared by the node's web processes (replays refused).
    nonces: NonceLog | None = None
    # Appointments, ratings and the assistant: not for one-off tools.
    around: AroundTheCase | None = None
    # 一件事 packages: sub-cases found by package, merged supplement and delivery (not for one-off tools).
    packages: PackageService | None = None
    version: str = __version__
    # Issue 15: fees, sealed results and post; built for the web and the worker (see _results).
    results: ResultService | None = None
    # Issue 12: the node's registers, materials library and data-use log (web and tool processes), and
    # the identity use cases with the face verifier (web only; dlib's models load on its first use).
    registers: RegisterStore | None = None
    library: MaterialsLibrary | None = None
    uses: UseLog | None = None
    identity_service: IdentityService | None = None

    @property
    def catalogue(self) -> Catalogue:
        return self.published_catalogue.current

    @property
    def monitors_operations(self) -> bool:
        return bool(self.config.monitors_operations)

    def wake(self) -> None:
        """Tell this node's agent that documents changed here, so it syncs now rather than on its timer."""
        if self.mqtt is not None and self.config.wakeups:
            self.mqtt.signal(wake_topic(self.config.code), {"node": self.config.code, "reason": "local-write"})


@dataclass
class CollectorContext:
    """What the ops collector works with: the city's ops model and its store (heartbeat documents)."""

    config: NodeConfig
    ops: OpsModel
    store: DocStore


def config_from_env() -> NodeConfig:
    path = os.environ.get("TONGBAN_NODE_CONFIG")
    if not path:
        raise ConfigError("TONGBAN_NODE_CONFIG 未设置 / TONGBAN_NODE_CONFIG is not set: point it at a node.json")
    return NodeConfig.load(Path(path))


def _mqtt_link(config: NodeConfig, kind: ProcessKind, client_id: str | None, identity: NodeIdentity) -> MqttLink | None:
    """The process's one MQTT client: the web's (notices, wake-ups), the agent's (presence with a last
    will, wake-ups; the agent starts it once subscribed), the worker's at a monitoring node (alerts).
    Each signs in as the node and seals what it publishes under the node's own up topics (one signer
    per link: the agent's heartbeats and its last will share a session)."""
    credentials = config.mqtt_credentials()
    if kind is ProcessKind.WEB:
        link = MqttLink(
            config.mqtt_host,
            config.mqtt_port,
            client_id=client_id or f"{config.code}-{os.getpid()}",
            credentials=credentials,
            signer=ReportSigner(identity),
        )
        link.start()
        return link
    if kind is ProcessKind.AGENT:
        return MqttLink(
            config.mqtt_host,
            config.mqtt_port,
            client_id=client_id or f"{config.code}-agent",
            will_node=config.code,
            credentials=credentials,
            signer=ReportSigner(identity),
        )
    if kind is ProcessKind.WORKER and config.monitors_operations:
        link = MqttLink(
            config.mqtt_host,
            config.mqtt_port,
            client_id=client_id or f"{config.code}-ops-alerts",
            credentials=credentials,
            signer=ReportSigner(identity),
        )
        link.start(wait_s=5)
        return link
    return None


def bootstrap(
    config: NodeConfig,
    kind: ProcessKind = ProcessKind.WEB,
    connect_mqtt: bool = True,
    mqtt_client_id: str | None = None,
) -> NodeContext:
    """The node's adapters and services for one process of ``kind``; ``connect_mqtt=False`` leaves MQTT out."""
    tree = yiyang()
    division = tree.get(config.code)
    try:
        identity = NodeIdentity.load(config.identity_dir)
    except Exception as exc:
        raise ConfigError(
            f"节点 {config.code} 尚未签发证书 / node {config.code} has no key and certificate in "
            f"{config.identity_dir} ({exc}): provision it (tongban federation up does)"
        ) from None
    store = DocStore(config.docstore_url, config.docstore_db)
    calendar_file = config.data_dir / CALENDAR_OVERRIDES
    calendar = WorkingDayCalendar.from_json(calendar_file) if calendar_file.exists() else WorkingDayCalendar()
    events = EventStore(store)
    catalogue = PublishedCatalogue(store, load_seed_catalogue(), identity=identity, city=tree.root)
    # Events are checked against the catalogue version they name and the city CA's revocation list.
    verifier = EventVerifier(
        events,
        identity.ca_pem,
        tree=tree,
        catalogues=catalogue,
        revocations=PublishedRevocations(store, identity.ca_pem),
    )
    state = NodeState(config.data_dir / "state.sqlite3")
    # Personal data: the city's keyring for event payloads, the node's own for the read model. Both were
    # made by provisioning; a missing one stops the process (pii.MissingKey) rather than being replaced.
    city_keys, node_keys = PersonalData.load(config.data_key_path), PersonalData.load(config.local_key_path)
    readmodel = ReadModel(config.data_dir / READMODEL_DB, node_keys)
    bus = MessageBus()
    cases = CaseService(
        config.code,
        tree,
        catalogue,
        events,
        verifier,
        identity,
        state,
        city_keys,
        calendar,
        publish=bus.publish,
    )
    projector = Projector(
        store,
        readmodel,
        verifier,
        lambda: catalogue.current,
        cases.applicant_fields,
        lambda case: scope(case, tree),
        publish=bus.publish,
        own_node=config.code,
    )
    uses_ops = config.monitors_operations and kind in (ProcessKind.WEB, ProcessKind.WORKER)
    context = NodeContext(
        config=config,
        kind=kind,
        tree=tree,
        division=division,
        store=store,
        mqtt=_mqtt_link(config, kind, mqtt_client_id, identity) if connect_mqtt else None,
        identity=identity,
        state=state,
        readmodel=readmodel,
        projector=projector,
        cases=cases,
        published_catalogue=catalogue,
        bus=bus,
        ops=OpsModel.for_node(config.data_dir, cases=readmodel) if uses_ops else None,
        redis=(
            redis.Redis.from_url(config.redis_url, socket_timeout=0.3, socket_connect_timeout=0.3)
            if kind is ProcessKind.WEB and config.redis_url
            else None
        ),
        nonces=NonceLog(config.data_dir / NONCES_DB) if kind is ProcessKind.WEB else None,
        around=_around_the_case(config, tree, cases, node_keys) if kind is not ProcessKind.TOOL else None,
    )
    if kind is not ProcessKind.TOOL:
        context.packages = PackageService(cases, bus.handle, PackageIndex(config.data_dir / PACKAGES_DB))
    if kind in (ProcessKind.WEB, ProcessKind.WORKER):
        context.results = _results(context)
    _register(context)
    if kind in (ProcessKind.WEB, ProcessKind.TOOL):
        _build_identity(context, context.cases.pii)
    return context


def _around_the_case(
    config: NodeConfig, tree: DivisionTree, cases: CaseService, node_keys: PersonalData
) -> AroundTheCase:
    """Comments, notes and questions stay at the node: sealed with its own keyring, not the city's."""
    data = config.data_dir
    appointments = AppointmentService(
        config.code,
        tree,
        WorkingPlans(tree, config.code, data / OWN_PLAN_FILE),
        cases.calendar,
        SqliteAppointmentStore(data / APPOINTMENTS_DB),
        cases.pii.lookup_key,
    )
    return AroundTheCase(
        appointments=appointments,
        ratings=RatingService(
            config.code,
            RatingStore(data / RATINGS_DB, node_keys.seal, node_keys.open),
            cases.calendar,
            china_now,
            collects_all=bool(config.monitors_operations),
        ),
        questions=QuestionStore(data / QUESTIONS_DB, node_keys.seal, node_keys.open),
        catalogue=lambda: cases.catalogue,
    )
def _results(context: NodeContext) -> ResultService:
    """Fees (when ``payments.json`` names a gateway), department seals, post (when ``courier.json`` names one)."""
    config = context.config
    results: ResultService | None = None
    payments: PaymentService | None = None
    courier: CourierSettings | None = None
    # A broken or half-written settings file costs the node its online fees or post, never its start.
    try:
        gateway = GatewaySettings.load(config.data_dir)
        if gateway is not None:
            payments = PaymentService(
                SqlPaymentRepository(sqlite_engine(config.data_dir / "payments.sqlite3")),
                gateway.client(),
                region_code=config.code[:6],
                on_state_change=lambda order: results.on_payment_change(order) if results else None,
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("payments disabled: %s is unusable (%s)", config.data_dir / "payments.json", exc)
    try:
        courier = CourierSettings.load(config.data_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("post disabled: %s is unusable (%s)", config.data_dir / "courier.json", exc)
    results = ResultService(
        context.cases,
        context.cases.pii,
        SealBook(config.data_dir / "seals", config.code, context.division.name, config.ca_dir),
        TrustBundle.build(context.identity.ca_pem),
        config.url,
        context.bus.publish,
        payments=payments,
        courier=courier,
        waybills=WaybillBook(config.data_dir / WAYBILLS_DB) if courier is not None else None,
    )
    return results
def _build_identity(context: NodeContext, personal_data: PersonalData) -> None:
    """Issue 12: registers, library and use log; at the web, the face verifier and the identity use cases."""
    config = context.config
    documents = RegisterDocuments(
        context.store, context.cases.events, context.identity.ca_pem, personal_data, context.tree
    )
    context.registers = RegisterStore(config.data_dir / REGISTER_DB, personal_data, documents)
    context.library = MaterialsLibrary(config.data_dir / LIBRARY_DB, personal_data)
    context.uses = UseLog(config.data_dir / LIBRARY_DB)
    if context.kind is not ProcessKind.WEB:
        return
    if config.demo_accounts:  # the demo federation: its residents with faces are there without a CLI step
        ensure_demo_people(config.code, context.tree, context.registers, context.library, personal_data)
    context.identity_service = IdentityService(
        node=config.code,
        tree=context.tree,
        verifier=LazyFaceVerifier(context.registers),  # dlib's models load on the first verification
        registers=context.registers,
        library=context.library,
        uses=context.uses,
        personal_data=personal_data,
        cases=context.cases,
        handle=context.bus.handle,
    )
    context.bus.subscribe(CaseWritten, context.identity_service.note_written)


def _register(context: NodeContext) -> None:
    """Commands to their handlers, and who reacts to what happened, for this kind of process."""
    bus, cases, projector = context.bus, context.cases, context.projector
    bus.register(AcceptCase, cases.accept)
    bus.register(ActOnCase, cases.act)
    bus.register(FlagDeadline, cases.flag_deadline)
    bus.register(SweepDeadlines, cases.sweep_deadlines)
    catalogue = CatalogueService(context.published_catalogue, context.tree, context.division.tier)
    bus.register(PublishCatalogue, catalogue.publish)
    bus.register(PublishMatter, catalogue.publish_matter)
    bus.register(PublishDelegation, catalogue.publish_delegation)
    if context.packages is not None:
        packages = context.packages
        bus.register(AcceptPackage, packages.accept)
        bus.subscribe(CaseChanged, lambda message: handlers.take_in_package(message, packages))
    # Every process that writes shows its write in the read model before the request returns.
    bus.subscribe(CaseWritten, lambda message: handlers.project(message, projector))
    code = context.config.code
    if context.results is not None:
        bus.register(ReconcilePayments, context.results.reconcile)
        bus.register(PollPost, context.results.poll_open_posts)
    if context.kind is ProcessKind.WEB and context.results is not None:
        # Fees falling due, sealing the result, refunds: after acceptance or a decision written here.
        bus.subscribe(CaseWritten, context.results.on_case_written)
    if context.kind is ProcessKind.WEB:
        # Handlers read context.mqtt when they run: a test may attach a link after bootstrap.
        bus.subscribe(CaseWritten, lambda _message: context.wake())
        # Cases the web projects while serving a child's pull are not news for its pages: a notice
        # per projected case there slowed the city's replication down (bench_federation).
        bus.subscribe(CaseChanged, lambda message: handlers.post_notice_of_own_write(message, context.mqtt, code))
    elif context.kind is ProcessKind.AGENT:
        bus.subscribe(CaseChanged, lambda message: handlers.take_in(message, cases))
        bus.subscribe(CaseChanged, lambda message: handlers.post_notice(message, context.mqtt, code))
    if context.around is not None:
        ratings = context.around.ratings
        bus.subscribe(CaseChanged, lambda message: handlers.take_evaluations(message, ratings))


def bootstrap_collector(config: NodeConfig) -> CollectorContext:
    """The ops collector's adapters (its MQTT subscription is its own: see :mod:`node.entrypoints.collector`)."""
    return CollectorContext(
        config=config,
        ops=OpsModel.for_node(config.data_dir),
        store=DocStore(config.docstore_url, config.docstore_db, timeout=COLLECTOR_STORE_TIMEOUT_S),
    )


def publish_own_documents(context: NodeContext) -> None:
    """Put this node's certificate (and, at the city, the catalogue) into its store for replication."""
    context.cases.events.publish_certificate(context.identity.certificate_pem)
    if context.division.parent is None:
        context.published_catalogue.ensure_published(load_seed_catalogue())
