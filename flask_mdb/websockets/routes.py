"""Serving the manifests' websocket endpoints with flask-sock.

Each declared endpoint becomes a flask-sock route (Flask endpoint ``mdb_ws.<slug>.<name>``).
Before the upgrade is accepted, a ``before_request`` hook:

1. binds the endpoint's app (``flask_mdb.db`` in handlers is that app's sandbox) and reads
   the endpoint's current settings from the app's registered manifest, so ``auth``,
   ``ping_interval`` and ``max_message_size`` changes apply to new connections at once;
2. checks ``Origin`` — a browser's page may open a websocket to any site with the user's
   cookies, so only pages of the same host, or origins the app's ``cors`` block allows, may
   connect (a refused handshake is a 403 and is never upgraded). The session cookie is
   trusted only from the same host or from an allowed origin with ``allow_credentials``;
   other allowed origins must authenticate with a token;
3. identifies the client for the endpoint's own app — the auth and user the request's other
   hooks resolved for the app bound before are forgotten first
   (:func:`flask_mdb.identity.reset_identity`): a bearer token (``Authorization`` header,
   the ``bearer, <token>`` subprotocol, or a ``token`` query parameter) checked by the
   app's token verifiers, else the session (``flask_mdb.identity``). A token that does not
   verify is refused rather than downgraded to anonymous.

flask-sock then accepts the connection with the endpoint's own server options (ping interval,
message size limit, the ``bearer`` subprotocol): they reach flask-sock through
``SOCK_SERVER_OPTIONS``, which the extension wraps so each endpoint gets its own. A client
refused by authentication is closed with code 1008 (policy violation) and its reason.

Once registered, the connection's login is re-checked (a revocation between the handshake
and the registration is caught there; a user the app's access policy refuses is closed with
1008 and the policy's reason), then before each message and when the login lapses
(:mod:`.credentials`); revocations arrive as control events (:mod:`.manager`). A socket
whose login ended is closed with 4401 (credentials revoked or lapsed) or 4403 (access
revoked), and none of its messages is handled any more.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import socket
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from mdb_sync.auth import revocation
from mdb_sync.deprecation import renamed_parameters
from mdb_sync.exceptions import (
    AppNotFoundError,
    AuthError,
    ConfigurationError,
    ConnectionLimitExceeded,
)
from mdb_sync.observability import log_context
from mdb_sync.realtime.slots import ConnectionSlots
from mdb_sync.scoping import validate_slug

from .. import binding, hooks
from ..auth_switch import PUBLIC_ATTR
from ..cors import normalize_origin, policy_for
from ..identity import (
    Identity,
    current_identity,
    reset_identity,
    resolved_standing,
    verify_token,
)
from ..request_state import RequestState, WebSocketHandshake, current_state
from ..state import MDBState, current_flask_app, get_state
from .connection import (
    CREDENTIALS_REVOKED,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Connection,
    LockedSocket,
)
from .credentials import Credentials, close_code, lapsed_reason
from .endpoints import Endpoint, endpoints_of
from .errors import MessageError, error_frame
from .handlers import dispatch, registry
from .manager import WebSocketManager

log = logging.getLogger("flask_mdb.websockets")

STATE_KEY = "mdb_websockets"
BEARER_SUBPROTOCOL = "bearer"
#: How often an idle connection's thread checks that its socket is still open: closes made
#: here wake it at once, but simple-websocket can close a connection (a message over the
#: size limit) without waking a waiting receive().
RECEIVE_WAKEUP = 2.0
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")
#: Longest the serving thread waits for another thread's close to finish (Connection.close
#: gives the client 5 s to take its close frame).
CLOSE_WAIT = 10.0
#: Longest a closed connection's client is given to hang up before its socket is closed.
LINGER = 2.0

_STATES: weakref.WeakSet[WebSocketState] = weakref.WeakSet()


class ServerOptions(Mapping[str, Any]):
    """``SOCK_SERVER_OPTIONS`` for flask-sock: the app's own options, and on a manifest
    endpoint that endpoint's options on top (its ``bearer`` subprotocol added to the app's)."""

    def __init__(self, base: Mapping[str, Any] | None) -> None:
        self.base = dict(base or {})

    def _current(self) -> dict[str, Any]:
        options = dict(self.base)
        state = current_state()
        handshake = state.websocket if state is not None else None
        endpoint = handshake.options if handshake is not None else None
        if endpoint:
            subprotocols = options.get("subprotocols") or []
            if isinstance(subprotocols, str):
                subprotocols = [subprotocols]
            options.update(endpoint)
            options["subprotocols"] = [BEARER_SUBPROTOCOL, *subprotocols]
        return options

    def __getitem__(self, key: str) -> Any:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


class WebSocketState:
    """The websocket side of one Flask app: its flask-sock routes and connection managers."""

    def __init__(self, app: Flask, mdb_state: MDBState) -> None:
        self.mdb_state = mdb_state
        self.sock = Sock(app)
        self.queue_size: int = mdb_state.config["MDB_WEBSOCKET_QUEUE_SIZE"]
        self.send_timeout: float = mdb_state.config["MDB_WEBSOCKET_SEND_TIMEOUT"]
        self.recheck_interval: float = mdb_state.config["MDB_WEBSOCKET_RECHECK_INTERVAL"]
        config = mdb_state.config
        self.limits: dict[str, int | None] = {
            "max_connections": config["MDB_WEBSOCKET_MAX_CONNECTIONS"],
            "max_per_user": config["MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER"],
            "max_per_address": config["MDB_WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS"],
            "max_channels_per_connection": config["MDB_WEBSOCKET_MAX_CHANNELS_PER_CONNECTION"],
            "max_channels": config["MDB_WEBSOCKET_MAX_CHANNELS"],
        }
        #: "process" or "cluster": where the connection limits are counted.
        self.limits_scope: str = config["MDB_WEBSOCKET_LIMITS_SCOPE"]
        self.lease_ttl: float = config["MDB_WEBSOCKET_LEASE_TTL"]
        self._slots: ConnectionSlots | None = None
        self._app = weakref.ref(app)
        #: Flask endpoint name -> the endpoint as registered.
        self.routes: dict[str, Endpoint] = {}
        self._paths: dict[str, str] = {}  # path -> Flask endpoint name
        self._managers: dict[str, WebSocketManager] = {}
        self._lock = threading.Lock()
        _STATES.add(self)

    def before_request(self, req_state: RequestState) -> Response | None:
        """Before step: a request to one of the manifest endpoints is checked before the
        upgrade (:func:`_before_websocket`); with none registered, nothing is looked at."""
        if not self.routes:
            return None
        return _before_websocket(req_state, self)

    def add_route(self, app: Flask, endpoint: Endpoint) -> None:
        """Serve ``endpoint`` on ``app`` with flask-sock. The same endpoint again does
        nothing; a path another endpoint serves, or this endpoint at another path, is
        refused (:class:`~mdb_sync.exceptions.ConfigurationError`)."""
        with self._lock:
            existing = self._paths.get(endpoint.path)
            if existing == endpoint.flask_endpoint:
                return
            if existing is not None or endpoint.flask_endpoint in self.routes:
                problem = (
                    f"its path {endpoint.path!r} is already served by {existing}"
                    if existing is not None
                    else "it is already served at another path (restart the app to move it)"
                )
                raise ConfigurationError(
                    f"websocket endpoint {endpoint.name!r} of app {endpoint.app_slug!r}: "
                    + problem,
                    context={"app": endpoint.app_slug, "path": endpoint.path},
                )
            self.sock.route(endpoint.path, endpoint=endpoint.flask_endpoint)(_serve)
            # The endpoint authenticates by its own manifest settings (auth.required,
            # allow_anonymous), not by the app's route policy: keep that guard off the upgrade.
            setattr(app.view_functions[endpoint.flask_endpoint], PUBLIC_ATTR, True)
            self.routes[endpoint.flask_endpoint] = endpoint
            self._paths[endpoint.path] = endpoint.flask_endpoint

    def manager(self, slug: str) -> WebSocketManager:
        manager = self._managers.get(slug)
        if manager is None:
            with self._lock:
                manager = self._managers.get(slug)
                if manager is None:
                    manager = self._managers[slug] = WebSocketManager(
                        slug,
                        self.mdb_state.engine,
                        queue_size=self.queue_size,
                        send_timeout=self.send_timeout,
                        slots=self._cluster_slots(),
                        app_context=functools.partial(self._bound, slug),
                        **self.limits,
                    )
        return manager

    @contextlib.contextmanager
    def _bound(self, slug: str) -> Iterator[None]:
        """The Flask app's context with ``slug`` bound, as in a connection's own thread:
        where channel authorizers run when a role change arrives on the listener's."""
        app = self._app()
        if app is None:
            raise RuntimeError("the Flask app of these websockets is gone")
        with app.app_context():
            state = self.mdb_state
            record = binding.usable_record(state, slug, "websocket")
            token = binding.push_binding(binding.binding_of(state, slug, "websocket", record))
            try:
                yield
            finally:
                binding.pop_binding(token)

    def _cluster_slots(self) -> ConnectionSlots | None:
        """The database-backed connection counts of ``MDB_WEBSOCKET_LIMITS_SCOPE =
        "cluster"`` (one per Flask app and process), else None: the per-process fast path."""
        if self.limits_scope != "cluster":
            return None
        if self._slots is None:
            self._slots = ConnectionSlots(self.mdb_state.engine, self.lease_ttl)
        return self._slots

    def managers(self) -> list[WebSocketManager]:
        with self._lock:
            return list(self._managers.values())

    def close_all(self) -> int:
        closed = sum(manager.close_all() for manager in self.managers())
        if self._slots is not None:
            self._slots.stop()
        return closed

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._slots is not None:
            self._slots.after_fork_in_child()
        for manager in self._managers.values():
            manager.after_fork_in_child()


def get_ws_state(app: Flask | None = None) -> WebSocketState:
    get_state(app)  # raises "did you forget to call init_app?" helpfully
    ws_state: WebSocketState = (app or current_flask_app()).extensions[STATE_KEY]
    return ws_state


# --- setup ----------------------------------------------------------------------------------------


def init_app(app: Flask, state: MDBState) -> WebSocketState:
    """Create the app's websocket state and install the pre-upgrade hook (no I/O)."""
    ws_state = WebSocketState(app, state)
    app.extensions[STATE_KEY] = ws_state
    _wrap_server_options(app)
    hooks.add_before(app, state, ws_state.before_request)
    return ws_state


def _wrap_server_options(app: Flask) -> None:
    options = app.config.get("SOCK_SERVER_OPTIONS")
    if not isinstance(options, ServerOptions):
        app.config["SOCK_SERVER_OPTIONS"] = ServerOptions(options)


def register_routes(app: Flask, manifest: Mapping[str, Any]) -> list[str]:
    """Serve every websocket endpoint ``manifest`` declares; return their paths. Registering
    the same endpoints again does nothing; a path another endpoint serves is refused."""
    ws_state = get_ws_state(app)
    paths = []
    for endpoint in endpoints_of(manifest).values():
        ws_state.add_route(app, endpoint)
        paths.append(endpoint.path)
    return paths


# --- before the upgrade ------------------------------------------------------------------------


def _refuse(status: int, kind: str, message: str) -> Response:
    response = jsonify(error={"status": status, "type": kind, "message": message})
    response.status_code = status
    return response


def _before_websocket(req_state: RequestState, ws_state: WebSocketState) -> Response | None:
    """Bind, check Origin, identify — for manifest endpoints only."""
    name = request.endpoint
    if not name or not name.startswith("mdb_ws."):
        return None
    registered = ws_state.routes[name]
    state = ws_state.mdb_state
    state.ensure_ready()
    slug = registered.app_slug
    record = binding.usable_record(state, slug, "websocket")
    slug_state = state.slug_state(slug, record)
    endpoint = state.per_slug(slug_state, "websockets", lambda s: endpoints_of(s.manifest)).get(
        registered.name
    )
    if endpoint is None or endpoint.path != registered.path:
        return _refuse(404, "NotFound", f"app {slug!r} no longer serves this websocket endpoint")
    bound = binding.binding_of(state, slug, "websocket", record)
    binding.push_binding(bound)  # reset with the request's own context at teardown
    # The request's hooks ran with the app bound before (MDB_APP_SLUG's, say) and may have
    # cached its auth and user: this endpoint authenticates against its own app.
    reset_identity()

    origin = request.headers.get("Origin")
    trusted = _trusted_origin(origin, bound)
    if trusted is None:
        engine = state.engine
        engine.metrics.increment("ws.refused", slug=slug)
        log.warning("websocket to %s refused: origin %r not allowed", request.path, origin)
        return _refuse(
            403, "OriginRefused", f"origin {str(origin)[:200]!r} may not open this websocket"
        )
    # Before the login is read: whether a revocation arrives between that read and the
    # connection's registration tells if the admission must read it again.
    mark = ws_state.manager(slug).control_mark()
    identity, refusal = _identify(slug, cookies=trusted)
    if identity is not None and identity.get("anonymous") and not endpoint.anonymous_ok:
        identity = None  # an anonymous visitor's identity is no sign-in
    if refusal is None and identity is None and not endpoint.anonymous_ok:
        refusal = "authentication required"
    req_state.websocket = WebSocketHandshake(
        endpoint, identity, refusal, mark, endpoint.server_options()
    )
    _wrap_server_options(current_app)  # in case SOCK_SERVER_OPTIONS was replaced after init_app
    for key in _SOCKET_KEYS:
        sock = request.environ.get(key)
        if sock is not None and not isinstance(sock, LockedSocket):
            request.environ[key] = LockedSocket(sock)
    return None


def _trusted_origin(origin: str | None, bound: binding.Binding) -> bool | None:
    """None: refuse. Else whether the session cookie may identify the client."""
    if origin is None:
        return True  # not a browser: no ambient cookies to abuse
    normalized = normalize_origin(origin)
    if normalized is None:
        return None
    scheme = normalized.split("://", 1)[0]
    if normalize_origin(f"{scheme}://{request.host}") == normalized:
        return True  # same host (the scheme may differ behind a TLS-terminating proxy)
    policy = policy_for(bound)
    if policy is None or not policy.allows(origin):
        return None
    return policy.credentials and not policy.any_origin


def bearer_token() -> str | None:
    """The bearer token the handshake carries, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if BEARER_SUBPROTOCOL in offered:
        index = offered.index(BEARER_SUBPROTOCOL)
        if index + 1 < len(offered) and offered[index + 1]:
            return offered[index + 1]
    token = request.args.get("token")
    return token or None


def _identify(slug: str, cookies: bool) -> tuple[Identity | None, str | None]:
    """``(identity, refusal)``: who the client is for app ``slug``, or why it is refused."""
    token = bearer_token()
    if token is not None:
        try:
            identity = verify_token(token, slug)
        except AuthError:  # a verifier that raises rather than answering None
            identity = None
        if identity is None or identity.get("app") not in (None, slug):
            return None, "invalid or expired token"
        return identity, None
    if cookies:
        identity = current_identity()
        if identity is not None and identity.get("app") in (None, slug):
            return identity, None
    return None, None


# --- the connection ----------------------------------------------------------------------------


def _serve(ws: Any, **path_args: Any) -> None:
    """The flask-sock view of every manifest endpoint: runs for the connection's lifetime."""
    req_state = current_state()
    handshake = req_state.websocket if req_state is not None else None
    if req_state is None or handshake is None:
        raise RuntimeError("a websocket view ran without its handshake (before_request) check")
    endpoint, identity, refusal, mark = (
        handshake.endpoint,
        handshake.identity,
        handshake.refusal,
        handshake.mark,
    )
    req_state.websocket = None
    ws_state = get_ws_state()
    engine = ws_state.mdb_state.engine
    slug = endpoint.app_slug
    if refusal is not None:
        engine.metrics.increment("ws.refused", slug=slug)
        ws.close(reason=POLICY_VIOLATION, message=refusal)
        return
    manager = ws_state.manager(slug)
    try:
        connection = manager.connect(
            ws, identity=identity, endpoint=endpoint.name, remote_addr=request.remote_addr
        )
    except ConnectionLimitExceeded:
        return  # closed by the manager with the limit's code and reason
    connection.state["path_args"] = path_args
    if identity is not None:
        connection.credentials = Credentials(
            current_flask_app(),
            connection.identity,
            ws_state.recheck_interval,
        )
    try:
        with log_context(app_id=slug):
            # Registered first, then checked: a revocation after this check reaches the
            # connection as an event, one before it is seen here.
            refusal = _admission(manager, connection, mark)
            if connection.closed:
                return
            if refusal is None:
                refusal = _run_connect_hooks(connection)
            if refusal is not None:
                manager.disconnect(connection, POLICY_VIOLATION, refusal)
                return
            connection.send(
                {
                    "type": "connected",
                    "connection_id": connection.id,
                    "app": slug,
                    "endpoint": endpoint.name,
                    "user_id": connection.user_id,
                }
            )
            while not connection.closed:
                wait = _until_lapse(manager, connection)
                if wait is None:
                    break  # the login lapsed: closed
                data = ws.receive(timeout=wait)
                if connection.closed:
                    break  # revoked meanwhile: its last message is not handled
                if data is None:
                    if not ws.connected:
                        break
                    continue
                engine.metrics.increment("ws.messages_received", slug=slug)
                if _may_act(manager, connection):
                    dispatch(connection, data)
    except ConnectionClosed:
        pass
    finally:
        manager.disconnect(connection)
        connection.wait_closed(CLOSE_WAIT)  # another thread may still be writing its close
        _linger(ws)
        for hook in registry.disconnect_hooks(slug):
            try:
                hook(connection)
            except Exception:
                log.exception("websocket disconnect handler of app %r failed", slug)


def _linger(ws: Any) -> None:
    """Let a client that was still sending read the close frame: the socket is about to be
    closed by the server, and closing a socket with unread input sends a TCP reset, which
    makes the client's system discard what it had not read yet — the close frame, with the
    code saying why. So stop writing (the client sees the end right after the close frame)
    and give the client :data:`LINGER` seconds to hang up, while simple-websocket's reader
    thread reads and discards what it still sends."""
    sock = getattr(ws, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    reader = getattr(ws, "thread", None)
    if reader is not None and reader is not threading.current_thread():
        reader.join(LINGER)


def _admission(manager: WebSocketManager, connection: Connection, mark: Any) -> str | None:
    """Check the just-registered connection's login; the refusal, if any (a login revoked
    since the handshake is closed here with 4401, one the app's policy refuses is refused).

    The handshake read the login one round trip ago. When no revocation event arrived
    since (``mark``), that read stands — a revocation announced from now on reaches the
    registered connection — and only the app's policy is applied to what it read; else
    the login is read again."""
    credentials = connection.credentials
    if credentials is None:
        return None
    try:
        standing = None
        if not manager.controls_since(mark):
            standing = resolved_standing(connection.identity)
        if standing is not None:
            credentials.accept(standing)
        else:
            standing = credentials.check()
    except Exception:
        log.exception("websocket of app %r: could not check its login", connection.app_slug)
        manager.revoke(connection, TRY_AGAIN_LATER, "the login could not be checked, try later")
        return None
    if standing is None or standing.ok:
        return None
    if standing.forbidden:  # refused at connection time, like any other handshake refusal
        return standing.problem
    manager.revoke(connection, CREDENTIALS_REVOKED, standing.problem or revocation.REVOKED)
    return None


def _until_lapse(manager: WebSocketManager, connection: Connection) -> float | None:
    """How long the connection's thread may wait for a message: at most
    :data:`RECEIVE_WAKEUP`, and no later than when its login lapses. None: it lapsed and
    the connection is being closed."""
    credentials = connection.credentials
    if credentials is None:
        return RECEIVE_WAKEUP
    left = credentials.seconds_left()
    if left is None or left > RECEIVE_WAKEUP:
        return RECEIVE_WAKEUP
    if left > 0:
        return max(left, 0.01)
    try:  # lapsed, unless renewed meanwhile (an active session)
        standing = credentials.check()
    except Exception:
        log.warning("could not re-check websocket %s", connection.id[:8], exc_info=True)
        standing = None
    if standing is not None and standing.ok and (credentials.seconds_left() or 1) > 0:
        return _until_lapse(manager, connection)
    if standing is not None and not standing.ok:
        manager.revoke(connection, close_code(standing), standing.problem or revocation.REVOKED)
    else:
        manager.revoke(connection, CREDENTIALS_REVOKED, lapsed_reason(credentials))
    return None


def _may_act(manager: WebSocketManager, connection: Connection) -> bool:
    """Re-check the connection's login before its message is handled (unless a check
    within ``MDB_WEBSOCKET_RECHECK_INTERVAL`` vouches for it). False: the message is not
    handled (the connection is closed, or the check could not be made)."""
    credentials = connection.credentials
    if credentials is None or not credentials.due():
        return True
    roles = connection.identity.get("roles")
    try:
        standing = credentials.check(activity=True)
    except Exception:
        log.warning("could not re-check websocket %s", connection.id[:8], exc_info=True)
        connection.send(
            error_frame("unavailable", "the server could not check your login; try again")
        )
        return False
    if standing is None or standing.ok:
        if connection.identity.get("roles") != roles and connection.channels:
            # Changed without an event reaching this process (yet): its channels are
            # authorized again before the message is handled.
            manager.reauthorize(connection)
        return True
    manager.revoke(connection, close_code(standing), standing.problem or revocation.REVOKED)
    return False


def _run_connect_hooks(connection: Any) -> str | None:
    for hook in registry.connect_hooks(connection.app_slug):
        try:
            if hook(connection) is False:
                return "connection refused"
        except MessageError as exc:
            return exc.message
        except Exception:
            log.exception("websocket connect handler of app %r failed", connection.app_slug)
            return "connection refused: server error"
    return None


# --- public helpers -----------------------------------------------------------------------------


@renamed_parameters(app_slug="slug")
def get_websocket_manager(slug: str, app: Flask | None = None) -> WebSocketManager:
    """The connection manager of ``slug`` in this process, for the current Flask app (or
    ``app``): its live connections, ``broadcast``, ``send_to_user``..."""
    ws_state = get_ws_state(app)
    ws_state.mdb_state.ensure_ready()
    validate_slug(slug)
    return ws_state.manager(slug)


def manifest_for(state: MDBState, slug: str) -> dict[str, Any]:
    """The manifest of ``slug``: a configured file's, else the registered one."""
    for manifest in state.manifests:
        if manifest["slug"] == slug:
            return manifest
    registered = state.ensure_ready().get_app(slug)
    if registered is None:
        raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
    return registered


def close_all(app: Flask | None = None) -> int:
    """Close every websocket of ``app`` (code 1001); return how many there were."""
    ws_state = (app or current_app).extensions.get(STATE_KEY)
    return ws_state.close_all() if ws_state is not None else 0


def _close_everything() -> None:
    for ws_state in list(_STATES):
        with contextlib.suppress(Exception):  # interpreter exit: best effort
            ws_state.close_all()


def _after_fork_in_child() -> None:
    for ws_state in list(_STATES):
        ws_state.after_fork_in_child()


atexit.register(_close_everything)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
