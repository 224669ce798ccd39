"""Signing keys of JSON Web Tokens, with key ids for rotation.

One app signs with one algorithm, fixed by its manifest (``auth.jwt.algorithm``, HS256 by
default) and never taken from a token's header. HMAC algorithms use a secret of at least
32 bytes — there is no default secret, and a missing or short one stops the app at startup
with the name of the setting to fix. RS*/ES*/EdDSA use a private key (PEM) to sign and its
public key plus any older public keys to verify. Every token names its key in ``kid``, so a
new key can sign while tokens of the previous one stay valid until they expire.

One secret usually serves every app of a process (``MDB_JWT_SECRET``), so an app never
signs with the secret itself: its key is derived from the secret and its slug (HKDF-SHA256,
RFC 5869, :func:`derive_app_key`), and so is its ``kid``. A token of one app therefore fails
the signature check of any other, even where they share the secret; an outside service that
verifies an app's tokens derives the same key. An asymmetric key cannot be derived: apps
sharing one are kept apart by the token's ``app`` claim and single ``aud``
(:mod:`mdb_sync.auth.tokens`), which every verification requires to name the verifying app.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ConfigurationError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1"}
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
#: The environment variable read when neither the config nor the manifest names a secret.
SECRET_ENV = "MDB_JWT_SECRET"
#: Bytes of an app's derived HMAC key, by algorithm (the hash's output size).
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_HKDF_SALT = b"mdb-sync jwt signing key v1"


def derive_app_key(secret: str | bytes, slug: str, algorithm: str = "HS256") -> bytes:
    """App ``slug``'s HMAC key for ``algorithm``: HKDF-SHA256 of ``secret`` with the slug
    as its context (``info``), so apps sharing one secret never share a key."""
    ikm = secret.encode("utf-8") if isinstance(secret, str) else secret
    length = HMAC_KEY_BYTES[algorithm]
    prk = hmac.new(_HKDF_SALT, ikm, hashlib.sha256).digest()
    info = b"mdb-sync app\x1f" + slug.encode("utf-8")
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


@dataclass(frozen=True)
class KeySet:
    """The key that signs new tokens and every key that may verify one, by ``kid``."""

    algorithm: str
    signing_kid: str
    signing_key: Any = field(repr=False)
    verify_keys: Mapping[str, Any] = field(repr=False)

    def key_for(self, kid: Any) -> Any:
        return self.verify_keys.get(kid) if isinstance(kid, str) else None

    @classmethod
    def from_secret(
        cls,
        algorithm: str,
        secret: str | bytes,
        fallbacks: tuple[Any, ...] = (),
        *,
        slug: str,
        where: str,
    ) -> KeySet:
        """The keys of app ``slug``: derived from ``secret`` (signs) and ``fallbacks``
        (older secrets that still verify)."""
        if algorithm not in HMAC_ALGORITHMS:
            raise ConfigurationError(f"{where}: {algorithm} needs a private key, not a secret")
        keys: dict[str, bytes] = {}
        signing = b""
        for i, value in enumerate((secret, *fallbacks)):
            raw = value.encode("utf-8") if isinstance(value, str) else value
            if not isinstance(raw, bytes) or len(raw) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"{where}{'' if i == 0 else f' (fallback {i})'}: the JWT secret must be at "
                    f"least {MIN_SECRET_BYTES} bytes (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))')",
                    context={"option": where},
                )
            key = derive_app_key(raw, slug, algorithm)
            kid = hmac.new(key, b"mdb-sync key id", hashlib.sha256).hexdigest()[:16]
            keys.setdefault(kid, key)
            signing = signing or key
        first = next(iter(keys))
        return cls(algorithm, first, signing, keys)

    @classmethod
    def from_private_key(
        cls,
        algorithm: str,
        private_key: Any,
        public_keys: Mapping[str, Any] | None = None,
        key_id: str | None = None,
        *,
        where: str,
    ) -> KeySet:
        from cryptography.hazmat.primitives import serialization

        key = _load_private(private_key, where)
        _check_key_type(algorithm, key, where)
        public = key.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = key_id or hashlib.sha256(der).hexdigest()[:16]
        verify: dict[str, Any] = {kid: public}
        for other_kid, pem in (public_keys or {}).items():
            loaded = _load_public(pem, f"{where} public key {other_kid!r}")
            _check_key_type(algorithm, loaded, f"{where} public key {other_kid!r}")
            verify.setdefault(str(other_kid), loaded)
        return cls(algorithm, kid, key, verify)


def _pem_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and "-----BEGIN" in value:
        return value.encode("ascii")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise ConfigurationError(f"{where}: {str(path)!r} is neither a PEM key nor a file")
        return path.read_bytes()
    raise ConfigurationError(f"{where}: expected a PEM key or a path to one")


def _load_private(value: Any, where: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    if hasattr(value, "public_key") and hasattr(value, "sign"):
        return value
    try:
        return serialization.load_pem_private_key(_pem_bytes(value, where), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{where}: not a usable PEM private key ({exc})") from exc


def _load_public(value: Any, where: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    if hasattr(value, "verify") and not hasattr(value, "sign"):
        return value
    try:
        return serialization.load_pem_public_key(_pem_bytes(value, where))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{where}: not a usable PEM public key ({exc})") from exc


def _check_key_type(algorithm: str, key: Any, where: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if algorithm in RSA_ALGORITHMS:
        ok = isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey)
        if ok and key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(f"{where}: RSA keys must have at least {MIN_RSA_BITS} bits")
    elif algorithm in EC_CURVES:
        ok = (
            isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
            and key.curve.name == EC_CURVES[algorithm]
        )
    elif algorithm == "EdDSA":
        ok = isinstance(
            key,
            ed25519.Ed25519PrivateKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PrivateKey
            | ed448.Ed448PublicKey,
        )
    else:
        raise ConfigurationError(f"{where}: unsupported JWT algorithm {algorithm!r}")
    if not ok:
        raise ConfigurationError(f"{where}: the key does not fit the algorithm {algorithm}")


class NoKeys:
    """The keys of an :class:`~mdb_sync.auth.AuthService` made to administer users
    (``signing=False``, e.g. ``mdb users``): revoking tokens needs no key; issuing or verifying
    one raises :class:`ConfigurationError`."""

    def __init__(self, slug: str) -> None:
        self.slug = slug

    def __getattr__(self, name: str) -> Any:
        raise ConfigurationError(
            f"app {self.slug!r}: this AuthService was made without signing keys "
            "(signing=False), so it cannot issue or verify tokens",
            context={"app": self.slug},
        )


def resolve_keyset(
    slug: str,
    algorithm: str,
    *,
    secret: Any = None,
    secret_fallbacks: tuple[Any, ...] = (),
    secret_env: str | None = None,
    private_key: Any = None,
    public_keys: Mapping[str, Any] | None = None,
    key_id: str | None = None,
    secret_option: str = "secret=",
) -> KeySet:
    """The key set of app ``slug``, or ConfigurationError naming what to set.

    HMAC: ``secret`` (from the caller's config), else the environment variable the
    manifest names (``auth.jwt.secret_env``), else ``MDB_JWT_SECRET``.
    """
    if algorithm in HMAC_ALGORITHMS:
        where = secret_option
        if secret is None and secret_env:
            secret, where = os.environ.get(secret_env) or None, f"${secret_env}"
        if secret is None:
            secret, where = os.environ.get(SECRET_ENV) or None, f"${SECRET_ENV}"
        if secret is None:
            names = [secret_option, *([f"${secret_env}"] if secret_env else []), f"${SECRET_ENV}"]
            raise ConfigurationError(
                f"app {slug!r} issues tokens (token_management) but no JWT secret is set: set "
                f"{' or '.join(names)} to at least {MIN_SECRET_BYTES} random bytes "
                "(there is no default secret)",
                context={"app": slug, "option": secret_option},
            )
        return KeySet.from_secret(
            algorithm, secret, tuple(secret_fallbacks), slug=slug, where=where
        )
    if private_key is None:
        raise ConfigurationError(
            f"app {slug!r} signs tokens with {algorithm} (auth.jwt.algorithm) but no private "
            "key is set (MDB_JWT_PRIVATE_KEY / private_key=)",
            context={"app": slug},
        )
    return KeySet.from_private_key(
        algorithm, private_key, public_keys, key_id, where=f"auth.jwt ({algorithm}) of {slug!r}"
    )
