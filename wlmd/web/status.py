"""The status page at ``/``: today's worklist per AE and the associations served.

Server-rendered HTML (Jinja2, autoescaped), no JavaScript, one column on a phone. Today's
entries come from the same C-FIND pipeline as every other answer, so the page shows what a
modality asking for today would see.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from pydicom import Dataset

from wlmd.web.metrics import samples
from wlmd.web.payloads import answer_dataset
from wlmd.web.search import parse_search, run_search
from wlmd.worklist.lint import lint_directory
from wlmd.worklist.service import WorklistService

_TEMPLATES = Environment(loader=PackageLoader("wlmd.web", "templates"),
                         autoescape=select_autoescape(["html"]))
SPS_START_DATE = "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate"


@dataclass(frozen=True)
class Row:
    """One scheduled step as the page shows it."""

    time: str
    patient: str
    patient_id: str
    accession: str
    modality: str
    station: str
    status: str


@dataclass(frozen=True)
class AeWorklist:
    title: str
    entries: list[Row]
    problem: str = ""


def called_aes(service: WorklistService, root: Path) -> list[str]:
    """The AE titles with a worklist directory, sorted."""
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    return [name for name in names if service.knows_called_ae(name)]


def todays_rows(service: WorklistService, ae: str, day: datetime.date) -> AeWorklist:
    """The entries of ``ae`` whose step starts on ``day``, sorted by start time."""
    search = parse_search([(SPS_START_DATE, day.strftime("%Y%m%d"))])
    outcome = run_search(service, ae, search, "status page")
    if outcome.problem:
        return AeWorklist(ae, [], outcome.problem)
    rows = [_row(answer_dataset(answer)) for answer in outcome.answers]
    return AeWorklist(ae, sorted(rows, key=lambda row: row.time))


def _row(ds: Dataset) -> Row:
    step = ds.ScheduledProcedureStepSequence[0] if ds.get("ScheduledProcedureStepSequence") \
        else Dataset()
    start = str(step.get("ScheduledProcedureStepStartTime", "") or "")
    return Row(time=f"{start[:2]}:{start[2:4]}" if len(start) >= 4 else start,
               patient=str(ds.get("PatientName", "") or ""),
               patient_id=str(ds.get("PatientID", "") or ""),
               accession=str(ds.get("AccessionNumber", "") or ""),
               modality=str(step.get("Modality", "") or ""),
               station=str(step.get("ScheduledStationAETitle", "") or ""),
               status=str(step.get("ScheduledProcedureStepStatus", "") or "SCHEDULED"))


class LintSummary:
    """What ``wlmctl lint`` finds in the worklist directory, for the status page.

    Linting reads every file, so it runs at most once a minute, and not at all for a directory
    too large to read on a page view (the page then says to run ``wlmctl lint``).
    """

    def __init__(self, root: Path, max_files: int = 5000, every: float = 60.0) -> None:
        self.root = root
        self.max_files = max_files
        self.every = every
        self._findings: list[str] = []
        self._at = -every

    def __call__(self) -> list[str]:
        now = time.monotonic()
        if now - self._at >= self.every:
            self._findings = self._lint()
            self._at = now
        return self._findings

    def _lint(self) -> list[str]:
        try:
            directories = sorted(p for p in self.root.iterdir() if p.is_dir())
            files = sum(1 for d in directories for _ in d.iterdir())
        except OSError as error:
            return [f"{self.root}: {error.strerror}"]
        if files > self.max_files:
            return [f"{files} files: too many to lint on a page view; run wlmctl lint"]
        return [f"{finding.path.relative_to(self.root)}: {finding.attribute}: {finding.reason}"
                for d in directories for finding in lint_directory(d)]


def association_counts(metrics_directory: Path | None) -> list[dict[str, str]]:
    """Associations by called AE, calling AE and outcome, from the supervisor's counters."""
    if metrics_directory is None:
        return []
    rows = [{**sample.labels, "count": f"{sample.value:.0f}"}
            for sample in samples(metrics_directory, "wlmd_associations")
            if sample.name.endswith("_total")]
    return sorted(rows, key=lambda r: (r["called_ae"], r["calling_ae"], r["outcome"]))


def render_status(service: WorklistService, root: Path, metrics_directory: Path | None,
                  problems: list[str], day: datetime.date | None = None) -> str:
    """The whole page."""
    day = day or datetime.date.today()
    worklists = [todays_rows(service, ae, day) for ae in called_aes(service, root)]
    return _TEMPLATES.get_template("status.html").render(
        day=day.isoformat(), worklists=worklists, problems=problems,
        associations=association_counts(metrics_directory),
        metrics=metrics_directory is not None)
