"""Personal data at field level: HMAC look-up keys for ID numbers and Fernet encryption of the rest.

The keys are city-wide (every node must match the same citizen's HMAC and read the same case), so
the city provisions one data-key file that each node keeps beside its identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class PersonalData:
    def __init__(self, hmac_key: bytes, fernet_key: bytes) -> None:
        self._hmac_key = hmac_key
        self._fernet = Fernet(fernet_key)

    @classmethod
    def ensure(cls, path: Path) -> PersonalData:
        """Load the key file, creating it (mode 0600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            keys = {"hmac": base64.b64encode(os.urandom(32)).decode(), "fernet": Fernet.generate_key().decode()}
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(keys, handle)
            os.replace(tmp, path)
        keys = json.loads(path.read_text())
        return cls(base64.b64decode(keys["hmac"]), keys["fernet"].encode())

    def lookup_key(self, identifier: str) -> str:
        """HMAC-SHA256 of an ID number or credit code: searchable, not reversible."""
        return hmac.new(self._hmac_key, identifier.strip().upper().encode(), hashlib.sha256).hexdigest()

    def seal(self, fields: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(fields, ensure_ascii=False).encode()).decode()

    def open(self, token: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            return None
