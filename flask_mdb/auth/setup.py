"""Installing auth on a Flask app: Flask-Login, request hooks, identity seam, blueprint.

:func:`init_auth` is the extension's ``_init_auth`` step (``MDB_AUTH``: on by default when a
configured manifest has an ``auth`` or ``token_management`` block);
:func:`setup_auth_from_manifest` does the same for an app set up by hand. Per request, the
hooks act on the *bound* app's manifest, so one Flask process can serve apps with
different auth (or none).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Request, Response, current_app
from flask_login import LoginManager, user_logged_in, user_logged_out

from mdb_sync import MongoDBEngine
from mdb_sync.auth import AuthConfig, AuthService, resolve_keyset, revocation
from mdb_sync.auth.config import route_matches
from mdb_sync.auth.extras import require_casbin_extra
from mdb_sync.auth.platform import check_manifests
from mdb_sync.auth.revocation import Standing
from mdb_sync.exceptions import ConfigurationError, TokenError

from .. import hooks
from ..auth_switch import PUBLIC_ATTR
from ..binding import OPS_BLUEPRINT, current_binding
from ..headers import add_missing, header_names, no_store
from ..identity import (
    note_resolved,
    register_identity_checker,
    register_identity_reset,
    register_identity_resolver,
    register_token_verifier,
)
from ..links import require_external_base
from ..request_state import RequestState, current_request
from ..state import MDBState, get_state
from . import current
from .anonymous import anonymous_identity
from .decorators import (
    CSRF_EXEMPT_ATTR,
    forbidden,
    hit_limit,
    https_refusal,
    unauthorized,
)
from .oauth_support import check_oauth_startup
from .responses import refusal
from .urls import AUTH_BLUEPRINT, auth_url
from .user import AnonymousUser, AuthUser
from .views import make_blueprint

log = logging.getLogger("flask_mdb.auth")


def check_startup(app: Flask, state: MDBState, manifests: list[dict[str, Any]]) -> None:
    """Refuse to start with a manifest whose auth cannot work: tokens without a (long
    enough) secret or key, password reset with no way to deliver the link or no configured
    public address to build it from (``MDB_EXTERNAL_URL``: never the request's Host),
    OAuth providers without the ``oauth`` extra installed, without that address or without
    their client secret's environment variable, casbin authorization without pycasbin (unless
    ``MDB_AUTH_PROVIDER`` replaces it), CSRF-protected users without a Flask SECRET_KEY."""
    config = state.config
    check_manifests(manifests)  # shared apps among them agree on their hub
    for manifest in manifests:
        cfg = AuthConfig.from_manifest(manifest)
        if config["MDB_AUTH_PROVIDER"] is None:
            require_casbin_extra(cfg)
        if cfg.tokens_enabled:
            resolve_keyset(
                cfg.slug,
                cfg.algorithm,
                secret=config["MDB_JWT_SECRET"],
                secret_fallbacks=config["MDB_JWT_SECRET_FALLBACKS"],
                secret_env=cfg.secret_env,
                private_key=config["MDB_JWT_PRIVATE_KEY"],
                public_keys=config["MDB_JWT_PUBLIC_KEYS"],
                key_id=config["MDB_JWT_KEY_ID"],
                secret_option="MDB_JWT_SECRET",
            )
        if (
            cfg.users_enabled
            and cfg.password_reset_ttl is not None
            and config["MDB_AUTH_ROUTES"]
            and config["MDB_PASSWORD_RESET_SENDER"] is None
        ):
            raise ConfigurationError(
                f"app {cfg.slug!r} enables auth.users.password_reset but "
                "MDB_PASSWORD_RESET_SENDER is not set: a callable (user, url) that delivers "
                "the link to the user's email",
                context={"option": "MDB_PASSWORD_RESET_SENDER", "app": cfg.slug},
            )
        if cfg.users_enabled and cfg.password_reset_ttl is not None and config["MDB_AUTH_ROUTES"]:
            require_external_base(cfg.slug, app, needed_by="password-reset links")
        if cfg.oauth is not None and config["MDB_AUTH_ROUTES"]:
            check_oauth_startup(app, cfg)  # the oauth extra, a public address, the secrets
        if cfg.verification is not None and config["MDB_AUTH_ROUTES"]:
            for key in ("MDB_EMAIL_VERIFICATION_SENDER", "MDB_EMAIL_CHANGE_NOTICE_SENDER"):
                if config[key] is None:
                    raise ConfigurationError(
                        f"app {cfg.slug!r} enables auth.users.require_verification but {key} "
                        "is not set: a callable that delivers the mail (see the README)",
                        context={"option": key, "app": cfg.slug},
                    )
            require_external_base(cfg.slug, app, needed_by="e-mail verification links")
        if cfg.hub_slug is not None and config["MDB_AUTH_ROUTES"]:
            require_external_base(cfg.slug, app, needed_by="platform sign-on callback URLs")
        if (
            cfg.two_factor is not None
            and not config["MDB_TWO_FACTOR_KEY"]
            and not app.config.get("SECRET_KEY")
        ):
            raise ConfigurationError(
                f"app {cfg.slug!r} enables auth.users.two_factor: its TOTP secrets are "
                "encrypted with MDB_TWO_FACTOR_KEY (or the Flask SECRET_KEY): set one",
                context={"option": "MDB_TWO_FACTOR_KEY", "app": cfg.slug},
            )
        if cfg.users_enabled and cfg.csrf_enabled and not app.config.get("SECRET_KEY"):
            raise ConfigurationError(
                f"app {cfg.slug!r} has users (auth.users) but the Flask SECRET_KEY is not set: "
                "CSRF tokens are signed with it (set app.config['SECRET_KEY'])",
                context={"option": "SECRET_KEY", "app": cfg.slug},
            )


def init_auth(app: Flask, state: MDBState) -> None:
    """The extension's auth step: install everything once per Flask app."""
    if state.auth_installed:
        return
    check_startup(app, state, state.manifests)
    manager = getattr(app, "login_manager", None)
    if manager is None:
        manager = LoginManager()
        manager.init_app(app)
        manager.session_protection = None  # sessions are server-side and rotated at login
        manager.anonymous_user = AnonymousUser
        manager.user_loader(current.load_user_by_id)
        manager.request_loader(current.load_user_from_request)
        manager.unauthorized_handler(unauthorized)
    elif manager.request_callback is None:
        manager.request_loader(current.load_user_from_request)
    else:
        log.warning(
            "the Flask app already has a Flask-Login request loader: mdb-sync sessions and "
            "bearer tokens are resolved only where it returns None"
        )
        theirs = manager.request_callback
        manager.request_loader(lambda req: theirs(req) or current.load_user_from_request(req))
    # A flask_login.login_user gets a server-side session; flask_login.logout_user ends it.
    user_logged_in.connect(current.flask_login_signed_in, app)
    user_logged_out.connect(current.flask_login_signed_out, app)
    current.offer_auth_defaults(state, app)
    hooks.add_before(app, state, guard)
    hooks.add_after(app, state, finish)
    register_identity_resolver(app, _session_identity)
    register_identity_resolver(app, _bearer_identity)
    register_identity_resolver(app, anonymous_identity)  # after any signed-in identity
    register_token_verifier(app, _verify_token)
    register_identity_checker(app, _check_identity)
    register_identity_reset(app, current.forget_request_user)
    app.jinja_env.globals.setdefault("csrf_token", current.csrf_token)
    app.jinja_env.globals.setdefault("auth_url", auth_url)
    if state.config["MDB_AUTH_ROUTES"]:
        app.register_blueprint(make_blueprint(state.config["MDB_AUTH_URL_PREFIX"]))
    state.auth_installed = True


def setup_auth_from_manifest(
    app: Flask, engine: MongoDBEngine | None = None, slug: str | None = None
) -> None:
    """Install auth on ``app`` (the seeds' entry point). An app without the MDB extension
    gets one, on ``engine``, serving ``slug``; with ``slug``, that app's auth is checked
    now (secrets, keys, model file) so a mistake stops the app at startup."""
    from ..extension import MDB

    if "mdb" not in app.extensions:
        if engine is None:
            raise ConfigurationError(
                "setup_auth_from_manifest: the app has no MDB extension; pass engine="
            )
        if slug is not None:
            app.config.setdefault("MDB_APP_SLUG", slug)
        MDB(engine=engine).init_app(app)
    state = get_state(app)
    if engine is not None and engine is not state.engine:
        raise ConfigurationError("setup_auth_from_manifest: engine= is not the app's engine")
    init_auth(app, state)
    if slug is not None:
        engine = state.ensure_ready()
        manifest = engine.get_app(slug)
        if manifest is None:
            raise ConfigurationError(f"setup_auth_from_manifest: app {slug!r} is not registered")
        check_startup(app, state, [manifest])
        with app.app_context():
            record = engine.registration.require_usable(slug)
            slug_state = state.slug_state(slug, record)
            state.per_slug(slug_state, "auth", lambda ss: current.build_plan(state, ss))


# --- per request ---------------------------------------------------------------------------------


def _is_public(auth: AuthService, view: Any, req: Request) -> bool:
    if view is None or getattr(view, PUBLIC_ATTR, False):
        return True
    endpoint = req.endpoint
    if endpoint == "static" or (endpoint or "").endswith(".static"):
        return True
    rule = req.url_rule.rule if req.url_rule is not None else ""
    return route_matches(req.path, auth.config.public_routes) or route_matches(
        rule, auth.config.public_routes
    )


def _view(req: Request) -> Any:
    """The view function ``req`` is routed to (None: no route matched)."""
    return current_app.view_functions.get(req.endpoint or "")


def guard(req_state: RequestState) -> None:
    """Before step: HTTPS, CSRF, route rate limits and route protection for the bound app,
    in that order. What the app's settings leave off costs nothing (see :mod:`.plan`)."""
    req = current_request()
    if current_binding() is None or req.blueprint == OPS_BLUEPRINT:
        return None
    plan = current.current_plan(req_state)
    if plan is None:
        return None
    auth = plan.auth
    cfg = auth.config
    if cfg.require_https and not req.is_secure:
        https_refusal()
    method = req.method
    if method == "OPTIONS":
        return None
    unsafe = method not in current.SAFE_METHODS
    if (
        unsafe
        and plan.csrf
        and "Authorization" not in req.headers
        and current.plan_cookie_identity(plan)
        and not getattr(_view(req), CSRF_EXEMPT_ATTR, False)
        and not route_matches(req.path, cfg.csrf_exempt_routes)
    ):
        problem = current.plan_csrf_problem(plan)
        if problem is not None:
            raise refusal(*problem)
    if plan.route_limits:
        rule = req.url_rule.rule if req.url_rule is not None else None
        path = req.path
        for pattern, limit in plan.route_limits:
            if route_matches(path, (pattern,)) or (rule and route_matches(rule, (pattern,))):
                refused = hit_limit(f"route:{pattern}", limit.max_attempts, limit.window_seconds)
                if refused is not None:
                    raise refused
    if plan.unverified_read_only and unsafe and req.blueprint != AUTH_BLUEPRINT:
        user = current.get_current_user()
        if user is not None and auth.read_only(user.data):
            raise refusal(
                403,
                "confirm your e-mail address first: until then this account can only read",
                reason="unverified",
            )
    if not cfg.policy_present or _is_public(auth, _view(req), req):
        return None
    user = current.get_current_user()
    if user is None:
        if cfg.protects_routes:
            unauthorized(req_state.token_error or "authentication required")
        return None
    denied = auth.access_problem(user.data)
    if denied:
        forbidden(denied)
    return None


def finish(response: Response, req_state: RequestState | None) -> Response:
    """After step, on every response of the Flask app: the bound app's cookies;
    ``Cache-Control: no-store`` on the auth routes and on any page carrying a CSRF token;
    the security headers on every response of a bound app with auth — its views, its 404s
    and errors — and of requests no app is bound for (unknown apps, health, metrics), with
    HSTS as the bound app's manifest says."""
    req = current_request()
    present = header_names(response)  # before the cookies: they add no security header
    plan = req_state.auth_plan if req_state is not None else None
    if plan is not None:
        current.write_cookies(response, req_state, present)
    private = req.blueprint == AUTH_BLUEPRINT or (req_state is not None and req_state.csrf_issued)
    if private and "no-store" not in (response.headers.get("Cache-Control") or ""):
        no_store(response)
    # Apps without auth served by the same Flask app are left alone; responses no app was
    # bound for (an unknown app, a path outside every bound blueprint, health) are not.
    if plan is not None:
        headers = plan.headers
    elif current_binding() is None:
        headers = get_state().unbound_headers
    else:
        return response
    if headers is not None:
        add_missing(response, headers.for_request(req.is_secure), present)
    return response


# --- the identity seam ---------------------------------------------------------------------------


def _identity(via: str) -> dict[str, Any] | None:
    user = current.get_current_user()
    if user is None or user.via != via:
        return None
    identity = user.identity()
    auth = current.current_service()
    if auth is not None:
        note_resolved(identity, lambda: _standing_as_read(auth, user, identity))
    return identity


def _standing_as_read(auth: Any, user: AuthUser, identity: dict[str, Any]) -> Standing:
    """The standing of ``identity`` as this request read it (its session or token with its
    user, one round trip ago): the app's access policy on that user, no second read."""
    expires, roles = revocation.expires_at(identity), tuple(user.roles)
    problem = auth.access_problem(user.data) if auth.config.policy_present else None
    return Standing(problem, forbidden=problem is not None, expires_at=expires, roles=roles)


def _session_identity() -> dict[str, Any] | None:
    return _identity("session")


def _bearer_identity() -> dict[str, Any] | None:
    return _identity("token")


def _verify_token(token: str, app_slug: str) -> dict[str, Any] | None:
    try:
        auth = current.service_for_slug(app_slug)
        if auth is None or auth.tokens is None:
            return None
        user, claims = auth.user_from_token(token)
    except (TokenError, ConfigurationError):
        return None
    loaded = AuthUser(user, "token", claims=claims)
    identity = {**loaded.identity(), "app": app_slug}
    note_resolved(identity, lambda: _standing_as_read(auth, loaded, identity))
    return identity


def _check_identity(identity: dict[str, Any], activity: bool) -> Standing | None:
    """The identity checker: re-check an identity this app's auth issued (a session's or a
    token's) against the database, by the app's current manifest."""
    if identity.get("via") not in ("session", "token", "anonymous") or not (
        "session" in identity or "token" in identity
    ):
        return None
    slug = identity.get("app")
    auth = current.service_for_slug(slug) if isinstance(slug, str) else None
    if auth is None:
        return Standing(revocation.REVOKED)  # the app (or its auth) is gone
    return revocation.recheck(auth, identity, activity=activity)
