"""The one place that wires a node: configuration → tree, store, keys, read model, services, MQTT."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from node import __version__
from node.adapters.catalogue_doc import PublishedCatalogue
from node.adapters.docstore import DocStore
from node.adapters.eventstore import EventStore, EventVerifier
from node.adapters.mqtt import MqttLink, notice_topic, wake_topic
from node.adapters.nodestate import NodeState
from node.adapters.pii import PersonalData
from node.adapters.pki import NodeIdentity
from node.adapters.readmodel import READMODEL_DB, Projector, ReadModel
from node.config import ConfigError, NodeConfig
from node.domain.case import scope
from node.domain.catalogue import Catalogue, load_seed_catalogue
from node.domain.events import Event
from node.domain.workdays import WorkingDayCalendar
from node.runtime.provisioning import DATA_KEY, identity_dir
from node.service_layer.cases import CaseService
from tiers import Division, DivisionTree, yiyang

CALENDAR_OVERRIDES = "workday-overrides.json"


@dataclass
class NodeContext:
    config: NodeConfig
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
    version: str = __version__

    @property
    def catalogue(self) -> Catalogue:
        return self.published_catalogue.current

    def wake(self) -> None:
        """Tell this node's agent that documents changed here, so it syncs now rather than on its timer."""
        if self.mqtt is not None and self.config.wakeups:
            self.mqtt.signal(wake_topic(self.config.code), {"node": self.config.code, "reason": "local-write"})


def config_from_env() -> NodeConfig:
    path = os.environ.get("TONGBAN_NODE_CONFIG")
    if not path:
        raise ConfigError("TONGBAN_NODE_CONFIG 未设置 / TONGBAN_NODE_CONFIG is not set: point it at a node.json")
    return NodeConfig.load(Path(path))


def bootstrap(config: NodeConfig, connect_mqtt: bool = True, mqtt_client_id: str | None = None) -> NodeContext:
    tree = yiyang()
    division = tree.get(config.code)
    try:
        identity = NodeIdentity.load(identity_dir(config))
    except Exception as exc:
        raise ConfigError(
            f"节点 {config.code} 尚未签发证书 / node {config.code} has no key and certificate in "
            f"{identity_dir(config)} ({exc}): provision it (tongban federation up does)"
        ) from None
    store = DocStore(config.docstore_url, config.docstore_db)
    calendar_file = config.data_dir / CALENDAR_OVERRIDES
    calendar = WorkingDayCalendar.from_json(calendar_file) if calendar_file.exists() else WorkingDayCalendar()
    events = EventStore(store)
    verifier = EventVerifier(events, identity.ca_pem)
    state = NodeState(config.data_dir / "state.sqlite3")
    readmodel = ReadModel(config.data_dir / READMODEL_DB)
    catalogue = PublishedCatalogue(store, load_seed_catalogue(), identity=identity, city=tree.root)
    cases = CaseService(
        config.code,
        tree,
        catalogue,
        events,
        verifier,
        identity,
        state,
        PersonalData.ensure(identity_dir(config) / DATA_KEY),
        calendar,
    )
    projector = Projector(
        store,
        readmodel,
        verifier,
        lambda: catalogue.current,
        cases.applicant_name,
        lambda case: scope(case, tree),
        own_node=config.code,
    )
    mqtt = None
    if connect_mqtt:
        mqtt = MqttLink(config.mqtt_host, config.mqtt_port, client_id=mqtt_client_id or f"{config.code}-{os.getpid()}")
        mqtt.start()
    context = NodeContext(
        config=config,
        tree=tree,
        division=division,
        store=store,
        mqtt=mqtt,
        identity=identity,
        state=state,
        readmodel=readmodel,
        projector=projector,
        cases=cases,
        published_catalogue=catalogue,
    )

    def written(events: list[Event]) -> None:
        case = projector.project_events(events)
        context.wake()
        if case is not None and mqtt is not None:
            mqtt.signal(notice_topic(config.code), {"case_no": case.case_no, "state": case.state.value})

    cases.on_written = written
    return context


def publish_own_documents(context: NodeContext) -> None:
    """Put this node's certificate (and, at the city, the catalogue) into its store for replication."""
    context.cases.events.publish_certificate(context.identity.certificate_pem)
    if context.division.parent is None:
        context.published_catalogue.ensure_published(load_seed_catalogue())
