"""A real converge of ansible/site.yml: city, county and township, each in its own network namespace.

The test makes three namespaces joined by a bridge (in a fourth), gives each node the address the
generated inventory planned for it, and runs the playbook for real inside each namespace with the
local connection. It converges the parts that run on this machine kind: the city CA and the node
certificates (pki), pouchdb-server (docstore), Mosquitto with client-certificate TLS, ACLs and the
bridge to the parent, and at the city the application itself (Redis, gunicorn, Celery, agent,
collector), all under the project's own supervisor. Then it checks what an operator would:
the brokers take only certificates of the city CA, a signal crosses the bridges both ways, the keys
are private, a second converge reports 0 changed, a revoked certificate is shut out once the new
revocation list is converged, and a rotated one is let in again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.adapters.pki import verify_certificate
from node.runtime.inventory import write_inventory
from tiers import yiyang

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = PROJECT_ROOT / "ansible"
BIN = Path(sys.executable).parent
CITY, COUNTY, TOWNSHIP = "430900000000", "430902000000", "430902005000"
CODES = [CITY, COUNTY, TOWNSHIP]
TIERS = ["city", "county", "township"]
NETWORK = "10.199.0.0/20"  # the plan gives these three the first addresses: all inside 10.199.0.0/24
MQTT_TLS = 8883


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "mosquitto_pub", "mosquitto_sub", "node"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/sbin/mosquitto").exists():
        return "mosquitto is not installed"
    if not (PROJECT_ROOT / "deploy/docstore/node_modules/pouchdb-server/bin/pouchdb-server").exists():
        return "pouchdb-server is not installed (make setup)"
    if not (BIN / "ansible-playbook").exists():
        return "ansible is not installed in the venv"
    return None


def sh(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)


@contextlib.contextmanager
def namespaces(addresses: dict[str, str]) -> Iterator[dict[str, str]]:
    """One namespace per node with its address on a veth into a bridge namespace; removed afterwards."""
    tag = secrets.token_hex(3)
    switch = f"tbsw-{tag}"
    names = {code: f"tb{i}-{tag}" for i, code in enumerate(addresses)}
    made: list[str] = []
    try:
        sh("ip", "netns", "add", switch)
        made.append(switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        for i, (code, address) in enumerate(addresses.items()):
            ns, inside, outside = names[code], f"tbv{i}{tag}", f"tbp{i}{tag}"
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "link", "set", outside, "netns", switch)
            sh("ip", "-n", switch, "link", "set", outside, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            sh("ip", "-n", ns, "link", "set", inside, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield names
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def in_ns(ns: str, *argv: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout, check=check
    )


def converge_all(ns: dict[str, str], codes: list[str], inventory: Path, extra: Path, *options: str) -> dict[str, dict]:
    """Converge several hosts at once, each in its own namespace (they share nothing but the CA, made already)."""
    with ThreadPoolExecutor(len(codes)) as pool:
        futures = {code: pool.submit(converge, ns[code], code, inventory, extra, *options) for code in codes}
        return {code: future.result() for code, future in futures.items()}


def converge(ns: str, host: str, inventory: Path, extra: Path, *options: str, playbook: str = "site.yml") -> dict:
    """Run a playbook for one host inside its namespace; the PLAY RECAP counts of that host."""
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        ["ip", "netns", "exec", ns, str(BIN / "ansible-playbook"), "-i", str(inventory), "-c", "local",
         "-e", f"@{extra}", "--limit", host, *options, str(ANSIBLE_DIR / playbook)],
        capture_output=True, text=True, timeout=600, cwd=ANSIBLE_DIR, env=env,
    )  # fmt: skip
    recap = re.search(rf"^{host}\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout, re.M)
    assert result.returncode == 0 and recap, (
        f"converge of {host} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
    ok, changed, unreachable, failed = map(int, recap.groups())
    return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed, "output": result.stdout}


def broker_log(tmp_path: Path, code: str) -> str:
    log = tmp_path / "hosts" / code / "var/lib/tongban/mosquitto/mosquitto.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no broker log)"


def foreign_certificate(directory: Path, code: str) -> tuple[Path, Path]:
    """A node certificate for ``code`` that looks right in every way but comes from another CA."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Tongban City CA {CITY}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:tongban:node:{code}")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "foreign.pem", directory / "foreign.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def tls_publish(
    ns: str, address: str, identity: Path, cert: Path, key: Path, topic: str
) -> subprocess.CompletedProcess[str]:
    return in_ns(
        ns, "mosquitto_pub", "-h", address, "-p", str(MQTT_TLS), "--cafile", str(identity / "ca.pem"),
        "--cert", str(cert), "--key", str(key), "-t", topic, "-m", "x", "-q", "1",
        "-i", f"probe-{secrets.token_hex(3)}", timeout=20,
    )  # fmt: skip


def signal_crosses(sub_ns: str, topic_filter: str, pub_ns: str, topic: str, timeout: float = 40) -> bool:
    """Publish on the loopback broker in ``pub_ns`` until the subscriber in ``sub_ns`` sees it."""
    subscriber = subprocess.Popen(
        ["ip", "netns", "exec", sub_ns, "mosquitto_sub", "-h", "127.0.0.1", "-p", "1883", "-t", topic_filter,
         "-C", "1", "-W", str(int(timeout)), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and subscriber.poll() is None:
            in_ns(pub_ns, "mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-t", topic, "-m", "wake", "-q", "1")
            time.sleep(1)
        out, _ = subscriber.communicate(timeout=timeout)
        return subscriber.returncode == 0 and out.startswith(topic)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
@pytest.mark.timeout(1800)
def test_three_nodes_converge_with_client_certificate_tls_and_a_second_converge_changes_nothing(
    tmp_path: Path,
) -> None:
    tree = yiyang()
    inventory = tmp_path / "hosts.yml"
    write_inventory(tree, inventory, codes=CODES, network=NETWORK)
    hosts = yaml.safe_load(inventory.read_text())["all"]["children"]
    address = {code: hosts[group]["hosts"][code]["ansible_host"] for group, code in zip(TIERS, CODES, strict=True)}
    assert all(ipaddress.IPv4Address(a) in ipaddress.IPv4Network("10.199.0.0/24") for a in address.values())
    extra = tmp_path / "converge-vars.yml"
    extra.write_text(
        json.dumps(
            {
                "ansible_python_interpreter": sys.executable,
                "tongban_service_manager": "supervisor",
                "tongban_docstore": "pouchdb",
                "tongban_manage_packages": False,
                "tongban_manage_user": False,
                "tongban_user": "root",
                "tongban_group": "root",
                "tongban_prefix": f"{tmp_path}/hosts/{{{{ inventory_hostname }}}}",
                "tongban_ca_dir": str(tmp_path / "ca"),
                "tongban_manage_venv": False,
                "tongban_python": sys.executable,
                "tongban_pythonpath": str(PROJECT_ROOT),
                "tongban_departments": ["test-dept"],
                "docstore_pouchdb_install": False,
                "docstore_pouchdb_dir": str(PROJECT_ROOT / "deploy/docstore"),
                "docstore_node_binary": shutil.which("node"),
                "tongban_proxy_enabled": False,
                # The PostgreSQL role is not converged here (see ansible/README.md).
                "tongban_readmodel_engine": "sqlite",
            }
        )
    )
    # The application (Redis, gunicorn, Celery, agent, collector) runs at the city only: three of
    # them would be more than this 2-core machine gives a test.
    (tmp_path / "host_vars").mkdir()
    for code in CODES:
        (tmp_path / "host_vars" / f"{code}.yml").write_text(json.dumps({"tongban_app_enabled": code == CITY}))
    identity = {code: tmp_path / "hosts" / code / "var/lib/tongban/identity" for code in CODES}
    run_dirs = {code: tmp_path / "hosts" / code / "run/tongban" for code in CODES}
    with namespaces(address) as ns:
        try:
            # The city first: its run makes the city CA that the others' certificates come from.
            first = {CITY: converge(ns[CITY], CITY, inventory, extra)}
            first.update(converge_all(ns, [COUNTY, TOWNSHIP], inventory, extra))
            assert all(result["changed"] > 0 for result in first.values())

            # Keys are the node's own and private; certificates are the city CA's, for this node.
            ca_pem = (tmp_path / "ca/ca.pem").read_bytes()
            for code in CODES:
                assert stat.S_IMODE(identity[code].stat().st_mode) == 0o700
                for private in ("node.key", "data.key", "dept-test-dept.key"):
                    assert stat.S_IMODE((identity[code] / private).stat().st_mode) == 0o600
                assert verify_certificate((identity[code] / "node.pem").read_bytes(), ca_pem) == code
                assert (identity[code] / "data.key").read_bytes() == (tmp_path / "ca/data.key").read_bytes()
                san = x509.load_pem_x509_certificate((identity[code] / "node.pem").read_bytes()).extensions
                ips = san.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
                assert ipaddress.IPv4Address(address[code]) in ips

            # Each node's document store answers inside its own namespace.
            for code in CODES:
                probe = in_ns(
                    ns[code],
                    sys.executable,
                    "-c",
                    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:5984/').read().decode())",
                )
                assert probe.returncode == 0 and "pouchdb" in probe.stdout.lower(), probe.stderr

            # The city's application runs from the node.json the playbook wrote, with its stores.
            health = in_ns(ns[CITY], sys.executable, "-c", "import urllib.request as u; "
                           "print(u.urlopen('http://127.0.0.1:8000/healthz', timeout=10).read().decode())")  # fmt: skip
            assert health.returncode == 0, health.stderr
            status = json.loads(health.stdout)
            assert (status["ok"], status["code"], status["tier"]) == (True, CITY, "city")
            assert status["docstore"]["reachable"] and status["mqtt"]["connected"]
            node_json = tmp_path / "hosts" / CITY / "var/lib/tongban/node.json"
            assert stat.S_IMODE(node_json.stat().st_mode) == 0o600
            assert json.loads(node_json.read_text())["secret_key"] != ""
            ready = (tmp_path / "hosts" / CITY / "run/tongban").glob("*.ready")
            assert {p.stem for p in ready} == {"hostd", "worker", "agent", "collector"}

            # The county's TLS listener: the township's certificate gets in, another CA's does not,
            # nor does a client without a certificate.
            township_id = identity[TOWNSHIP]
            allowed = tls_publish(ns[TOWNSHIP], address[COUNTY], township_id, township_id / "node.pem",
                                  township_id / "node.key", f"tongban/up/{TOWNSHIP}/status")  # fmt: skip
            assert allowed.returncode == 0, allowed.stderr + broker_log(tmp_path, COUNTY)
            foreign_cert, foreign_key = foreign_certificate(tmp_path, TOWNSHIP)
            refused = tls_publish(ns[TOWNSHIP], address[COUNTY], township_id, foreign_cert, foreign_key,
                                  f"tongban/up/{TOWNSHIP}/status")  # fmt: skip
            assert refused.returncode != 0
            anonymous = in_ns(ns[TOWNSHIP], "mosquitto_pub", "-h", address[COUNTY], "-p", str(MQTT_TLS),
                              "--cafile", str(township_id / "ca.pem"), "-t", "tongban/up/x", "-m", "x", "-q", "1",
                              timeout=20)  # fmt: skip
            assert anonymous.returncode != 0

            # Signals cross the bridges: up from the township to the city, down from the city to it.
            # (Exact probe topics: the city's own agent publishes its heartbeat under tongban/up/ too.)
            probe = secrets.token_hex(4)
            up, down = f"tongban/up/{TOWNSHIP}/probe-{probe}", f"tongban/down/4309/02/005/probe-{probe}"
            assert signal_crosses(ns[CITY], up, ns[TOWNSHIP], up)
            assert signal_crosses(ns[TOWNSHIP], down, ns[CITY], down)

            # The ACL of the city lists only its children: the township's valid certificate connects
            # there but its publications are dropped (nothing reaches the city's subscribers).
            city_sub = subprocess.Popen(
                ["ip", "netns", "exec", ns[CITY], "mosquitto_sub", "-h", "127.0.0.1", "-p", "1883",
                 "-t", "tongban/up/acl-probe/#", "-C", "1", "-W", "6"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(1)
            sneaked = tls_publish(ns[TOWNSHIP], address[CITY], township_id, township_id / "node.pem",
                                  township_id / "node.key", "tongban/up/acl-probe/x")  # fmt: skip
            assert sneaked.returncode == 0, sneaked.stderr
            out, _ = city_sub.communicate(timeout=20)
            assert out == ""

            # Converged: running the playbook again changes nothing, and --check --diff agrees.
            for again in converge_all(ns, CODES, inventory, extra).values():
                assert again["changed"] == 0, again["output"][-6000:]
            checked = converge(ns[COUNTY], COUNTY, inventory, extra, "--check", "--diff")
            assert checked["changed"] == 0, checked["output"][-6000:]

            # Revoke the township's certificate: the next converge of the county brings it the new
            # revocation list, and its broker no longer lets the township in.
            old_cert = x509.load_pem_x509_certificate((township_id / "node.pem").read_bytes())
            revoked = tmp_path / "revoked-vars.yml"
            revoked.write_text(
                json.dumps({"tongban_revoked_certificates": [{"serial_number": old_cert.serial_number}]})
            )
            county_again = converge(ns[COUNTY], COUNTY, inventory, extra, "-e", f"@{revoked}")
            assert county_again["changed"] > 0
            publish_up = (ns[TOWNSHIP], address[COUNTY], township_id)
            node_pem, node_key = township_id / "node.pem", township_id / "node.key"
            assert tls_publish(*publish_up, node_pem, node_key, "tongban/up/revoked").returncode != 0

            # Rotation gives the township a new key and certificate, which the county takes again.
            rotated = converge(ns[TOWNSHIP], TOWNSHIP, inventory, extra, "-e", f"@{revoked}",
                               playbook="rotate-certificates.yml")  # fmt: skip
            assert rotated["changed"] > 0
            new_cert = x509.load_pem_x509_certificate(node_pem.read_bytes())
            assert new_cert.serial_number != old_cert.serial_number
            assert new_cert.public_key() != old_cert.public_key()
            back_in = tls_publish(*publish_up, node_pem, node_key, "tongban/up/rotated")
            assert back_in.returncode == 0, back_in.stderr + broker_log(tmp_path, COUNTY)
        finally:
            for code in CODES:
                with contextlib.suppress(Exception):
                    subprocess.run(
                        [sys.executable, "-m", "node.runtime.hostd", "stop", "--processes", "x",
                         "--run-dir", str(run_dirs[code]), "--log-dir", str(tmp_path / "logs")],
                        capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                    )  # fmt: skip
