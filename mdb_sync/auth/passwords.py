"""Password hashing and password rules.

Hashes use the standard library's scrypt (memory-hard, salted) in a self-describing,
versioned format that stores its parameters::

    mdb-scrypt$1$n=32768,r=8,p=1$<salt, base64>$<key, base64>

so the cost can be raised later: :meth:`PasswordHasher.needs_rehash` tells when a stored
hash is weaker than the current parameters, and the user store re-hashes on the next
successful login. Werkzeug's ``scrypt:`` and ``pbkdf2:`` hashes are verified too (users
imported from a Flask app keep their passwords) and re-hashed the same way.

Checks are constant-time (:func:`hmac.compare_digest`), and :meth:`PasswordHasher.dummy_verify`
spends the same time as a real check, for unknown users, so timing does not tell whether an
email is registered; :meth:`PasswordHasher.verify_evenly` makes a refused sign-in of an
account without a password, or with a hash of cheaper parameters, cost as much too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..deprecation import deprecated
from ..exceptions import ConfigurationError
from ..manifest.model_auth import PasswordPolicySection
from ..manifest.schema_auth import MAX_PASSWORD_CHARS
from ..manifest.sections import from_typed, typed_section

SCHEME = "mdb-scrypt"
VERSION = "1"
DEFAULT_N = 2**15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _encode(password: str) -> bytes:
    # NFKC: the same password typed on two keyboards (composed vs decomposed) matches.
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * 1024 * 1024)


class PasswordHasher:
    """Hash and verify passwords with scrypt; ``n`` (a power of two >= 2**12) is the cost."""

    def __init__(self, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> None:
        if n < 2**12 or n & (n - 1) or not (1 <= r <= 64) or not (1 <= p <= 16):
            raise ConfigurationError(
                f"scrypt parameters n={n}, r={r}, p={p}: n must be a power of two >= 4096, "
                "r 1-64, p 1-16"
            )
        self.n, self.r, self.p = n, r, p
        self._dummy = self.hash("mdb-sync dummy password, never a user's")

    def hash(self, password: str) -> str:
        salt = os.urandom(SALT_BYTES)
        key = _scrypt(_encode(password), salt, self.n, self.r, self.p, KEY_BYTES)
        params = f"n={self.n},r={self.r},p={self.p}"
        return f"{SCHEME}${VERSION}${params}${_b64(salt)}${_b64(key)}"

    def verify(self, password: str, stored: str | None) -> bool:
        """True when ``password`` matches ``stored`` (any supported format)."""
        if not isinstance(password, str) or not isinstance(stored, str):
            return False
        if len(password) > MAX_PASSWORD_CHARS:
            return False
        try:
            if stored.startswith(SCHEME + "$"):
                return self._verify_ours(password, stored)
            if stored.startswith(("scrypt:", "pbkdf2:")):
                return _verify_werkzeug(password, stored)
        except (ValueError, TypeError):
            return False
        return False

    def dummy_verify(self, password: Any) -> None:
        """Spend the time of one real check (for unknown or inactive users)."""
        self.verify(password if isinstance(password, str) else "", self._dummy)

    def verify_evenly(self, password: Any, stored: Any) -> bool:
        """:meth:`verify` for a sign-in, where a refusal must cost the same whoever the
        account is: as much as :meth:`dummy_verify` (an unknown email) — also when
        ``stored`` is no hash (an account that signs in through a provider only), one it
        cannot read, or an scrypt hash of cheaper parameters (made before the cost was
        raised). Otherwise the time of a refusal would tell which emails have accounts,
        and which of them have no password or an old hash."""
        work = _scrypt_work(stored)
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS or work == 0:
            self.dummy_verify(password)  # nothing of this account's to check
            return False
        ok = self.verify(password, stored)
        if ok:
            return True
        if work is None:  # pbkdf2: its cost is not scrypt's, so a whole check on top
            self.dummy_verify(password)
            return False
        # The scrypt work (n * r * p) that a check at this hasher's parameters does beyond
        # this hash's, in calls of this hasher's r and p=1 whose n add up.
        n = (self.n * self.r * self.p - work) // self.r
        while n >= 2:
            part = 1 << (n.bit_length() - 1)
            _scrypt(b"", b"mdb-sync padding", part, self.r, 1, KEY_BYTES)
            n -= part
        return False

    def needs_rehash(self, stored: str | None) -> bool:
        """True when ``stored`` is not our current scheme with at least our parameters."""
        try:
            scheme, version, params, _salt, _key = (stored or "").split("$")
            values = dict(item.split("=") for item in params.split(","))
            return (
                scheme != SCHEME
                or version != VERSION
                or int(values["n"]) < self.n
                or int(values["r"]) < self.r
                or int(values["p"]) < self.p
            )
        except (ValueError, KeyError):
            return True

    def _verify_ours(self, password: str, stored: str) -> bool:
        _scheme, version, params, salt, key = stored.split("$")
        if version != VERSION:
            return False
        values = {k: int(v) for k, v in (item.split("=") for item in params.split(","))}
        expected = _unb64(key)
        actual = _scrypt(
            _encode(password), _unb64(salt), values["n"], values["r"], values["p"], len(expected)
        )
        return hmac.compare_digest(actual, expected)


def _scrypt_work(stored: Any) -> int | None:
    """The scrypt work (``n * r * p``) that checking ``stored`` costs: 0 for what is no hash
    this module checks, None for a ``pbkdf2:`` hash (its cost is not scrypt's)."""
    if not isinstance(stored, str):
        return 0
    try:
        if stored.startswith(SCHEME + "$"):
            values = dict(item.split("=") for item in stored.split("$")[2].split(","))
            return int(values["n"]) * int(values["r"]) * int(values["p"])
        if stored.startswith("scrypt:"):
            parts = stored.split("$", 1)[0].split(":")
            n, r, p = (int(x) for x in parts[1:4]) if len(parts) >= 4 else (2**15, 8, 1)
            return n * r * p
        if stored.startswith("pbkdf2:"):
            return None
    except (ValueError, KeyError, IndexError):
        return 0
    return 0


def _verify_werkzeug(password: str, stored: str) -> bool:
    """Werkzeug's ``method$salt$hexdigest`` (salt used as text, password as UTF-8)."""
    method, salt, hexdigest = stored.split("$", 2)
    parts = method.split(":")
    secret, salt_bytes = password.encode("utf-8"), salt.encode("utf-8")
    if parts[0] == "scrypt":
        n, r, p = (int(x) for x in parts[1:4]) if len(parts) >= 4 else (2**15, 8, 1)
        actual = _scrypt(secret, salt_bytes, n, r, p, 64).hex()
    elif parts[0] == "pbkdf2":
        digest = parts[1] if len(parts) > 1 else "sha256"
        rounds = int(parts[2]) if len(parts) > 2 else 600_000
        actual = hashlib.pbkdf2_hmac(digest, secret, salt_bytes, rounds).hex()
    else:
        return False
    return hmac.compare_digest(actual, hexdigest)


# --- rules ---------------------------------------------------------------------------------------

#: The most common passwords of public breach corpora (all lower case); refused when
#: ``check_common_passwords`` is on. Short, but it catches what attackers try first.
COMMON_PASSWORDS = frozenset(
    """
    123456 123456789 12345678 12345 1234567 1234567890 123123 111111 000000 654321 666666 121212
    112233 123321 password password1 password123 passw0rd p@ssw0rd p@ssword qwerty qwerty123
    qwertyuiop 1q2w3e4r 1q2w3e4r5t 1qaz2wsx zaq12wsx abc123 abcd1234 iloveyou admin admin123
    administrator welcome welcome1 welcome123 letmein letmein123 monkey dragon football baseball
    master sunshine princess shadow superman trustno1 starwars whatever freedom hello123
    changeme changeme123 secret secret123 login test test123 testtest guest root toor default
    qazwsx asdfghjkl asdfgh zxcvbnm 987654321 michael jennifer charlie jordan hunter2 killer
    batman computer internet summer2024 winter2024 spring2024 autumn2024 password2024
    password2025 correcthorsebatterystaple
    """.split()  # noqa: SIM905
)


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must satisfy. The defaults here follow NIST SP 800-63B and apply
    when the manifest has no ``password_policy`` (length and a common-password check, no
    composition rules); a manifest ``password_policy`` block has the schema's own, stricter
    defaults (:meth:`from_section`). Passwords over :data:`MAX_PASSWORD_CHARS` characters
    are refused before hashing (a megabyte password is a DoS)."""

    min_length: int = 8
    max_length: int = MAX_PASSWORD_CHARS
    min_entropy_bits: int = 0
    require_uppercase: bool = False
    require_lowercase: bool = False
    require_numbers: bool = False
    require_special: bool = False
    check_common_passwords: bool = True

    @classmethod
    def from_section(cls, section: PasswordPolicySection | None) -> PasswordPolicy:
        """The rules of a typed ``password_policy`` block (None: no block, the defaults)."""
        return cls() if section is None else from_typed(cls, section)

    @classmethod
    @deprecated("PasswordPolicy.from_section(manifest.auth.password_policy)")
    def from_manifest(cls, block: Mapping[str, Any] | None) -> PasswordPolicy:
        """The rules of a ``password_policy`` block, validated by the manifest's schema
        (:class:`ConfigurationError` naming the bad path); empty or None: the defaults."""
        section = typed_section("auth.password_policy", block or None, PasswordPolicySection)
        return cls.from_section(section)

    def problems(self, password: Any, email: str | None = None) -> list[str]:
        """What is wrong with ``password`` (empty when acceptable)."""
        if not isinstance(password, str):
            return ["password must be a string"]
        out = []
        if len(password) < self.min_length:
            out.append(f"password must be at least {self.min_length} characters")
        if len(password) > self.max_length:
            out.append(f"password must be at most {self.max_length} characters")
        if self.require_uppercase and not re.search(r"[A-Z]", password):
            out.append("password must contain an upper-case letter")
        if self.require_lowercase and not re.search(r"[a-z]", password):
            out.append("password must contain a lower-case letter")
        if self.require_numbers and not re.search(r"[0-9]", password):
            out.append("password must contain a digit")
        if self.require_special and not re.search(r"[^A-Za-z0-9]", password):
            out.append("password must contain a character other than letters and digits")
        if self.min_entropy_bits and entropy_bits(password) < self.min_entropy_bits:
            out.append(f"password is too predictable (needs {self.min_entropy_bits} bits)")
        lowered = password.lower()
        if self.check_common_passwords and (
            lowered in COMMON_PASSWORDS or (email and lowered == email.lower().split("@")[0])
        ):
            out.append("password is too common")
        return out


def entropy_bits(password: str) -> float:
    """A rough upper bound: length x log2(size of the character classes used)."""
    pool = 0
    for pattern, size in (("[a-z]", 26), ("[A-Z]", 26), ("[0-9]", 10), ("[^A-Za-z0-9]", 33)):
        if re.search(pattern, password):
            pool += size
    return len(password) * math.log2(pool) if pool else 0.0
