"""Online-hall accounts (node/domain/citizen_accounts.py): registration, verification, passwords, one-time codes."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.citizen_accounts import (
    OTP_MAX_ATTEMPTS,
    AccountState,
    CitizenAccount,
    OneTimeCode,
    check_password,
    normalise_phone,
    register_enterprise,
    register_person,
)
from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import make_credit_code, make_id_number

KEY = b"city-wide lookup key for tests"
ID_NUMBER = make_id_number("430903", date(1990, 3, 7), 123)
OTHER_ID = make_id_number("430902", date(1985, 11, 2), 42)
PHONE = "13800000000"
PASSWORD = "Hexie-2026-chun"
NOW = datetime(2026, 12, 1, 9, 30)


def lookup_key(identifier: str) -> str:
    return hmac.new(KEY, identifier.strip().upper().encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Face:
    """The fields of the identity work's ``Verification`` the account reads."""

    match: bool
    distance: float = 0.31
    model: str = "dlib-resnet-v1"


def person(account_id: str = "acct-1", id_number: str = ID_NUMBER, phone: str = PHONE) -> CitizenAccount:
    return register_person(
        account_id=account_id,
        name="张三丰",
        id_number=id_number,
        phone=phone,
        lookup_key=lookup_key,
        now=NOW,
        password=PASSWORD,
    )


def active(account_id: str = "acct-1", id_number: str = ID_NUMBER, phone: str = PHONE) -> CitizenAccount:
    account = person(account_id, id_number, phone)
    account.phone_verified(NOW)
    account.identity_checked(Face(True), NOW)
    account.activate(NOW)
    return account


def code_of(call: object) -> str:
    with pytest.raises(DomainError) as refused:
        call()  # type: ignore[operator]
    error = refused.value
    assert re.search(r"[\u4e00-\u9fff]", error.message_zh) and error.message_en.isascii(), error.to_dict()
    return error.code


# --- Registration ------------------------------------------------------------------------------------------


def test_registration_keeps_only_a_keyed_hash_and_the_masked_id() -> None:
    account = person(id_number=ID_NUMBER[:17] + ID_NUMBER[17].lower())  # a lowercase "x" is normalised
    assert account.state is AccountState.REGISTERED
    assert account.id_key == lookup_key(ID_NUMBER) and account.id_masked == ID_NUMBER[:6] + "*" * 11 + ID_NUMBER[-1:]
    stored = json.dumps(account.to_dict(), ensure_ascii=False)
    assert ID_NUMBER not in stored and ID_NUMBER[6:14] not in stored and PASSWORD not in stored
    assert account.holds_id(ID_NUMBER, lookup_key) and not account.holds_id(OTHER_ID, lookup_key)
    assert CitizenAccount.from_dict(account.to_dict()) == account


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("id_number", ID_NUMBER[:17] + ("0" if ID_NUMBER[17] != "0" else "1"), "id_number_checksum"),
        ("id_number", "43090319900307123", "id_number_format"),
        ("id_number", 430903199003071234, "id_number_format"),
        ("phone", "12800000000", "phone_invalid"),
        ("phone", "1380000000", "phone_invalid"),
        ("phone", "１３８００００００００", "phone_invalid"),
        ("phone", None, "phone_invalid"),
        ("name", "", "name_invalid"),
        ("name", "张三3", "name_invalid"),
        ("name", "张" * 51, "name_invalid"),
        ("name", "张\x00三", "name_invalid"),
        ("password", "Short-1", "password_too_short"),
    ],
)
def test_registration_refuses_bad_input(field: str, value: object, code: str) -> None:
    fields: dict[str, object] = {"name": "张三丰", "id_number": ID_NUMBER, "phone": PHONE, "password": PASSWORD}
    fields[field] = value
    assert code_of(lambda: register_person(account_id="a", lookup_key=lookup_key, now=NOW, **fields)) == code


def test_registration_refuses_a_malformed_account_id() -> None:
    fields = {"name": "张三丰", "id_number": ID_NUMBER, "phone": PHONE}
    for account_id in ("", "a b", "a" * 65, None):
        call = lambda a=account_id: register_person(account_id=a, lookup_key=lookup_key, now=NOW, **fields)  # noqa: E731
        assert code_of(call) == "account_id_invalid"


@pytest.mark.parametrize("given_phone", ["13800000000", "+86 138 0000 0000", "86-138-0000-0000", "8613800000000"])
def test_mainland_mobile_numbers_are_normalised(given_phone: str) -> None:
    assert normalise_phone(given_phone) == "13800000000"


# --- The verification steps --------------------------------------------------------------------------------


def test_an_account_becomes_active_only_through_every_step_in_order() -> None:
    account = person()
    assert code_of(lambda: account.ensure_active(NOW)) == "account_not_verified"
    assert code_of(lambda: account.identity_checked(Face(True), NOW)) == "account_state"  # phone first
    account.phone_verified(NOW)
    assert code_of(lambda: account.activate(NOW)) == "account_state"
    assert code_of(lambda: account.identity_checked(Face(False), NOW)) == "identity_not_matched"
    assert account.state is AccountState.PHONE_VERIFIED  # a failed face check changes nothing
    account.identity_checked(Face(True), NOW + timedelta(minutes=1))
    assert (account.state, account.face_model) == (AccountState.IDENTITY_VERIFIED, "dlib-resnet-v1")
    account.activate(NOW + timedelta(minutes=2))
    assert account.state is AccountState.ACTIVE
    account.ensure_active(NOW)


def test_an_account_registered_without_a_password_cannot_be_activated_until_it_has_one() -> None:
    account = register_person(
        account_id="a", name="李四", id_number=OTHER_ID, phone="13900000009", lookup_key=lookup_key, now=NOW
    )
    account.phone_verified(NOW)
    account.identity_checked(Face(True), NOW)
    assert code_of(lambda: account.activate(NOW)) == "password_missing"
    assert code_of(lambda: account.set_password(f"x{OTHER_ID}", lookup_key)) == "password_contains_id"
    account.set_password(PASSWORD, lookup_key)
    account.activate(NOW)
    assert account.state is AccountState.ACTIVE


# --- Passwords and sign-in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("Abc-12345", "password_too_short"),
        ("a" * 129, "password_too_long"),
        ("abcdefghijkl", "password_one_class"),
        ("12345678901234", "password_one_class"),
        ("ЖЖЖЖЖЖЖЖЖЖЖЖ", "password_one_class"),
        ("pw" + PHONE, "password_contains_phone"),
        ("Mine:" + ID_NUMBER.lower(), "password_contains_id"),
        ("Password123", "password_common"),
        ("WOAINI1314", "password_common"),
        ("Hexie\t2026chun", "password_invalid"),
    ],
)
def test_password_rules(password: str, code: str) -> None:
    assert code_of(lambda: check_password(password, phone=PHONE, id_number=ID_NUMBER)) == code


def test_a_later_password_is_checked_against_the_hashed_id_number() -> None:
    account = person()
    for wrapped in (ID_NUMBER, f"pre{ID_NUMBER}", f"{ID_NUMBER.lower()}!x"):
        assert code_of(lambda w=wrapped: account.set_password(w, lookup_key)) in {
            "password_contains_id",
            "password_one_class",
        }
    assert code_of(lambda: account.set_password(f"Q{ID_NUMBER}", lookup_key)) == "password_contains_id"
    account.set_password("Another-good-one9", lookup_key)
    account.check_sign_in("Another-good-one9", NOW)


@given(st.text(min_size=10, max_size=40))
def test_any_password_is_either_accepted_or_refused_with_a_reason(password: str) -> None:
    try:
        check_password(password, phone=PHONE, id_number=ID_NUMBER)
    except DomainError as refused:
        assert refused.code.startswith("password_")


def test_five_wrong_passwords_lock_the_account_for_thirty_minutes() -> None:
    account = active()
    for attempt in range(4):
        refused = code_of(lambda: account.check_sign_in("Wrong-password-1", NOW))
        assert refused == "sign_in_failed", attempt
    assert code_of(lambda: account.check_sign_in("Wrong-password-1", NOW)) == "account_locked"
    assert account.state is AccountState.LOCKED
    assert code_of(lambda: account.check_sign_in(PASSWORD, NOW + timedelta(minutes=29))) == "account_locked"
    assert code_of(lambda: account.ensure_active(NOW + timedelta(minutes=29))) == "account_not_verified"
    account.check_sign_in(PASSWORD, NOW + timedelta(minutes=30))  # the lock lifted itself
    assert (account.state, account.failed_sign_ins) == (AccountState.ACTIVE, 0)


def test_a_staff_lock_holds_until_unlocked() -> None:
    account = active()
    account.lock(NOW)
    assert account.to_dict()["locked_at"] == NOW.isoformat()
    assert code_of(lambda: account.check_sign_in(PASSWORD, NOW + timedelta(days=30))) == "account_locked"
    account.unlock()
    account.check_sign_in(PASSWORD, NOW)
    assert account.state is AccountState.ACTIVE
    assert code_of(account.unlock) == "account_state"


def test_a_correct_sign_in_resets_the_failure_count() -> None:
    account = active()
    for _ in range(4):
        code_of(lambda: account.check_sign_in("Wrong-password-1", NOW))
    account.check_sign_in(PASSWORD, NOW)
    code_of(lambda: account.check_sign_in("Wrong-password-1", NOW))
    assert account.state is AccountState.ACTIVE and account.failed_sign_ins == 1


# --- Enterprises -------------------------------------------------------------------------------------------

CREDIT = make_credit_code("91430903MA4L00001")


def test_an_enterprise_is_acted_for_only_by_its_registered_representative() -> None:
    representative, stranger = active(), active("acct-2", OTHER_ID, "13900000009")
    firm = register_enterprise(
        credit_code=CREDIT.lower(),
        name="益阳市赫山区通办科技有限公司",
        representative=representative,
        register_id_key=lookup_key(ID_NUMBER),
        now=NOW,
    )
    assert firm.credit_code == CREDIT
    firm.ensure_may_act(representative, NOW)
    assert code_of(lambda: firm.ensure_may_act(stranger, NOW)) == "not_legal_representative"
    representative.lock(NOW)
    assert code_of(lambda: firm.ensure_may_act(representative, NOW)) == "account_not_verified"
    firm.change_representative(stranger, lookup_key(OTHER_ID), NOW)
    firm.ensure_may_act(stranger, NOW)


def test_an_enterprise_cannot_be_registered_by_someone_else_or_an_unverified_account() -> None:
    someone = active()
    unverified = person("acct-3", OTHER_ID, "13900000009")

    def register(rep: CitizenAccount, key: str, code: object = CREDIT, name: object = "某公司") -> object:
        return register_enterprise(credit_code=code, name=name, representative=rep, register_id_key=key, now=NOW)

    assert code_of(lambda: register(someone, lookup_key(OTHER_ID))) == "not_legal_representative"
    assert code_of(lambda: register(unverified, lookup_key(OTHER_ID))) == "account_not_verified"
    assert code_of(lambda: register(someone, lookup_key(ID_NUMBER), code=CREDIT[:-1] + "0")) in {
        "credit_code_checksum",
        "credit_code_format",
    }
    assert code_of(lambda: register(someone, lookup_key(ID_NUMBER), code=None)) == "credit_code_format"
    assert code_of(lambda: register(someone, lookup_key(ID_NUMBER), name="")) == "enterprise_name_invalid"


# --- One-time codes ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def codes() -> object:
    numbers = count(100000)
    return lambda: str(next(numbers))


def test_a_code_is_six_digits_and_works_once() -> None:
    otp, code = OneTimeCode.issue("register", "+86 13800000000", Clock())
    assert re.fullmatch(r"[0-9]{6}", code) and otp.phone == PHONE
    assert code not in json.dumps(otp.to_dict())  # only a salted digest is kept
    otp.verify(code)
    assert code_of(lambda: otp.verify(code)) == "otp_used"


def test_a_code_expires_after_five_minutes() -> None:
    clock = Clock()
    otp, code = OneTimeCode.issue("sign_in", PHONE, clock)
    clock.now += 300
    otp.verify(code)
    otp2, code2 = OneTimeCode.issue("sign_in", PHONE, clock)
    clock.now += 300.5
    assert code_of(lambda: otp2.verify(code2)) == "otp_expired"


def test_five_wrong_tries_spend_a_code() -> None:
    otp, code = OneTimeCode.issue("sign_in", PHONE, Clock(), codes())
    for attempt in range(OTP_MAX_ATTEMPTS):
        assert code_of(lambda a=attempt: otp.verify("999999" if a % 2 else "12a456")) == "otp_wrong"
    assert code_of(lambda: otp.verify(code)) == "otp_attempts_exhausted"


def test_resending_waits_sixty_seconds_and_the_old_code_stops_working() -> None:
    clock = Clock()
    otp, first = OneTimeCode.issue("register", PHONE, clock, codes())
    clock.now += 59.2
    with pytest.raises(DomainError) as refused:
        otp.resend()
    assert refused.value.code == "otp_resend_too_soon" and refused.value.kind is ErrorKind.CONFLICT
    assert "1" in refused.value.message_en  # one second left, rounded up
    clock.now += 0.8
    second = otp.resend()
    assert second != first and otp.seconds_until_resend() == 60
    assert code_of(lambda: otp.verify(first)) == "otp_wrong"
    otp.verify(second)


def test_a_resent_code_gets_fresh_tries_but_sends_are_capped() -> None:
    clock = Clock()
    otp, _ = OneTimeCode.issue("register", PHONE, clock, codes())
    for _ in range(OTP_MAX_ATTEMPTS):
        code_of(lambda: otp.verify("000000"))
    for _ in range(4):
        clock.now += 60
        fresh = otp.resend()
    assert otp.attempts == 0
    clock.now += 60
    assert code_of(otp.resend) == "otp_too_many_sends"
    otp.verify(fresh)


def test_a_stored_code_survives_a_round_trip() -> None:
    clock = Clock()
    otp, code = OneTimeCode.issue("register", PHONE, clock)
    code_of(lambda: otp.verify("000000" if code != "000000" else "111111"))
    restored = OneTimeCode.from_dict(json.loads(json.dumps(otp.to_dict())), clock)
    assert restored.attempts == 1
    restored.verify(code)
