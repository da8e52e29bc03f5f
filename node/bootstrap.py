"""The composition root: configuration → every adapter a kind of process needs, built once, and the bus.

Each process of a node calls :func:`bootstrap` once with its :class:`ProcessKind` (the collector
calls :func:`bootstrap_collector`); nothing else constructs a store, a read model, an ops model, an
MQTT link or a Redis client. Here too the message bus learns who reacts to what: which handlers
run when this node writes a case (:class:`CaseWritten`) or when the read model shows a case anew
(:class:`CaseChanged`) differs by process kind, and is decided in :func:`_subscribe` alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import redis

from node import __version__
from node.adapters.catalogue_doc import PublishedCatalogue
from node.adapters.docstore import DocStore
from node.adapters.eventstore import EventStore, EventVerifier
from node.adapters.lazy_verifier import LazyFaceVerifier
from node.adapters.library import LIBRARY_DB, MaterialsLibrary, UseLog
from node.adapters.mqtt import MqttLink, wake_topic
from node.adapters.nodestate import NodeState
from node.adapters.opsmodel import OpsModel
from node.adapters.pii import PersonalData
from node.adapters.pki import NodeIdentity
from node.adapters.readmodel import READMODEL_DB, Projector, ReadModel
from node.adapters.register_docs import RegisterDocuments
from node.adapters.registers import REGISTER_DB, RegisterStore
from node.config import ConfigError, NodeConfig
from node.domain.case import scope
from node.domain.catalogue import Catalogue, load_seed_catalogue
from node.domain.messages import CaseChanged, CaseWritten
from node.domain.workdays import WorkingDayCalendar
from node.service_layer import handlers
from node.service_layer.cases import CaseService
from node.service_layer.catalogue import CatalogueService
from node.service_layer.commands import (
    AcceptCase,
    ActOnCase,
    FlagDeadline,
    PublishCatalogue,
    PublishDelegation,
    PublishMatter,
    SweepDeadlines,
)
from node.service_layer.identity import IdentityService
from node.service_layer.messagebus import MessageBus
from node.service_layer.registers import ensure_demo_people
from tiers import Division, DivisionTree, yiyang

CALENDAR_OVERRIDES = "workday-overrides.json"
# The collector reads heartbeat documents with a longer patience than a request would have.
COLLECTOR_STORE_TIMEOUT_S = 10


class ProcessKind(StrEnum):
    WEB = "web"  # gunicorn: pages and API
    WORKER = "worker"  # Celery with its beat: deadline sweep, ops alert rules
    AGENT = "agent"  # replication, presence, intake of arriving cases
    TOOL = "tool"  # a one-off command (tongban readmodel rebuild)


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
    version: str = __version__
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


def _mqtt_link(config: NodeConfig, kind: ProcessKind, client_id: str | None) -> MqttLink | None:
    """The process's one MQTT client: the web's (notices, wake-ups), the agent's (presence with a last
    will, wake-ups; the agent starts it once subscribed), the worker's at a monitoring node (alerts)."""
    if kind is ProcessKind.WEB:
        link = MqttLink(config.mqtt_host, config.mqtt_port, client_id=client_id or f"{config.code}-{os.getpid()}")
        link.start()
        return link
    if kind is ProcessKind.AGENT:
        return MqttLink(
            config.mqtt_host, config.mqtt_port, client_id=client_id or f"{config.code}-agent", will_node=config.code
        )
    if kind is ProcessKind.WORKER and config.monitors_operations:
        link = MqttLink(config.mqtt_host, config.mqtt_port, client_id=client_id or f"{config.code}-ops-alerts")
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
    verifier = EventVerifier(events, identity.ca_pem)
    state = NodeState(config.data_dir / "state.sqlite3")
    readmodel = ReadModel(config.data_dir / READMODEL_DB)
    catalogue = PublishedCatalogue(store, load_seed_catalogue(), identity=identity, city=tree.root)
    bus = MessageBus()
    cases = CaseService(
        config.code,
        tree,
        catalogue,
        events,
        verifier,
        identity,
        state,
        PersonalData.ensure(config.data_key_path),
        calendar,
        publish=bus.publish,
    )
    projector = Projector(
        store,
        readmodel,
        verifier,
        lambda: catalogue.current,
        cases.applicant_name,
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
        mqtt=_mqtt_link(config, kind, mqtt_client_id) if connect_mqtt else None,
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
    )
    _register(context)
    if kind in (ProcessKind.WEB, ProcessKind.TOOL):
        _build_identity(context, context.cases.pii)
    return context


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
    # Every process that writes shows its write in the read model before the request returns.
    bus.subscribe(CaseWritten, lambda message: handlers.project(message, projector))
    code = context.config.code
    if context.kind is ProcessKind.WEB:
        # Handlers read context.mqtt when they run: a test may attach a link after bootstrap.
        bus.subscribe(CaseWritten, lambda _message: context.wake())
        # Cases the web projects while serving a child's pull are not news for its pages: a notice
        # per projected case there slowed the city's replication down (bench_federation).
        bus.subscribe(CaseChanged, lambda message: handlers.post_notice_of_own_write(message, context.mqtt, code))
    elif context.kind is ProcessKind.AGENT:
        bus.subscribe(CaseChanged, lambda message: handlers.take_in(message, cases))
        bus.subscribe(CaseChanged, lambda message: handlers.post_notice(message, context.mqtt, code))


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
