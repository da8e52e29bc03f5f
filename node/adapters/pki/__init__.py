"""Keys and certificates (the ``pki`` package): the city certificate authority, each node's identity, event signatures.

ARCHITECTURE §7: the city runs an X.509 certificate authority that issues every node an EC P-256
key and certificate. Nodes authenticate each other with them (mutual TLS) and sign the events they
create; a document whose signature fails is quarantined, never projected.

Files (keys are unencrypted PKCS#8 PEM, written atomically with mode 0600; protect the directory):

- CA directory:   ``ca.key``, ``ca.pem``
- node directory: ``node.key``, ``node.pem`` (the node certificate), ``ca.pem`` (the city CA, the
  trust anchor); ``node.pub.pem`` is written when a key exists but no CA was at hand to certify it.

Certificates:

- CA: subject ``CN=Tongban City CA <city code>, O=<city name>``, BasicConstraints ca (path length 0),
  KeyUsage keyCertSign + cRLSign, 10 years.
- Node: ``CN=<node code>, O=<node name>, OU=<tier>``; SAN ``URI:urn:tongban:node:<code>``,
  ``DNS:localhost``, ``IP:127.0.0.1``, ``IP:::1`` (usable for loopback mutual TLS); ExtendedKeyUsage
  serverAuth + clientAuth; KeyUsage digitalSignature.
- Department (sealed results): ``CN=<department code>, O=<node code>``; SAN
  ``URI:urn:tongban:dept:<node>:<dept>``; KeyUsage digitalSignature + contentCommitment. A department
  certificate is never accepted where a node certificate is required.

Signatures (ES256) are ECDSA-SHA256 over the UTF-8 bytes of a hex digest (the event hash), as
``{"alg": "ES256", "signer": <node code>, "cert_sha256": <hex>, "value": <base64 DER>}``.
Certificates travel between nodes as ``certificate`` documents (:func:`certificate_doc`); the modules:
files, profile and shared helpers in ``common``, the CA in ``ca``, checks in ``verification``, a node's key
and certificate in ``identity``, the documents in ``certificates``, the CA's signed revocation list
(``crl`` document) in ``revocation``.
"""

from node.adapters.pki.ca import CertificateAuthority
from node.adapters.pki.certificates import certificate_doc
from node.adapters.pki.common import cert_sha256
from node.adapters.pki.identity import NodeIdentity
from node.adapters.pki.verification import verify_certificate, verify_department_certificate, verify_signature

__all__ = [
    "CertificateAuthority",
    "NodeIdentity",
    "cert_sha256",
    "certificate_doc",
    "verify_certificate",
    "verify_department_certificate",
    "verify_signature",
]
