"""flask_mdb: the Flask extension of mdb-sync (request-bound scoped databases, auth, websockets)."""
