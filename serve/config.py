"""Service configuration from environment variables, with documented defaults.

=========================  ==============================  =====================================
variable                   default                         meaning
=========================  ==============================  =====================================
TRIAGE_MODEL               models/default                  bundle directory loaded at start
TRIAGE_HOST                127.0.0.1                       address gunicorn binds
TRIAGE_PORT                8080                            port gunicorn binds
TRIAGE_WORKERS             2                               gunicorn worker processes
TRIAGE_THREADS             2                               threads per worker (gthread); scoring
                                                           holds the GIL, so more threads add
                                                           tail latency, not throughput
TRIAGE_API_KEYS            (empty: no authentication)      comma-separated ``key:scope`` pairs,
                                                           scope ``score`` or ``admin``
DATABASE_URL               sqlite:///var/feedback.sqlite3  feedback store (SQLAlchemy URL)
TRIAGE_MAX_BATCH           256                             tickets per /v1/score/batch
TRIAGE_MAX_BODY_BYTES      8388608 (8 MiB)                 request body limit, checked before
                                                           the body is read
TRIAGE_LOG_LEVEL           INFO                            DEBUG also logs PII-masked texts
TRIAGE_GRACEFUL_TIMEOUT    30                              seconds in-flight requests get on
                                                           SIGTERM / SIGHUP
TRIAGE_TIMEOUT             60                              gunicorn worker timeout (seconds)
TRIAGE_RUNTIME_DIR         (a fresh temp dir per server)   shared state of one server: reload
                                                           generation, metrics files
TRIAGE_RELOAD_WAIT         15                              seconds /v1/admin/reload waits for
                                                           every worker to switch
=========================  ==============================  =====================================
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Mapping

from triage.errors import TriageError

SCOPES = ("score", "admin")
DEFAULT_DATABASE_URL = "sqlite:///var/feedback.sqlite3"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(TriageError, ValueError):
    code = "bad_config"


@dataclass
class Config:
    model_path: str = "models/default"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 2
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> scope; never logged
    database_url: str = DEFAULT_DATABASE_URL
    max_batch: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    log_level: str = "INFO"
    graceful_timeout: int = 30
    timeout: int = 60
    runtime_dir: str | None = None
    reload_wait: float = 15.0
    reload_poll: float = 0.5

    def __post_init__(self) -> None:
        self.log_level = str(self.log_level).upper()
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        for name in ("port", "workers", "threads", "max_batch", "max_body_bytes"):
            if int(getattr(self, name)) < (0 if name == "port" else 1):
                raise ConfigError(f"{name} must be a positive integer")
        for key, scope in self.api_keys.items():
            if scope not in SCOPES:
                raise ConfigError(f"API key scope must be one of {', '.join(SCOPES)}, not {scope!r}")
            if not key:
                raise ConfigError("an API key must not be empty")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:  # keys never appear in logs or tracebacks
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                           if f.name != "api_keys")
        return f"Config({fields}, api_keys=<{len(self.api_keys)} keys>)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Config":
        """Read the ``TRIAGE_*`` variables and ``DATABASE_URL``; ``overrides`` win over both."""
        env = os.environ if environ is None else environ
        values: dict = {}
        text = {"model_path": "TRIAGE_MODEL", "host": "TRIAGE_HOST", "database_url": "DATABASE_URL",
                "log_level": "TRIAGE_LOG_LEVEL", "runtime_dir": "TRIAGE_RUNTIME_DIR"}
        numbers = {"port": "TRIAGE_PORT", "workers": "TRIAGE_WORKERS", "threads": "TRIAGE_THREADS",
                   "max_batch": "TRIAGE_MAX_BATCH", "max_body_bytes": "TRIAGE_MAX_BODY_BYTES",
                   "graceful_timeout": "TRIAGE_GRACEFUL_TIMEOUT", "timeout": "TRIAGE_TIMEOUT"}
        for name, var in text.items():
            if env.get(var):
                values[name] = env[var]
        for name, var in numbers.items():
            if env.get(var):
                values[name] = _int(var, env[var])
        if env.get("TRIAGE_RELOAD_WAIT"):
            try:
                values["reload_wait"] = float(env["TRIAGE_RELOAD_WAIT"])
            except ValueError:
                raise ConfigError("TRIAGE_RELOAD_WAIT must be a number of seconds") from None
        if env.get("TRIAGE_API_KEYS"):
            values["api_keys"] = parse_api_keys(env["TRIAGE_API_KEYS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _int(var: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{var} must be an integer, not {value!r}") from None


def parse_api_keys(spec: str) -> dict[str, str]:
    """``"k1:score, k2:admin"`` -> ``{"k1": "score", "k2": "admin"}`` (a key may contain ':')."""
    keys: dict[str, str] = {}
    for i, item in enumerate(p.strip() for p in spec.split(",")):
        if not item:
            continue
        key, sep, scope = item.rpartition(":")
        if not sep or not key.strip():
            # say which entry, never what it holds
            raise ConfigError(f"TRIAGE_API_KEYS entry {i + 1} is not of the form key:scope")
        scope = scope.strip()
        if scope not in SCOPES:
            raise ConfigError(f"TRIAGE_API_KEYS entry {i + 1}: scope must be one of {', '.join(SCOPES)}")
        keys[key.strip()] = scope
    return keys
