"""The language of the pages: Flask-Babel over the gettext catalogues in ``node/translations``.

Chinese is the source language: every message id is the Chinese text, ``zh_CN`` is the default
locale and the ``en`` catalogue carries the English. ``?lang=en`` (or ``?lang=zh``) switches the
language and the session remembers it (the hook is the auth blueprint's). ``make messages``
re-extracts the ids after a change of text; the ``.mo`` files are compiled from the ``.po`` files
when the app starts if they are missing or older, so a fresh clone needs no extra step.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, session
from flask_babel import Babel, LazyString, force_locale

from node.domain.errors import DomainError

log = logging.getLogger(__name__)

# The language switch's codes and the gettext locale behind each.
LOCALES = {"zh": "zh_CN", "en": "en"}
DEFAULT_LANG = "zh"
TRANSLATIONS = Path(__file__).resolve().parents[2] / "translations"


def lang() -> str:
    """The language chosen for this session: ``zh`` (default) or ``en``."""
    chosen = session.get("lang")
    return chosen if chosen in LOCALES else DEFAULT_LANG


def select_locale() -> str:
    return LOCALES[lang()]


def init_app(app: Flask) -> None:
    compile_catalogues()
    Babel(
        app,
        locale_selector=select_locale,
        default_locale=LOCALES[DEFAULT_LANG],
        default_translation_directories=str(TRANSLATIONS),
    )


def compile_catalogues(directory: Path = TRANSLATIONS) -> None:
    """Compile each ``messages.po`` whose ``messages.mo`` is missing or older than it."""
    for po in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as source:
            catalog = read_po(source, locale=po.parent.parent.name)
        # Several workers may start at once: each writes its own file and renames it into place.
        partial = mo.with_name(f".messages.{os.getpid()}.mo")
        try:
            with partial.open("wb") as target:
                write_mo(target, catalog)
            os.replace(partial, mo)
        except OSError as exc:
            log.warning("cannot compile %s (%s); its pages fall back to Chinese", po, exc)


def both(message: LazyString) -> dict[str, str]:
    """A message in both languages, for flashes and errors that outlive the current language choice."""
    texts = {}
    for code, locale in LOCALES.items():
        with force_locale(locale):
            texts[code] = str(message)
    return texts


def bilingual(exc: DomainError) -> dict[str, str]:
    return {"zh": exc.message_zh, "en": exc.message_en}
