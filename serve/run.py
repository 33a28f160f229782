"""Run the service under gunicorn: ``run_server(model, host, port, workers)``.

The app is created once in the master (``preload_app``): the model is loaded and
warmed before the port is bound, and workers share its memory copy-on-write until a
reload. Workers are ``gthread`` (``TRIAGE_THREADS`` each). SIGTERM/SIGINT stop
gracefully: workers finish in-flight requests for up to ``TRIAGE_GRACEFUL_TIMEOUT``
seconds. SIGHUP restarts the workers gracefully; new workers serve the current reload
generation (``serve.reload``). Each start gets a fresh runtime directory (reload state,
metrics files, gunicorn's control socket ``gunicorn.ctl``): ``TRIAGE_RUNTIME_DIR``, or
a temporary one removed on exit.

``python -m serve.run [--model PATH] [--host H] [--port P] [--workers N]`` works too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def prepare_runtime_dir(path: str | None) -> tuple[Path, bool]:
    """A clean runtime dir (state, workers/, metrics/); True if it is temporary."""
    temporary = not path
    root = Path(tempfile.mkdtemp(prefix="triage-serve-")) if temporary else Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("metrics", "workers"):
        shutil.rmtree(root / name, ignore_errors=True)
        (root / name).mkdir()
    for name in ("model-state.json",):
        (root / name).unlink(missing_ok=True)
    return root, temporary


def run_server(model: str | None = None, host: str | None = None, port: int | None = None,
               workers: int | None = None, *, ready_callback=None) -> int:
    """Serve until stopped; returns the exit status. Arguments override the environment."""
    from serve.config import Config, ConfigError

    try:
        config = Config.from_env(model_path=model, host=host, port=port, workers=workers)
    except ConfigError as exc:
        print(f"triage serve: {exc}", file=sys.stderr)
        return 2
    runtime, temporary = prepare_runtime_dir(config.runtime_dir)
    config = config.replace(runtime_dir=str(runtime))
    # Must be set before prometheus_client is first imported (it picks its value class at import).
    if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        print("triage serve: prometheus_client was imported before the server set up multiprocess "
              "metrics; /metrics would only show one worker", file=sys.stderr)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(runtime / "metrics")
    try:
        app_server = _Server(config, ready_callback)
        app_server.run()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    finally:
        if temporary:
            shutil.rmtree(runtime, ignore_errors=True)


def _make_server_class():
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        """gunicorn with the options of one triage Config."""

        def __init__(self, config, ready_callback=None):
            self.triage_config = config
            self.ready_callback = ready_callback
            self.application = None
            super().__init__()

        def load_config(self):
            from serve.logs import gunicorn_logconfig

            c = self.triage_config
            options = {
                "bind": [_bind(c.host, c.port)],
                "workers": c.workers,
                "worker_class": "gthread",
                "threads": c.threads,
                "preload_app": True,
                "graceful_timeout": c.graceful_timeout,
                "timeout": c.timeout,
                "keepalive": 5,
                "limit_request_line": 8190,
                "limit_request_fields": 100,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": c.log_level.lower() if c.log_level != "DEBUG" else "info",
                "logconfig_dict": gunicorn_logconfig(c.log_level),
                "proc_name": "triage-serve",
                "post_worker_init": _post_worker_init,
                "child_exit": _child_exit,
                "when_ready": self._when_ready,
            }
            control = Path(c.runtime_dir or ".") / "gunicorn.ctl"
            if c.runtime_dir and len(str(control)) < 100:  # AF_UNIX path limit
                options["control_socket"] = str(control)  # per server, not the shared ~/.gunicorn one
            else:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def _when_ready(self, server):
            if self.ready_callback is not None:
                self.ready_callback(server)

        def load(self):
            if self.application is None:
                from serve.app import create_app

                self.application = create_app(self.triage_config)
            return self.application

    return Server


def _Server(config, ready_callback=None):
    return _make_server_class()(config, ready_callback)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _post_worker_init(worker) -> None:
    """In each worker before it serves: catch up with the reload generation, start watching."""
    worker.wsgi.extensions["triage"].worker_started()


def _child_exit(server, worker) -> None:
    """In the master when a worker exits: drop its live metrics and its acknowledgement."""
    from serve.metrics import mark_process_dead

    mark_process_dead(worker.pid)
    app = server.app.application
    if app is not None:
        app.extensions["triage"].holder.forget_worker(worker.pid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.run", description="Serve the triage API with gunicorn.")
    p.add_argument("--model", "-m", default=None, help="bundle directory (default: $TRIAGE_MODEL or models/default)")
    p.add_argument("--host", default=None, help="default: $TRIAGE_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $TRIAGE_PORT or 8080")
    p.add_argument("--workers", type=int, default=None, help="default: $TRIAGE_WORKERS or 2")
    args = p.parse_args(argv)
    return run_server(model=args.model, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
