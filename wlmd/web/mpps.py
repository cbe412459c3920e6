"""PS3.18 chapter 15: the Modality Performed Procedure Step service over HTTP.

``POST /aets/{AE}/rs/modality-performed-procedure-steps/{mppsUID}`` creates the step (the
N-CREATE of the DIMSE service) or, when it exists, updates it (N-SET); ``GET`` retrieves it.
Both run the very MPPS service the workers run (same checks, storage, worklist policy and
forwarding), so a step created over HTTP can be completed over DIMSE and the other way round.
The DIMSE status becomes the HTTP status; the JSON body of a refusal carries the status, the
error comment and the offending attributes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from pydicom import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wlmd.dicom.types import (
    STATUS_DUPLICATE_INSTANCE,
    STATUS_NO_SUCH_INSTANCE,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    AssociationInfo,
    NResponse,
    ReceivedDataSet,
)
from wlmd.mpps.service import MppsService
from wlmd.mpps.storage import InvalidInstanceUid
from wlmd.web.payloads import DICOM_JSON, problem

FINAL_STATE_ERROR_ID = 0xA710  # "may no longer be updated" (PS3.4 F.7.2.2.4.2)
HTTP_CALLING_AE = "HTTP"


def http_status(response: NResponse, created: bool) -> int:
    """The HTTP status of a DIMSE-N outcome."""
    if response.status == STATUS_SUCCESS:
        return 201 if created else 200
    if response.status == STATUS_DUPLICATE_INSTANCE:
        return 409
    if response.status == STATUS_NO_SUCH_INSTANCE:
        return 404
    if response.status == STATUS_PROCESSING_FAILURE:
        return 409 if response.error_id == FINAL_STATE_ERROR_ID else 503
    return 400  # missing, invalid or not-allowed attributes


class MppsApi:
    """The handlers of the MPPS resource; one MPPS step at a time per process."""

    def __init__(self, service: MppsService | None, knows_ae: Callable[[str], bool]) -> None:
        self.service = service
        self._knows_ae = knows_ae
        self._lock = threading.Lock()  # fcntl locks do not exclude threads of one process

    def _not_found(self, ae: str) -> Response | None:
        """The 404 of a request MPPS cannot serve: MPPS off, or an unknown called AE."""
        if self.service is None:
            return problem(404, "MPPS is not enabled (--mpps)")
        if not self._knows_ae(ae):
            return problem(404, "no such AE title")
        return None

    async def create_or_update(self, request: Request) -> Response:
        ae, uid = request.path_params["ae"], request.path_params["uid"]
        if (refusal := self._not_found(ae)) is not None:
            return refusal
        try:
            dataset = Dataset.from_json(json.loads(await request.body()))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return problem(400, f"not a DICOM JSON object: {type(error).__name__}")
        client = request.client
        assoc = AssociationInfo(peer_address=client.host if client else "", peer_port=0,
                                calling_ae=HTTP_CALLING_AE, called_ae=ae)
        response, created = await run_in_threadpool(self._apply, assoc, uid, dataset)
        status = http_status(response, created)
        if status >= 400:
            return JSONResponse({"status": f"0x{response.status:04X}",
                                 "error": response.error_comment or "refused",
                                 "attributes": [f"{t.group:04X}{t.element:04X}"
                                                for t in response.attribute_identifiers]},
                                status_code=status)
        return Response(status_code=status, headers={"Location": str(request.url.path)})

    async def retrieve(self, request: Request) -> Response:
        ae, uid = request.path_params["ae"], request.path_params["uid"]
        if (refusal := self._not_found(ae)) is not None:
            return refusal
        try:
            dataset = await run_in_threadpool(self._read, ae, uid)
        except InvalidInstanceUid:
            return problem(404, "not a UID")
        if dataset is None:
            return problem(404, "no such MPPS")
        return Response(json.dumps(dataset.to_json_dict()).encode(), media_type=DICOM_JSON)

    def _apply(self, assoc: AssociationInfo, uid: str,
               dataset: Dataset) -> tuple[NResponse, bool]:
        """N-SET when the step exists, else N-CREATE (both under the service's own locks)."""
        assert self.service is not None
        with self._lock:
            try:
                exists = self._read(assoc.called_ae, uid) is not None
            except InvalidInstanceUid:
                exists = False  # N-CREATE refuses it with the standard's status
            if exists:
                return self.service.set(assoc, uid, ReceivedDataSet.of(dataset)), False
            return self.service.create(assoc, uid, ReceivedDataSet.of(dataset)), True

    def _read(self, ae: str, uid: str) -> Dataset | None:
        assert self.service is not None
        storage = self.service.storage
        with storage.locked(ae, uid) as transaction:
            return storage.read(transaction, uid)

