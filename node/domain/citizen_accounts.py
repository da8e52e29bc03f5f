"""Online-hall accounts of people and enterprises: real-name registration, password rules, one-time codes.

This module owns the life of an account — registered → phone verified → identity verified (a face
photo matched against the population register) → active, and locked after repeated failed sign-ins
or by staff — the rules for a person's password, the one-time SMS codes (as a pure object with an
injected clock), and who may act for an enterprise (its legal representative's own active account).

The model never keeps an ID number: the caller passes the city's keyed-hash function (the HMAC
look-up key of node/adapters/pii.py), and the account keeps only that hash and the masked form
("430902********1234") for display. Nothing here does I/O; time is always passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import mask_id_number, validate_credit_code, validate_id_number

__all__ = [
    "AccountKind",
    "AccountState",
    "CitizenAccount",
    "EnterpriseAccount",
    "FaceMatch",
    "OneTimeCode",
    "check_password",
    "normalise_phone",
    "register_enterprise",
    "register_person",
]

LookupKey = Callable[[str], str]  # ID number → keyed hash (HMAC-SHA256 hex), e.g. PersonalData.lookup_key

# Mainland mobile numbers: 11 digits from 13x-19x (MIIT numbering plan; 14x data cards and 16x/17x/19x
# virtual operators included, as people do use them for SMS).
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$", re.ASCII)
_NAME_LIMIT = 50
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

PASSWORD_MIN = 10
PASSWORD_MAX = 128  # bounds the hashing work an attacker can ask for
MAX_FAILED_SIGN_INS = 5
LOCK_DURATION = timedelta(minutes=30)
# Most common passwords of Chinese and English leaks that are 10+ characters long (shorter ones already
# fail the length rule); compared case-insensitively.
COMMON_PASSWORDS = frozenset(
    {
        "1234567890", "0123456789", "12345678910", "123456789a", "a123456789", "1234567890a",
        "1234567890q", "qwertyuiop", "qwertyuiop1", "1qaz2wsx3edc", "1q2w3e4r5t", "1q2w3e4r5t6y",
        "q1w2e3r4t5", "qwe123qwe123", "zaq12wsxcde3", "password12", "password123", "password1234",
        "passw0rd123", "p@ssw0rd123", "iloveyou12", "iloveyou123", "woaini1314", "woaini520",
        "woaini123456", "5201314520", "1314520520", "abc1234567", "abcd123456", "abcdefg123",
        "aa12345678", "admin12345", "admin123456", "administrator", "qq123456789", "asdfghjkl1",
        "asdfghjkl123", "zxcvbnm123", "zxcvbnm1234", "a1234567890", "abc123456789", "1234qwer!@#$",
        "qwer1234asdf", "football12", "baseball12", "sunshine12", "princess12", "welcome123",
        "letmein123", "monkey12345", "dragon12345", "trustno1234", "wang123456", "zhang123456",
        "li123456789", "liu123456789", "aini1314520", "woaiwojia123", "tongban123", "tongban1234",
    }
)  # fmt: skip

OTP_DIGITS = 6
OTP_VALIDITY_S = 300.0
OTP_MAX_ATTEMPTS = 5
OTP_RESEND_COOLDOWN_S = 60.0
OTP_MAX_SENDS = 5  # a sixth code for the same purpose means starting over later, not SMS-bombing a number
_OTP_SHAPE = re.compile(r"^[0-9]{6}$", re.ASCII)


def _invalid(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.INVALID) -> DomainError:
    return DomainError(code, zh, en, kind)


# --- Values ------------------------------------------------------------------------------------------------


def normalise_phone(value: Any) -> str:
    """An 11-digit mainland mobile number; "+86", "86", spaces and hyphens are dropped first."""
    if not isinstance(value, str) or len(value) > 20:
        raise _invalid(
            "phone_invalid", "手机号码应为11位中国大陆手机号", "the phone must be an 11-digit mainland mobile"
        )
    digits = re.sub(r"[\s-]", "", value)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if not _MOBILE.fullmatch(digits):
        raise _invalid(
            "phone_invalid", "手机号码应为11位中国大陆手机号", "the phone must be an 11-digit mainland mobile"
        )
    return digits


def _person_name(value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid("name_invalid", "姓名不能为空", "the name is required")
    name = " ".join(value.split())
    if not name or len(name) > _NAME_LIMIT or _CONTROL.search(name) or any(ch.isdigit() for ch in name):
        raise _invalid(
            "name_invalid", "姓名应为1至50个字符且不含数字", "the name must be 1-50 characters without digits"
        )
    return name


def _character_classes(password: str) -> int:
    return sum(
        (
            any(ch.islower() for ch in password),
            any(ch.isupper() for ch in password),
            any(ch.isdigit() for ch in password),
            any(not ch.isalnum() for ch in password),
        )
    )


def _contains_id(password: str, id_key: str, lookup_key: LookupKey) -> bool:
    """Whether any 18-character window of the password hashes to the account's ID number hash."""
    upper = password.upper()
    return any(hmac.compare_digest(lookup_key(upper[i : i + 18]), id_key) for i in range(max(0, len(upper) - 17)))


def check_password(
    password: Any,
    *,
    phone: str,
    id_number: str | None = None,
    id_key: str | None = None,
    lookup_key: LookupKey | None = None,
) -> None:
    """Refuse a person's password that breaks a rule, with the rule in the message.

    Rules: 10 to 128 characters; at least two of lower case, upper case, digits and other characters;
    not containing the account's phone or ID number (given raw at registration, or as its keyed hash
    with the look-up function later); not one of the common passwords.
    """
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise _invalid("password_too_short", "密码至少10位", "the password must be at least 10 characters")
    if len(password) > PASSWORD_MAX:
        raise _invalid("password_too_long", "密码最多128位", "the password must be at most 128 characters")
    if _CONTROL.search(password):
        raise _invalid("password_invalid", "密码不能含控制字符", "the password must not contain control characters")
    if _character_classes(password) < 2:
        raise _invalid(
            "password_one_class",
            "密码应至少包含小写字母、大写字母、数字、符号中的两类",
            "the password must mix at least two of lower case, upper case, digits and symbols",
        )
    if phone and phone in password:
        raise _invalid("password_contains_phone", "密码不能包含手机号码", "the password must not contain your phone")
    upper = password.upper()
    contains_id = (id_number is not None and id_number.upper() in upper) or (
        id_key is not None and lookup_key is not None and _contains_id(password, id_key, lookup_key)
    )
    if contains_id:
        raise _invalid("password_contains_id", "密码不能包含身份证号码", "the password must not contain your ID number")
    if password.lower() in COMMON_PASSWORDS:
        raise _invalid("password_common", "密码过于常见，请换一个", "the password is too common; choose another")


def _hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return "scrypt$16384$8$1$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def _password_matches(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password) > PASSWORD_MAX:
            return False
        computed = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


# --- Accounts ----------------------------------------------------------------------------------------------


class AccountKind(StrEnum):
    PERSON = "person"
    ENTERPRISE = "enterprise"


class AccountState(StrEnum):
    REGISTERED = "registered"
    PHONE_VERIFIED = "phone_verified"
    IDENTITY_VERIFIED = "identity_verified"
    ACTIVE = "active"
    LOCKED = "locked"

    @property
    def label_zh(self) -> str:
        return _STATE_LABELS[self][0]

    @property
    def label_en(self) -> str:
        return _STATE_LABELS[self][1]


_STATE_LABELS = {
    AccountState.REGISTERED: ("已注册，待验证手机", "registered, phone not yet verified"),
    AccountState.PHONE_VERIFIED: ("手机已验证，待实人认证", "phone verified, identity not yet verified"),
    AccountState.IDENTITY_VERIFIED: ("已实人认证，待激活", "identity verified, not yet active"),
    AccountState.ACTIVE: ("已实名认证", "active (real-name verified)"),
    AccountState.LOCKED: ("已锁定", "locked"),
}


class FaceMatch(Protocol):
    """What the identity work's ``IdentityVerifier.verify`` answers (its ``Verification``)."""

    match: bool
    distance: float
    model: str


def _wrong_state(account: CitizenAccount, action_zh: str, action_en: str) -> DomainError:
    return _invalid(
        "account_state",
        f"账号当前状态为「{account.state.label_zh}」，不能{action_zh}",
        f"the account is {account.state.label_en}; cannot {action_en}",
        ErrorKind.CONFLICT,
    )


@dataclass
class CitizenAccount:
    """A person's account. ``id_key`` is the keyed hash of the ID number; the number itself is not kept."""

    account_id: str
    name: str
    id_key: str
    id_masked: str
    phone: str
    created_at: datetime
    language: str = "zh-CN"
    state: AccountState = AccountState.REGISTERED
    password_hash: str | None = field(default=None, repr=False)
    phone_verified_at: datetime | None = None
    identity_verified_at: datetime | None = None
    face_model: str | None = None
    activated_at: datetime | None = None
    failed_sign_ins: int = 0
    locked_at: datetime | None = None
    locked_until: datetime | None = None  # None while locked means until staff unlock it
    state_before_lock: AccountState | None = None

    kind = AccountKind.PERSON

    # --- Verification steps ------------------------------------------------------------------------------

    def phone_verified(self, now: datetime) -> None:
        """The one-time code sent to ``phone`` was entered correctly (see OneTimeCode)."""
        if self.state is not AccountState.REGISTERED:
            raise _wrong_state(self, "验证手机", "verify the phone")
        self.state = AccountState.PHONE_VERIFIED
        self.phone_verified_at = now

    def identity_checked(self, result: FaceMatch, now: datetime) -> None:
        """Record the face check against the population register; a non-match is refused and changes nothing."""
        if self.state is not AccountState.PHONE_VERIFIED:
            raise _wrong_state(self, "进行实人认证", "verify the identity")
        if not result.match:
            raise _invalid(
                "identity_not_matched",
                "照片与人口库中的本人照片不一致，实人认证未通过",
                "the photo does not match the population register; identity not verified",
                ErrorKind.FORBIDDEN,
            )
        self.state = AccountState.IDENTITY_VERIFIED
        self.identity_verified_at = now
        self.face_model = result.model

    def activate(self, now: datetime) -> None:
        if self.state is not AccountState.IDENTITY_VERIFIED:
            raise _wrong_state(self, "激活", "activate it")
        if self.password_hash is None:
            raise _invalid("password_missing", "请先设置密码", "set a password first", ErrorKind.CONFLICT)
        self.state = AccountState.ACTIVE
        self.activated_at = now

    def set_password(self, password: str, lookup_key: LookupKey) -> None:
        check_password(password, phone=self.phone, id_key=self.id_key, lookup_key=lookup_key)
        self.password_hash = _hash_password(password)

    def change_phone(self, phone: str) -> None:
        """A new phone must be verified again, so only before the account is verified; later via the window."""
        if self.state is not AccountState.REGISTERED:
            raise _wrong_state(self, "更换手机号", "change the phone")
        self.phone = normalise_phone(phone)

    # --- Sign-in and locking -----------------------------------------------------------------------------

    def _lift_expired_lock(self, now: datetime) -> None:
        if self.state is AccountState.LOCKED and self.locked_until is not None and now >= self.locked_until:
            self.unlock()

    def check_sign_in(self, password: str, now: datetime) -> None:
        """The password step of signing in (the SMS code is the second step); counts failures and locks."""
        self._lift_expired_lock(now)
        if self.state is AccountState.LOCKED:
            until_zh = f"，请于{self.locked_until:%H:%M}后再试" if self.locked_until else "，请到窗口解锁"
            until_en = f" until {self.locked_until:%H:%M}" if self.locked_until else "; unlock it at a window"
            raise _invalid("account_locked", f"账号已锁定{until_zh}", f"the account is locked{until_en}",
                           ErrorKind.FORBIDDEN)  # fmt: skip
        if self.password_hash is None or not _password_matches(self.password_hash, password):
            self.failed_sign_ins += 1
            left = MAX_FAILED_SIGN_INS - self.failed_sign_ins
            if left <= 0:
                self.lock(now, until=now + LOCK_DURATION)
                raise _invalid(
                    "account_locked",
                    f"密码错误次数过多，账号已锁定{LOCK_DURATION.seconds // 60}分钟",
                    f"too many wrong passwords; the account is locked for {LOCK_DURATION.seconds // 60} minutes",
                    ErrorKind.FORBIDDEN,
                )
            raise _invalid(
                "sign_in_failed",
                f"手机号或密码错误，还可尝试{left}次",
                f"wrong phone or password; {left} attempts left",
                ErrorKind.UNAUTHENTICATED,
            )
        self.failed_sign_ins = 0

    def lock(self, now: datetime, *, until: datetime | None = None) -> None:
        """Lock until ``until``, or until staff unlock it when None."""
        if self.state is not AccountState.LOCKED:
            self.state_before_lock = self.state
        self.state = AccountState.LOCKED
        self.locked_at = now
        self.locked_until = until

    def unlock(self) -> None:
        if self.state is not AccountState.LOCKED:
            raise _wrong_state(self, "解锁", "unlock it")
        self.state = self.state_before_lock or AccountState.REGISTERED
        self.state_before_lock = None
        self.locked_at = None
        self.locked_until = None
        self.failed_sign_ins = 0

    def ensure_active(self, now: datetime) -> None:
        """Refuse anything that needs a real-name verified account (applying, supplementing, acting for a firm)."""
        self._lift_expired_lock(now)
        if self.state is not AccountState.ACTIVE:
            raise _invalid(
                "account_not_verified",
                f"账号尚未完成实名认证（{self.state.label_zh}），不能办理",
                f"the account is not real-name verified ({self.state.label_en}); it cannot apply",
                ErrorKind.FORBIDDEN,
            )

    def holds_id(self, id_number: str, lookup_key: LookupKey) -> bool:
        return hmac.compare_digest(lookup_key(id_number.strip().upper()), self.id_key)

    # --- Persistence shape -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "account_id": self.account_id,
            "kind": self.kind.value,
            "name": self.name,
            "id_key": self.id_key,
            "id_masked": self.id_masked,
            "phone": self.phone,
            "created_at": when(self.created_at),
            "language": self.language,
            "state": self.state.value,
            "password_hash": self.password_hash,
            "phone_verified_at": when(self.phone_verified_at),
            "identity_verified_at": when(self.identity_verified_at),
            "face_model": self.face_model,
            "activated_at": when(self.activated_at),
            "failed_sign_ins": self.failed_sign_ins,
            "locked_at": when(self.locked_at),
            "locked_until": when(self.locked_until),
            "state_before_lock": self.state_before_lock.value if self.state_before_lock else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CitizenAccount:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        created = when(raw["created_at"])
        if created is None:
            raise ValueError("created_at is required")
        return cls(
            account_id=raw["account_id"],
            name=raw["name"],
            id_key=raw["id_key"],
            id_masked=raw["id_masked"],
            phone=raw["phone"],
            created_at=created,
            language=raw.get("language", "zh-CN"),
            state=AccountState(raw["state"]),
            password_hash=raw.get("password_hash"),
            phone_verified_at=when(raw.get("phone_verified_at")),
            identity_verified_at=when(raw.get("identity_verified_at")),
            face_model=raw.get("face_model"),
            activated_at=when(raw.get("activated_at")),
            failed_sign_ins=int(raw.get("failed_sign_ins", 0)),
            locked_at=when(raw.get("locked_at")),
            locked_until=when(raw.get("locked_until")),
            state_before_lock=AccountState(raw["state_before_lock"]) if raw.get("state_before_lock") else None,
        )


def register_person(
    *,
    account_id: str,
    name: Any,
    id_number: Any,
    phone: Any,
    lookup_key: LookupKey,
    now: datetime,
    password: str | None = None,
    language: str = "zh-CN",
    today: date | None = None,
) -> CitizenAccount:
    """A new account in state ``registered``: the name, the ID number (GB 11643) and the phone are checked,
    the ID number is kept only as ``lookup_key(id)`` and masked; a password, if given, is checked and hashed."""
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise _invalid("account_id_invalid", "账号编号格式不正确", "the account id is malformed")
    clean_name = _person_name(name)
    if not isinstance(id_number, str):
        raise _invalid("id_number_format", "身份证号码应为18位", "ID number must be 18 characters long")
    normalised = validate_id_number(id_number, today=today or now.date())
    clean_phone = normalise_phone(phone)
    if language not in ("zh-CN", "en"):
        raise _invalid("language_unknown", "语言只能是中文或英文", "the language must be zh-CN or en")
    if password is not None:
        check_password(password, phone=clean_phone, id_number=normalised)
    account = CitizenAccount(
        account_id=account_id,
        name=clean_name,
        id_key=lookup_key(normalised),
        id_masked=mask_id_number(normalised),
        phone=clean_phone,
        created_at=now,
        language=language,
    )
    if password is not None:
        account.password_hash = _hash_password(password)
    return account


# --- Enterprises -------------------------------------------------------------------------------------------


@dataclass
class EnterpriseAccount:
    """An enterprise (by unified social credit code), acted for by its legal representative's account.

    ``representative_id_key`` is the keyed hash of the representative's ID number as the legal-person
    register (法人库) lists it; only the person whose verified account holds that number may act.
    """

    credit_code: str
    name: str
    representative_account_id: str
    representative_id_key: str
    created_at: datetime

    kind = AccountKind.ENTERPRISE

    def ensure_may_act(self, person: CitizenAccount, now: datetime) -> None:
        person.ensure_active(now)
        if person.account_id != self.representative_account_id or not hmac.compare_digest(
            person.id_key, self.representative_id_key
        ):
            raise _invalid(
                "not_legal_representative",
                "您不是该企业登记的法定代表人，不能代表企业办理",
                "you are not the enterprise's registered legal representative; you cannot act for it",
                ErrorKind.FORBIDDEN,
            )

    def change_representative(self, person: CitizenAccount, register_id_key: str, now: datetime) -> None:
        """After the legal-person register names a new representative: their own active account takes over."""
        _check_representative(person, register_id_key, now)
        self.representative_account_id = person.account_id
        self.representative_id_key = register_id_key


def _check_representative(person: CitizenAccount, register_id_key: str, now: datetime) -> None:
    person.ensure_active(now)
    if not hmac.compare_digest(person.id_key, register_id_key):
        raise _invalid(
            "not_legal_representative",
            "法人库登记的法定代表人不是您本人",
            "the legal-person register names someone else as the legal representative",
            ErrorKind.FORBIDDEN,
        )


def register_enterprise(
    *, credit_code: Any, name: Any, representative: CitizenAccount, register_id_key: str, now: datetime
) -> EnterpriseAccount:
    """An enterprise account, when the register's representative (``register_id_key``) is the active person."""
    code = validate_credit_code(credit_code) if isinstance(credit_code, str) else validate_credit_code("")
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or _CONTROL.search(name):
        raise _invalid(
            "enterprise_name_invalid", "企业名称应为1至100个字符", "the enterprise name must be 1-100 characters"
        )
    _check_representative(representative, register_id_key, now)
    return EnterpriseAccount(code, " ".join(name.split()), representative.account_id, register_id_key, now)


# --- One-time codes ----------------------------------------------------------------------------------------


def _digest(salt: bytes, code: str) -> str:
    return hmac.new(salt, code.encode("ascii"), hashlib.sha256).hexdigest()


def _random_code() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


@dataclass
class OneTimeCode:
    """A one-time SMS code for one purpose and phone: 6 digits, valid 5 minutes, 5 tries, resent at most
    every 60 s. Only a salted digest of the current code is kept; ``clock`` gives seconds (time.time)."""

    purpose: str
    phone: str
    clock: Callable[[], float] = field(repr=False)
    generate: Callable[[], str] = field(default=_random_code, repr=False)
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)
    digest: str = field(default="", repr=False)
    issued_at: float = 0.0
    attempts: int = 0
    sends: int = 0
    used: bool = False

    @classmethod
    def issue(
        cls, purpose: str, phone: str, clock: Callable[[], float], generate: Callable[[], str] = _random_code
    ) -> tuple[OneTimeCode, str]:
        """The code object and the code to send (the only time the plain code exists)."""
        otp = cls(purpose, normalise_phone(phone), clock, generate)
        return otp, otp._new_code()

    def _new_code(self) -> str:
        code = self.generate()
        if not _OTP_SHAPE.fullmatch(code):
            raise ValueError("a one-time code is 6 digits")
        self.digest = _digest(self.salt, code)
        self.issued_at = self.clock()
        self.attempts = 0
        self.sends += 1
        self.used = False
        return code

    def seconds_until_resend(self) -> int:
        return max(0, int(-(-(self.issued_at + OTP_RESEND_COOLDOWN_S - self.clock()) // 1)))

    def resend(self) -> str:
        """A fresh code (the old one stops working), once the cool-down has passed."""
        wait = self.seconds_until_resend()
        if wait > 0:
            raise _invalid(
                "otp_resend_too_soon",
                f"验证码发送过于频繁，请{wait}秒后再试",
                f"codes are sent at most once a minute; try again in {wait} s",
                ErrorKind.CONFLICT,
            )
        if self.sends >= OTP_MAX_SENDS:
            raise _invalid(
                "otp_too_many_sends",
                "验证码发送次数过多，请稍后重新开始",
                "too many codes were sent; start again later",
                ErrorKind.CONFLICT,
            )
        return self._new_code()

    def verify(self, code: Any) -> None:
        """Accept the code once; raise with the reason (used, expired, tries exhausted, wrong) otherwise."""
        if self.used:
            raise _invalid("otp_used", "验证码已使用，请重新获取", "the code was already used; ask for a new one",
                           ErrorKind.CONFLICT)  # fmt: skip
        if self.clock() - self.issued_at > OTP_VALIDITY_S:
            raise _invalid("otp_expired", "验证码已过期，请重新获取", "the code has expired; ask for a new one",
                           ErrorKind.CONFLICT)  # fmt: skip
        if self.attempts >= OTP_MAX_ATTEMPTS:
            raise _invalid(
                "otp_attempts_exhausted",
                "验证码错误次数过多，请重新获取",
                "too many wrong codes; ask for a new one",
                ErrorKind.CONFLICT,
            )
        self.attempts += 1
        given = code.strip() if isinstance(code, str) else ""
        if not _OTP_SHAPE.fullmatch(given) or not hmac.compare_digest(_digest(self.salt, given), self.digest):
            left = OTP_MAX_ATTEMPTS - self.attempts
            raise _invalid(
                "otp_wrong",
                f"验证码错误，还可尝试{left}次",
                f"wrong code; {left} attempts left",
                ErrorKind.UNAUTHENTICATED,
            )
        self.used = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "phone": self.phone,
            "salt": base64.b64encode(self.salt).decode(),
            "digest": self.digest,
            "issued_at": self.issued_at,
            "attempts": self.attempts,
            "sends": self.sends,
            "used": self.used,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], clock: Callable[[], float]) -> OneTimeCode:
        return cls(
            purpose=raw["purpose"],
            phone=raw["phone"],
            clock=clock,
            salt=base64.b64decode(raw["salt"]),
            digest=raw["digest"],
            issued_at=float(raw["issued_at"]),
            attempts=int(raw["attempts"]),
            sends=int(raw["sends"]),
            used=bool(raw["used"]),
        )
