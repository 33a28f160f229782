"""The app factory: ``create_app(config=None)`` builds the Flask app and its resources.

Nothing is loaded at import. The factory loads and warms the model, opens (and if
needed creates) the feedback database, builds the metrics registry and the console
page, and installs the request pipeline:

1. request id (``X-Request-ID`` honoured if plain, else generated; echoed back);
2. model generation check (one ``stat``; see ``serve.reload``);
3. authentication by endpoint scope (``serve.auth``);
4. body size limit before the body is read (``MAX_CONTENT_LENGTH`` too);
5. the handler; errors become ``{"error": {...}}`` bodies (``serve.errors``);
6. metrics and one JSON log line with status and latency.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Mapping

from flask import Flask, g, request

from serve.auth import OPEN_ENDPOINTS, KeyRing
from serve.config import Config
from serve.errors import ApiError, register_error_handlers
from serve.logs import configure_logging, new_request_id, request_id_var

log = logging.getLogger("triage.serve")
QUIET_ENDPOINTS = frozenset({"api.healthz", "api.readyz", "api.metrics"})


@dataclass
class ConsolePage:
    html: bytes
    csp: str


def load_console() -> ConsolePage:
    """The console page, with a CSP that allows exactly its own inline script and style."""
    html = resources.files("serve").joinpath("static/console.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                        for b in blocks)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return ConsolePage(html=html.encode("utf-8"), csp=csp)


class TriageService:
    """Everything a request needs: config, model holder, feedback store, metrics, keys."""

    def __init__(self, config: Config, model=None):
        from serve.feedback import FeedbackStore
        from serve.metrics import Metrics
        from serve.reload import ModelHolder

        self.config = config
        self.keys = KeyRing(config.api_keys)
        self.metrics = Metrics()
        self.holder = ModelHolder(config.model_path, config.runtime_dir, metrics=self.metrics,
                                  reload_wait=config.reload_wait, poll=config.reload_poll, model=model)
        self.store = FeedbackStore(config.database_url)
        self.store_ready = False
        self._init_store()
        self.store.dispose()  # no connection survives into forked workers
        self.console = load_console()
        self._label_names: dict | None = None

    def _init_store(self) -> bool:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self.store.init_schema()
            self.store_ready = True
        except (SQLAlchemyError, OSError) as exc:
            log.error("feedback database unavailable", extra={"fields": {"error": type(exc).__name__,
                                                                        "database": self.database_name}})
        return self.store_ready

    @property
    def database_name(self) -> str:
        """The database URL without its password, for logs."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.store.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparsable DATABASE_URL>"

    def store_feedback(self, fb) -> dict:
        from sqlalchemy.exc import SQLAlchemyError

        if not self.store_ready and not self._init_store():
            raise ApiError(503, "feedback_store_unavailable", "the feedback database is not reachable")
        try:
            return self.store.store(fb)
        except (SQLAlchemyError, OSError) as exc:
            log.error("feedback write failed", extra={"fields": {"error": type(exc).__name__}})
            raise ApiError(503, "feedback_store_unavailable", "the feedback database did not accept the write; "
                           "retry (feedback is idempotent)") from None

    def feedback_rows(self, require_text: bool = False) -> list[dict]:
        from sqlalchemy.exc import SQLAlchemyError

        if not self.store_ready and not self._init_store():
            raise ApiError(503, "feedback_store_unavailable", "the feedback database is not reachable")
        try:
            return list(self.store.iter_rows(require_text=require_text))
        except (SQLAlchemyError, OSError) as exc:
            log.error("feedback read failed", extra={"fields": {"error": type(exc).__name__}})
            raise ApiError(503, "feedback_store_unavailable", "the feedback database cannot be read") from None

    def label_names(self, model) -> dict:
        """Chinese display names from the taxonomy for the model's labels (when it has them)."""
        try:
            from triage.taxonomy import load_taxonomy

            tax = load_taxonomy()
        except Exception:
            return {}
        return {head: {lb: tax.display_name(head, lb) for lb in labels} for head, labels in model.labels.items()}

    def worker_started(self) -> None:
        """Per worker process (gunicorn ``post_worker_init``): catch up and start watching."""
        self.holder.ensure_started()

    def close(self) -> None:
        self.holder.close()
        self.store.dispose()


def create_app(config: Config | Mapping | None = None, *, model=None) -> Flask:
    """Build the app. ``config``: a Config, a mapping of Config overrides on top of the
    environment, or None for the environment alone. ``model``: an already loaded
    ``triage.model.Model`` for ``config.model_path`` (skips loading it again)."""
    if config is None:
        config = Config.from_env()
    elif not isinstance(config, Config):
        config = Config.from_env(**dict(config))
    configure_logging(config.log_level)
    app = Flask("serve", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["TRIAGE"] = config
    svc = TriageService(config, model=model)
    app.extensions["triage"] = svc

    from serve.api import ADMIN_ENDPOINTS, bp, respond

    app.register_blueprint(bp)
    register_error_handlers(app, respond)

    @app.before_request
    def _begin():
        g.started = time.perf_counter()
        g.request_id = new_request_id(request.headers.get("X-Request-ID"))
        g.rid_token = request_id_var.set(g.request_id)
        svc.holder.ensure_started()
        svc.holder.poke()
        endpoint = request.endpoint
        if endpoint not in OPEN_ENDPOINTS:
            needed = "admin" if endpoint in ADMIN_ENDPOINTS else "score"
            svc.keys.require(request.headers, needed, challenge="Basic" if endpoint == "api.console" else "Bearer")
        if request.content_length is not None and request.content_length > config.max_body_bytes:
            raise ApiError(413, "payload_too_large",
                           f"the request body is larger than the limit of {config.max_body_bytes} bytes")

    @app.after_request
    def _finish(response):
        started = g.get("started")
        seconds = time.perf_counter() - started if started is not None else 0.0
        rid = g.get("request_id") or new_request_id(None)
        response.headers["X-Request-ID"] = rid
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.endpoint != "api.console":
            response.headers.setdefault("Cache-Control", "no-store")
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        svc.metrics.observe_request(rule, request.method, response.status_code, seconds)
        level = logging.DEBUG if request.endpoint in QUIET_ENDPOINTS and response.status_code < 400 else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "request", extra={"fields": {
                "request_id": rid, "method": request.method, "path": request.path, "endpoint": rule,
                "status": response.status_code, "latency_ms": round(seconds * 1000, 3),
                "bytes_in": request.content_length, "remote": request.remote_addr}})
        return response

    @app.teardown_request
    def _teardown(_exc):
        token = g.pop("rid_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except ValueError:  # a different context (should not happen): just clear it
                request_id_var.set(None)

    state = svc.holder.current
    log.info("app ready", extra={"fields": {"model_version": state.version, "generation": state.generation,
                                            "auth": "on" if svc.keys.enabled else "off",
                                            "database": svc.database_name, "max_batch": config.max_batch,
                                            "max_body_bytes": config.max_body_bytes}})
    if not svc.keys.enabled:
        log.warning("no API keys configured (TRIAGE_API_KEYS): every endpoint is open")
    return app
