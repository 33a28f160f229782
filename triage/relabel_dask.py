"""``triage relabel --engine dask``: the same chunks as the local engine, scored on Dask.

The input Parquet file becomes a dask.dataframe with one partition per chunk
(``dd.from_map`` over the chunk plan, each partition read by a worker from the file
itself), and ``map_partitions`` scores each partition with the per-process model cache
(pre-loaded on every worker by a WorkerPlugin, so the bundle is never shipped with a
task) and writes its part, rejects and done marker to ``OUTPUT.parts/``, exactly as
the local engine does. The client then assembles the parts. Workers therefore need
triage installed and must see INPUT and OUTPUT at the same paths (a shared file system
on a real cluster).
"""

from __future__ import annotations

import json
import logging
from typing import Callable

from distributed.diagnostics.plugin import WorkerPlugin

from triage.relabel import RelabelJob, Rows, get_model, process_rows, read_parquet_pieces

CHUNK_COLUMN = "__relabel_chunk__"
START_COLUMN = "__relabel_start__"
CLUSTER_TIMEOUT = "60s"


class ModelPlugin(WorkerPlugin):
    """Loads the bundle once per worker process, when the worker joins."""

    def __init__(self, model_path: str):
        self.model_path = model_path
        self.name = f"triage-relabel-model-{model_path}"

    def setup(self, worker) -> None:
        get_model(self.model_path)


def read_piece(piece: tuple, path: str, chunk_rows: int):
    """One chunk of the Parquet input as an Arrow-backed pandas frame, tagged with its chunk."""
    import pandas as pd

    index, start, group, _, _ = piece
    table = next(read_parquet_pieces(path, group, [piece], chunk_rows))
    frame = table.to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)
    frame[CHUNK_COLUMN] = pd.array([index] * len(frame), dtype="int64")
    frame[START_COLUMN] = pd.array([start] * len(frame), dtype="int64")
    return frame


def relabel_partition(frame, job: RelabelJob):
    """Score one partition (one chunk) and write its part files; return its marker as JSON."""
    import pandas as pd
    import pyarrow as pa

    if len(frame) == 0:
        return pd.DataFrame({"chunk": pd.Series([], dtype="int64"), "marker": pd.Series([], dtype=object)})
    index, start = int(frame[CHUNK_COLUMN].iloc[0]), int(frame[START_COLUMN].iloc[0])
    data = frame.drop(columns=[CHUNK_COLUMN, START_COLUMN])
    schema = input_schema(job)
    records = pa.Table.from_pandas(data, schema=schema, preserve_index=False).to_pylist()
    marker = process_rows(job, index, start, Rows(records))
    return pd.DataFrame({"chunk": pd.Series([index], dtype="int64"),
                         "marker": pd.Series([json.dumps(marker)], dtype=object)})


def input_schema(job: RelabelJob):
    """The Arrow schema of the Parquet input (its fields in the output schema)."""
    import pyarrow as pa

    out = job.arrow_schema()
    return pa.schema([out.field(c) for c in job.input_columns])


def build_frames(job: RelabelJob, pieces: list[tuple]):
    """The dask.dataframe of input chunks and the lazily scored frame of markers."""
    import dask.dataframe as dd
    import pandas as pd

    meta = input_schema(job).empty_table().to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)
    meta[CHUNK_COLUMN] = pd.Series([], dtype="int64")
    meta[START_COLUMN] = pd.Series([], dtype="int64")
    chunks = dd.from_map(read_piece, pieces, args=(job.input, job.chunk_rows), meta=meta,
                         label="relabel-read", enforce_metadata=False)
    marker_meta = pd.DataFrame({"chunk": pd.Series([], dtype="int64"), "marker": pd.Series([], dtype=object)})
    scored = chunks.map_partitions(relabel_partition, job, meta=marker_meta, enforce_metadata=False,
                                   align_dataframes=False)
    return chunks, scored


def start_client(workers: int, scheduler: str | None):
    """A client of ``scheduler``, or of a LocalCluster of ``workers`` one-thread processes on loopback."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout=CLUSTER_TIMEOUT), None
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
        _, scored = build_frames(job, pieces)
        futures = client.compute(scored.to_delayed())
        for future in as_completed(futures):
            result = future.result()
            for marker in result["marker"]:
                on_done(json.loads(marker))
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
