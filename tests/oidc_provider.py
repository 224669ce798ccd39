"""A real OpenID Connect provider on 127.0.0.1 for the tests, built from authlib's server
components (``AuthorizationServer``, ``AuthorizationCodeGrant``, PKCE's ``CodeChallenge``,
``OpenIDCode``) on a small Flask app served by a real threaded WSGI server.

It speaks three dialects on one port:

- **OpenID Connect** at its root: ``/.well-known/openid-configuration``, ``/jwks``,
  ``/authorize`` (a consent page with a button), ``/token``, ``/userinfo``. A Google preset
  pointed at it (``base_url``) finds the same endpoints.
- **Microsoft Entra ID** under ``/<tenant>/v2.0/.well-known/openid-configuration``: the
  multi-tenant endpoints (``common``, ``organizations``) publish the issuer template
  ``<url>/{tenantid}/v2.0``; a token's issuer is its user's tenant's and carries ``tid``.
- **GitHub** (OAuth 2 only): ``/login/oauth/authorize``, ``/login/oauth/access_token``
  (JSON when asked, form-encoded otherwise, errors as 200 + ``{"error": ...}`` like GitHub),
  ``/user`` and ``/user/emails``.

Every authorization request must carry a PKCE ``S256`` challenge; codes live 10 minutes and
are spent at first use; a code is bound to its client and ``redirect_uri`` (exact match).
A test may make the next ID token of a client misbehave (:meth:`TestProvider.misbehave`:
forged, expired, another audience, another nonce...), as a compromised or hostile
provider — or anything between it and the app — would.

::

    with TestProvider() as op:
        op.add_user("ada", email="ada@example.com")
        op.add_client("app", "secret", ["http://127.0.0.1:5000/auth/oauth/sso/callback"])
        ...  # the app's manifest: {"issuer": op.url, "client_id": "app", ...}
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode, UserInfo
from authlib.oidc.core.util import create_half_hash
from flask import Flask, Response, jsonify, request
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from markupsafe import escape

from flask_mdb.testing import LiveServer

CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
ID_TOKEN_TTL = 300
CODE_TTL = 600
#: What :meth:`TestProvider.misbehave` can do to the next ID token.
MISBEHAVIOURS = (
    "forged",  # signed by another key, announcing the provider's key id
    "unknown_kid",  # signed by another key with a key id the provider never published
    "alg_none",  # unsigned
    "hs256",  # signed with the client secret (algorithm confusion)
    "expired",
    "wrong_audience",
    "wrong_nonce",
    "wrong_issuer",
    "tenant_mismatch",  # Microsoft: issuer of one tenant, tid of another
    "userinfo_other_sub",  # the userinfo endpoint describes someone else
)


@dataclass
class OPUser:
    login: str
    sub: str
    email: str | None
    email_verified: bool = True
    name: str | None = None
    tenant: str | None = None  # Microsoft: the user's tenant id
    github_id: int = 0
    github_emails: list[dict[str, Any]] | None = None
    public_email: str | None = None


@dataclass
class OPClient(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    name: str = "an app"
    #: Put the e-mail in the userinfo answer only, not in the ID token.
    email_in_userinfo_only: bool = False

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match, as RFC 9700 wants

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class OPCode(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    login: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    realm: str
    tenant: str | None
    created: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.created)


class _RequirePKCE(CodeChallenge):  # type: ignore[misc]
    """PKCE for every client: an authorization request without an S256 challenge is refused."""

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            from authlib.oauth2.rfc6749.errors import InvalidRequestError

            raise InvalidRequestError("PKCE (code_challenge, S256) is required")
        super().validate_code_challenge(grant, redirect_uri)


class TestProvider:
    """The provider; a context manager that serves it on 127.0.0.1."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.key = RSAKey.generate_key(2048, parameters={"kid": "op-key-1", "use": "sig"})
        self.users: dict[str, OPUser] = {}
        self.clients: dict[str, OPClient] = {}
        self.codes: dict[str, OPCode] = {}
        self.tokens: dict[str, tuple[str, str, str]] = {}  # access token -> login, client, scope
        self.tenant_domains: dict[str, str] = {}
        self._misbehave: dict[str, list[str]] = {}
        #: Requests by endpoint name ("jwks", "discovery", "token", ...), for assertions.
        self.hits: dict[str, int] = {}
        self._server: LiveServer | None = None
        self.app = self._make_app()

    # --- setup -----

    @property
    def url(self) -> str:
        assert self._server is not None, "the provider is not running"
        return self._server.url

    def start(self) -> TestProvider:
        self._server = LiveServer(self.app).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> TestProvider:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def add_user(
        self,
        login: str,
        *,
        email: str | None = None,
        email_verified: bool = True,
        name: str | None = None,
        tenant: str | None = None,
        github_emails: list[dict[str, Any]] | None = None,
        public_email: str | None = None,
    ) -> OPUser:
        with self._lock:
            user = OPUser(
                login=login,
                sub="sub-" + hashlib.sha256(login.encode()).hexdigest()[:16],
                email=email,
                email_verified=email_verified,
                name=name or login.title(),
                tenant=tenant,
                github_id=100_000 + len(self.users),
                github_emails=github_emails,
                public_email=public_email,
            )
            self.users[login] = user
            return user

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        *,
        name: str | None = None,
        email_in_userinfo_only: bool = False,
    ) -> OPClient:
        with self._lock:
            client = OPClient(
                client_id,
                client_secret,
                list(redirect_uris),
                name or client_id,
                email_in_userinfo_only,
            )
            self.clients[client_id] = client
            return client

    def misbehave(self, client_id: str, *modes: str) -> None:
        """Make the next token answer to ``client_id`` misbehave in each of ``modes``."""
        for mode in modes:
            assert mode in MISBEHAVIOURS, mode
        with self._lock:
            self._misbehave[client_id] = list(modes)

    def rotate_key(self) -> str:
        """Sign from now on with a new key (published instead of the old one); its kid."""
        kid = f"op-key-{secrets.token_hex(4)}"
        with self._lock:
            self.key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})
        return kid

    def hit_count(self, name: str) -> int:
        with self._lock:
            return self.hits.get(name, 0)

    def authorize(
        self,
        authorization_url: str,
        login: str | None,
        *,
        allow: bool = True,
        source: str = "127.0.0.1",
    ) -> tuple[int, str]:
        """Be the user at the consent page: submit it (as ``login``, allowing or not) from
        ``source``; ``(status, Location)`` of the provider's answer (the redirect back to
        the app, or an error page's status and ``""``)."""
        parts = urlsplit(authorization_url)
        conn = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=30, source_address=(source, 0)
        )
        body = urlencode({"login": login or "", "decision": "allow" if allow else "deny"})
        try:
            conn.request(
                "POST",
                f"{parts.path}?{parts.query}",
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        return response.status, response.headers.get("Location", "")

    def _hit(self, name: str) -> None:
        with self._lock:
            self.hits[name] = self.hits.get(name, 0) + 1

    def _modes(self, client_id: str) -> list[str]:
        with self._lock:
            return self._misbehave.pop(client_id, [])

    # --- issuers -----

    def microsoft_issuer(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/v2.0"

    def _issuer_for(self, code: OPCode, user: OPUser) -> str:
        if code.realm == "microsoft":
            return self.microsoft_issuer(str(user.tenant))
        return self.url

    def _discovery(self, issuer: str, prefix: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{self.url}{prefix}/authorize",
            "token_endpoint": f"{self.url}{prefix}/token",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "name"],
        }

    # --- ID tokens -----

    def _id_token(self, token: dict[str, Any], request: Any) -> str:
        client: OPClient = request.client
        code: OPCode = request.authorization_code
        user: OPUser = request.user
        scopes = code.scope.split()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer_for(code, user),
            "sub": user.sub,
            "aud": client.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_TTL,
            "auth_time": code.get_auth_time(),
        }
        if code.nonce:
            claims["nonce"] = code.nonce
        if "email" in scopes and user.email and not client.email_in_userinfo_only:
            claims["email"] = user.email
            if code.realm != "microsoft":  # Entra ID never says whether it is verified
                claims["email_verified"] = user.email_verified
        if "profile" in scopes and user.name:
            claims["name"] = user.name
        if code.realm == "microsoft":
            claims["tid"] = user.tenant
            claims["oid"] = user.sub
        claims["at_hash"] = create_half_hash(token["access_token"], "RS256").decode()
        header: dict[str, Any] = {"alg": "RS256", "kid": self.key.kid}
        key: Any = self.key
        for mode in self._modes(client.client_id):
            if mode == "forged":
                key = RSAKey.generate_key(2048, parameters={"kid": self.key.kid})
            elif mode == "unknown_kid":
                key = RSAKey.generate_key(2048, parameters={"kid": "attacker-key"})
                header["kid"] = "attacker-key"
            elif mode == "alg_none":
                return _unsigned(header | {"alg": "none"}, claims)
            elif mode == "hs256":
                header = {"alg": "HS256", "kid": self.key.kid}
                key = OctKey.import_key(client.client_secret.encode())
            elif mode == "expired":
                claims["iat"], claims["exp"] = now - 7200, now - 3600
            elif mode == "wrong_audience":
                claims["aud"] = "another-app"
            elif mode == "wrong_nonce":
                claims["nonce"] = "a-nonce-of-another-sign-in"
            elif mode == "wrong_issuer":
                claims["iss"] = "https://evil.example"
            elif mode == "tenant_mismatch":
                claims["tid"] = "00000000-0000-0000-0000-0000000000ee"
            elif mode == "userinfo_other_sub":
                with self._lock:
                    self._misbehave[client.client_id] = ["userinfo_other_sub"]
        return jwt.encode(header, claims, key, algorithms=[header["alg"]])

    # --- the Flask app -----

    def _make_app(self) -> Flask:
        app = Flask("test_oidc_provider")
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 600}
        op = self
        server = AuthorizationServer(
            app, query_client=self._query_client, save_token=self._save_token
        )

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                realm = (
                    "github"
                    if req_path().startswith("/login/oauth")
                    else "microsoft"
                    if "/oauth2/v2.0/" in req_path()
                    else "oidc"
                )
                with op._lock:
                    op.codes[code] = OPCode(
                        code=code,
                        client_id=req.client.client_id,
                        redirect_uri=req.payload.redirect_uri,
                        scope=req.scope or "",
                        login=req.user.login,
                        nonce=data.get("nonce"),
                        code_challenge=data.get("code_challenge"),
                        code_challenge_method=data.get("code_challenge_method"),
                        realm=realm,
                        tenant=req_path().split("/")[1] if realm == "microsoft" else None,
                    )

            def query_authorization_code(self, code: str, client: OPClient) -> OPCode | None:
                with op._lock:
                    found = op.codes.get(code)
                if found is None or found.client_id != client.client_id:
                    return None
                if time.time() - found.created > CODE_TTL:
                    return None
                return found

            def delete_authorization_code(self, authorization_code: OPCode) -> None:
                with op._lock:
                    op.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: OPCode) -> OPUser | None:
                return op.users.get(authorization_code.login)

        class OpenIDExtension(OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return False

            def generate_user_info(self, user: OPUser, scope: str) -> UserInfo:
                return UserInfo(sub=user.sub)

            def encode_id_token(self, token: dict[str, Any], req: Any) -> str:
                return op._id_token(token, req)

        server.register_grant(
            CodeGrant, [_RequirePKCE(required=True), OpenIDExtension(require_nonce=True)]
        )

        def req_path() -> str:
            return request.path

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            op._hit("discovery")
            return jsonify(op._discovery(op.url, ""))

        @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
        def microsoft_discovery(tenant: str) -> Any:
            op._hit("discovery")
            if tenant in ("common", "organizations"):
                issuer = f"{op.url}/{{tenantid}}/v2.0"
            elif tenant == "consumers":
                issuer = op.microsoft_issuer(CONSUMERS_TENANT)
            else:
                issuer = op.microsoft_issuer(op.tenant_domains.get(tenant, tenant))
            return jsonify(op._discovery(issuer, f"/{tenant}/oauth2/v2.0"))

        @app.get("/jwks")
        def jwks() -> Any:
            op._hit("jwks")
            return jsonify(KeySet([op.key]).as_dict(private=False))

        def consent() -> Any:
            op._hit("authorize")
            try:
                grant = server.get_consent_grant(end_user=None)
            except OAuth2Error as error:
                # An unknown client or a redirect_uri it did not register: an error page,
                # never a redirect (that is how open redirectors are made).
                return Response(
                    f"<!doctype html><h1>Error</h1><p id='op-error'>"
                    f"{escape(error.error)}: {escape(error.description or '')}</p>",
                    400,
                    mimetype="text/html",
                )
            if request.method == "GET":
                client: OPClient = grant.client
                return Response(
                    "<!doctype html><html><head><title>Test provider: sign in</title></head>"
                    "<body><main><h1>Test provider</h1>"
                    f"<p id='op-client'>{escape(client.name)} wants to sign you in "
                    f"({escape(grant.request.scope or '')}).</p>"
                    f"<form id='op-consent' method='post' action='{escape(request.full_path)}'>"
                    "<label>Account <input id='op-login' name='login' autocomplete='off'></label>"
                    "<button id='op-allow' name='decision' value='allow'>Allow</button>"
                    "<button id='op-deny' name='decision' value='deny'>Deny</button>"
                    "</form></main></body></html>",
                    mimetype="text/html",
                )
            user = op.users.get(request.form.get("login", ""))
            if request.form.get("decision") != "allow" or user is None:
                user = None
            return server.create_authorization_response(grant=grant, grant_user=user)

        for path, name in (
            ("/authorize", "oidc_authorize"),
            ("/<tenant>/oauth2/v2.0/authorize", "ms_authorize"),
            ("/login/oauth/authorize", "github_authorize"),
        ):
            app.add_url_rule(path, name, lambda **_: consent(), methods=["GET", "POST"])

        def token_endpoint() -> Any:
            op._hit("token")
            return server.create_token_response()

        app.add_url_rule("/token", "oidc_token", token_endpoint, methods=["POST"])
        app.add_url_rule(
            "/<tenant>/oauth2/v2.0/token",
            "ms_token",
            lambda tenant: token_endpoint(),
            methods=["POST"],
        )

        @app.post("/login/oauth/access_token")
        def github_token() -> Any:
            op._hit("token")
            response = server.create_token_response()
            body = response.get_json(silent=True) or {}
            if response.status_code == 400:  # GitHub: errors are 200 with {"error": ...}
                response = jsonify(body)
            if "application/json" not in request.headers.get("Accept", ""):
                return Response(
                    urlencode({k: str(v) for k, v in body.items()}),
                    mimetype="application/x-www-form-urlencoded",
                )
            return response

        def bearer() -> tuple[OPUser, OPClient, str] | None:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() not in ("bearer", "token"):
                return None
            with op._lock:
                found = op.tokens.get(value.strip())
            if found is None:
                return None
            login, client_id, scope = found
            return op.users[login], op.clients[client_id], scope

        @app.get("/userinfo")
        def userinfo() -> Any:
            op._hit("userinfo")
            found = bearer()
            if found is None:
                return jsonify(error="invalid_token"), 401
            user, client, scope = found
            info: dict[str, Any] = {"sub": user.sub, "name": user.name}
            if "email" in scope.split() and user.email:
                info["email"] = user.email
                info["email_verified"] = user.email_verified
            if "userinfo_other_sub" in op._modes(client.client_id):
                info["sub"] = "sub-of-someone-else"
            return jsonify(info)

        @app.get("/user")
        def github_user() -> Any:
            op._hit("github_user")
            found = bearer()
            if found is None:
                return jsonify(message="Requires authentication"), 401
            user = found[0]
            return jsonify(
                id=user.github_id, login=user.login, name=user.name, email=user.public_email
            )

        @app.get("/user/emails")
        def github_emails() -> Any:
            op._hit("github_emails")
            found = bearer()
            if found is None:
                return jsonify(message="Requires authentication"), 401
            user = found[0]
            if user.github_emails is not None:
                return jsonify(user.github_emails)
            return jsonify(
                [
                    {
                        "email": user.email,
                        "primary": True,
                        "verified": user.email_verified,
                        "visibility": "private",
                    }
                ]
            )

        return app

    def _query_client(self, client_id: str) -> OPClient | None:
        with self._lock:
            return self.clients.get(client_id)

    def _save_token(self, token: dict[str, Any], req: Any) -> None:
        with self._lock:
            self.tokens[token["access_token"]] = (
                req.user.login,
                req.client.client_id,
                token.get("scope", ""),
            )


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."
