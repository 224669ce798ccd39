"""The extension's request hooks: one ``before_request`` and one ``after_request``.

Flask pays for every hook it runs (a coroutine check and a call through ``ensure_sync``),
and each part of the extension — binding, CORS, auth, websockets — would look the request's
state up again. So ``init_app`` registers one hook of each kind, which binds the request
(:func:`flask_mdb.binding.bind_request`) and then runs the *steps* the parts added to the
app's :class:`~flask_mdb.state.Hooks` (``MDBState.hooks``), handing each the request's state.

Steps run in the order they were added, like separate ``before_request`` hooks would; after
steps run last-added first, like ``after_request`` hooks. A before step returning a value
ends the request with it (the following steps and the view do not run). A step added after
``init_app`` returned (auth installed later by ``setup_auth_from_manifest``) becomes a hook of
its own, so it still runs after the hooks the app registered in between, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import binding
from .request_state import RequestState, current_state, ensure_state
from .state import get_state

if TYPE_CHECKING:
    from flask import Flask, Response

    from .state import MDBState

#: A before step: a response (or anything a view may return) to answer with, or None.
BeforeStep = Callable[[RequestState], Any]
#: An after step: gets the response and the request's state (None when the extension's
#: ``before_request`` did not run for the request: another hook answered first).
AfterStep = Callable[["Response", RequestState | None], "Response"]


def install(app: Flask) -> None:
    """Register the extension's hooks on ``app`` (first thing ``init_app`` does)."""
    app.before_request(before_request)
    app.after_request(after_request)
    app.teardown_request(binding.unbind_request)


def add_before(app: Flask, state: MDBState, step: BeforeStep) -> None:
    """Run ``step`` before each request of ``app``, after the steps added before it."""
    if not state.hooks.sealed:
        state.hooks.before.append(step)
        return

    def hook() -> Any:
        return step(ensure_state())

    app.before_request(hook)


def add_after(app: Flask, state: MDBState, step: AfterStep) -> None:
    """Run ``step`` on each response of ``app``, before the after steps added before it."""
    if not state.hooks.sealed:
        state.hooks.after.insert(0, step)
        return

    def hook(response: Response) -> Response:
        return step(response, current_state())

    app.after_request(hook)


def before_request() -> Any:
    """``before_request``: bind the request, then run the before steps."""
    state = get_state()
    req_state = binding.bind_request(state)
    for step in state.hooks.before:
        answer = step(req_state)
        if answer is not None:
            return answer
    return None


def after_request(response: Response) -> Response:
    """``after_request``: run the after steps."""
    req_state = current_state()
    for step in get_state().hooks.after:
        response = step(response, req_state)
    return response
