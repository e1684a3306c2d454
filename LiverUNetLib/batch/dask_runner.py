"""The batch on Dask distributed: a running cluster (``--scheduler tcp://HOST:PORT``) or a LocalCluster.

Dask is an optional extra (``pip install -e ".[cluster]"``); without it everything else works, and asking for
it gives one line saying how to install it. Each case is one task running :func:`.work.segment_case`, the same
function the other engines run, so the masks and report rows are the same. A worker process loads each model
once and keeps it for its next cases (the per-process cache in work.py) and sets its torch threads before its
first case. Inputs, outputs and the output folder's records must be on a file system every worker sees.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..errors import LiverUNetError
from .manifest import BatchCase
from .report import CaseReport, CaseStatus
from .work import BatchSettings, configure_process, failure_reason, segment_case

INSTALL_HINT = 'pip install -e ".[cluster]"'
CONNECT_TIMEOUT = "20s"  # how long a scheduler that does not answer is waited for
_CONFIGURED: list[Optional[int]] = []  # this worker process's torch threads, once set


def dask_available() -> bool:
    return importlib.util.find_spec("distributed") is not None


def require_dask() -> None:
    if not dask_available():
        raise LiverUNetError(f"Dask is not installed here, which --scheduler and the Dask engine need: {INSTALL_HINT} "
                             "(or pip install \"dask[distributed]\"); without it, --workers N runs local processes.")


def dask_case(case: BatchCase, settings: BatchSettings, folder: Path, recipe: str) -> CaseReport:
    """One case on a Dask worker: the process's torch threads are set before its first case."""
    if not _CONFIGURED:
        configure_process(settings.threads)
        _CONFIGURED.append(settings.threads)
    return segment_case(case, settings, folder, recipe)


def _client(scheduler: Optional[str], workers: int) -> tuple[Any, Any]:
    """(client, cluster it owns or None)."""
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError) as error:
            raise LiverUNetError(f"Cannot reach the Dask scheduler at {scheduler} ({error}). Start one with "
                                 "'dask scheduler' and workers with 'dask worker ADDRESS', or check the address.") from None
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment()}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def worker_environment() -> dict[str, Any]:
    """Dask's environment for new worker processes, less MALLOC_TRIM_THRESHOLD_: setting it at all turns off
    glibc's adaptive mmap threshold, so each of torch's large buffers is mapped and faulted in afresh, and one
    worker segmented CHAOS MRI subject 3 in 6.4 s instead of 3.2 s here (docs/cohort.md)."""
    import dask

    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environment.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environment


def _failed(case: BatchCase, error: BaseException) -> CaseReport:
    name = type(error).__name__
    if name == "KilledWorker":
        reason = "its Dask worker died on it repeatedly (often: out of memory; give the workers more memory)"
    elif isinstance(error, ModuleNotFoundError) and "LiverUNetLib" in str(error):
        reason = "the Dask worker cannot import LiverUNetLib: install liverunet in the workers' environment"
    else:
        reason = failure_reason(error)
    return CaseReport(case.case_id, str(case.input), str(case.output), CaseStatus.FAILED, error=reason)


def run_on_dask(todo: Sequence[BatchCase], settings: BatchSettings, folder: Path, recipe: str,
                scheduler: Optional[str], workers: int) -> Iterator[CaseReport]:
    """The rows of ``todo`` as their tasks finish, on the cluster at ``scheduler`` or on a LocalCluster of
    ``workers`` processes with one task thread each (torch threads: ``settings.threads``, else the
    machine's cores shared out)."""
    from dataclasses import replace

    from .runner import available_cores

    if not scheduler and settings.threads is None:
        settings = replace(settings, threads=max(1, available_cores() // max(1, workers)))
    client, cluster = _client(scheduler, workers)
    from distributed import as_completed

    futures: list[Any] = []
    try:
        futures = client.map(dask_case, list(todo), settings=settings, folder=folder, recipe=recipe, pure=False)
        cases = {future.key: case for future, case in zip(futures, todo)}
        for future in as_completed(futures):
            case = cases[future.key]
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 - a lost task fails its case, not the batch
                row = _failed(case, error)
            future.release()
            yield row
    except BaseException:
        client.cancel(futures)  # interrupted: the cases not started are not run
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
