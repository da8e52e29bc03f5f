"""智能问答: latency per question (goal p95 ≤ 50 ms) and top-1/top-3 accuracy on the evaluation set.

Every question of ``tests/data/assistant_questions.json`` is answered ``--rounds`` times through
``Assistant.answer`` (normalising, OpenCC, jieba, pinyin, BM25 and the short answers), after the
index is built once; building (with jieba's first load) is timed separately. Accuracy is reported
for the dev and held-out parts. The anchor, measured in the same run, is the naive matcher a first
version would write: the matters ranked by the characters they share with the question (no
segmentation, no vocabulary table).

    .venv/bin/python bench/bench_assistant.py [--rounds 5] [--json]

Exit status 1 when p95 exceeds 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from node.domain.assistant import Assistant, normalise_question
from node.domain.catalogue import Catalogue, load_seed_catalogue

QUESTIONS = Path(__file__).resolve().parent.parent / "tests" / "data" / "assistant_questions.json"
GOAL_P95_MS = 50.0


def naive_ranking(catalogue: Catalogue, question: str) -> list[str]:
    chars = set(normalise_question(question))
    scored = sorted(((len(chars & set(m.name)), m.code) for m in catalogue), key=lambda p: (-p[0], p[1]))
    return [code for score, code in scored[:3] if score >= 2]


def accuracy(rank, items: list[dict]) -> tuple[float, float]:
    top1 = top3 = 0
    for item in items:
        codes, expected = rank(item["q"]), item["expected"]
        if not expected:
            top1 += not codes
            top3 += not codes
        else:
            top1 += bool(codes) and codes[0] in expected
            top3 += any(code in expected for code in codes)
    return top1 / len(items), top3 / len(items)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]
    catalogue = load_seed_catalogue()

    started = time.perf_counter()
    assistant = Assistant(catalogue)
    build_s = time.perf_counter() - started

    timings: list[float] = []
    for _ in range(args.rounds):
        for item in items:
            t = time.perf_counter()
            assistant.answer(item["q"])
            timings.append((time.perf_counter() - t) * 1000)
    naive_timings: list[float] = []
    for item in items:
        t = time.perf_counter()
        naive_ranking(catalogue, item["q"])
        naive_timings.append((time.perf_counter() - t) * 1000)

    def ranked(question: str) -> list[str]:
        return [a.matter_code for a in assistant.answer(question).answers]

    result: dict[str, object] = {
        "questions": len(items),
        "answers_timed": len(timings),
        "build_s": round(build_s, 3),
        "p50_ms": round(statistics.median(timings), 3),
        "p95_ms": round(percentile(timings, 0.95), 3),
        "max_ms": round(max(timings), 3),
        "naive_p95_ms": round(percentile(naive_timings, 0.95), 3),
    }
    for split in ("dev", "heldout"):
        part = [item for item in items if item["split"] == split]
        top1, top3 = accuracy(ranked, part)
        naive1, naive3 = accuracy(lambda q: naive_ranking(catalogue, q), part)
        result[split] = {
            "n": len(part),
            "top1": round(top1, 3),
            "top3": round(top3, 3),
            "naive_top1": round(naive1, 3),
            "naive_top3": round(naive3, 3),
        }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if result["p95_ms"] <= GOAL_P95_MS else 1


if __name__ == "__main__":
    sys.exit(main())
