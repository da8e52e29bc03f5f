"""Certificates as replicated documents: every node publishes its own, peers find a signer's by fingerprint.

A document only carries a certificate; trust comes from :func:`~node.adapters.pki.verify_signature`
against the city CA, so a certificate document from any peer may be stored.
"""

from __future__ import annotations

from node.adapters.pki.common import CERT_DOC_TYPE, cert_error, cert_pem, fingerprint, parse_cert, tongban_subject


def certificate_doc(pem: bytes | str) -> dict[str, str]:
    """The replicable document for one certificate (department certificates add ``department``)."""
    cert = parse_cert(pem, "", "certificate")
    found = tongban_subject(cert)
    if found is None:
        raise cert_error("不是通办节点或部门证书", "not a Tongban node or department certificate")
    node, dept = found
    doc = {
        "_id": f"cert:{node}:{fingerprint(cert)}",
        "doc_type": CERT_DOC_TYPE,
        "node": node,
        "pem": cert_pem(cert).decode("ascii"),
    }
    if dept is not None:
        doc["department"] = dept
    return doc
