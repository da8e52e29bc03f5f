"""``tongban verify FILE``: check a sealed result PDF offline and say valid / tampered / revoked / expired.

Exit codes: 0 valid, 1 tampered, 2 revoked, 3 expired, 4 unknown issuer, 5 no trust bundle or
unreadable file. The first output line is the verdict word (``valid`` followed by the issuer, or
``tampered``, ``revoked``, ``expired``, ``unknown issuer`` alone); the next lines explain, in Chinese
and English.

The trust bundle (the city CA certificate, optionally its CRL ``crl.pem``) is taken, first found:
``--trust PATH`` (a directory or one PEM file), ``$TONGBAN_TRUST``, the identity directory of the
node named by ``$TONGBAN_NODE_CONFIG``, then the local federation's CA directory ``var/ca``. A
certificate inside the PDF is never trusted by itself: it must chain to the bundle's CA.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from node.adapters.result_pdf import MAX_PDF_BYTES, verify_result
from node.adapters.seal_keys import TrustBundle
from node.domain.errors import DomainError
from node.domain.seal import VerdictStatus

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXIT_CODES = {
    VerdictStatus.VALID: 0,
    VerdictStatus.TAMPERED: 1,
    VerdictStatus.REVOKED: 2,
    VerdictStatus.EXPIRED: 3,
    VerdictStatus.UNKNOWN_ISSUER: 4,
}
EXIT_NO_TRUST = 5


def trust_candidates(explicit: str | None) -> list[Path]:
    """Where a trust bundle may be, in the order they are tried."""
    if explicit:
        return [Path(explicit)]
    found: list[Path] = []
    if os.environ.get("TONGBAN_TRUST"):
        found.append(Path(os.environ["TONGBAN_TRUST"]))
    if os.environ.get("TONGBAN_NODE_CONFIG"):
        from node.config import NodeConfig

        with contextlib.suppress(Exception):  # a broken node.json only removes this candidate
            found.append(NodeConfig.load(Path(os.environ["TONGBAN_NODE_CONFIG"])).identity_dir)
    found.append(PROJECT_ROOT / "var" / "ca")
    return found


def load_trust(explicit: str | None) -> TrustBundle:
    errors = []
    for candidate in trust_candidates(explicit):
        try:
            return TrustBundle.load(candidate)
        except DomainError as exc:
            errors.append(exc.message_en)
            if explicit:
                break
    raise DomainError(
        "trust_bundle_missing",
        "找不到信任包（城市 CA 证书）：请用 --trust 指定 ca.pem 所在目录或文件",
        "no trust bundle (the city CA certificate) found: pass --trust DIR|FILE (" + "; ".join(errors) + ")",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tongban verify", description="verify a sealed result PDF offline")
    parser.add_argument("file", help="the PDF to check")
    parser.add_argument("--trust", help="trust bundle: a directory with ca.pem [crl.pem], or one PEM file")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        trust = load_trust(args.trust)
    except DomainError as exc:
        print(f"error: {exc.message_en}\n错误：{exc.message_zh}", file=sys.stderr)
        return EXIT_NO_TRUST
    path = Path(args.file)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PDF_BYTES + 1)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}\n错误：无法读取文件 {path}", file=sys.stderr)
        return EXIT_NO_TRUST
    verdict = verify_result(data, trust)
    if args.json:
        print(
            json.dumps(
                {
                    "verdict": verdict.status.value,
                    "issuer": verdict.issuer,
                    "document_id": verdict.document_id,
                    "seal_name": verdict.seal_name,
                    "signed_at": verdict.signed_at.isoformat() if verdict.signed_at else None,
                    "message_zh": verdict.details_zh,
                    "message_en": verdict.details_en,
                },
                ensure_ascii=False,
            )
        )
    else:
        if verdict.valid:
            print(f"valid {verdict.issuer} {verdict.seal_name or ''}".rstrip())
        else:
            print(verdict.status.label)
            if verdict.issuer:  # a tampered file's issuer is only what its certificate claims
                print(f"issuer: {verdict.issuer}")
        if verdict.document_id:
            print(f"document: {verdict.document_id}")
        print(verdict.details_zh)
        print(verdict.details_en)
    return EXIT_CODES[verdict.status]


if __name__ == "__main__":
    sys.exit(main())
