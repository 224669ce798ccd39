"""GridFS files in views: Flask-PyMongo's ``send_file`` and ``save_file``, on the app's bucket.

::

    @app.post("/uploads")
    def upload():
        f = request.files["file"]
        return {"id": str(save_file(f.filename, f))}, 201

    @app.get("/uploads/<path:filename>")
    def download(filename):
        return send_file(filename)

Both use the bound app's GridFS bucket (``<slug>_fs.files`` / ``.chunks``, see
:meth:`~mdb_sync.scoping.ScopedDatabase.gridfs`), so a file of another app is a 404 like a
missing one. ``send_file`` streams the file in chunks (constant memory, any size) and answers
conditional requests (``If-None-Match``, ``If-Modified-Since`` -> 304) and ranges (``Range`` ->
206, or 416) through Werkzeug. Unlike Flask-PyMongo it does not read the whole file to hash
it: a GridFS file never changes once written, so its ETag is derived from its ``_id``, length
and upload date.

Uploaded files are the users' content: a file named ``x.html`` is served as ``text/html``
from your origin. Responses carry ``X-Content-Type-Options: nosniff``; serve untrusted
uploads with ``as_attachment=True`` (or from another origin).
"""

from __future__ import annotations

import hashlib
import mimetypes
import unicodedata
from typing import Any
from urllib.parse import quote

from flask import Response, abort, current_app, request
from gridfs import NoFile
from werkzeug.wsgi import FileWrapper

from mdb_sync.scoping import ScopedDatabase

from .binding import get_current_db

#: Bytes read from GridFS per piece of the response (GridFS's default chunk is 255 KiB).
BUFFER_SIZE = 255 * 1024


def _database(db: ScopedDatabase | None) -> ScopedDatabase:
    if db is None:
        return get_current_db()
    if not isinstance(db, ScopedDatabase):
        raise TypeError(f"db must be a scoped database, not {type(db).__name__}")
    return db


def save_file(
    filename: str,
    fileobj: Any,
    base: str = "fs",
    content_type: str | None = None,
    *,
    db: ScopedDatabase | None = None,
    **kwargs: Any,
) -> Any:
    """Store ``fileobj`` (anything with ``read()``, e.g. ``request.files["f"]``) as
    ``filename`` in the bucket ``base`` of the bound app (or ``db``); return its ``_id``.

    ``content_type`` defaults to the one ``filename``'s extension implies. It is kept in the
    file's ``metadata`` (``contentType``), with any other keyword arguments, where
    :func:`send_file` finds it. Saving a name again adds a new version.
    """
    if not isinstance(filename, str) or not filename:
        raise TypeError("'filename' must be a non-empty string")
    if not isinstance(base, str):
        raise TypeError("'base' must be a string")
    if not (hasattr(fileobj, "read") and callable(fileobj.read)):
        raise TypeError("'fileobj' must have a read() method")
    if content_type is None:
        content_type, _ = mimetypes.guess_type(filename)
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata.update(kwargs)
    if content_type:
        metadata["contentType"] = content_type
    bucket = _database(db).gridfs(base)
    return bucket.upload_from_stream(filename, fileobj, metadata=metadata or None)


def send_file(
    filename: str,
    base: str = "fs",
    version: int = -1,
    cache_for: int = 31536000,
    *,
    as_attachment: bool = False,
    db: ScopedDatabase | None = None,
) -> Response:
    """A response streaming the file ``filename`` of the bucket ``base`` of the bound app (or
    ``db``), or 404. ``version``: -1 the newest upload of that name, 0 the first, as in
    GridFS. ``cache_for``: seconds clients may cache it (``public`` unless the request
    carries a cookie or credentials: then ``private``). ``as_attachment``: a download
    (``Content-Disposition: attachment``) rather than a page."""
    if not isinstance(filename, str):
        raise TypeError("'filename' must be a string")
    if not isinstance(base, str):
        raise TypeError("'base' must be a string")
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError("'version' must be an integer")
    if isinstance(cache_for, bool) or not isinstance(cache_for, int) or cache_for < 0:
        raise TypeError("'cache_for' must be a whole number of seconds")
    bucket = _database(db).gridfs(base)
    try:
        grid_out = bucket.open_download_stream_by_name(filename, revision=version)
    except NoFile:
        abort(404)
    metadata = grid_out.metadata or {}
    mimetype = metadata.get("contentType") or "application/octet-stream"
    response = current_app.response_class(
        FileWrapper(grid_out, BUFFER_SIZE), mimetype=mimetype, direct_passthrough=True
    )
    response.content_length = grid_out.length
    response.last_modified = grid_out.upload_date
    identity = f"{grid_out._id!r}:{grid_out.length}:{grid_out.upload_date.isoformat()}"
    response.set_etag(hashlib.sha256(identity.encode()).hexdigest()[:40])
    response.headers["X-Content-Type-Options"] = "nosniff"
    if as_attachment:
        response.headers.set("Content-Disposition", "attachment", **_download_name(filename))
    response.cache_control.max_age = cache_for
    if request.cookies or request.authorization:
        response.cache_control.private = True
    else:
        response.cache_control.public = True
    response.make_conditional(request, accept_ranges=True, complete_length=grid_out.length)
    return response


def _download_name(filename: str) -> dict[str, str]:
    """``Content-Disposition`` parameters for ``filename``'s last path segment (RFC 6266:
    an ASCII fallback and the UTF-8 name)."""
    name = filename.rsplit("/", 1)[-1] or "download"
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
        return {"filename": simple or "download", "filename*": f"UTF-8''{quote(name, safe='')}"}
    return {"filename": name}
