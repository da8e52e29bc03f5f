"""Resident ID numbers (GB 11643-1999) and unified social credit codes (GB 32100-2015)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import (
    birth_date_of,
    make_credit_code,
    make_id_number,
    mask_id_number,
    validate_credit_code,
    validate_id_number,
)

# Independent oracles, written from the standards' tables rather than from the module's code.
ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def id_check(body17: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, ID_WEIGHTS, strict=True)) % 11]


def credit_check(body17: str) -> str:
    total = sum(CREDIT_ALPHABET.index(c) * w for c, w in zip(body17, CREDIT_WEIGHTS, strict=True))
    check = 31 - total % 31
    return CREDIT_ALPHABET[0 if check == 31 else check]


def error_code(fn, value: str) -> str:
    with pytest.raises(DomainError) as info:
        fn(value)
    assert info.value.kind is ErrorKind.INVALID
    assert info.value.message_zh and info.value.message_en
    return info.value.code


# --- ID numbers ---------------------------------------------------------------------------------------

YIYANG_1985 = "430902198503151248"  # 资阳区 430902 dates from 1994; the holder was born in 1985.


def test_standard_example_is_valid_and_lowercase_x_is_normalised() -> None:
    assert validate_id_number("11010519491231002X") == "11010519491231002X"
    assert validate_id_number("11010519491231002x") == "11010519491231002X"
    assert birth_date_of("11010519491231002X") == date(1949, 12, 31)


def test_yiyang_resident_born_before_region_code_existed_is_valid() -> None:
    assert id_check(YIYANG_1985[:17]) == YIYANG_1985[17]
    assert validate_id_number(YIYANG_1985) == YIYANG_1985
    assert birth_date_of(YIYANG_1985) == date(1985, 3, 15)
    assert validate_id_number("43090219850315123x") == "43090219850315123X"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "id_number_format"),
        ("11010519491231002", "id_number_format"),
        ("11010519491231002X0", "id_number_format"),
        ("1101051949123100XX", "id_number_format"),
        ("11010519491231002Y", "id_number_format"),
        ("１10105194912310020", "id_number_format"),  # full-width digit
        ("11010519491231002 ", "id_number_format"),
        ("110105194912310021", "id_number_checksum"),
        ("11010519491231002Ⅹ", "id_number_format"),  # Roman numeral ten, not X
    ],
)
def test_id_number_shape_and_checksum_errors(value: str, code: str) -> None:
    assert error_code(validate_id_number, value) == code


def test_id_number_error_codes_for_region_and_birth_date() -> None:
    # Each body below gets a correct check character, so only the named rule can reject it.
    def with_check(body: str) -> str:
        return body + id_check(body)

    assert error_code(validate_id_number, with_check("00010519491231002")) == "id_number_region"
    assert error_code(validate_id_number, with_check("99010519491231002")) == "id_number_region"
    assert error_code(validate_id_number, with_check("11010519490230002")) == "id_number_birth_date"  # Feb 30
    assert error_code(validate_id_number, with_check("11010518991231002")) == "id_number_birth_date"  # 1899
    assert error_code(validate_id_number, with_check("11010519491300002")) == "id_number_birth_date"  # month 13
    tomorrow_body = "110105" + "20300101" + "002"
    with pytest.raises(DomainError) as info:
        validate_id_number(with_check(tomorrow_body), today=date(2029, 12, 31))
    assert info.value.code == "id_number_birth_date"
    assert validate_id_number(with_check(tomorrow_body), today=date(2030, 1, 1)).startswith("110105")
    assert validate_id_number(with_check("11010519000101002")) == with_check("11010519000101002")


def test_checksum_message_is_clear_and_does_not_leak_the_number() -> None:
    with pytest.raises(DomainError) as info:
        validate_id_number("110105194912310021")
    assert info.value.message_zh == "身份证号码校验位错误"
    assert info.value.message_en == "ID number check digit is wrong"
    assert "110105194912310021" not in str(info.value.to_dict())


def test_other_id_formats_sharing_the_scheme() -> None:
    # Hong Kong residence permit (810000) and 2023 foreign permanent resident card (9 + province 43).
    hk = make_id_number("810000", date(1990, 6, 1), 5)
    foreign = make_id_number("943840", date(1980, 1, 2), 7)
    assert validate_id_number(hk) == hk
    assert validate_id_number(foreign) == foreign


def test_mask_id_number() -> None:
    # At most the region and the check character (issue 11: 10 of 18 characters made it recoverable).
    assert mask_id_number("430902198503151234") == "430902***********4"
    assert mask_id_number("11010519491231002X") == "110105***********X"
    assert mask_id_number("430902********1234") == "430902***********4"  # an older mask, masked again
    assert mask_id_number("123") == "***"
    assert "19850315" not in mask_id_number(YIYANG_1985)


PROVINCES = ["11", "31", "43", "44", "50", "65", "81", "82"]
regions = st.builds(lambda p, rest: p + rest, st.sampled_from(PROVINCES), st.from_regex(r"[0-9]{4}", fullmatch=True))
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2024, 12, 31))
sequences = st.integers(min_value=0, max_value=999)
valid_ids = st.builds(make_id_number, regions, births, sequences)


@given(regions, births, sequences)
def test_made_id_numbers_validate(region: str, birth: date, seq: int) -> None:
    value = make_id_number(region, birth, seq)
    assert value[:17] == f"{region}{birth:%Y%m%d}{seq:03d}"
    assert value[17] == id_check(value[:17])
    assert validate_id_number(value) == value
    assert validate_id_number(value.lower()) == value
    assert birth_date_of(value) == birth


@given(valid_ids, st.integers(min_value=0, max_value=17), st.sampled_from("0123456789XxA ０"))
def test_every_single_character_change_of_an_id_number_is_rejected(value: str, pos: int, char: str) -> None:
    assume(char.upper() != value[pos].upper())
    changed = value[:pos] + char + value[pos + 1 :]
    with pytest.raises(DomainError):
        validate_id_number(changed)


def test_make_id_number_rejects_bad_parts() -> None:
    with pytest.raises(ValueError):
        make_id_number("43090", date(1985, 1, 1), 1)
    with pytest.raises(ValueError):
        make_id_number("430902", date(1985, 1, 1), 1000)


# --- Unified social credit codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y43",  # the usual worked example
        "914403001922038216",
        "9144030071526726XG",
        "91110000802100433B",
    ],
)
def test_real_format_credit_codes_are_valid(code: str) -> None:
    assert credit_check(code[:17]) == code[17]
    assert validate_credit_code(code) == code
    assert validate_credit_code(code.lower()) == code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "credit_code_format"),
        ("91350100M000100Y4", "credit_code_format"),
        ("91350100M000100Y430", "credit_code_format"),
        ("91350100M000100I43", "credit_code_format"),  # I is never used
        ("91350100M000100O43", "credit_code_format"),
        ("9135010OM000100Y43", "credit_code_format"),
        ("91350100M0001ß0Y43", "credit_code_format"),
        ("01350100M000100Y43", "credit_code_format"),  # no registration authority 0
        ("913501A0M000100Y43", "credit_code_format"),  # region must be digits
        ("91350100M000100Y44", "credit_code_checksum"),
    ],
)
def test_credit_code_errors(value: str, code: str) -> None:
    assert error_code(validate_credit_code, value) == code


def test_credit_check_is_zero_when_sum_is_a_multiple_of_31() -> None:
    # The 17th weight (28) is invertible mod 31, so exactly one 17th character makes the sum ≡ 0 (31 → 0).
    body16 = "9143090000000000"
    zero_sum = [
        ch
        for ch in CREDIT_ALPHABET
        if sum(CREDIT_ALPHABET.index(c) * w for c, w in zip(body16 + ch, CREDIT_WEIGHTS, strict=True)) % 31 == 0
    ]
    assert len(zero_sum) == 1
    assert make_credit_code(body16 + zero_sum[0]).endswith("0")


credit_prefixes = st.builds(
    lambda a, b, region, rest: a + b + region + rest,
    st.sampled_from("123456789ANY"),
    st.sampled_from(CREDIT_ALPHABET),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.text(alphabet=CREDIT_ALPHABET, min_size=9, max_size=9),
)


@given(credit_prefixes)
def test_made_credit_codes_validate(prefix: str) -> None:
    value = make_credit_code(prefix)
    assert value == prefix + credit_check(prefix)
    assert validate_credit_code(value) == value
    assert validate_credit_code(value.lower()) == value


@given(credit_prefixes, st.integers(min_value=0, max_value=17), st.sampled_from(CREDIT_ALPHABET + "IOZSVa- "))
def test_every_single_character_change_of_a_credit_code_is_rejected(prefix: str, pos: int, char: str) -> None:
    value = make_credit_code(prefix)
    assume(char.upper() != value[pos])
    changed = value[:pos] + char + value[pos + 1 :]
    with pytest.raises(DomainError):
        validate_credit_code(changed)


def test_make_credit_code_rejects_bad_prefix() -> None:
    with pytest.raises(ValueError):
        make_credit_code("91350100M000100Y")
    with pytest.raises(ValueError):
        make_credit_code("91350100M000100I4")
