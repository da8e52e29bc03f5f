"""Identifier rules: resident ID numbers (GB 11643-1999) and unified social credit codes (GB 32100-2015).

This module owns validating and normalising both identifiers, reading the birth date out of an ID number,
masking an ID number for display, and making valid values for tests and demo data.
"""

from __future__ import annotations

import re
from datetime import date

from node.domain.errors import DomainError

__all__ = [
    "birth_date_of",
    "make_credit_code",
    "make_id_number",
    "mask_id_number",
    "validate_credit_code",
    "validate_id_number",
]

# --- Resident ID number (GB 11643-1999) --------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_MAP = "10X98765432"
# re.ASCII: str.isdigit() and \d would accept full-width and other Unicode digits.
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]", re.ASCII)
_EARLIEST_BIRTH = date(1900, 1, 1)

# Province-level codes of GB/T 2260, plus 71 (Taiwan), 81/82 (Hong Kong/Macao residence permits) and 83
# (Taiwan residence permits). Only the province is checked, never the full region code: a county code
# is kept for life, so people born before their county got today's code (Yiyang's 430902 dates from
# 1994) carry numbers that a "region existed at birth" rule would wrongly reject.
_PROVINCE_CODES = frozenset(
    {
        "11", "12", "13", "14", "15",
        "21", "22", "23",
        "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46",
        "50", "51", "52", "53", "54",
        "61", "62", "63", "64", "65",
        "71", "81", "82", "83",
    }
)  # fmt: skip


def _id_check_char(body17: str) -> str:
    total = sum(int(ch) * w for ch, w in zip(body17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_MAP[total % 11]


def _has_plausible_region(value: str) -> bool:
    if value[:2] in _PROVINCE_CODES:
        return True
    # The 2023 foreign permanent resident ID card shares this format, with "9" then the issuing
    # province in positions 2-3.
    return value[0] == "9" and value[1:3] in _PROVINCE_CODES


def validate_id_number(value: str, *, today: date | None = None) -> str:
    """Check a resident ID number and return it normalised (a lowercase check "x" becomes "X").

    ``today`` bounds the birth date; it defaults to the current date. Raises DomainError with code
    ``id_number_format``, ``id_number_region``, ``id_number_birth_date`` or ``id_number_checksum``.
    """
    # Messages never echo the number: it is personal data and errors end up in logs.
    if not isinstance(value, str) or len(value) != 18:
        raise DomainError(
            "id_number_format",
            "身份证号码应为18位",
            "ID number must be 18 characters long",
        )
    normalised = value[:17] + value[17:].upper()
    if not _ID_SHAPE.fullmatch(normalised):
        raise DomainError(
            "id_number_format",
            "身份证号码格式错误：前17位应为数字，最后一位应为数字或X",
            "ID number format is wrong: the first 17 characters must be digits and the last a digit or X",
        )
    if not _has_plausible_region(normalised):
        raise DomainError(
            "id_number_region",
            "身份证号码的地址码不是有效的省级行政区划代码",
            "ID number does not start with a valid province code",
        )
    _birth_date(normalised, today or date.today())
    if _id_check_char(normalised[:17]) != normalised[17]:
        raise DomainError(
            "id_number_checksum",
            "身份证号码校验位错误",
            "ID number check digit is wrong",
        )
    return normalised


def _birth_date(normalised: str, today: date) -> date:
    digits = normalised[6:14]
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise DomainError(
            "id_number_birth_date",
            "身份证号码中的出生日期不是有效日期",
            "ID number birth date is not a real date",
        ) from None
    if born < _EARLIEST_BIRTH or born > today:
        raise DomainError(
            "id_number_birth_date",
            "身份证号码中的出生日期超出合理范围（1900年至今）",
            "ID number birth date is out of range (1900 to today)",
        )
    return born


def birth_date_of(id_number: str, *, today: date | None = None) -> date:
    """The holder's birth date, after validating the number."""
    normalised = validate_id_number(id_number, today=today)
    return _birth_date(normalised, today or date.today())


def mask_id_number(value: str) -> str:
    """Keep only the region and the check character: "430902***********5".

    The birth date and sequence are hidden, and so is most of the rest: with 10 of 18 characters left,
    the number was recoverable by trying the ~36,000 remaining birth dates and sequences against a look-up
    key. Works on any string, without validating, so legacy (already masked) or malformed values are
    masked again safely.
    """
    if len(value) <= 7:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 7) + value[-1:]


def make_id_number(region6: str, birth: date, sequence3: int) -> str:
    """A valid ID number for the given region, birth date and sequence (0-999; odd means male)."""
    if not (len(region6) == 6 and region6.isascii() and region6.isdigit()):
        raise ValueError(f"region6 must be 6 digits, got {region6!r}")
    if not 0 <= sequence3 <= 999:
        raise ValueError(f"sequence3 must be in 0..999, got {sequence3}")
    body = f"{region6}{birth:%Y%m%d}{sequence3:03d}"
    return validate_id_number(body + _id_check_char(body))


# --- Unified social credit code (GB 32100-2015) ------------------------------------------------------

_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUES = {ch: i for i, ch in enumerate(_CREDIT_ALPHABET)}
_CREDIT_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
# Registration authorities listed in GB 32100-2015: 1 机构编制 … 9 工商, A 军委编制办, N 农业, Y 其他.
_REGISTRATION_AUTHORITIES = frozenset("123456789ANY")


def _credit_check_char(body17: str) -> str:
    total = sum(_CREDIT_VALUES[ch] * w for ch, w in zip(body17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_ALPHABET[(31 - total % 31) % 31]


def validate_credit_code(value: str) -> str:
    """Check a unified social credit code and return it in upper case.

    Raises DomainError with code ``credit_code_format`` (length, alphabet, registration authority,
    region) or ``credit_code_checksum``.
    """
    # isascii() first: str.upper() maps some non-ASCII letters to several characters ("ß" → "SS").
    if not isinstance(value, str) or len(value) != 18 or not value.isascii():
        raise DomainError(
            "credit_code_format",
            "统一社会信用代码应为18位数字或大写字母",
            "Unified social credit code must be 18 digits or capital letters",
        )
    normalised = value.upper()
    if any(ch not in _CREDIT_VALUES for ch in normalised):
        raise DomainError(
            "credit_code_format",
            "统一社会信用代码含有不允许的字符（不使用I、O、Z、S、V）",
            "Unified social credit code contains a character that is not allowed (I, O, Z, S, V are never used)",
        )
    if normalised[0] not in _REGISTRATION_AUTHORITIES:
        raise DomainError(
            "credit_code_format",
            "统一社会信用代码的登记管理部门代码（第1位）无效",
            "Unified social credit code has an invalid registration authority (1st character)",
        )
    if not normalised[2:8].isdigit():
        raise DomainError(
            "credit_code_format",
            "统一社会信用代码的行政区划码（第3至8位）应为6位数字",
            "Unified social credit code region (characters 3-8) must be 6 digits",
        )
    if _credit_check_char(normalised[:17]) != normalised[17]:
        raise DomainError(
            "credit_code_checksum",
            "统一社会信用代码校验码错误",
            "Unified social credit code check character is wrong",
        )
    return normalised


def make_credit_code(prefix17_without_check: str) -> str:
    """A valid credit code: the given 17 characters plus the computed check character."""
    body = prefix17_without_check.upper()
    if len(body) != 17 or any(ch not in _CREDIT_VALUES for ch in body):
        raise ValueError(f"prefix must be 17 characters from {_CREDIT_ALPHABET!r}, got {prefix17_without_check!r}")
    return validate_credit_code(body + _credit_check_char(body))
