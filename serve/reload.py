"""The served model and how a reload reaches every gunicorn worker.

A worker serves one immutable ``ModelState`` (model, generation, path); a request
reads ``holder.current`` once and uses that snapshot throughout, so a swap (one
attribute assignment) is atomic for requests.

Across workers, a server has a runtime directory (``TRIAGE_RUNTIME_DIR``; ``serve.run``
makes a fresh one per start) holding::

    model-state.json   {"generation", "path", "model_version"} — the model all workers must serve
    model-state.lock   flock: one reload at a time across workers
    workers/<pid>.json what each live worker serves (its acknowledgement)

``POST /v1/admin/reload`` in whichever worker receives it: take the lock (busy: 409),
load and fully validate the bundle (hashes, ONNX, a warm-up prediction; failure:
422, nothing changes), write generation+1 to ``model-state.json`` (atomic rename),
swap itself, then wait up to ``TRIAGE_RELOAD_WAIT`` seconds for every live worker's
acknowledgement. Every other worker notices the new generation within a request (each
request does one ``stat`` of the state file) or within 0.5 s (a watcher thread), loads
and warms the bundle *in the background* while still serving the old model, then
swaps. If any worker fails to load it, the reload is rolled back (a further
generation naming the previous bundle) and the client gets 409. A worker forked
later (crash, ``max_requests``) loads the current generation before serving its
first request. The reload lives as long as the server: a restart serves
``TRIAGE_MODEL`` again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import errno
import fcntl
import gc
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serve.errors import ApiError
from triage.errors import BundleError, TriageError

log = logging.getLogger("triage.serve")

WARMUP_TICKETS = [{"text": "您好，家里宽带从昨天开始一直断网，打客服电话也没人处理，请尽快派人维修。",
                   "received_at": "2026-01-05T10:00:00+08:00"},
                  {"text": "快递三天了还没送到"}]
STATE_FILE = "model-state.json"
LOCK_FILE = "model-state.lock"
RELEASE_DELAY = 2.0  # seconds after a swap: in-flight requests have dropped the old model by then


@dataclass(frozen=True)
class ModelState:
    model: object
    generation: int
    path: str
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    warm: bool = True

    @property
    def version(self) -> str:
        return self.model.model_version


def load_and_warm(path: str, loader=None):
    """Load a bundle (hashes verified) and score the warm-up tickets.

    Raises BundleError (or the loader's own TriageError) when the bundle is unusable.
    """
    from triage.model import load

    model = (loader or load)(path)
    try:
        results = model.score_batch(WARMUP_TICKETS, errors="return")
    except Exception as exc:  # a bundle that loads but cannot score is not servable
        raise BundleError(f"bundle failed its warm-up prediction: {type(exc).__name__}: {exc}") from exc
    if any(not hasattr(r, "heads") for r in results):
        raise BundleError("bundle refused its warm-up tickets")
    return model


def try_load(path: str, loader=None):
    """``load_and_warm`` with every failure as ApiError 422 (the reload endpoint's answer)."""
    try:
        return load_and_warm(path, loader)
    except TriageError as exc:
        raise ApiError(422, getattr(exc, "code", "bad_bundle"), f"cannot load bundle: {exc}", "path") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ApiError(422, "bad_bundle", f"cannot load bundle: {type(exc).__name__}: {exc}", "path") from None


class ModelHolder:
    """The current model of this process, plus reload coordination across processes."""

    def __init__(self, path: str, runtime_dir: str | None, metrics=None, reload_wait: float = 15.0,
                 poll: float = 0.5, model=None, loader=None):
        self.runtime_dir = Path(runtime_dir) if runtime_dir else None
        self.metrics = metrics
        self.reload_wait = reload_wait
        self.poll = poll
        self.loader = loader
        self._local_lock = threading.Lock()
        self._swap_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._started_pid: int | None = None
        self._seen_stat = None
        self._failed_generation: int | None = None
        self.current: ModelState = self._initial(path, model)

    # -- shared state file -----------------------------------------------------
    def _path(self, name: str) -> Path:
        assert self.runtime_dir is not None
        return self.runtime_dir / name

    def read_state(self) -> dict | None:
        if self.runtime_dir is None:
            return None
        try:
            return json.loads(self._path(STATE_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def _write_state(self, generation: int, path: str, version: str) -> None:
        data = {"generation": generation, "path": path, "model_version": version,
                "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        _atomic_write(self._path(STATE_FILE), data)

    @contextmanager
    def _exclusive(self, blocking: bool):
        """One reload at a time: a thread lock, plus an flock across processes."""
        if not self._local_lock.acquire(blocking=blocking):
            raise ApiError(409, "reload_in_progress", "another reload is in progress; try again")
        try:
            if self.runtime_dir is None:
                yield
                return
            with open(self._path(LOCK_FILE), "a+") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise ApiError(409, "reload_in_progress", "another reload is in progress; try again") from None
                    raise
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            self._local_lock.release()

    def _initial(self, path: str, model) -> ModelState:
        """Adopt the server's current generation if there is one, else publish generation 0."""
        if self.runtime_dir is None:
            return ModelState(model or load_and_warm(path, self.loader), 0, _abs(path))
        (self.runtime_dir / "workers").mkdir(parents=True, exist_ok=True)
        with self._exclusive(blocking=True):
            state = self.read_state()
            if state and state.get("path"):
                if model is None or state["path"] != _abs(path):
                    model = load_and_warm(state["path"], self.loader)
                return ModelState(model, int(state["generation"]), state["path"])
            model = model or load_and_warm(path, self.loader)
            self._write_state(0, _abs(path), model.model_version)
            return ModelState(model, 0, _abs(path))

    # -- per process -------------------------------------------------------------
    def ensure_started(self) -> None:
        """In a new process (worker): catch up with the current generation, then watch it."""
        pid = os.getpid()
        if self._started_pid == pid:
            return
        with self._swap_lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
            self._failed_generation = None
            if self.runtime_dir is not None:
                self._sync()
                self._ack()
                self._stop.clear()
                self._watcher = threading.Thread(target=self._watch, name="triage-model-watcher", daemon=True)
                self._watcher.start()
        if self.metrics is not None:
            self.metrics.show_model(self.current.version, self.current.generation)

    def poke(self) -> None:
        """Per request: one ``stat`` of the state file; wake the watcher if it changed."""
        if self.runtime_dir is None:
            return
        try:
            st = os.stat(self._path(STATE_FILE))
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            return
        if sig != self._seen_stat:
            self._seen_stat = sig
            self._wake.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._sync()
            except Exception:  # never let the watcher die
                log.exception("model watcher error")

    def _sync(self) -> None:
        """Load the published generation if this process serves another one.

        The bundle loads outside the swap lock (requests keep the old model meanwhile);
        the check and the swap happen under it, so they never interleave with a reload
        handled by this same process.
        """
        with self._swap_lock:
            state = self.read_state()
            if not state:
                return
            generation = int(state.get("generation", -1))
            if generation == self.current.generation or generation == self._failed_generation:
                return
            path = state["path"]
        started = time.monotonic()
        try:
            model = try_load(path, self.loader)
        except ApiError as exc:
            with self._swap_lock:
                self._failed_generation = generation
                self._ack(failed=generation)
            if self.metrics is not None:
                self.metrics.reloads.labels("failed").inc()
            log.error("worker cannot load the published model; still serving the previous one",
                      extra={"fields": {"generation": generation, "path": path, "error": exc.message}})
            return
        with self._swap_lock:
            latest = self.read_state() or {}
            if int(latest.get("generation", -1)) != generation or self.current.generation == generation:
                self._wake.set()  # superseded while loading (or already done): look again
                return
            self._swap(ModelState(model, generation, path))
        log.info("model switched", extra={"fields": {"generation": generation, "model_version": model.model_version,
                                                     "load_seconds": round(time.monotonic() - started, 3)}})

    def _swap(self, state: ModelState) -> None:
        self.current = state
        _release_soon()
        if self.metrics is not None and self._started_pid == os.getpid():
            self.metrics.show_model(state.version, state.generation)
        if self.runtime_dir is not None:
            self._ack()

    def _ack(self, failed: int | None = None) -> None:
        data = {"pid": os.getpid(), "generation": self.current.generation,
                "model_version": self.current.version, "failed_generation": failed}
        try:
            _atomic_write(self._path("workers") / f"{os.getpid()}.json", data)
        except OSError:
            log.warning("cannot write worker acknowledgement", exc_info=True)

    def workers(self) -> list[dict]:
        """Acknowledgements of live worker processes (dead ones are removed)."""
        if self.runtime_dir is None:
            return [{"pid": os.getpid(), "generation": self.current.generation,
                     "model_version": self.current.version, "failed_generation": None}]
        out = []
        for f in sorted((self.runtime_dir / "workers").glob("*.json")):
            try:
                data = json.loads(f.read_text("utf-8"))
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not _alive(pid):
                f.unlink(missing_ok=True)
                continue
            out.append(data)
        return out

    def forget_worker(self, pid: int) -> None:
        if self.runtime_dir is not None:
            (self.runtime_dir / "workers" / f"{pid}.json").unlink(missing_ok=True)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)

    # -- admin reload --------------------------------------------------------------
    def reload(self, path: str) -> tuple[int, dict]:
        """Validate ``path`` and make every worker serve it; return (status, body)."""
        previous = self.current
        with self._exclusive(blocking=False):
            started = time.monotonic()
            try:
                model = try_load(path, self.loader)
            except ApiError:
                self._count("failed")
                raise
            abs_path = _abs(path)
            if self.runtime_dir is None:
                generation = previous.generation + 1
                with self._swap_lock:
                    self._swap(ModelState(model, generation, abs_path))
                self._count("ok")
                return 200, self._result(previous, generation, started, True)
            with self._swap_lock:
                state = self.read_state() or {}
                generation = max(int(state.get("generation", 0)), previous.generation) + 1
                self._write_state(generation, abs_path, model.model_version)
                self._swap(ModelState(model, generation, abs_path))
            done, failed = self._await(generation)
            if failed:
                self._rollback(previous, generation + 1)
                self._count("failed")
                raise ApiError(409, "reload_failed_in_worker",
                               f"worker(s) {', '.join(map(str, failed))} could not load the bundle; "
                               f"rolled back to {previous.version}", "path")
            self._count("ok")
            _release_soon()  # again once ``previous`` (kept for a rollback) is gone
            return (200 if done else 202), self._result(previous, generation, started, done)

    def _await(self, generation: int) -> tuple[bool, list[int]]:
        deadline = time.monotonic() + self.reload_wait
        while True:
            acks = self.workers()
            failed = [a["pid"] for a in acks if a.get("failed_generation") == generation]
            if failed:
                return False, failed
            if all(a.get("generation") == generation for a in acks):
                return True, []
            if time.monotonic() >= deadline:
                return False, []
            time.sleep(0.05)

    def _rollback(self, previous: ModelState, generation: int) -> None:
        with self._swap_lock:
            self._write_state(generation, previous.path, previous.version)
            self._swap(ModelState(previous.model, generation, previous.path))
        log.error("reload rolled back", extra={"fields": {"generation": generation,
                                                          "model_version": previous.version}})

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(result).inc()

    def _result(self, previous: ModelState, generation: int, started: float, propagated: bool) -> dict:
        acks = self.workers()
        return {"model_version": self.current.version, "previous_version": previous.version,
                "generation": generation, "path": self.current.path, "propagated": propagated,
                "workers": {"live": len(acks), "switched": sum(a.get("generation") == generation for a in acks)},
                "seconds": round(time.monotonic() - started, 3)}


def release_memory() -> None:
    """Free a replaced model's memory and hand it back to the OS.

    glibc keeps freed heap pages in the process, so without ``malloc_trim`` every reload
    would leave a worker's resident set one model larger (about 90 MB with the default).
    """
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _release_soon() -> None:
    timer = threading.Timer(RELEASE_DELAY, release_memory)
    timer.daemon = True
    timer.start()


def _abs(path: str) -> str:
    return str(Path(path).resolve())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data), "utf-8")
    os.replace(tmp, path)
