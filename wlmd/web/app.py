"""The HTTP application: DICOMweb worklist search (PS3.18 chapter 14) and health probes.

One Starlette application per HTTP child process. A search runs the C-FIND pipeline of the
workers (``WorklistService.find``) on the same store, so both protocols answer alike.
Queries are answered inline in the event loop: they take milliseconds, and the store is not
shared between threads.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from wlmd.config.settings import CharsetMode, Settings
from wlmd.mpps.service import MppsService
from wlmd.policy.model import NameMatching, Pattern, PeerPolicy, PolicySet
from wlmd.web.entries import EntryApi
from wlmd.web.guard import Guard, GuardSettings
from wlmd.web.metrics import exposition
from wlmd.web.mpps import MppsApi
from wlmd.web.payloads import NotAcceptable, choose_media_type, problem, render
from wlmd.web.search import (
    FUZZY_CALLING_AE,
    HTTP_CALLING_AE,
    BadSearch,
    parse_search,
    run_search,
)
from wlmd.web.status import render_status
from wlmd.worklist.service import WorklistService
from wlmd.worklist.store import WorklistStore

LOGGER = logging.getLogger(__name__)
OPENAPI = resources.files("wlmd.web").joinpath("openapi.json").read_bytes()
SERVICE_NAME = "wlmd"


@dataclass
class WebContext:
    """What the routes need: the worklist application, readiness and the metrics files."""

    service: WorklistService
    data_path: Path
    ready: Callable[[], tuple[bool, str]]
    metrics_directory: Path | None = None
    problems: Callable[[], list[str]] = list  # what lint finds, for the status page
    mpps: MppsService | None = None  # the workers' MPPS service, when --mpps is on


def web_service(settings: Settings, store: WorklistStore | None = None) -> WorklistService:
    """The C-FIND application as HTTP uses it: the same store and matching, no request files
    or test sleeps, and text kept in the file's own character set (``-csk``) so that it can be
    decoded into DICOM JSON's Unicode whatever ``-cs0/-cs1`` say for the DICOM port.

    ``fuzzymatching=true`` is the per-peer policy's case- and accent-insensitive name matching
    (``wlmd.policy.names``), applied to searches made under the reserved calling AE title
    ``FUZZY_CALLING_AE``; the site's own policies follow it."""
    fuzzy = PeerPolicy("fuzzymatching", calling_ae=Pattern(FUZZY_CALLING_AE),
                       name_matching=NameMatching.FOLD)
    site = settings.policy.policies if settings.policy else ()
    web_settings = dataclasses.replace(settings, return_charset=CharsetMode.KEEP,
                                       request_file_path=None, sleep_before=0,
                                       policy=PolicySet((fuzzy, *site)))
    return WorklistService(web_settings, store)


def create_app(context: WebContext, guard: GuardSettings) -> Guard:
    """The ASGI application served by the HTTP child (and by tests), behind its front door."""

    async def status(request: Request) -> Response:
        try:
            day = datetime.date.fromisoformat(request.query_params.get("date", "")) \
                if "date" in request.query_params else datetime.date.today()
        except ValueError:
            return problem(400, "date must be YYYY-MM-DD")
        return HTMLResponse(render_status(context.service, context.data_path,
                                          context.metrics_directory, context.problems(), day))

    async def search(request: Request) -> Response:
        return search_steps(context, request)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ready, why = context.ready()
        return PlainTextResponse(f"{why}\n", status_code=200 if ready else 503)

    async def openapi(request: Request) -> Response:
        return Response(OPENAPI, media_type="application/json")

    async def metrics(request: Request) -> Response:
        if context.metrics_directory is None:
            return problem(404, "metrics are collected in fork mode only")
        return Response(exposition(context.metrics_directory), media_type=CONTENT_TYPE_LATEST)

    entries = EntryApi(context.data_path)
    steps = MppsApi(context.mpps, context.service.knows_called_ae)
    routes = [
        Route("/aets/{ae}/rs/modality-performed-procedure-steps/{uid}", steps.create_or_update,
              methods=["POST"]),
        Route("/aets/{ae}/rs/modality-performed-procedure-steps/{uid}", steps.retrieve,
              methods=["GET"]),
        Route("/aets/{ae}/entries", entries.listing, methods=["GET"]),
        Route("/aets/{ae}/entries", entries.create, methods=["POST"]),
        Route("/aets/{ae}/entries/{name}", entries.read, methods=["GET"]),
        Route("/aets/{ae}/entries/{name}", entries.replace, methods=["PUT"]),
        Route("/aets/{ae}/entries/{name}", entries.delete, methods=["DELETE"]),
        Route("/", status, methods=["GET"]),
        Route("/aets/{ae}/rs/modality-scheduled-procedure-steps", search, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), guard)


def search_steps(context: WebContext, request: Request) -> Response:
    """``GET /aets/{AE}/rs/modality-scheduled-procedure-steps``: the MWL C-FIND over HTTP."""
    ae = request.path_params["ae"]
    if not context.service.knows_called_ae(ae):
        return problem(404, f"no worklist for AE title {ae!r}")
    try:
        media_type, multipart = choose_media_type(request.headers.get("accept", ""))
    except NotAcceptable:
        return problem(406, "acceptable: application/dicom+json, application/dicom+xml, "
                             "multipart/related with either type")
    try:
        query = parse_search(request.query_params.multi_items())
    except BadSearch as error:
        return problem(400, str(error))
    outcome = run_search(context.service, ae, query,
                         request.client.host if request.client else "",
                         FUZZY_CALLING_AE if query.fuzzy_requested else HTTP_CALLING_AE)
    if outcome.failure:
        return problem(outcome.failure, outcome.problem)
    warnings = []
    if outcome.unsupported_removed:
        warnings.append(f'299 {SERVICE_NAME} "Some requested attributes are not supported '
                        'and were left out."')
    page = outcome.answers[query.offset:]
    if query.limit is not None:
        remaining = len(page) - query.limit
        page = page[:query.limit]
        if remaining > 0:
            warnings.append(f'299 {SERVICE_NAME} "There are {remaining} additional results '
                            'that can be requested"')
    headers = {"Warning": ", ".join(warnings)} if warnings else {}
    if not page:
        return Response(status_code=204, headers=headers)
    body, content_type = render(page, media_type, multipart)
    return Response(body, media_type=content_type, headers=headers)

