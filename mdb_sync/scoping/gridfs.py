"""GridFS for one app: pymongo's ``GridIn``/``GridOut`` on the app's own bucket.

Bucket ``fs`` of app ``my_app`` is ``my_app_fs.files`` / ``my_app_fs.chunks`` (physical
scope). Every file document carries ``app_id`` (stored by ``GridIn`` as an extra field, so
the file is tagged in the same write that creates it) and every lookup filters by it
(logical scope); chunks are only ever reached through a file of this app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gridfs import DEFAULT_CHUNK_SIZE, GridIn, GridOut, NoFile
from gridfs.grid_file import GridOutCursor
from pymongo import ASCENDING, DESCENDING

from ..exceptions import QueryValidationError
from .guards import check_query
from .names import physical_name
from .session import unwrap_session
from .updates import scope_filter

if TYPE_CHECKING:
    from pymongo.database import Database

    from .database import ScopedDatabase

APP_ID = "app_id"


class ScopedGridOutCursor(GridOutCursor):
    """pymongo's ``GridOutCursor`` without the path to the raw files collection."""

    @property
    def collection(self) -> Any:
        raise AttributeError("a scoped GridFS cursor does not expose its collection")

    def where(self, code: Any) -> Any:
        raise QueryValidationError("cursor.where() is not allowed: $where is refused")


class ScopedGridFSBucket:
    """The GridFSBucket API (``upload_from_stream``, ``open_download_stream``, ``find``,
    ``delete``, ``rename``...) over this app's files only."""

    def __init__(
        self,
        db: ScopedDatabase,
        bucket_name: str,
        raw_database: Database[Any],
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
        write_concern: Any = None,
        read_preference: Any = None,
    ) -> None:
        self._db = db
        self._scope = db.write_scope
        self._bucket_name = bucket_name
        root = raw_database[physical_name(self._scope, bucket_name)]
        if write_concern is not None or read_preference is not None:
            root = root.with_options(write_concern=write_concern, read_preference=read_preference)
        self.__root = root
        self._chunk_size = chunk_size_bytes

    def __repr__(self) -> str:
        return f"ScopedGridFSBucket(app={self._scope!r}, bucket={self._bucket_name!r})"

    def _session(self, session: Any) -> Any:
        return unwrap_session(session, self._scope)

    def _file(self, file_id: Any, session: Any) -> dict[str, Any]:
        doc: dict[str, Any] | None = self.__root.files.find_one(
            {"_id": file_id, APP_ID: self._scope}, session=session
        )
        if doc is None:
            raise NoFile(f"no file in bucket {self._bucket_name!r} with _id {file_id!r}")
        return doc

    # --- uploads ------------------------------------------------------------------------------

    def open_upload_stream(
        self,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> GridIn:
        return self._grid_in(None, filename, chunk_size_bytes, metadata, session)

    def open_upload_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> GridIn:
        return self._grid_in(file_id, filename, chunk_size_bytes, metadata, session)

    def _grid_in(
        self, file_id: Any, filename: str, chunk_size: int | None, metadata: Any, session: Any
    ) -> GridIn:
        if not isinstance(filename, str):
            raise TypeError("filename must be an instance of str")
        options: dict[str, Any] = {
            "filename": filename,
            "chunk_size": chunk_size or self._chunk_size,
            APP_ID: self._scope,
        }
        if file_id is not None:
            options["_id"] = file_id
        if metadata is not None:
            options["metadata"] = metadata
        return GridIn(self.__root, session=self._session(session), **options)

    def upload_from_stream(
        self,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> Any:
        with self.open_upload_stream(filename, chunk_size_bytes, metadata, session) as stream:
            stream.write(source)
        return stream._id

    def upload_from_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> None:
        with self.open_upload_stream_with_id(
            file_id, filename, chunk_size_bytes, metadata, session
        ) as stream:
            stream.write(source)

    # --- downloads ----------------------------------------------------------------------------

    def open_download_stream(self, file_id: Any, session: Any = None) -> GridOut:
        raw_session = self._session(session)
        doc = self._file(file_id, raw_session)
        return GridOut(self.__root, file_document=doc, session=raw_session)

    def download_to_stream(self, file_id: Any, destination: Any, session: Any = None) -> None:
        with self.open_download_stream(file_id, session) as grid_out:
            for chunk in grid_out:
                destination.write(chunk)

    def open_download_stream_by_name(
        self, filename: str, revision: int = -1, session: Any = None
    ) -> GridOut:
        """Revision ``-1`` is the newest upload of ``filename``, ``0`` the first, as in pymongo."""
        raw_session = self._session(session)
        order, skip = (DESCENDING, -revision - 1) if revision < 0 else (ASCENDING, revision)
        cursor = (
            self.__root.files.find({"filename": filename, APP_ID: self._scope}, session=raw_session)
            .sort("uploadDate", order)
            .skip(skip)
            .limit(-1)
        )
        for doc in cursor:
            return GridOut(self.__root, file_document=doc, session=raw_session)
        raise NoFile(f"no version {revision} of file {filename!r} in bucket {self._bucket_name!r}")

    def download_to_stream_by_name(
        self, filename: str, destination: Any, revision: int = -1, session: Any = None
    ) -> None:
        with self.open_download_stream_by_name(filename, revision, session) as grid_out:
            for chunk in grid_out:
                destination.write(chunk)

    def find(self, filter: Any = None, *args: Any, **kwargs: Any) -> ScopedGridOutCursor:
        """Files of this app matching ``filter`` (a cursor of ``GridOut``)."""
        if filter:
            check_query(filter, self._db.limits, "filter")
            scoped: dict[str, Any] = scope_filter(filter, self._scope)
        else:
            scoped = {APP_ID: self._scope}
        if "session" in kwargs:
            kwargs["session"] = self._session(kwargs["session"])
        return ScopedGridOutCursor(self.__root, scoped, *args, **kwargs)

    # --- changes ------------------------------------------------------------------------------

    def delete(self, file_id: Any, session: Any = None) -> None:
        raw_session = self._session(session)
        deleted = self.__root.files.delete_one(
            {"_id": file_id, APP_ID: self._scope}, session=raw_session
        ).deleted_count
        if not deleted:
            raise NoFile(f"no file in bucket {self._bucket_name!r} with _id {file_id!r}")
        self.__root.chunks.delete_many({"files_id": file_id}, session=raw_session)

    def delete_by_name(self, filename: str, session: Any = None) -> None:
        raw_session = self._session(session)
        ids = [
            d["_id"]
            for d in self.__root.files.find(
                {"filename": filename, APP_ID: self._scope}, {"_id": 1}, session=raw_session
            )
        ]
        if not ids:
            raise NoFile(f"no file named {filename!r} in bucket {self._bucket_name!r}")
        for file_id in ids:
            self.delete(file_id, session)

    def rename(self, file_id: Any, new_filename: str, session: Any = None) -> None:
        result = self.__root.files.update_one(
            {"_id": file_id, APP_ID: self._scope},
            {"$set": {"filename": new_filename}},
            session=self._session(session),
        )
        if not result.matched_count:
            raise NoFile(f"no file in bucket {self._bucket_name!r} with _id {file_id!r}")
