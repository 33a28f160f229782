"""``triage relabel --engine dask``: the same chunks as the local engine, scored on Dask.

The pending chunks of the input Parquet file are grouped into tasks of up to
``CHUNKS_PER_TASK`` consecutive chunks of one row group, and the tasks become a
dask.bag with one partition each. ``map_partitions`` runs a task on a worker: it
streams its chunks from the file itself (one reader per task, so a row group is
decoded once per task, not once per chunk), scores each with the per-process model
cache (pre-loaded on every worker by a WorkerPlugin, so the bundle is never shipped
with a task) and writes each chunk's part, rejects and done marker to
``OUTPUT.parts/`` exactly as the local engine does (``process_chunk``). The client
then assembles the parts. Workers therefore need triage installed and must see INPUT
and OUTPUT at the same paths (a shared file system on a real cluster).
"""

from __future__ import annotations

import json
import logging
from typing import Callable

from distributed.diagnostics.plugin import WorkerPlugin

from triage.relabel import RelabelJob, get_model, iter_parquet_chunks, process_chunk

CLUSTER_TIMEOUT = "60s"
# Measured on 100k rows, 2 workers: the worker's sampling profiler (a 10 ms timer that
# takes the GIL from the scoring thread) cost ~15% CPU, and the Nanny's default
# MALLOC_TRIM_THRESHOLD_=65536 (heap trimmed on nearly every free) tripled system time.
# One malloc arena: the task thread otherwise gets its own, ~55 MB more per worker.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ": {"MALLOC_ARENA_MAX": 1, "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                                            "OPENBLAS_NUM_THREADS": 1},
}
CHUNKS_PER_TASK = 4  # ~6 s of scoring per task: a reader opens in ~10 ms, and the last tasks still balance


class ModelPlugin(WorkerPlugin):
    """Loads the bundle once per worker process, when the worker joins."""

    def __init__(self, model_path: str):
        self.model_path = model_path
        self.name = f"triage-relabel-model-{model_path}"

    def setup(self, worker) -> None:
        get_model(self.model_path)


def plan_tasks(pieces: list[tuple], per_task: int = CHUNKS_PER_TASK) -> list[list[tuple]]:
    """Pending chunks (sorted) as tasks: runs of at most ``per_task`` chunks of one row group."""
    tasks: list[list[tuple]] = []
    for piece in pieces:
        if tasks and tasks[-1][-1][2] == piece[2] and len(tasks[-1]) < per_task:
            tasks[-1].append(piece)
        else:
            tasks.append([piece])
    return tasks


def relabel_task(pieces: list[tuple], job: RelabelJob) -> list[str]:
    """Score one task's chunks and write their part files; return their markers as JSON."""
    return [json.dumps(process_chunk(job, chunk))
            for chunk in iter_parquet_chunks(job.input, pieces[0][2], pieces, job.chunk_rows)]


def relabel_partition(tasks: list[list[tuple]], job: RelabelJob) -> list[str]:
    return [marker for pieces in tasks for marker in relabel_task(pieces, job)]


def build_bag(job: RelabelJob, pieces: list[tuple]):
    """The lazily scored dask.bag of chunk markers (one partition per task)."""
    import dask.bag as db

    tasks = plan_tasks(pieces)
    return db.from_sequence(tasks, npartitions=len(tasks)).map_partitions(relabel_partition, job)


def start_client(workers: int, scheduler: str | None):
    """A client of ``scheduler``, or of a LocalCluster of ``workers`` one-thread processes on loopback."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout=CLUSTER_TIMEOUT), None
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster, timeout=CLUSTER_TIMEOUT), cluster


def run_dask(job: RelabelJob, pieces: list[tuple], *, workers: int, scheduler: str | None,
             on_done: Callable[[dict], None]) -> None:
    """Score the chunks ``pieces`` on Dask, calling ``on_done(marker)`` as each finishes."""
    from distributed import as_completed

    if not pieces:
        return
    client, cluster = start_client(workers, scheduler)
    try:
        client.register_plugin(ModelPlugin(job.model))
        futures = client.compute(build_bag(job, pieces).to_delayed())
        for future in as_completed(futures):
            for marker in future.result():
                on_done(json.loads(marker))
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
