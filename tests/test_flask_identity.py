"""The identity seam: resolvers and token verifiers registered per Flask app."""

from __future__ import annotations

from flask import Flask, request

from flask_mdb.identity import (
    current_identity,
    register_identity_resolver,
    register_token_verifier,
    verify_token,
)


def test_first_resolver_that_knows_the_caller_wins():
    app = Flask("ident")
    register_identity_resolver(app, lambda: None)
    register_identity_resolver(
        app,
        lambda: (
            {"user_id": request.headers["X-User"], "app": "a"}
            if "X-User" in request.headers
            else None
        ),
    )
    register_identity_resolver(app, lambda: {"user_id": "fallback", "app": "a"})
    with app.test_request_context(headers={"X-User": "u1"}):
        assert current_identity() == {"user_id": "u1", "app": "a"}
    with app.test_request_context():
        assert current_identity()["user_id"] == "fallback"
    other = Flask("other")
    with other.test_request_context():
        assert current_identity() is None, "resolvers belong to their Flask app"


def test_token_verifiers_are_asked_with_the_app_slug():
    app = Flask("tokens")
    register_token_verifier(
        app,
        lambda token, slug: (
            {"user_id": "u", "app": slug} if token == "good" and slug == "a" else None
        ),
    )
    with app.app_context():
        assert verify_token("good", "a") == {"user_id": "u", "app": "a"}
        assert verify_token("good", "b") is None
        assert verify_token("bad", "a") is None
