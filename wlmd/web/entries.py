"""Worklist entry management over HTTP: list, create, read, replace and delete ``.wl`` files.

wlmd's own API (PS3.18 defines none for creating MWL entries), in the spirit of Orthanc's
``/worklists`` and dcm4chee's ``/mwlitems``: entries are DICOM JSON, validated exactly as
``wlmctl add`` validates them (422 with the findings), and written only through the
crash-safe writer. POSIX record locks do not exclude threads of one process, so the writes of
this process also take one in-process lock before the writer takes the directory's.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wlmd.web.payloads import DICOM_JSON, problem
from wlmd.worklist.entries import EntryRefused, PreparedEntry, prepare_entry, refuse_duplicates
from wlmd.worklist.store import is_safe_ae, is_worklist_name
from wlmd.worklist.writer import (
    EntryExists,
    NoSuchEntry,
    WorklistWriter,
    WriterError,
    is_entry_name,
)

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


class EntryApi:
    """The handlers of ``/aets/{ae}/entries[/{name}]`` over one worklist directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writer = WorklistWriter(root)
        self._lock = threading.Lock()

    async def listing(self, request: Request) -> Response:
        directory = self._directory(request)
        if directory is None:
            return problem(404, "no such AE title")
        names = sorted(p.name for p in directory.iterdir() if is_worklist_name(p.name))
        return JSONResponse([{"name": name, "href": f"{request.url.path}/{name}"}
                             for name in names])

    async def read(self, request: Request) -> Response:
        path = self._entry_path(request)
        if path is None or not path.is_file():
            return problem(404, "no such entry")
        try:
            dataset = dcmread(path, force=True)
        except (InvalidDicomError, OSError, ValueError) as error:
            return problem(500, f"entry cannot be read: {type(error).__name__}")
        del dataset.file_meta  # the worklist attributes only
        return Response(json.dumps(dataset.to_json_dict()).encode(), media_type=DICOM_JSON)

    async def create(self, request: Request) -> Response:
        return await self._store(request, request.path_params["ae"], None, replace=False)

    async def replace(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not _usable_name(name):
            return problem(404, "not a worklist file name")
        return await self._store(request, request.path_params["ae"], name, replace=True)

    async def delete(self, request: Request) -> Response:
        path = self._entry_path(request)
        if path is None:
            return problem(404, "no such entry")
        try:
            await run_in_threadpool(self._locked, self.writer.remove, path.parent.name,
                                    path.name)
        except NoSuchEntry:
            return problem(404, "no such entry")
        except WriterError as error:
            return problem(503, str(error))
        return Response(status_code=204)

    async def _store(self, request: Request, ae: str, name: str | None, *,
                     replace: bool) -> Response:
        if self._directory(request) is None:
            return problem(404, "no such AE title")
        try:
            dataset = Dataset.from_json(json.loads(await request.body()))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return problem(400, f"not a DICOM JSON object: {type(error).__name__}")
        try:
            entry = prepare_entry(dataset, name)
        except EntryRefused as refusal:
            return JSONResponse({"error": "entry refused", "findings": refusal.problems},
                                status_code=422)
        existed = (self.root / ae / entry.name).exists()
        try:
            await run_in_threadpool(self._locked, self._write, ae, entry, replace)
        except EntryRefused as refusal:
            return JSONResponse({"error": "entry refused", "findings": refusal.problems},
                                status_code=422)
        except EntryExists:
            return problem(409, f"{entry.name} exists; PUT it to replace it")
        except WriterError as error:
            return problem(503, str(error))
        location = f"/aets/{ae}/entries/{entry.name}"
        body = {"name": entry.name, "href": location, "filled": entry.filled,
                "warnings": [f"{p.attribute}: {p.reason}" for p in entry.warnings]}
        status = 200 if existed and replace else 201
        return JSONResponse(body, status_code=status, headers={"Location": location})

    def _write(self, ae: str, entry: PreparedEntry, replace: bool) -> None:
        refuse_duplicates(self.root / ae, [entry])
        self.writer.write(ae, entry.name, entry.data, replace=replace)

    def _locked(self, action: Callable[..., T], *args: object) -> T:
        with self._lock:
            return action(*args)

    def _directory(self, request: Request) -> Path | None:
        ae = request.path_params["ae"]
        directory = self.root / ae
        return directory if is_safe_ae(ae) and directory.is_dir() else None

    def _entry_path(self, request: Request) -> Path | None:
        directory = self._directory(request)
        name = request.path_params["name"]
        return directory / name if directory is not None and _usable_name(name) else None


def _usable_name(name: str) -> bool:
    return is_entry_name(name)

