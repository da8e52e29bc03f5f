"""智能问答: match a question in everyday Chinese to the catalogue's matters and answer from their guide.

This module owns normalising and bounding a question, the colloquial-to-catalogue vocabulary table
(``node/data/assistant_synonyms.json``), ranking matters for a question, the "nothing fits, offer a
person" decision and the short answer drawn from a matter (materials, fee, time limit, where).

Why this design (see docs/assistant.md):

- **Segmentation: jieba.** The de facto Chinese segmenter, pure Python, ships its own dictionary
  (no network), and ``cut_for_search`` also yields the 2/3-character words inside long ones, so
  "户口登记" matches a question that only says "户口". It is loaded once per process; its
  dictionary cache goes to a private directory (never a shared /tmp file: the cache is a pickle).
- **Ranking: BM25 written here over jieba tokens**, a few dozen lines over 52 short documents,
  with field weights (matter name ≫ department > materials). A fuzzy string ratio (rapidfuzz)
  scores surface similarity, which colloquial questions lack ("老人走了" shares no character with
  "死亡人员户口注销"); the gap is closed by the synonym table instead, which people can read and
  extend. A small bonus per character shared with the matter's name keeps questions that do use
  catalogue words ranked by them.
- **Typos: pypinyin.** Most Chinese typos come from the pinyin input method (低包 for 低保,
  社宝卡 for 社保卡), so pinyin bigrams are indexed as a low-weight second field.
- **Traditional characters: OpenCC** (t2s) before anything else, so 房產證 is 房产证.

Everything here is pure: the catalogue comes in as an object, the data file is a package resource.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from itertools import pairwise
from typing import Any

from node.domain.catalogue import Catalogue, Matter, load_seed_catalogue
from node.domain.errors import DomainError, ErrorKind

__all__ = [
    "GUIDE_URL_TEMPLATE",
    "MAX_QUESTION_CHARS",
    "Answer",
    "Assistant",
    "AssistantReply",
    "Vocabulary",
    "answer",
    "normalise_question",
]

MAX_QUESTION_CHARS = 200
# Where a matter's public guide (办事指南) lives; the web layer serves it.
GUIDE_URL_TEMPLATE = "/guide/matters/{code}"
SYNONYMS_RESOURCE = "data/assistant_synonyms.json"

# Below this raw BM25 score a matter is not offered: the question shares only weak words with it.
# Chosen on the 'dev' part of tests/data/assistant_questions.json (off-topic questions score < 2).
MIN_SCORE = 3.0
# A matter scoring below this share of the best one is noise next to it, not a second guess.
RELATIVE_FLOOR = 0.3

# Field weights: a word in the matter's name says far more than one in its materials list.
_NAME_WEIGHT = 3.0
_DEPARTMENT_WEIGHT = 1.0
_MATERIAL_WEIGHT = 0.4
_PINYIN_WEIGHT = 0.35
# Bonus per distinct character the question shares with a matter's name (chosen on the dev part).
_NAME_OVERLAP_WEIGHT = 0.5
_BM25_K1 = 1.2
_BM25_B = 0.5

_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HAN = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------------------------------------------------------------
# Text tools: loaded once per process


class _TextTools:
    """jieba, OpenCC and pypinyin behind one lock-guarded lazy loader (the first question pays ~1 s once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._converter: Any = None
        self._known_words: set[str] = set()

    def _load(self) -> None:
        import jieba
        import opencc

        logging.getLogger("jieba").setLevel(logging.WARNING)  # it prints "Building prefix dict..." at DEBUG
        tokenizer = jieba.Tokenizer()
        tokenizer.tmp_dir = _private_cache_dir()
        tokenizer.initialize()
        self._converter = opencc.OpenCC("t2s")
        self._tokenizer = tokenizer

    def ready(self) -> None:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._load()

    def add_words(self, words: Iterable[str]) -> None:
        self.ready()
        with self._lock:
            for word in words:
                if len(word) >= 2 and word not in self._known_words:
                    self._tokenizer.add_word(word)
                    self._known_words.add(word)

    def simplified(self, text: str) -> str:
        self.ready()
        return self._converter.convert(text)

    def words(self, text: str) -> list[str]:
        self.ready()
        return [w for w in self._tokenizer.cut_for_search(text) if w.strip()]


def _private_cache_dir() -> str | None:
    """A directory only this user can write, for jieba's dictionary cache; None means "build, do not cache".

    jieba's cache is a pickle, and it would otherwise sit in the shared temporary directory where
    another local user could plant one. Offline either way: the dictionary ships inside jieba.
    """
    base = os.environ.get("TONGBAN_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"tongban-{os.getuid()}")
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        info = os.stat(base)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return None
    except OSError:
        return None
    return base


_TOOLS = _TextTools()


def _syllables(text: str) -> list[str]:
    """Toneless pinyin of the Chinese characters in ``text`` (other characters are dropped)."""
    from pypinyin import lazy_pinyin

    han = "".join(_HAN.findall(text))
    return lazy_pinyin(han) if han else []


def _pinyin_bigrams(text: str) -> list[str]:
    syllables = _syllables(text)
    return [f"py:{a}{b}" for a, b in pairwise(syllables)]


# ---------------------------------------------------------------------------------------------------------------------
# Input


def _question_error(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def _too_long(size: int) -> DomainError:
    return _question_error(
        "assistant_question_too_long",
        f"问题太长（{size}字）：请用{MAX_QUESTION_CHARS}字以内描述您要办的事",
        f"The question is too long ({size} characters): "
        f"describe what you need in at most {MAX_QUESTION_CHARS} characters",
    )


def normalise_question(question: object) -> str:
    """The question bounded and normalised: NFKC, simplified characters, lower case, trimmed.

    Empty (or only spaces and punctuation) and longer than ``MAX_QUESTION_CHARS`` are refused with a
    bilingual DomainError: a long text is refused rather than cut, since the cut part could be the
    question itself and a silently wrong answer is worse than asking to shorten it.
    """
    if not isinstance(question, str):
        raise _question_error("assistant_question_invalid", "问题须为文字", "The question must be text")
    if len(question) > 4 * MAX_QUESTION_CHARS:  # far too long: refuse before spending time on it
        raise _too_long(len(question))
    text = _CONTROL.sub(" ", unicodedata.normalize("NFKC", question)).strip()
    if len(text) > MAX_QUESTION_CHARS:
        raise _too_long(len(text))
    if not _PUNCTUATION.sub("", text):
        raise _question_error(
            "assistant_question_empty",
            "请输入您的问题，例如：孩子刚出生怎么上户口",
            "Please type a question, for example: how do I register my newborn's residence (孩子刚出生怎么上户口)",
        )
    return _TOOLS.simplified(text).lower()


# ---------------------------------------------------------------------------------------------------------------------
# The vocabulary table


@dataclass(frozen=True)
class Vocabulary:
    """Stopwords and the everyday-phrase → catalogue-terms table."""

    stopwords: frozenset[str]
    phrases: tuple[tuple[str, tuple[str, ...]], ...]  # longest phrase first

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        stopwords = data.get("stopwords", [])
        phrases = data.get("phrases", {})
        if not (
            isinstance(stopwords, list)
            and all(isinstance(w, str) and w for w in stopwords)
            and isinstance(phrases, Mapping)
            and all(
                isinstance(k, str) and k and isinstance(v, list) and v and all(isinstance(t, str) and t for t in v)
                for k, v in phrases.items()
            )
        ):
            raise DomainError(
                "assistant_vocabulary_format",
                "问答词表格式错误：stopwords 为词语列表，phrases 为「口语词 → 目录用语列表」",
                'Assistant vocabulary is malformed: "stopwords" is a list of words, '
                '"phrases" maps a phrase to a list of catalogue terms',
            )
        ordered = sorted(phrases.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        return cls(frozenset(stopwords), tuple((k.lower(), tuple(v)) for k, v in ordered))

    @classmethod
    def seed(cls) -> Vocabulary:
        text = resources.files("node").joinpath(SYNONYMS_RESOURCE).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def expansions(self, text: str, sounds: Mapping[str, tuple[str, ...]] | None = None) -> list[str]:
        """Catalogue terms for every table phrase found in ``text`` (a phrase inside a longer found one is skipped).

        With ``sounds`` (phrase → its toneless pinyin) a phrase of two or more characters also counts
        when part of the question sounds the same and differs in one character at most, not the first
        one of a two-character phrase: that reads input-method typos (低包, 低宝 for 低保) without
        taking 火车 for 货车.
        """
        found: list[str] = []
        covered: list[tuple[int, int]] = []
        han = "".join(_HAN.findall(text))
        han_sound = tuple(_syllables(han)) if sounds else ()
        for phrase, terms in self.phrases:
            start = text.find(phrase)
            if start < 0:
                sound = sounds.get(phrase) if sounds else None
                if sound and _sounds_like(phrase, sound, han, han_sound):
                    found.extend(terms)
                continue
            while start >= 0:
                end = start + len(phrase)
                if not any(a <= start and end <= b for a, b in covered):
                    covered.append((start, end))
                    found.extend(terms)
                    break
                start = text.find(phrase, start + 1)
        return found


def _sounds_like(phrase: str, sound: tuple[str, ...], han: str, han_sound: tuple[str, ...]) -> bool:
    size = len(sound)
    for i in range(len(han_sound) - size + 1):
        if han_sound[i : i + size] != sound:
            continue
        window = han[i : i + size]
        differing = [j for j in range(size) if window[j] != phrase[j]]
        if len(differing) <= 1 and not (size == 2 and differing == [0]):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Answer:
    matter_code: str
    name: str
    score: float  # 0..1, higher is more likely; comparable within one reply
    guide_url: str
    summary_zh: str
    summary_en: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "matter_code": self.matter_code,
            "name": self.name,
            "score": self.score,
            "guide_url": self.guide_url,
            "summary_zh": self.summary_zh,
            "summary_en": self.summary_en,
        }


@dataclass(frozen=True)
class AssistantReply:
    """Up to three matters, most likely first; ``needs_person`` when none fits (offer 人工客服)."""

    question: str
    answers: tuple[Answer, ...]

    @property
    def needs_person(self) -> bool:
        return not self.answers

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"answers": [a.to_dict() for a in self.answers], "needs_person": self.needs_person}
        if self.needs_person:
            data["message_zh"] = "没有找到与您的问题相符的事项。可以转人工客服：工作人员会以消息回复您。"
            data["message_en"] = (
                "No matter fits your question. You can ask a person (人工客服): staff will answer by message."
            )
        return data


# ---------------------------------------------------------------------------------------------------------------------
# The matcher


def _summary(matter: Matter, catalogue: Catalogue) -> tuple[str, str]:
    department = catalogue.department(matter.department)
    required = [m.name for m in matter.materials if m.required]
    optional = [m.name for m in matter.materials if not m.required]
    fee = matter.fee_yuan
    fee_zh = "不收费" if fee == 0 else f"收费{_yuan(fee)}元"
    fee_en = "free of charge" if fee == 0 else f"fee {_yuan(fee)} yuan"
    if matter.is_immediate:
        days_zh, days_en = "即办件，材料齐全当场办结", "handled on the spot when the materials are complete"
    else:
        days_zh = f"承诺{matter.promised_days}个工作日内办结"
        days_en = f"done within {matter.promised_days} working days"
    if matter.visits_required == 0:
        visits_zh, visits_en = "可全程网办，无需到现场", "can be done fully online, no visit"
    else:
        visits_zh = f"需到现场{matter.visits_required}次"
        visits_en = f"{matter.visits_required} visit(s) in person"
    tier = matter.authority_tier
    where_zh = f"{tier.label_zh}便民服务中心（{department.name_zh}窗口）"
    where_en = f"the {tier.name.lower()} service centre ({department.name_en} window)"
    materials_zh = "、".join(required) + (f"；视情况提供：{'、'.join(optional)}" if optional else "")
    materials_en = f"{len(required)} required item(s)" + (f", {len(optional)} if applicable" if optional else "")
    zh = f"{matter.name}：到{where_zh}办理；{days_zh}；{fee_zh}；{visits_zh}。需带：{materials_zh}。"
    en = f"{matter.name}: at {where_en}; {days_en}; {fee_en}; {visits_en}. Materials: {materials_en}."
    return zh, en


def _yuan(fee: Decimal) -> str:
    return format(fee.normalize(), "f")


class Assistant:
    """Ranks a catalogue's matters for everyday questions. Build one per catalogue version; thread-safe."""

    def __init__(
        self,
        catalogue: Catalogue,
        vocabulary: Vocabulary | None = None,
        guide_url_template: str = GUIDE_URL_TEMPLATE,
    ) -> None:
        self.catalogue = catalogue
        self.vocabulary = vocabulary or Vocabulary.seed()
        self.guide_url_template = guide_url_template
        matters = catalogue.matters()
        # Catalogue vocabulary and the table's phrases become jieba words, so both sides split alike.
        _TOOLS.add_words(
            [m.name for m in matters]
            + [k for k, _ in self.vocabulary.phrases]
            + [t for _, terms in self.vocabulary.phrases for t in terms]
        )
        self._sounds = {
            phrase: tuple(_syllables(phrase))
            for phrase, _ in self.vocabulary.phrases
            if len(phrase) >= 2 and len(_HAN.findall(phrase)) == len(phrase)
        }
        self._matters = matters
        self._name_chars = [set(_HAN.findall(m.name)) for m in matters]
        self._docs: list[Counter[str]] = []
        for matter in matters:
            department = catalogue.department(matter.department)
            doc: Counter[str] = Counter()
            self._add(doc, matter.name, _NAME_WEIGHT)
            self._add(doc, department.name_zh, _DEPARTMENT_WEIGHT)
            for material in matter.materials:
                self._add(doc, material.name, _MATERIAL_WEIGHT)
            self._docs.append(doc)
        self._lengths = [sum(d.values()) for d in self._docs]
        self._average_length = sum(self._lengths) / max(len(self._lengths), 1)
        frequency: Counter[str] = Counter()
        for doc in self._docs:
            frequency.update(doc.keys())
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}
        self._summaries = {m.code: _summary(m, catalogue) for m in matters}

    def _terms(self, text: str) -> list[str]:
        return [w for w in _TOOLS.words(_PUNCTUATION.sub(" ", text)) if w not in self.vocabulary.stopwords]

    def _add(self, doc: Counter[str], text: str, weight: float) -> None:
        for word in self._terms(text):
            doc[word] += weight
        for bigram in _pinyin_bigrams(text):
            doc[bigram] += weight * _PINYIN_WEIGHT

    def _query(self, text: str) -> Counter[str]:
        query: Counter[str] = Counter()
        for part in [text, *self.vocabulary.expansions(text, self._sounds)]:
            query.update(self._terms(part))
        # Pinyin of the question as typed only: it catches input-method typos the table does not know.
        for bigram in _pinyin_bigrams(_PUNCTUATION.sub("", text)):
            query[bigram] += _PINYIN_WEIGHT
        return query

    def _bm25(self, query: Counter[str], index: int) -> float:
        doc, length = self._docs[index], self._lengths[index]
        norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * length / self._average_length)
        score = 0.0
        for term, weight in query.items():
            tf = doc.get(term)
            if tf:
                score += weight * self._idf[term] * tf * (_BM25_K1 + 1) / (tf + norm)
        return score

    def scores(self, question: str) -> list[tuple[str, float]]:
        """Every matter's raw score for an already normalised question, best first (for tuning and tests)."""
        query = self._query(question)
        chars = set(_HAN.findall(question))
        ranked = [
            (m.code, self._bm25(query, i) + _NAME_OVERLAP_WEIGHT * len(chars & self._name_chars[i]))
            for i, m in enumerate(self._matters)
        ]
        ranked.sort(key=lambda pair: (-pair[1], pair[0]))
        return ranked

    def answer(self, question: object, limit: int = 3) -> AssistantReply:
        text = normalise_question(question)
        ranked = self.scores(text)
        best = ranked[0][1] if ranked else 0.0
        answers = []
        for code, raw in ranked[:limit]:
            if raw < MIN_SCORE or raw < RELATIVE_FLOOR * best:
                break
            matter = self.catalogue.get(code)
            zh, en = self._summaries[code]
            answers.append(
                Answer(
                    matter_code=code,
                    name=matter.name,
                    score=round(1 - math.exp(-raw / 10), 3),
                    guide_url=self.guide_url_template.format(code=code),
                    summary_zh=zh,
                    summary_en=en,
                )
            )
        return AssistantReply(question=text, answers=tuple(answers))


_CACHE: dict[str, Assistant] = {}
_CACHE_LOCK = threading.Lock()


def answer(question: object, catalogue: Catalogue | None = None) -> AssistantReply:
    """Answer ``question`` against ``catalogue`` (the seed catalogue by default).

    The index of the last catalogue asked about is kept, so a node rebuilds it only when a new
    catalogue version is published (building takes a few milliseconds; the first one also loads jieba).
    """
    with _CACHE_LOCK:
        key = "seed" if catalogue is None else "published"
        assistant = _CACHE.get(key)
        if assistant is None or (catalogue is not None and assistant.catalogue is not catalogue):
            assistant = _CACHE[key] = Assistant(catalogue or load_seed_catalogue())
    return assistant.answer(question)
