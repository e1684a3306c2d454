"""Segmenting through the warm worker (one ``LiverUNetLib.worker --serve`` process), on real MRML.

The promises are those of the one-process-per-job runner: one outcome per job, temporary folders
removed, nothing in the scene changed by a failed or cancelled job; plus the warm ones: later jobs
reuse the process, and a dead, stuck or idle server is replaced or stopped.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slicer_harness import addSegmentation, addVolume, blobImage, mrml, requires_slicer_core  # noqa: F401

pytestmark = [*requires_slicer_core]


@pytest.fixture(scope="module")
def tinyModel(tmp_path_factory) -> Path:
    """An untrained tiny network: these tests check the plumbing, not the accuracy."""
    from LiverUNetLib.model_file import LiverModel, save_model
    from LiverUNetLib.networks import NetworkConfig
    from LiverUNetLib.preprocessing import PreprocessConfig

    torch.manual_seed(0)
    model = LiverModel.create(NetworkConfig(base_channels=4, depth=2), PreprocessConfig(in_plane_spacing_mm=None))
    return save_model(model, tmp_path_factory.mktemp("warm") / "tiny.pt")


@pytest.fixture
def logic(tmp_path):
    from LiverUNetSlicerLib import LiverUNetLogic, ModelLibrary

    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), tempRoot=tmp_path / "tmp",
                           keepWorkerWarm=True)
    yield logic
    logic.shutdownWorker()


def _volume():
    image, _ = blobImage((6, 32, 32))
    return addVolume(image, np.diag([1.5, 1.5, 4.0, 1.0]), "blob")


def _noTempLeft(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    assert not folder.exists() or not any(folder.iterdir()), f"left behind: {list(folder.iterdir())}"


def _exits(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return True
        except ChildProcessError:  # already reaped by its Popen
            return True
        time.sleep(0.1)
    return False


def test_later_jobs_reuse_the_same_process(mrml, logic, tinyModel, tmp_path):
    volume = _volume()
    first = logic.segmentLiver(volume, None, tinyModel, "cpu", timeoutSeconds=120)
    pid = logic.warmWorker.pid
    assert pid is not None and logic.warmWorker.idle
    second = logic.segmentLiver(volume, first, tinyModel, "cpu", timeoutSeconds=120)
    assert second is first and logic.warmWorker.pid == pid
    assert first.GetSegmentation().GetSegment("Liver") is not None
    written = logic.segmentFiles([], tmp_path / "none")  # nothing to do, nothing started
    assert written == [] and logic.warmWorker.pid == pid
    _noTempLeft(tmp_path)


def test_an_error_keeps_the_server_for_the_next_job(mrml, logic, tinyModel, tmp_path):
    from LiverUNetLib.errors import LiverUNetError

    volume = _volume()
    logic.segmentLiver(volume, None, tinyModel, "cpu", timeoutSeconds=120)
    pid = logic.warmWorker.pid
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a model")
    with pytest.raises(LiverUNetError, match="broken.pt"):
        logic.segmentLiver(volume, None, broken, "cpu", timeoutSeconds=120)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    logic.segmentLiver(volume, None, tinyModel, "cpu", timeoutSeconds=120)
    assert logic.warmWorker.pid == pid
    _noTempLeft(tmp_path)


def test_cancel_changes_nothing_and_the_server_serves_on(mrml, logic, tinyModel, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus

    volume = _volume()
    segmentation = addSegmentation(volume)
    nodesBefore = mrml.scene.GetNumberOfNodes()
    scheduler, results = BlockingScheduler(), []
    handle = logic.segmentLiverAsync(volume, segmentation, tinyModel, "cpu", onFinished=results.append,
                                     scheduler=scheduler)
    handle.cancel()
    scheduler.runUntilIdle(60)
    assert [r.status for r in results] == [JobStatus.CANCELLED]
    assert mrml.scene.GetNumberOfNodes() == nodesBefore
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    pid = logic.warmWorker.pid
    logic.segmentLiver(volume, segmentation, tinyModel, "cpu", timeoutSeconds=120)
    assert logic.warmWorker.pid == pid and segmentation.GetSegmentation().GetNumberOfSegments() == 1
    _noTempLeft(tmp_path)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_killed_server_fails_its_job_clearly_and_is_replaced(mrml, logic, tinyModel, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus

    volume = _volume()
    scheduler, results = BlockingScheduler(), []
    handle = logic.segmentLiverAsync(volume, None, tinyModel, "cpu", onFinished=results.append, scheduler=scheduler)
    killed = handle.pid
    os.kill(killed, signal.SIGKILL)  # as the kernel's out-of-memory killer would, while the server starts up
    scheduler.runUntilIdle(120)
    assert [r.status for r in results] == [JobStatus.FAILED]
    assert "killed by signal 9" in results[0].message and "Nothing was changed" in results[0].message
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    logic.segmentLiver(volume, None, tinyModel, "cpu", timeoutSeconds=120)
    assert logic.warmWorker.pid not in (None, killed)
    _noTempLeft(tmp_path)


def test_a_second_job_while_the_server_is_busy_gets_its_own_process(mrml, logic, tinyModel, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus

    volume = _volume()
    scheduler, results = BlockingScheduler(), []
    first = logic.segmentLiverAsync(volume, None, tinyModel, "cpu", onFinished=results.append, scheduler=scheduler)
    second = logic.segmentLiverAsync(volume, None, tinyModel, "cpu", onFinished=results.append, scheduler=scheduler)
    assert first.pid == logic.warmWorker.pid and second.pid != first.pid
    scheduler.runUntilIdle(120)
    assert [r.status for r in results] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    _noTempLeft(tmp_path)


def test_idle_server_stops_by_itself_and_shutdown_stops_it(tmp_path, tinyModel):
    from LiverUNetLib.image_io import write_image
    from LiverUNetLib.volume import Volume
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus
    from LiverUNetSlicerLib.warm_worker import WarmWorker

    image, _ = blobImage((6, 32, 32))
    source = write_image(Volume(image, np.diag([1.5, 1.5, 4.0, 1.0])), tmp_path / "image.nii.gz")

    def segment(worker: WarmWorker, name: str):
        scheduler, outcomes = BlockingScheduler(), []
        job = {"kind": "segment", "input": str(source), "output": str(tmp_path / f"{name}.nii.gz"),
               "model": str(tinyModel), "device": "cpu"}
        worker.job(job, tmp_path / name, scheduler, lambda event: None, outcomes.append, pollMilliseconds=20).start()
        scheduler.runUntilIdle(120)
        assert [o.status for o in outcomes] == [JobStatus.SUCCEEDED] and (tmp_path / f"{name}.nii.gz").is_file()
        assert not (tmp_path / name).exists()

    idle = WarmWorker(idleSeconds=0.5)
    segment(idle, "a")
    pid = idle.pid
    assert pid is not None and _exits(pid), "an idle server must stop by itself"
    segment(idle, "b")  # and a new one starts for the next job
    assert idle.pid not in (None, pid)
    idle.shutdown()

    kept = WarmWorker(idleSeconds=0)
    segment(kept, "c")
    pid = kept.pid
    time.sleep(1.0)
    assert kept.pid == pid, "with idleSeconds=0 the server stays"
    kept.shutdown()
    assert _exits(pid) and kept.pid is None
