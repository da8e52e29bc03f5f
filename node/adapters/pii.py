"""Personal data at field level: keyrings, sealing (Fernet) and keyed hashes (HMAC-SHA256), each with its key id.

A node holds two keyrings (docs/personal-data.md):

- the **city's** (``identity/data.key``, a copy of the CA directory's ``data.key``): what travels in
  event payloads, which every node must read — the sealed applicant and the look-up key of an ID
  number that the citizen query and the registers match;
- the **node's own** (``identity/local.key``): what never leaves the node — the read model's sealed
  applicant and its blind indexes (exact name, ID number), the demo accounts' passwords.

Every ciphertext is ``<key id>:<Fernet token>`` and every blind index ``<key id>:<HMAC hex>``; an
event's look-up key (64 hex, as the registers expect) names its key in the payload's ``key_id``.
Keys are created only by provisioning (:func:`create_keyring`: written completely, then linked into
place, so two processes can never both create one); a keyring missing at run time is
:class:`MissingKey`, never silently replaced. :func:`rotate_keyring` adds a key and makes it
current; older keys stay, so older events and rows still open. A running process notices a rotated
file on its next use (its inode, size and modification time are checked on every call).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from node.config import ConfigError

CITY_SCOPE, NODE_SCOPE = "city", "node"
# Key ids: "c1", "c2", … in the city's keyring, "n1", "n2", … in a node's; the letter tells which ring.
PREFIX = {CITY_SCOPE: "c", NODE_SCOPE: "n"}
LEGACY_KEY_ID = "c0"  # a keyring file of the first format ({"hmac", "fernet"}), before key ids
FORMAT = 1
_KEY_ID = re.compile(r"^[cn][0-9]{1,6}$")
# Kinds of blind index: the same text never gives the same index as a name and as an ID number.
NAME, IDENTIFIER = "name", "id"
# Middle dots people type in names of minorities and foreigners (阿沛·阿旺晋美); all count as one.
_DOTS = str.maketrans({"•": "·", "・": "·", "‧": "·", "∙": "·", "⋅": "·", "．": "·", ".": "·"})


class MissingKey(ConfigError):
    """A keyring that should be there is not (or cannot be read): provisioning creates it, nothing else."""


@dataclass(frozen=True)
class _Key:
    hmac: bytes
    fernet: Fernet


def normalise_name(name: str) -> str:
    """A name as the blind index sees it: NFKC, no spaces, one kind of middle dot, case folded."""
    return "".join(unicodedata.normalize("NFKC", name).translate(_DOTS).split()).casefold()


def normalise_identifier(identifier: str) -> str:
    """An ID number or credit code as the keyed hashes see it: NFKC (full-width digits), no spaces, upper case."""
    return "".join(unicodedata.normalize("NFKC", identifier).split()).upper()


def _new_key() -> dict[str, str]:
    return {
        "hmac": base64.b64encode(os.urandom(32)).decode(),
        "fernet": Fernet.generate_key().decode(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _encode(ring: Mapping[str, Any]) -> bytes:
    return json.dumps(ring, indent=1).encode()


def _write_private(path: Path, data: bytes, exclusive: bool) -> bool:
    """Write ``data`` to ``path`` (mode 0600) whole or not at all; ``exclusive``: only if it does not exist yet.

    The content goes to a temporary file first; then it is linked (exclusive: fails if the name exists,
    so of two racing provisioners exactly one wins) or renamed into place. Readers never see half a key.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for changing the keyring at ``path`` (two rotations at once would lose a key)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create_keyring(path: Path, scope: str) -> bool:
    """Provisioning: create the keyring at ``path`` with its first key; False (and nothing changed) if it exists."""
    ring = {"format": FORMAT, "scope": scope, "current": f"{PREFIX[scope]}1", "keys": {f"{PREFIX[scope]}1": _new_key()}}
    return _write_private(path, _encode(ring), exclusive=True)


def install_keyring(source: Path, target: Path, replace: bool = False) -> bool:
    """Provisioning: put a copy of the city's keyring at ``target`` (0600); ``replace`` after a rotation."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise MissingKey(f"城市数据密钥不存在 / the city's data keyring is missing: {source} ({exc})") from None
    return _write_private(target, data, exclusive=not replace)


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MissingKey(
            f"个人数据密钥不存在 / personal-data keyring missing: {path}; keys are created only when a node is "
            "provisioned (tongban federation up does it) — restore the file from the node's backup, never start "
            "without it"
        ) from None
    except (OSError, ValueError) as exc:
        raise MissingKey(f"个人数据密钥无法读取 / personal-data keyring unreadable: {path} ({exc})") from None
    if isinstance(raw, dict) and set(raw) >= {"hmac", "fernet"} and "keys" not in raw:
        return {"format": FORMAT, "current": LEGACY_KEY_ID, "keys": {LEGACY_KEY_ID: raw}}
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), dict) or raw.get("current") not in raw["keys"]:
        raise MissingKey(f"个人数据密钥格式错误 / personal-data keyring malformed: {path}")
    return raw


def rotate_keyring(path: Path) -> str:
    """Add a key to the keyring at ``path`` and make it current; the older keys stay. Returns the new key id."""
    with _locked(path):
        ring = _read(path)
        scope = ring.get("scope") or (NODE_SCOPE if str(ring["current"]).startswith("n") else CITY_SCOPE)
        numbers = [int(key_id[1:]) for key_id in ring["keys"] if _KEY_ID.match(key_id)]
        new_id = f"{PREFIX[scope]}{max(numbers, default=0) + 1}"
        keys = {**ring["keys"], new_id: _new_key()}
        ring = {**ring, "format": FORMAT, "scope": scope, "current": new_id, "keys": keys}
        _write_private(path, _encode(ring), exclusive=False)
        return new_id


class Keyring:
    """The keys of one keyring file, reloaded when the file changes (a rotation by another process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._current = ""
        self._keys: dict[str, _Key] = {}
        self._fresh()

    def _fresh(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            _read(self.path)  # raises MissingKey, saying what to do
            raise
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        with self._lock:
            ring = _read(self.path)
            self._keys = {
                key_id: _Key(base64.b64decode(key["hmac"]), Fernet(key["fernet"].encode()))
                for key_id, key in ring["keys"].items()
            }
            self._current = str(ring["current"])
            self._stamp = stamp

    @property
    def current_id(self) -> str:
        self._fresh()
        return self._current

    def current(self) -> tuple[str, _Key]:
        self._fresh()
        return self._current, self._keys[self._current]

    def get(self, key_id: str) -> _Key | None:
        self._fresh()
        return self._keys.get(key_id)

    def all(self) -> dict[str, _Key]:
        self._fresh()
        return dict(self._keys)


class PersonalData:
    """Seal, open and hash personal data with one keyring (the city's or the node's)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    @classmethod
    def load(cls, path: Path) -> PersonalData:
        """The keyring at ``path``; :class:`MissingKey` if it is not there (it is never created here)."""
        return cls(Keyring(path))

    @property
    def key_id(self) -> str:
        """The id of the current key: what new ciphertexts and hashes are made with."""
        return self.keyring.current_id

    # --- look-up keys of ID numbers (city keyring: in event payloads, registers, accounts) ------------

    def lookup_key(self, identifier: str, key_id: str | None = None) -> str:
        """HMAC-SHA256 (hex) of an ID number or credit code under ``key_id`` (default: current); not reversible."""
        key = self.keyring.get(key_id) if key_id else self.keyring.current()[1]
        if key is None:
            raise MissingKey(f"未知的密钥 / unknown key id {key_id!r} in {self.keyring.path}")
        return hmac.new(key.hmac, identifier.strip().upper().encode(), hashlib.sha256).hexdigest()

    def lookup_keys(self, identifier: str) -> dict[str, str]:
        """The look-up key under every key of the ring (key id → hex): to find records made before a rotation."""
        return {key_id: self.lookup_key(identifier, key_id) for key_id in self.keyring.all()}

    def matches(self, identifier: str, key: object, key_id: object = None) -> bool:
        """Whether ``identifier`` has the look-up ``key`` (made with ``key_id``; without one, with any key)."""
        if not isinstance(key, str) or not identifier.strip():
            return False
        if isinstance(key_id, str) and key_id:
            candidates = [key_id] if self.keyring.get(key_id) is not None else []
        else:
            candidates = list(self.keyring.all())
        return any(hmac.compare_digest(self.lookup_key(identifier, k), key) for k in candidates)

    # --- sealing --------------------------------------------------------------------------------------

    def seal(self, fields: Mapping[str, Any]) -> str:
        """``<key id>:<Fernet token>`` of the fields as JSON, under the current key."""
        key_id, key = self.keyring.current()
        return f"{key_id}:{key.fernet.encrypt(json.dumps(fields, ensure_ascii=False).encode()).decode()}"

    def open(self, token: str) -> dict[str, Any] | None:
        """The fields of a sealed value, or None when no key of the ring opens it (or it is not one)."""
        if not isinstance(token, str):
            return None
        key_id, colon, body = token.partition(":")
        # A Fernet token is URL-safe base64 (no ":"): a value without a key id is one from before key ids.
        keys = [self.keyring.get(key_id)] if colon else list(self.keyring.all().values())
        for key in keys:
            if key is None:
                continue
            try:
                opened = json.loads(key.fernet.decrypt((body if colon else token).encode()))
            except (InvalidToken, ValueError):
                continue
            return opened if isinstance(opened, dict) else None
        return None

    def sealed_with(self, token: str) -> str | None:
        """The key id a sealed value or blind index names (None for one from before key ids)."""
        key_id, colon, _ = token.partition(":") if isinstance(token, str) else ("", "", "")
        return key_id if colon else None

    # --- blind indexes (node keyring: the read model's search) ----------------------------------------

    def _index(self, key_id: str, key: _Key, kind: str, value: str) -> str:
        normalised = normalise_name(value) if kind == NAME else normalise_identifier(value)
        digest = hmac.new(key.hmac, f"{kind}\x00{normalised}".encode(), hashlib.sha256).hexdigest()
        return f"{key_id}:{digest}"

    def index(self, kind: str, value: str) -> str:
        """The blind index of a name (``NAME``) or an ID number/credit code (``IDENTIFIER``) under the current key."""
        key_id, key = self.keyring.current()
        return self._index(key_id, key, kind, value)

    def indexes(self, kind: str, value: str) -> list[str]:
        """The value's blind index under every key of the ring: a search finds rows not re-indexed yet."""
        return [self._index(key_id, key, kind, value) for key_id, key in self.keyring.all().items()]
