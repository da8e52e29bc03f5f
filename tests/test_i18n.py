"""The pages' gettext catalogues: complete, in step with the sources, compiled when missing."""

from __future__ import annotations

import shutil
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from babel.support import Translations

from node.entrypoints.web.i18n import TRANSLATIONS, compile_catalogues

ROOT = Path(__file__).resolve().parents[1]
# As `make messages` calls pybabel extract.
KEYWORDS = {**DEFAULT_KEYWORDS, "lazy_gettext": None, "lazy_pgettext": ((1, "c"), 2)}


def catalogue(locale: str) -> Catalog:
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as source:
        return read_po(source, locale=locale)


def source_messages() -> set[tuple[str | None, str]]:
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    found = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS
    ):
        found.add((context, message[0] if isinstance(message, tuple) else message))
    return found


def test_the_catalogues_hold_exactly_the_messages_of_the_sources() -> None:
    in_sources = source_messages()
    assert ("action", "评价") in in_sources and (None, "评价") in in_sources  # one text, two meanings
    for locale in ("en", "zh_CN"):
        in_catalogue = {(message.context, message.id) for message in catalogue(locale) if message.id}
        assert in_catalogue == in_sources, f"{locale}: run `make messages` (then translate the new entries)"


def test_every_message_has_its_english_with_the_same_placeholders() -> None:
    english = catalogue("en")
    untranslated = [message.id for message in english if message.id and (not message.string or message.fuzzy)]
    assert untranslated == []
    problems = [(message.id, [str(error) for error in errors]) for message, errors in english.check()]
    assert problems == []
    assert english.get("受理编号").string == "Case number"
    assert english.get("评价", context="action").string == "Evaluate"


def test_a_fresh_clone_compiles_its_catalogues_when_the_app_starts(tmp_path: Path) -> None:
    directory = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, directory, ignore=shutil.ignore_patterns("*.mo"))
    assert not list(directory.glob("*/LC_MESSAGES/*.mo"))
    compile_catalogues(directory)
    english = Translations.load(str(directory), ["en"])
    assert english.gettext("待办箱") == "Inbox"
    assert english.pgettext("action", "评价") == "Evaluate"
    chinese = Translations.load(str(directory), ["zh_CN"])
    assert chinese.gettext("待办箱") == "待办箱"

    # An edited .po is compiled again; an up-to-date .mo is left alone.
    mo = directory / "en" / "LC_MESSAGES" / "messages.mo"
    before = mo.stat().st_mtime_ns
    compile_catalogues(directory)
    assert mo.stat().st_mtime_ns == before
