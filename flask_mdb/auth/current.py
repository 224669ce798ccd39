"""Who the current request is, for the app it is bound to: sessions, bearer tokens, CSRF.

Each bound app with an ``auth`` or ``token_management`` block gets an
:class:`~mdb_sync.auth.AuthService` (cached per manifest version). A request proves its
user either with ``Authorization: Bearer <access token>`` — then only the token counts,
never a cookie — or with the app's session cookie (named from the manifest,
``<slug>_session`` by default; ``__Host-<slug>_session`` over HTTPS), whose id refers to a
server-side session. Flask-Login's ``current_user`` is loaded from either through the login
manager's request loader; a user signed in with ``flask_login.login_user`` is loaded from
Flask's session or Flask-Login's remember cookie, whose id names a server-side session too
(:func:`flask_login_signed_in`), so a logout revokes it. Whenever the identity comes from a
cookie — any of these — unsafe requests need a CSRF token.

What a request needs from the app's auth settings (cookie names, flags, security headers) is
its :class:`~.plan.AuthPlan`, built with the service once per app state; the session, the
token and the user are read from the database by every request.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import flask_login
from flask import Request, Response, current_app, has_request_context, request
from flask_login import current_user, decode_cookie, user_logged_in, user_logged_out
from flask_login.config import COOKIE_DURATION as REMEMBER_DURATION_DEFAULT
from flask_login.config import COOKIE_NAME as REMEMBER_COOKIE_DEFAULT

from mdb_sync.auth import AuthConfig, AuthService, PasswordHasher, csrf
from mdb_sync.auth.service import auth_service_of
from mdb_sync.auth.store import digest
from mdb_sync.exceptions import ConfigurationError, TokenError

from .. import _flask_login_seam as login_seam
from ..binding import Binding, current_binding
from ..headers import header_names
from ..request_state import RequestState, current_request, current_state, ensure_state
from ..state import MDBState, SlugState, current_flask_app, get_state
from .plan import HOST_PREFIX as HOST_PREFIX  # the cookie names are worked out in .plan
from .plan import AuthPlan, cookie_names
from .user import AnonymousUser, AuthUser

log = logging.getLogger("flask_mdb.auth")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_FIELD = "csrf_token"
#: Bodies werkzeug parses as a form (``request.form``); any other body has no form field.
FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
CSRF_HEADERS = ("X-CSRF-Token", "X-CSRFToken")


# --- the bound app's auth ----------------------------------------------------------------------


def build_service(state: MDBState, slug_state: SlugState) -> AuthService | None:
    """The :class:`AuthService` of one app, from the extension's config; None when the
    app's manifest has no auth. The engine's one service for the app and these options
    (:func:`mdb_sync.auth.service.auth_service_of`): a script calling
    ``get_auth_service(engine, slug)`` on the same engine gets this very object."""
    if not AuthConfig.from_manifest(dict(slug_state.manifest)).enabled:
        return None
    flask_app = current_flask_app()
    offer_auth_defaults(state, flask_app)
    return auth_service_of(
        state.engine, slug_state.slug, *auth_options(state, flask_app, slug_state.slug)
    )


def offer_auth_defaults(state: MDBState, flask_app: Any) -> None:
    """Make this extension's auth options the engine's defaults (unless another Flask app
    on the engine did first): ``get_auth_service(engine, slug)`` in a script, CLI command or
    task on this engine then gets the very service the app's requests use."""
    services = state.engine.app_services
    if services.auth_defaults is None:
        services.auth_defaults = lambda slug: auth_options(state, flask_app, slug)


def auth_options(state: MDBState, flask_app: Any, slug: str) -> tuple[Any, dict[str, Any]]:
    """``(key, options)``: the :class:`AuthService` options of app ``slug`` from the
    extension's config, and what identifies them in the engine's per-app cache (this
    extension state: a callable ``MDB_AUTH_PROVIDER`` builds a new provider per call)."""
    config = state.config
    return ("flask_mdb", id(state)), dict(
        secret=config["MDB_JWT_SECRET"],
        secret_fallbacks=config["MDB_JWT_SECRET_FALLBACKS"],
        private_key=config["MDB_JWT_PRIVATE_KEY"],
        public_keys=config["MDB_JWT_PUBLIC_KEYS"],
        key_id=config["MDB_JWT_KEY_ID"],
        secret_option="MDB_JWT_SECRET",
        provider=_custom_provider(config["MDB_AUTH_PROVIDER"], slug),
        hasher=_hasher(config["MDB_PASSWORD_HASH_COST"]),
        policy_reload_interval=config["MDB_AUTH_POLICY_RELOAD"],
        two_factor_key=config["MDB_TWO_FACTOR_KEY"] or flask_app.config.get("SECRET_KEY"),
    )


_HASHERS: dict[int, Any] = {}


def _hasher(cost: int) -> Any:
    if cost not in _HASHERS:
        _HASHERS[cost] = PasswordHasher(n=cost)
    return _HASHERS[cost]


def _custom_provider(value: Any, slug: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(slug)
    if callable(value) and not hasattr(value, "check"):
        return value(slug)
    return value


def build_plan(state: MDBState, slug_state: SlugState) -> AuthPlan | None:
    """The :class:`~.plan.AuthPlan` of one app (its service and what its requests read of
    its settings); None when the app's manifest has no auth."""
    auth = build_service(state, slug_state)
    return AuthPlan.build(state, auth) if auth is not None else None


def plan_for(binding: Binding | None) -> AuthPlan | None:
    """The auth plan of the app bound to the current context, or None (in the engine's
    per-app cache: built again when the app's record changes)."""
    if binding is None or binding.slug_state is None:
        return None
    state = binding.state
    return state.per_slug(binding.slug_state, "auth", lambda ss: build_plan(state, ss))


def service_for(binding: Binding | None) -> AuthService | None:
    """The auth of the app bound to the current context, or None."""
    plan = plan_for(binding)
    return plan.auth if plan is not None else None


def plan_for_slug(slug: str) -> AuthPlan | None:
    """The auth plan of the active app ``slug`` of the current Flask app, or None."""
    state = get_state()
    state.ensure_ready()
    record = state.engine.catalog.get(slug)
    if record is None or record.status != "active":
        return None
    slug_state = state.slug_state(slug, record)
    return state.per_slug(slug_state, "auth", lambda ss: build_plan(state, ss))


def service_for_slug(slug: str) -> AuthService | None:
    """The auth of the active app ``slug`` of the current Flask app, or None."""
    plan = plan_for_slug(slug)
    return plan.auth if plan is not None else None


def current_plan(state: RequestState | None = None) -> AuthPlan | None:
    """The auth plan of the request's app (``state``: the request's state, when the caller
    has it), resolved once per request."""
    if state is None:
        state = current_state()
        if state is None:  # outside a request (mdb.bind in a script)
            return plan_for(current_binding())
    if not state.auth_resolved:
        state.auth_plan, state.auth_resolved = plan_for(current_binding()), True
    return state.auth_plan


def current_service() -> AuthService | None:
    """The auth of the request's app (cached for the request)."""
    plan = current_plan()
    return plan.auth if plan is not None else None


def _plan_of(auth: AuthService) -> AuthPlan:
    """The plan of ``auth``: the request's, or one built for this call (another app's)."""
    plan = current_plan()
    return plan if plan is not None and plan.auth is auth else AuthPlan.build(get_state(), auth)


def require_service() -> AuthService:
    auth = current_service()
    if auth is None:
        slug = getattr(current_binding(), "slug", None)
        raise ConfigurationError(
            f"no auth for this request: app {slug!r} has no auth or token_management block"
            if slug
            else "no app is bound to this request, so there is no auth to use"
        )
    return auth


# --- loading the user ----------------------------------------------------------------------------


def client_ip() -> str:
    return request.remote_addr or "-"


def fingerprint(auth: AuthService) -> dict[str, str] | None:
    """What the request's session is bound to (a digest of the client's address, of its
    browser), as the app's ``bind_ip`` / ``bind_fingerprint`` ask; None for neither."""
    out = {}
    if auth.config.bind_ip:
        out["ip"] = digest("ip", client_ip())
    if auth.config.bind_fingerprint:
        out["ua"] = digest("ua", request.headers.get("User-Agent", ""))
    return out or None


def bearer_token() -> str | None:
    """The bearer token of the request, or None (also for other schemes)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def session_cookie_name(auth: AuthService) -> str:
    """The name of the app's session cookie in this request: the manifest's
    ``session_cookie_name``, with the ``__Host-`` prefix when the cookie is Secure (over
    HTTPS). Only that name is read: over HTTPS a cookie without the prefix is ignored."""
    return _plan_of(auth).session_cookie[request.is_secure]


def extra_cookie_name(auth: AuthService, suffix: str) -> str:
    """A cookie of the app's auth besides the session's: ``<session cookie>_<suffix>``
    (``__Host-`` prefixed over HTTPS, like the session cookie)."""
    cfg = auth.config
    return cookie_names(f"{cfg.session_cookie_name}_{suffix}", cfg.cookie_secure)[request.is_secure]


#: The anonymous visitor's cookie: ``<session cookie>_anon`` (see :mod:`.anonymous`).
ANONYMOUS_COOKIE_SUFFIX = "anon"


def anonymous_cookie_name(auth: AuthService) -> str:
    return extra_cookie_name(auth, ANONYMOUS_COOKIE_SUFFIX)


def queue_cookie(
    name: str, value: str | None, max_age: int | None = None, *, samesite: str | None = None
) -> None:
    """Set (``value``) or clear (None) cookie ``name`` on this request's response, with the
    session cookie's attributes (HttpOnly, SameSite — or ``samesite`` —, Secure, ``Path=/``)."""
    ensure_state().extra_cookies[name] = (value, max_age, samesite)


def csrf_cookie_name(auth: AuthService) -> str:
    """The name of the CSRF seed cookie (what anonymous CSRF tokens are bound to)."""
    return _plan_of(auth).csrf_cookie[request.is_secure]


def remember_cookie_name() -> str:
    return str(current_app.config.get("REMEMBER_COOKIE_NAME") or REMEMBER_COOKIE_DEFAULT)


def flask_login_cookie() -> bool:
    """True when Flask's session names a Flask-Login user or Flask-Login's remember cookie
    came with the request (a user signed in with ``flask_login.login_user``)."""
    return bool(request.cookies.get(remember_cookie_name())) or (
        login_seam.session_user_id() is not None
    )


def cookie_identity(auth: AuthService) -> bool:
    """True when the request carries a cookie that can sign a user in — the app's session
    cookie, or Flask-Login's session or remember cookie — whether or not it is still valid:
    unsafe requests then need a CSRF token (a browser sends cookies to cross-site posts)."""
    return plan_cookie_identity(_plan_of(auth))


def plan_cookie_identity(plan: AuthPlan) -> bool:
    """:func:`cookie_identity` of the app whose plan is ``plan``."""
    req = current_request()
    return bool(req.cookies.get(plan.session_cookie[req.is_secure])) or flask_login_cookie()


def load_user_from_request(_request: Any = None) -> AuthUser | None:
    """Flask-Login's request loader: bearer token, else the app's session cookie."""
    state = ensure_state()
    plan = current_plan(state)
    if plan is None:
        return None
    auth = plan.auth
    req = current_request()
    if "Authorization" in req.headers:
        token = bearer_token()
        if token is None or auth.tokens is None:
            state.token_error = "unsupported authorization scheme"
            return None
        try:
            user, claims = auth.user_from_token(token)
        except TokenError as exc:
            state.token_error = exc.message
            return None
        return AuthUser(user, "token", claims=claims, token=token)
    sid = req.cookies.get(plan.session_cookie[req.is_secure])
    if sid and auth.sessions is not None:
        loaded = auth.load_session(sid, fingerprint(auth) if plan.fingerprinted else None)
        if loaded is not None:
            session, user = loaded
            state.session = session
            return AuthUser(user, "session", session=session)
    return None


# --- Flask-Login's own sign-in ----------------------------------------------------------------
#
# Flask's session is a signed cookie and Flask-Login's remember cookie a signed
# ``<id>|<digest>``: neither has server-side state, so a copy taken before logout would sign the
# user in until it expires (the remember cookie: a year). A ``flask_login.login_user`` in a
# bound app therefore starts a server-side session (``mdb_auth_sessions``, stored by digest,
# TTL-indexed, bounded per user), and the id Flask-Login stores in both cookies is
# ``<user id>.<session id>``: a logout ends that one login, and logout everywhere, a password
# change or a deactivation (which move the user's ``auth_version``, the revocable part every
# session records) end all of them — read fresh by every request, in every process.

#: The longest id Flask-Login's cookies may carry here (``<24 hex>.<43 url-safe>``).
MAX_LOGIN_ID = 128
#: The longest a remembered login lasts: browsers keep no cookie longer (400 days, RFC 6265bis).
MAX_REMEMBER_SECONDS = 400 * 86_400


class FlaskLoginUser(AuthUser):
    """A user signed in with ``flask_login.login_user`` (``via == "flask-session"``), held by
    Flask's session cookie and Flask-Login's remember cookie. :meth:`get_id` — what
    Flask-Login stores in both — is ``<user id>.<session id>``, naming the login's
    server-side ``session`` (what a logout ends)."""

    def __init__(self, data: Mapping[str, Any], login_id: str, session: Mapping[str, Any]):
        super().__init__(data, "flask-session", session=session)
        self.login_id = login_id

    @property
    def session_id(self) -> str:
        """The id of the login's server-side session (a secret, like the cookies)."""
        return self.login_id.partition(".")[2]

    def get_id(self) -> str:
        return self.login_id


def remember_lifetime() -> int:
    """How long (seconds) the remember cookie of the request's ``flask_login.login_user``
    lasts: its ``duration``, else ``REMEMBER_COOKIE_DURATION`` (a year by default); at most
    :data:`MAX_REMEMBER_SECONDS`."""
    seconds = login_seam.remember_seconds()
    if seconds is None:
        duration = current_app.config.get("REMEMBER_COOKIE_DURATION", REMEMBER_DURATION_DEFAULT)
        seconds = (
            duration.total_seconds() if isinstance(duration, dt.timedelta) else float(duration)
        )
    return max(1, min(int(seconds), MAX_REMEMBER_SECONDS))


def remembered_login_id() -> str | None:
    """The login id the request's remember cookie carries, if its signature is valid."""
    cookie = request.cookies.get(remember_cookie_name())
    login_id = decode_cookie(cookie) if cookie else None
    return login_id if isinstance(login_id, str) else None


def _end_login(auth: AuthService, login_id: str | None) -> None:
    """End the server-side session a Flask-Login id names (a no-op for a dead one)."""
    if login_id and len(login_id) <= MAX_LOGIN_ID:
        auth.end_session(login_id.partition(".")[2])


def flask_login_signed_in(_sender: Any, user: Any = None, **_extra: Any) -> None:
    """Flask-Login's ``user_logged_in``: give a ``flask_login.login_user`` of an
    :class:`AuthUser` a server-side session — for the remember cookie's lifetime when it
    asked for one, else the app's ``session_ttl_seconds`` — and make Flask-Login store its
    id (``<user id>.<session id>``) in Flask's session and the remember cookie. The login
    this browser had before (the user it replaces, its remember cookie) ends, as at
    :func:`login_user`. :func:`login_user`, which writes no Flask session, is left alone."""
    if not isinstance(user, AuthUser) or (
        user.session is not None and not isinstance(user, FlaskLoginUser)
    ):
        return
    if login_seam.session_user_id() != user.get_id():
        return
    auth = require_service()
    if auth.sessions is None:
        raise ConfigurationError(f"app {auth.slug!r} has no users (auth.users.enabled)")
    remember = login_seam.remember_requested()
    if isinstance(user, FlaskLoginUser):
        auth.end_session(user.session_id)
    replaced = remembered_login_id()
    if replaced is not None:
        _end_login(auth, replaced)
        if not remember:  # Flask-Login leaves the old cookie: it names nobody any more
            queue_cookie(remember_cookie_name(), None)
    sid, session = auth.sessions.create(
        user.data,
        remember=remember,
        fingerprint=fingerprint(auth),
        ttl=remember_lifetime() if remember else auth.config.session_ttl,
    )
    login_id = f"{user.id}.{sid}"
    login_seam.set_session_user_id(login_id)
    ensure_state().session = session
    login_seam.set_request_user(FlaskLoginUser(user.data, login_id, session))


def flask_login_signed_out(_sender: Any, user: Any = None, **_extra: Any) -> None:
    """Flask-Login's ``user_logged_out`` (``flask_login.logout_user``, or :func:`logout_user`
    through it): end the login's server-side session, and the one the request's remember
    cookie names — a copy of either cookie identifies nobody from now on, in any process."""
    if not has_request_context():
        return
    auth = current_service()
    if auth is None:
        return
    if isinstance(user, FlaskLoginUser):
        auth.end_session(user.session_id)
    remembered = remembered_login_id()
    if remembered is not None and not (
        isinstance(user, FlaskLoginUser) and remembered == user.login_id
    ):
        _end_login(auth, remembered)


def load_user_by_id(user_id: str) -> AuthUser | None:
    """Flask-Login's user loader, for the id in Flask's session or the remember cookie:
    the user of the *bound* app while the login's server-side session lives (the id is
    ``<user id>.<session id>``, see :func:`flask_login_signed_in`); any other id — one
    stored before sign-ins had a session — loads nobody. A request with an
    ``Authorization`` header is judged by its token alone. A dead id does not hide the
    request's own session cookie: Flask-Login asks no request loader once a remember
    cookie came, so that cookie is read here (and the dead cookie cleared)."""
    in_request = has_request_context()
    if in_request and "Authorization" in request.headers:
        return load_user_from_request()
    auth = current_service()
    if auth is None or auth.users is None:
        return None
    user = _flask_login_user(auth, user_id, in_request)
    if user is not None or not in_request:
        return user
    if login_seam.session_user_id() == user_id:
        login_seam.forget_session_user_id()  # dead: not read again at every request
    if not request.cookies.get(remember_cookie_name()):
        return None
    if remembered_login_id() == user_id:
        queue_cookie(remember_cookie_name(), None)
    return load_user_from_request()


def _flask_login_user(auth: AuthService, user_id: Any, in_request: bool) -> AuthUser | None:
    if not isinstance(user_id, str) or len(user_id) > MAX_LOGIN_ID:
        return None
    oid, _, sid = user_id.partition(".")
    loaded = auth.load_session(sid, fingerprint(auth) if in_request else None)
    if loaded is None:
        return None
    session, user = loaded
    if str(user["user_id"]) != oid:
        return None
    if in_request:
        ensure_state().session = session
    return FlaskLoginUser(user, user_id, session)


def forget_request_user() -> None:
    """Forget the auth and the user resolved so far for this request: the request now
    serves another app (a websocket endpoint binds its own app after the request's hooks
    ran with the default one), whose auth must read its own cookie or token."""
    state = current_state()
    if state is not None:
        state.auth_plan, state.auth_resolved, state.session = None, False, None
        state.token_error = None
    login_seam.forget_request_user()


def get_current_user() -> AuthUser | None:
    """The signed-in user of the request (session cookie or bearer token), or None."""
    if not has_request_context():
        return None
    user = current_user._get_current_object()
    return user if isinstance(user, AuthUser) and user.is_authenticated else None


# --- logging in and out --------------------------------------------------------------------------


def login_user(
    user: Any,
    remember: bool = False,
    *,
    authenticated_at: Any = None,
    platform_session: str | None = None,
    track: bool = True,
) -> AuthUser:
    """Start a new server-side session for ``user`` (a user dict or AuthUser) in the bound
    app. Any session the browser had is ended first: the id always changes at login.

    The sign-in is counted (``login_count``, times and addresses; ``track=False`` not to),
    and an anonymous identity the browser had is upgraded to the account
    (``MDB_ANONYMOUS_UPGRADE`` carries its data over) and ends. ``authenticated_at`` and
    ``platform_session``: see :meth:`mdb_sync.auth.SessionStore.create`."""
    auth = require_service()
    data = user.data if isinstance(user, AuthUser) else dict(user)
    upgrade_request_identity(auth, data)  # first: a failing hook leaves no session behind
    old = request.cookies.get(session_cookie_name(auth))
    if old:
        auth.end_session(old)
    if auth.sessions is None:
        raise ConfigurationError(f"app {auth.slug!r} has no users (auth.users.enabled)")
    sid, session = auth.sessions.create(
        data,
        remember=remember,
        fingerprint=fingerprint(auth),
        authenticated_at=authenticated_at,
        platform_session=platform_session,
    )
    if track:
        data.update(auth.record_login(data, client_ip()))
    state = ensure_state()
    state.cookie, state.session = ("set", sid, remember), session
    logged_in = AuthUser(data, "session", session=session)
    login_seam.set_request_user(logged_in)
    user_logged_in.send(current_flask_app(), user=logged_in)
    return logged_in


def register_user(
    email: Any,
    password: Any,
    *,
    roles: Any = None,
    login: bool = False,
    **profile: Any,
) -> dict[str, Any]:
    """Create a user of the bound app by its manifest's rules (password policy, default
    roles); ``login`` also signs them in. For registration views of your own — the auth
    blueprint's ``/register`` does the same."""
    user = require_service().register_user(email, password, roles=roles, **profile)
    if login:
        login_user(user)
    return user


def logout_user(*, everywhere: bool = False) -> None:
    """End the request's login: the session (cookie cleared), the bearer token's login (the
    token and its refresh family are revoked), and a Flask-Login login
    (``flask_login.login_user``: its server-side session ends, its user id leaves Flask's
    session, its remember cookie is cleared). ``everywhere``: every login of the user ends
    too — every browser's session and remember cookie, every token, in every app sharing
    a ``global_users`` account (:meth:`~mdb_sync.auth.AuthService.logout_everywhere`)."""
    auth = require_service()
    user = get_current_user()
    sid = request.cookies.get(session_cookie_name(auth))
    if user is not None and user.via == "token" and user.token:
        auth.revoke_token(user.token)
    if sid:
        auth.end_session(sid)
        ensure_state().cookie = ("clear",)
    signalled = False
    if flask_login_cookie():
        flask_login.logout_user()  # sends user_logged_out for Flask-Login's user
        signalled = user is None or user.via == "flask-session"
    if everywhere and user is not None:  # the account holder's own act: in every app
        auth.logout_everywhere(user.id, every_app=True)
    ensure_state().session = None
    login_seam.set_request_user(AnonymousUser())
    if user is not None and not signalled:
        user_logged_out.send(current_flask_app(), user=user)


# --- CSRF ----------------------------------------------------------------------------------------


def _csrf_key() -> bytes:
    secret = current_app.secret_key
    if not secret:
        raise ConfigurationError(
            "CSRF protection needs the Flask SECRET_KEY: set app.config['SECRET_KEY']",
            context={"option": "SECRET_KEY"},
        )
    derived = _CSRF_KEYS.get(secret)
    if derived is None:
        if len(_CSRF_KEYS) >= 16:  # secrets rotate rarely: a small bound is plenty
            _CSRF_KEYS.clear()
        derived = _CSRF_KEYS[secret] = csrf.derive_key(secret)
    return derived


#: SECRET_KEY -> the CSRF key derived from it (one HMAC saved per checked request).
_CSRF_KEYS: dict[Any, bytes] = {}


def _binding(plan: AuthPlan, create: bool, req: Request | None = None) -> str | None:
    """What a CSRF token is bound to: the server-side session, else the browser's seed
    cookie — together with the Flask-Login user's id when the user came from Flask's
    session, so a token minted for another identity (a planted seed) never fits."""
    if req is None:
        req = current_request()
    cookies, secure = req.cookies, req.is_secure
    user = None
    if cookies.get(plan.session_cookie[secure]) or flask_login_cookie():
        user = current_user._get_current_object()  # loads the session
    state = ensure_state()
    if state.session is not None:
        return "s:" + str(state.session.get("csrf"))
    seed = state.csrf_seed or cookies.get(plan.csrf_cookie[secure])
    if seed is None or not (16 <= len(seed) <= 64):
        if not create:
            return None
        seed = state.csrf_seed = secrets.token_urlsafe(24)
    if user is not None and getattr(user, "is_authenticated", False):
        return f"f:{user.get_id()}:{seed}"
    return "a:" + seed


def csrf_token() -> str:
    """A CSRF token for the bound app and this browser (put it in forms as ``csrf_token``
    or send it in the ``X-CSRF-Token`` header)."""
    auth = require_service()
    ensure_state().csrf_issued = True  # the response carries a token: it must not be cached
    return csrf.make_token(_csrf_key(), auth.slug, _binding(_plan_of(auth), create=True) or "")


def csrf_problem(auth: AuthService) -> tuple[int, str] | None:
    """``(status, message)`` when the request's CSRF token is missing (400) or invalid
    (403), else None."""
    return plan_csrf_problem(_plan_of(auth))


def plan_csrf_problem(plan: AuthPlan) -> tuple[int, str] | None:
    """:func:`csrf_problem` of the app whose plan is ``plan``."""
    # Only a form carries the field (werkzeug parses no other body as one): the mimetype is
    # checked first, so a JSON request does not pay for an empty form parse.
    req = current_request()
    token = req.form.get(CSRF_FIELD) if req.mimetype in FORM_MIMETYPES else None
    headers = req.headers
    for header in CSRF_HEADERS:
        token = token or headers.get(header)
    auth = plan.auth
    problem = csrf.check_token(
        _csrf_key(), auth.slug, _binding(plan, False, req), token, auth.config.csrf_token_ttl
    )
    if problem is None:
        return None
    if problem == csrf.MISSING:
        return 400, "the CSRF token is missing (form field csrf_token or header X-CSRF-Token)"
    return 403, f"the CSRF token is {problem}: reload the page and try again"


# --- cookies -------------------------------------------------------------------------------------


def cookie_secure(auth: AuthService) -> bool:
    setting = auth.config.cookie_secure
    return request.is_secure if setting == "auto" else setting == "true"


def write_cookies(
    response: Response, state: RequestState | None = None, present: set[str] | None = None
) -> Response:
    """After step: set or clear the session cookie, set a new CSRF seed (both named with
    ``__Host-`` when Secure; always ``Path=/`` and no ``Domain``), and any other cookie the
    request queued. Returns at once when the request changed no cookie. ``present``: the
    response's :func:`~flask_mdb.headers.header_names`, when the caller has them."""
    if state is None:
        state = current_state()
    plan = state.auth_plan if state is not None else None
    if state is None or plan is None:
        return response
    action, seed = state.cookie, state.csrf_seed
    if action is None and seed is None and not state.extra_cookies:
        if state.session is not None:
            add_vary_cookie(response, present)
        return response
    cfg = plan.auth.config
    is_secure = request.is_secure
    common: dict[str, Any] = {
        "path": "/",
        "secure": plan.secure_cookies(is_secure),
        "httponly": cfg.cookie_httponly,
        "samesite": cfg.cookie_samesite,
    }
    session_cookie = plan.session_cookie[is_secure]
    if action is not None and action[0] == "set":
        _, sid, remember = action
        response.set_cookie(
            session_cookie,
            sid,
            max_age=cfg.session_ttl if remember else None,
            **common,
        )
        response.headers["Cache-Control"] = "no-store"
    elif action is not None:
        response.delete_cookie(session_cookie, **common)
    if seed is not None:
        response.set_cookie(plan.csrf_cookie[is_secure], seed, **{**common, "httponly": True})
    for name, (value, max_age, samesite) in state.extra_cookies.items():
        attributes = {**common, "httponly": True, "samesite": samesite or common["samesite"]}
        if value is None:
            response.delete_cookie(name, **attributes)
        else:
            response.set_cookie(name, value, max_age=max_age, **attributes)
        response.headers["Cache-Control"] = "no-store"
    if state.session is not None or action is not None:
        add_vary_cookie(response, present)
    return response


def add_vary_cookie(response: Response, present: set[str] | None = None) -> None:
    """``Vary: Cookie`` (the response depends on who is signed in), without parsing the
    response's ``Vary`` header when it has none (``present``: the response's
    :func:`~flask_mdb.headers.header_names`, when the caller has them)."""
    if "vary" in (header_names(response) if present is None else present):
        response.vary.add("Cookie")
    else:
        response.headers.add("Vary", "Cookie")


def upgrade_request_identity(auth: AuthService, user: dict[str, Any]) -> str | None:
    """At a sign-in (:func:`login_user`, which owns it; :mod:`.anonymous` creates the
    identities): upgrade the request's anonymous identity (if any) to ``user``, running
    ``MDB_ANONYMOUS_UPGRADE``; its cookie is cleared. The anonymous id, or None."""
    if auth.anonymous is None:
        return None
    name = anonymous_cookie_name(auth)
    token = request.cookies.get(name)
    if not token:
        return None
    hook = get_state().config["MDB_ANONYMOUS_UPGRADE"]
    carried = auth.upgrade_anonymous(token, user, hook)
    queue_cookie(name, None)
    state = current_state()
    if state is not None:
        state.anonymous = None
    return carried
