"""The ``tongban`` command: run a federation or a node, query status, administer a node."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from node.config import DATA_KEY, ConfigError, NodeConfig
from node.runtime.services import PROJECT_ROOT, SetupError
from node.runtime.supervisor import Interrupted, StartError
from tiers import UnknownDivisionError, yiyang

DEFAULT_VAR = PROJECT_ROOT / "var"


def _federation_up(args: argparse.Namespace) -> int:
    from node.runtime import federation as fed

    tree = yiyang()
    codes = args.nodes.split(",") if args.nodes else fed.demo_node_codes(tree)
    for code in codes:
        tree.get(code)
    federation = fed.Federation(Path(args.var), args.base_port, codes, args.sync_interval, not args.no_wakeups)
    fed.run(federation, progress=lambda line: print(line, flush=True))
    return 0


def _federation_status(args: argparse.Namespace) -> int:
    from node.runtime import federation as fed

    rows = fed.status(fed.Federation.load(Path(args.var)))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        for row in rows:
            mark = "healthy" if row["healthy"] else "DOWN"
            print(f"{row['code']}  {row['tier']:<8} {row['name']:<16} {row['url']:<26} {mark}")
    return 0 if all(row["healthy"] for row in rows) else 1


def _node_run(args: argparse.Namespace) -> int:
    from node.runtime import federation as fed

    yiyang().get(args.code)
    fed.run(fed.Federation(Path(args.data_dir), args.base_port, [args.code]), progress=lambda s: print(s, flush=True))
    return 0


def _node_agent(args: argparse.Namespace) -> int:
    from node.bootstrap import ProcessKind, bootstrap
    from node.entrypoints.agent import run_agent

    context = bootstrap(NodeConfig.load(Path(args.config)), ProcessKind.AGENT)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_agent(context, stop)
    return 0


def _node_collector(args: argparse.Namespace) -> int:
    from node.bootstrap import bootstrap_collector
    from node.entrypoints.collector import run_collector

    context = bootstrap_collector(NodeConfig.load(Path(args.config)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_collector(context, stop)
    return 0


def _node_config(args: argparse.Namespace) -> NodeConfig:
    if args.config:
        return NodeConfig.load(Path(args.config))
    from node.runtime import federation as fed

    federation = fed.Federation.load(Path(args.var))
    code = args.node or federation.codes[0]
    if code not in federation.codes:
        raise ConfigError(f"节点 {code} 不在本地联邦中 / node {code} is not part of the local federation")
    return federation.node_config(code)


def _readmodel_rebuild(args: argparse.Namespace) -> int:
    from node.bootstrap import ProcessKind, bootstrap

    context = bootstrap(_node_config(args), ProcessKind.TOOL)
    before = context.readmodel.count()
    refreshed = context.projector.rebuild()
    print(
        f"read model of {context.config.code} rebuilt: {refreshed} cases projected "
        f"({before} rows before, {context.readmodel.count()} now)"
    )
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    """A new current personal-data key; older keys stay so older events and rows still open (docs/personal-data.md)."""
    from node.adapters.pii import install_keyring, rotate_keyring
    from node.adapters.readmodel import READMODEL_DB, ReadModel
    from node.runtime import federation as fed
    from node.runtime.provisioning import reseal_demo_accounts

    if args.config:
        configs = [NodeConfig.load(Path(path)) for path in args.config]
    else:
        federation = fed.Federation.load(Path(args.var))
        if args.scope == "city" and args.node:
            raise ConfigError("城市密钥属于每个节点，不能只轮换一个 / the city key is every node's: omit --node")
        codes = [args.node] if args.node else federation.codes if args.scope == "city" else federation.codes[:1]
        if any(code not in federation.codes for code in codes):
            raise ConfigError(f"节点 {args.node} 不在本地联邦中 / node {args.node} is not part of the local federation")
        configs = [federation.node_config(code) for code in codes]
    if args.scope == "city":
        ca_dirs = {config.ca_dir for config in configs}
        if len(ca_dirs) != 1 or None in ca_dirs:
            raise ConfigError("城市密钥轮换需要同一个 CA 目录 / a city rotation needs nodes of one CA directory")
        city_ring = Path(str(next(iter(ca_dirs)))) / DATA_KEY
        key_id = rotate_keyring(city_ring)
        for config in configs:
            install_keyring(city_ring, config.data_key_path, replace=True)
        print(f"city key {key_id} is current; installed at {len(configs)} nodes (older keys kept for older events)")
        return 0
    for config in configs:
        key_id = rotate_keyring(config.local_key_path)
        moved, unreadable = ReadModel(config.data_dir / READMODEL_DB).rekey()
        resealed = reseal_demo_accounts(config)
        print(
            f"node {config.code}: key {key_id} is current; {moved} read-model rows re-sealed and re-indexed"
            + (f", {unreadable} rows no key opens (rebuild the read model)" if unreadable else "")
            + (f", {resealed} demo passwords re-sealed" if resealed else "")
        )
    return 0


def _demo_accounts(args: argparse.Namespace) -> int:
    from node.runtime import federation as fed
    from node.runtime.provisioning import seed_demo_accounts

    federation = fed.Federation.load(Path(args.var))
    accounts = [a for code in federation.codes for a in seed_demo_accounts(federation.node_config(code))]
    if args.json:
        print(json.dumps(accounts, ensure_ascii=False))
    else:
        for a in accounts:
            print(f"{a['node']}  {a['role']:<10} {a['department'] or '':<18} {a['username']:<28} {a['password']}")
    return 0


def _demo_scenario(args: argparse.Namespace) -> int:
    from node.runtime import federation as fed
    from node.runtime.demo import ScenarioError, run_scenario
    from node.runtime.package_demo import run_package_scenario

    try:
        scenario = run_package_scenario if args.package else run_scenario
        scenario(fed.Federation.load(Path(args.var)))
    except ScenarioError as exc:
        print(f"tongban: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo_results(args: argparse.Namespace) -> int:
    """Issue 15: fees, the sealed result and postal delivery through the running federation."""
    from node.runtime import federation as fed
    from node.runtime.demo import ScenarioError
    from node.runtime.demo_results import run_results_scenario

    try:
        run_results_scenario(fed.Federation.load(Path(args.var)))
    except ScenarioError as exc:
        print(f"tongban: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo_people(args: argparse.Namespace) -> int:
    from node.adapters.demo_people import demo_people_listing

    people = demo_people_listing()
    if args.json:
        print(json.dumps(people, ensure_ascii=False))
    else:
        for person in people:
            enrolled = ", ".join(person["enrolled"])
            print(f"{person['id_number']}  {person['name']:<6} {person['residence_code']}  {enrolled}")
    return 0


def _registers_generate(args: argparse.Namespace) -> int:
    from node.bootstrap import ProcessKind, bootstrap
    from node.service_layer.registers import fill_register, publish_register

    if args.all_nodes:
        from node.runtime import federation as fed

        federation = fed.Federation.load(Path(args.var))
        configs = [federation.node_config(code) for code in federation.codes]
    else:
        configs = [_node_config(args)]
    for config in configs:
        context = bootstrap(config, ProcessKind.TOOL, connect_mqtt=False)
        assert context.registers is not None and context.library is not None
        filled = fill_register(
            context.config.code,
            context.tree,
            context.registers,
            context.library,
            context.cases.pii,
            people_per_village=args.people_per_village,
            enterprises_per_village=args.enterprises_per_village,
        )
        summary = {
            "node": context.config.code,
            "people": filled.people,
            "enterprises": filled.enterprises,
            "demo_people": filled.demo_people,
            "materials_added": filled.materials,
            **{f"held_{key}": value for key, value in context.registers.counts().items()},
        }
        if args.publish:
            summary["published"] = publish_register(
                context.config.code,
                context.tree,
                context.registers,
                context.identity,
                people_per_village=args.people_per_village,
            )
        if args.json:
            print(json.dumps(summary, ensure_ascii=False))
        else:
            print(
                f"register of {summary['node']}: {filled.people} people and {filled.enterprises} enterprises "
                f"written ({filled.demo_people} demo residents with faces, {filled.materials} library documents added)"
            )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from node.entrypoints import verify

    return verify.main(args.arguments)


def _tiers_show(args: argparse.Namespace) -> int:
    tree = yiyang()
    division = tree.get(args.code)
    print(
        json.dumps(
            {
                "code": division.code,
                "name": division.name,
                "tier": division.tier.name.lower(),
                "synthetic": division.synthetic,
                "parent": division.parent,
                "children": list(division.children),
                "path_to_root": tree.path_to_root(division.code),
            },
            ensure_ascii=False,
            indent=2,
        )
    )
    return 0


def _ansible_inventory(args: argparse.Namespace) -> int:
    from node.runtime.inventory import write_inventory

    codes = args.codes.split(",") if args.codes else []
    count = write_inventory(yiyang(), Path(args.output), args.root, codes, args.network)
    print(f"inventory with {count} hosts written to {args.output}")
    return 0


def _ca_revoke(args: argparse.Namespace) -> int:
    """At the city: the CA signs a new revocation list naming a node's certificates (or one by fingerprint)."""
    from node.adapters.docstore import DocStore
    from node.adapters.pki import CertificateAuthority
    from node.adapters.pki.revocation import publish_revocation, revocation_entry
    from node.domain.errors import DomainError
    from node.runtime import federation as fed

    tree = yiyang()
    if args.config:
        config = NodeConfig.load(Path(args.config))
    else:
        config = fed.Federation.load(Path(args.var)).node_config(tree.root)
    if config.code != tree.root:
        raise ConfigError(
            f"只有市级节点可以吊销证书 / only the city {tree.root} revokes certificates, not {config.code}"
        )
    if args.node:
        tree.get(args.node)  # an unknown division is refused (UnknownDivisionError)
    if args.sha is not None and (len(args.sha) != 64 or any(c not in "0123456789abcdef" for c in args.sha.lower())):
        raise ConfigError("证书指纹须为 64 位十六进制 / --sha must be 64 hex digits")
    ca_dir = Path(args.ca_dir) if args.ca_dir else config.ca_dir
    if ca_dir is None:
        raise ConfigError("没有城市 CA 目录 / no city CA directory: give --ca-dir")
    store = DocStore(config.docstore_url, config.docstore_db)
    prefix = f"cert:{args.node}:" if args.node else "cert:"
    certs = [
        doc
        for doc in store.all_docs(prefix, prefix + "\ufff0")
        if "department" not in doc and (args.sha is None or doc["_id"].endswith(f":{args.sha.lower()}"))
    ]
    entries = [revocation_entry(doc["_id"].rsplit(":", 1)[1], doc["node"], args.reason) for doc in certs]
    try:
        crl, _doc = publish_revocation(store, CertificateAuthority.load(ca_dir), entries)
    except DomainError as exc:
        print(f"tongban: {exc.message_zh} / {exc.message_en}", file=sys.stderr)
        return 1
    for entry in entries:
        print(f"revoked {entry.node} {entry.cert_sha256} at {entry.revoked_at.isoformat()} ({entry.reason})")
    print(f"revocation list number {crl.number} published: {len(crl.entries)} certificates revoked in all")
    return 0


def _add_node_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="path of the node's node.json")
    parser.add_argument("--var", default=str(DEFAULT_VAR), help="local federation directory (with --node)")
    parser.add_argument("--node", help="division code of a node of the local federation (default: the city)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tongban", description="通办 Tongban — federated government services")
    sub = parser.add_subparsers(dest="command", required=True)

    federation = sub.add_parser("federation", help="a local four-tier federation").add_subparsers(
        dest="action", required=True
    )
    up = federation.add_parser("up", help="start the local federation in the foreground")
    up.add_argument("--var", default=str(DEFAULT_VAR), help="data directory (default: var/)")
    up.add_argument("--base-port", type=int, default=18000)
    up.add_argument("--nodes", help="comma-separated division codes (default: the demo set of 8 nodes)")
    up.add_argument("--sync-interval", type=float, default=10.0, help="seconds between timer-driven syncs")
    up.add_argument("--no-wakeups", action="store_true", help="replicate on the timer only (for comparison)")
    up.set_defaults(handler=_federation_up)
    status = federation.add_parser("status", help="health of every node of the running federation")
    status.add_argument("--var", default=str(DEFAULT_VAR))
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_federation_status)

    node = sub.add_parser("node", help="one node").add_subparsers(dest="action", required=True)
    run = node.add_parser("run", help="run one node with all its processes in the foreground")
    run.add_argument("code", help="12-character division code")
    run.add_argument("--data-dir", required=True)
    run.add_argument("--base-port", type=int, default=18000)
    run.set_defaults(handler=_node_run)
    agent = node.add_parser("agent", help="the node agent process (started by the supervisor)")
    agent.add_argument("--config", required=True)
    agent.set_defaults(handler=_node_agent)
    collector = node.add_parser("collector", help="the city's ops collector process (started by the supervisor)")
    collector.add_argument("--config", required=True)
    collector.set_defaults(handler=_node_collector)

    readmodel = sub.add_parser("readmodel", help="the node's read model").add_subparsers(dest="action", required=True)
    rebuild = readmodel.add_parser("rebuild", help="recreate the read model from the document store")
    _add_node_selection(rebuild)
    rebuild.set_defaults(handler=_readmodel_rebuild)

    keys = sub.add_parser("keys", help="personal-data keys").add_subparsers(dest="action", required=True)
    rotate = keys.add_parser("rotate", help="make a new personal-data key current; re-key the read model (node)")
    rotate.add_argument(
        "--scope",
        choices=("node", "city"),
        default="node",
        help="node: the node's own keyring (read model); city: the keyring of event payloads, at every node",
    )
    rotate.add_argument("--config", action="append", help="a node's node.json (repeat for several nodes)")
    rotate.add_argument("--var", default=str(DEFAULT_VAR), help="local federation directory (without --config)")
    rotate.add_argument("--node", help="one node of the local federation (default: the city; every node for city)")
    rotate.set_defaults(handler=_keys_rotate)

    demo = sub.add_parser("demo", help="the local demo federation").add_subparsers(dest="action", required=True)
    accounts = demo.add_parser("accounts", help="the seeded staff accounts of every node")
    accounts.add_argument("--var", default=str(DEFAULT_VAR))
    accounts.add_argument("--json", action="store_true")
    accounts.set_defaults(handler=_demo_accounts)
    scenario = demo.add_parser("scenario", help="drive the cross-county flow through the running federation")
    scenario.add_argument("--var", default=str(DEFAULT_VAR))
    scenario.add_argument("--package", action="store_true", help="不动产转移登记一件事 instead of the single case")
    scenario.set_defaults(handler=_demo_scenario)
    results = demo.add_parser("results", help="issue 15: pay a fee, seal, verify and post a result")
    results.add_argument("--var", default=str(DEFAULT_VAR))
    results.set_defaults(handler=_demo_results)

    people = demo.add_parser("people", help="the demo residents who have reference faces (for face verification)")
    people.add_argument("--json", action="store_true")
    people.set_defaults(handler=_demo_people)

    registers = sub.add_parser("registers", help="the node's reference registers (人口库, 法人库)").add_subparsers(
        dest="action", required=True
    )
    generate = registers.add_parser(
        "generate", help="fill the node's register with its share of the demo tree's synthetic population"
    )
    _add_node_selection(generate)
    generate.add_argument("--people-per-village", type=int, default=60)
    generate.add_argument("--enterprises-per-village", type=int, default=2)
    generate.add_argument("--all-nodes", action="store_true", help="every node of the local federation (--var)")
    generate.add_argument(
        "--publish",
        action="store_true",
        help="also write the records this node authors (city: all, county: its residents) as signed documents "
        "that replicate to each residence's subtree",
    )
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(handler=_registers_generate)

    verify = sub.add_parser(
        "verify", help="verify a sealed result PDF offline: valid / tampered / revoked / expired / unknown issuer"
    )
    verify.add_argument("arguments", nargs=argparse.REMAINDER, help="FILE [--trust DIR] (see tongban verify --help)")
    verify.set_defaults(handler=_verify)

    tiers = sub.add_parser("tiers", help="the division tree").add_subparsers(dest="action", required=True)
    show = tiers.add_parser("show", help="one division with its parent, children and path")
    show.add_argument("code")
    show.set_defaults(handler=_tiers_show)

    ca = sub.add_parser("ca", help="the city certificate authority").add_subparsers(dest="action", required=True)
    revoke = ca.add_parser("revoke", help="revoke a node's certificates: its later events are quarantined")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--node", help="division code: revoke every certificate of this node")
    which.add_argument("--sha", help="SHA-256 fingerprint of one certificate")
    revoke.add_argument("--reason", default="key compromised", help="why (recorded in the revocation list)")
    revoke.add_argument("--config", help="path of the city node's node.json")
    revoke.add_argument("--var", default=str(DEFAULT_VAR), help="local federation directory (without --config)")
    revoke.add_argument("--ca-dir", help="the city CA directory (default: the node's ca_dir)")
    revoke.set_defaults(handler=_ca_revoke)

    ansible = sub.add_parser("ansible", help="rollout with Ansible").add_subparsers(dest="action", required=True)
    inventory = ansible.add_parser("inventory", help="write the Ansible inventory generated from the division tree")
    inventory.add_argument("--output", required=True, help="inventory file to write (YAML)")
    inventory.add_argument("--root", help="only this division and its subtree")
    inventory.add_argument("--codes", help="only these comma-separated division codes")
    inventory.add_argument("--network", default="10.43.0.0/20", help="private network of the address plan")
    inventory.set_defaults(handler=_ansible_inventory)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, SetupError, StartError, UnknownDivisionError) as exc:
        print(f"tongban: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        return 130


if __name__ == "__main__":
    sys.exit(main())
