"""Prometheus metrics, correct with many gunicorn workers.

``prometheus_client`` runs in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is
set before it is first imported: every worker writes its samples to memory-mapped
files in that directory, and /metrics (in whichever worker answers) merges all of
them. ``serve.run`` creates that directory per server, empties it at start, and marks
dead workers (``child_exit``) so their live gauges disappear. Without the variable
(tests, ``flask run``) one in-process registry per app is used.

Series:
  triage_http_requests_total{endpoint,method,status}
  triage_http_request_duration_seconds{endpoint,method,status}   histogram
  triage_predictions_total{head,label}          final label per scored ticket
  triage_scored_tickets_total                   tickets scored successfully
  triage_needs_review_total                     of those, flagged needs_review
        (needs-review rate = rate(needs_review) / rate(scored_tickets))
  triage_ticket_errors_total{code}              tickets refused (per ticket, batch too)
  triage_feedback_labels_total{head}            feedback labels stored
  triage_model_reloads_total{result}            reloads: ok, failed, conflict
  triage_model_info{model_version,generation}  1 for what a worker serves now, 0 for before
        (multiprocess: with a ``pid`` label, one series per live worker)
"""

from __future__ import annotations

import os

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metric objects, in a registry of their own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("triage_http_requests", "HTTP requests by endpoint, method and status.",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("triage_http_request_duration_seconds", "HTTP request latency in seconds.",
                                 ["endpoint", "method", "status"], buckets=BUCKETS, registry=r)
        self.predictions = Counter("triage_predictions", "Final predicted label per head of scored tickets.",
                                   ["head", "label"], registry=r)
        self.scored = Counter("triage_scored_tickets", "Tickets scored successfully.", registry=r)
        self.needs_review = Counter("triage_needs_review", "Scored tickets flagged needs_review.", registry=r)
        self.ticket_errors = Counter("triage_ticket_errors", "Tickets refused, by error code.", ["code"],
                                     registry=r)
        self.feedback = Counter("triage_feedback_labels", "Feedback labels stored, by head.", ["head"],
                                registry=r)
        self.reloads = Counter("triage_model_reloads", "Model reload attempts by result.", ["result"],
                               registry=r)
        # labelled, so that nothing is written before a worker sets it (an unlabelled gauge
        # would leave a series for the preloading master process)
        self.model_info = Gauge("triage_model_info", "1 for the model version and reload generation this "
                                "worker serves, 0 for ones it served before.",
                                ["model_version", "generation"], multiprocess_mode="liveall", registry=r)
        self._shown: tuple[str, str] | None = None
        self._shown_pid: int | None = None

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        labels = (endpoint, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_results(self, results) -> None:
        """Count predictions and needs_review for TriageResults, error codes for refusals."""
        for res in results:
            code = getattr(res, "code", None)
            if code is not None and not hasattr(res, "heads"):
                self.ticket_errors.labels(code).inc()
                continue
            self.scored.inc()
            if res.needs_review:
                self.needs_review.inc()
            for head, pred in res.heads.items():
                self.predictions.labels(head, pred.label).inc()

    def show_model(self, version: str, generation: int) -> None:
        """Point ``triage_model_info`` at what this process serves (after start or a swap)."""
        pid = os.getpid()
        current = (version, str(generation))
        if self._shown == current and self._shown_pid == pid:
            return
        if self._shown is not None and self._shown_pid == pid:
            self.model_info.labels(*self._shown).set(0)
        self.model_info.labels(*current).set(1)
        self._shown, self._shown_pid = current, pid

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition (all workers' samples in multiprocess mode) and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit``)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
