"""Prometheus metrics, counted by the supervisor from what it already receives.

The supervisor sees every association's report (whichever worker served it, including workers
that have exited since), every refusal, and the pool's state; it counts them with
``prometheus_client`` in multi-process mode, whose values live in small memory-mapped files of
a private directory: an update is a memory write, so counting never blocks the supervisor. The
HTTP child, a separate process, reads that directory to answer ``/metrics``
(``MultiProcessCollector``), together with its own request counters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample

from wlmd.dicom.types import AssociationReport

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)


def enable_multiprocess(parent: Path | None = None) -> Path:
    """Make a private directory for this run's metric files and switch the library to it.

    Must run in the supervisor before any metric is made; children inherit the setting.
    """
    directory = Path(tempfile.mkdtemp(prefix="wlmd-metrics-", dir=parent))
    os.environ[ENVIRONMENT] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    return directory


def remove_directory(directory: Path) -> None:
    """Delete this run's metric files when the supervisor stops."""
    shutil.rmtree(directory, ignore_errors=True)


def forget_process(pid: int) -> None:
    """A child that exited: its live gauges no longer count (its counters still do)."""
    if ENVIRONMENT in os.environ:
        mark_process_dead(pid)


class ServerMetrics:
    """The counters and gauges the supervisor keeps; one instance per supervisor."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry(auto_describe=True)
        self.associations = Counter(
            "wlmd_associations", "Associations by called AE, calling AE and outcome",
            ["called_ae", "calling_ae", "outcome"], registry=registry)
        self.queries = Counter("wlmd_cfind_queries", "C-FIND queries by called AE",
                               ["called_ae"], registry=registry)
        self.query_seconds = Histogram(
            "wlmd_cfind_duration_seconds", "C-FIND duration (request to final response) by "
            "called AE", ["called_ae"], buckets=DURATION_BUCKETS, registry=registry)
        self.mpps = Counter("wlmd_mpps", "MPPS N-CREATE and N-SET by called AE and DIMSE status",
                            ["called_ae", "operation", "status"], registry=registry)
        self.file_problems = Counter("wlmd_worklist_file_problems",
                                     "Worklist file versions rejected or faulty", registry=registry)
        self.matches = Counter("wlmd_cfind_matches", "C-FIND responses (matches) by called AE",
                               ["called_ae"], registry=registry)
        self.duration = Histogram(
            "wlmd_association_duration_seconds", "Association duration by called AE",
            ["called_ae"], buckets=DURATION_BUCKETS, registry=registry)
        self.refusals = Counter("wlmd_refusals", "Connections refused by reason", ["reason"],
                                registry=registry)
        self.workers = Gauge("wlmd_workers", "Workers of the pool by state", ["state"],
                             multiprocess_mode="mostrecent", registry=registry)
        self.worker_exits = Counter("wlmd_worker_exits", "Workers that left the pool, by why",
                                    ["reason"], registry=registry)

    def association(self, report: AssociationReport, seconds: float) -> None:
        called = report.called_ae or "-"
        self.associations.labels(called, report.calling_ae or "-", str(report.outcome)).inc()
        if report.match_counts:
            self.queries.labels(called).inc(len(report.match_counts))
            self.matches.labels(called).inc(report.matches)
        for micros in report.find_micros:
            self.query_seconds.labels(called).observe(micros / 1_000_000)
        for operation, statuses in (("N-CREATE", report.n_create_statuses),
                                    ("N-SET", report.n_set_statuses)):
            for status in statuses:
                self.mpps.labels(called, operation, f"0x{status:04X}").inc()
        self.duration.labels(called).observe(seconds)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def pool(self, busy: int, idle: int) -> None:
        self.workers.labels("busy").set(busy)
        self.workers.labels("idle").set(idle)

    def worker_exit(self, reason: str) -> None:
        self.worker_exits.labels(reason).inc()

    def file_problem(self) -> None:
        self.file_problems.inc()


def _registry(directory: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def exposition(directory: Path) -> bytes:
    """Every process's metrics in the Prometheus text format (for ``GET /metrics``)."""
    return generate_latest(_registry(directory))


def samples(directory: Path, family: str) -> list[Sample]:
    """The current samples of one metric family of every process (readiness, status page)."""
    return [sample for metric in _registry(directory).collect() if metric.name == family
            for sample in metric.samples]
