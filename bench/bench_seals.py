"""Sealing and verifying result PDFs (issue 15): p50/p95 of render + seal and of offline verification.

Also times the signature primitives: ECDSA P-256/SHA-256 (cryptography, what the seals use) against
SM2/SM3 through gmssl (pure Python), when gmssl is installed.

    .venv/bin/python bench/bench_seals.py [--runs 200]

Goals: sealing a result (render + seal) p95 ≤ 300 ms; verifying p95 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from node.adapters.result_pdf import ResultContent, seal_result, verify_result
from node.adapters.seal import DepartmentSeal
from node.adapters.seal_keys import CertificateAuthority, TrustBundle

SEAL_GOAL_MS = 300.0
VERIFY_GOAL_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(percentile(samples, 0.95), 2),
        "max_ms": round(max(samples), 2),
    }


def content(i: int) -> ResultContent:
    return ResultContent(
        document_id=f"R-430903-2026-{i:06d}",
        kind="licence",
        matter_code="MKT-001",
        matter_name="食品经营许可",
        case_no=f"430903-20261201-{i:04d}",
        holder_name="张三",
        holder_key=f"person:{i:08x}",
        issuer_name="益阳市赫山区市场监督管理局",
        issued_on=date.today(),
        valid_until=date.today() + timedelta(days=1826),
        licence_id="1.2.156.3005.2.11100000000013338W008.11430903MB1234567X.2026120100001.001.K",
        items={"经营场所": "益阳市赫山区龙岭大道 1 号", "主体业态": "食品销售经营者", "备注": "网络经营"},
    )


def primitives(runs: int) -> dict[str, object]:
    digest = hashlib.sha256(b"bench").digest()
    key = ec.generate_private_key(ec.SECP256R1())
    signature = key.sign(digest, ec.ECDSA(hashes.SHA256()))
    result: dict[str, object] = {
        "ecdsa_p256_sign": summary(timed(lambda: key.sign(digest, ec.ECDSA(hashes.SHA256())), runs)),
        "ecdsa_p256_verify": summary(
            timed(lambda: key.public_key().verify(signature, digest, ec.ECDSA(hashes.SHA256())), runs)
        ),
    }
    try:
        from gmssl import func, sm2
    except ImportError:
        result["sm2"] = "gmssl not installed"
        return result
    private = func.random_hex(64)
    public = sm2.CryptSM2(private_key=private, public_key="")._kg(int(private, 16), sm2.default_ecc_table["g"])
    crypt = sm2.CryptSM2(private_key=private, public_key=public)
    sm2_runs = max(10, runs // 5)  # pure Python: fewer runs keep the bench short
    sm2_signature = crypt.sign_with_sm3(digest)
    result["sm2_sm3_sign_gmssl"] = summary(timed(lambda: crypt.sign_with_sm3(digest), sm2_runs))
    result["sm2_sm3_verify_gmssl"] = summary(timed(lambda: crypt.verify_with_sm3(sm2_signature, digest), sm2_runs))
    result["sm2_runs"] = sm2_runs
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority.create(Path(tmp) / "ca", "430900000000", "益阳市")
        seal = DepartmentSeal.ensure(Path(tmp) / "seals", "430903000000", "market", "益阳市赫山区市场监督管理局", ca)
        trust = TrustBundle.from_ca(ca)
        seal_result(seal, content(0))  # warm-up: fonts, imports
        counter = iter(range(1, 10**9))
        pdfs: list[bytes] = []

        def seal_one() -> None:
            pdfs.append(seal_result(seal, content(next(counter))))

        sealing = timed(seal_one, args.runs)
        it = iter(pdfs)
        verdicts = []

        def verify_one() -> None:
            verdicts.append(verify_result(next(it), trust))

        verifying = timed(verify_one, len(pdfs))
        assert all(v.valid for v in verdicts), "every sealed PDF must verify"
        report = {
            "runs": args.runs,
            "cpus": os.cpu_count(),
            "pdf_bytes_median": int(statistics.median(len(p) for p in pdfs)),
            "seal_render_and_sign": summary(sealing),
            "verify": summary(verifying),
            "seal_goal_ms": SEAL_GOAL_MS,
            "verify_goal_ms": VERIFY_GOAL_MS,
            "seal_p95_vs_goal": round(percentile(sealing, 0.95) / SEAL_GOAL_MS, 3),
            "verify_p95_vs_goal": round(percentile(verifying, 0.95) / VERIFY_GOAL_MS, 3),
            "primitives": primitives(args.runs),
        }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
