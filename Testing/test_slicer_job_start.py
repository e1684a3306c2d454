"""Starting jobs that cannot start, and ending jobs whose scene went away (real MRML, real processes).

* A worker that cannot start ends its job inside the call that starts it; :class:`JobRunState` (what the
  panels and the effect use) still ends up "not running", in either order.
* The effect reports a stale model path from ``start()`` (inside the Apply handler's ``try``), and any
  failure while starting leaves the job ended with its folder removed.
* Closing the scene cancels the effect's job instead of letting it fail against removed nodes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from slicer_effect_adapter import ScriptedEffectAdapter
from slicer_harness import addSegmentation, addVolume, blobImage, mrml, paintSegment, requires_slicer_core  # noqa: F401

pytestmark = requires_slicer_core

MISSING = [str(Path("/nonexistent-liverunet") / "PythonSlicer")]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]  # a worker that never answers


def _noTempLeft(root: Path) -> None:
    assert not root.exists() or not any(root.iterdir()), f"left behind: {list(root.iterdir())}"


def _volume():
    image, liver = blobImage((8, 24, 28))
    return addVolume(image, None, "blob"), liver


def _effect(mrml, paint: bool = False):
    import slicer

    volume, liver = _volume()
    segmentation = addSegmentation(volume)
    painted = np.zeros_like(liver)
    if paint:
        painted[[2, 5]] = liver[[2, 5]]
    segmentId = paintSegment(segmentation, volume, painted, "liver")
    return ScriptedEffectAdapter(slicer.mrmlScene, segmentation, volume, segmentId)


def _effectJob(effect, tmp_path, mode=None, **kwargs):
    import slicer
    from LiverUNetSlicerLib import BlockingScheduler, EffectMode
    from LiverUNetSlicerLib.effect_jobs import EffectJob

    scheduler, results = BlockingScheduler(), []
    job = EffectJob(effect, mode or EffectMode.SEGMENT, scheduler, slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet,
                    device="cpu", onFinished=results.append, tempRoot=tmp_path / "tmp", **kwargs)
    return job, scheduler, results


# --- the panels' run state ------------------------------------------------------------------------
def test_a_worker_that_cannot_start_leaves_the_panel_not_running(mrml, tmp_path):
    from LiverUNetSlicerLib import JobStatus, LiverUNetLogic, ModelLibrary
    from LiverUNetSlicerLib.run_state import JobRunState

    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), workerCommand=MISSING,
                           tempRoot=tmp_path / "tmp")
    volume, _ = _volume()
    shown, results = [], []
    state = JobRunState(shown.append)
    from LiverUNetSlicerLib import BlockingScheduler

    state.start(lambda finished: logic.segmentLiverAsync(volume, None, None, "cpu", onFinished=finished,
                                                         scheduler=BlockingScheduler()), results.append)
    assert shown == [True, False] and not state.running
    assert results[0].status is JobStatus.FAILED and "Could not start the worker process" in results[0].message
    assert not state.cancel()
    _noTempLeft(tmp_path / "tmp")


def test_a_running_job_is_shown_running_until_it_is_cancelled(mrml, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus, LiverUNetLogic, ModelLibrary
    from LiverUNetSlicerLib.run_state import JobRunState

    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), workerCommand=SLEEPER,
                           tempRoot=tmp_path / "tmp")
    volume, _ = _volume()
    shown, results, scheduler = [], [], BlockingScheduler()
    state = JobRunState(shown.append)
    state.start(lambda finished: logic.segmentLiverAsync(volume, None, None, "cpu", onFinished=finished,
                                                         scheduler=scheduler), results.append)
    assert shown == [True] and state.running
    assert state.cancel()
    scheduler.runUntilIdle(30)
    assert shown == [True, False] and results[0].status is JobStatus.CANCELLED
    _noTempLeft(tmp_path / "tmp")


def test_an_input_error_at_start_shows_not_running_and_is_raised(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.run_state import JobRunState

    def refuse(finished):
        raise LiverUNetError("Select an input volume.")

    shown, results = [], []
    state = JobRunState(shown.append)
    with pytest.raises(LiverUNetError):
        state.start(refuse, results.append)
    assert shown == [True, False] and results == [] and not state.running


def test_an_unwritable_job_file_fails_the_job_instead_of_raising(tmp_path):
    from LiverUNetSlicerLib.worker_runner import BlockingScheduler, JobStatus, WorkerProcess

    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    scheduler, outcomes = BlockingScheduler(), []
    process = WorkerProcess({"kind": "segment"}, blocker / "job", scheduler, lambda event: None, outcomes.append,
                            command=SLEEPER)
    process.start()
    assert outcomes[0].status is JobStatus.FAILED and "job file" in outcomes[0].message
    assert not process.running


def test_training_curves_can_be_taken_out_of_the_scene(mrml):
    from LiverUNetSlicerLib.training_curves import TrainingCurves

    before = mrml.scene.GetNumberOfNodes()
    curves = TrainingCurves(mrml.scene, "Training never")
    assert mrml.scene.GetNumberOfNodes() == before + 4  # table, chart, two series
    curves.remove()
    assert mrml.scene.GetNumberOfNodes() == before


# --- the effect -----------------------------------------------------------------------------------
def test_a_stale_model_path_is_reported_by_start(mrml, tmp_path):
    from LiverUNetLib.errors import LiverUNetError

    effect = _effect(mrml)
    job, _, results = _effectJob(effect, tmp_path, model=tmp_path / "deleted.pt")  # building never raises
    with pytest.raises(LiverUNetError, match="Model file not found"):
        job.start()
    assert not job.running and results == [] and effect.calls == []
    _noTempLeft(tmp_path / "tmp")


def test_a_failure_writing_the_images_ends_the_job(mrml, tmp_path, monkeypatch):
    import LiverUNetSlicerLib.effect_jobs as effectJobs

    def diskFull(volume, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(effectJobs, "writeVolumeFile", diskFull)
    job, _, results = _effectJob(_effect(mrml), tmp_path)
    with pytest.raises(OSError):
        job.start()
    assert not job.running and results == []
    _noTempLeft(tmp_path / "tmp")


def test_a_worker_that_cannot_start_fails_the_effect_job(mrml, tmp_path):
    from LiverUNetSlicerLib import JobStatus
    from LiverUNetSlicerLib.run_state import JobRunState

    job, _, results = _effectJob(_effect(mrml), tmp_path, workerCommand=MISSING)
    shown = []
    JobRunState(shown.append).start(lambda finished: (setattr(job, "onFinished", finished), job.start(), job)[2],
                                    results.append)
    assert shown == [True, False] and not job.running
    assert results[0].status is JobStatus.FAILED
    _noTempLeft(tmp_path / "tmp")


@pytest.mark.parametrize("fill", [False, True], ids=["segment", "fill"])
def test_closing_the_scene_cancels_the_effect_job(mrml, tmp_path, fill):
    from LiverUNetSlicerLib import EffectMode, JobStatus

    mode = EffectMode.FILL_FROM_PAINTED if fill else EffectMode.SEGMENT
    effect = _effect(mrml, paint=fill)
    job, scheduler, results = _effectJob(effect, tmp_path, mode, workerCommand=SLEEPER)
    job.start()
    assert job.running
    mrml.scene.Clear(0)
    scheduler.runUntilIdle(20)
    assert results[0].status is JobStatus.CANCELLED, results[0].message
    assert effect.calls == [] and not job.running
    _noTempLeft(tmp_path / "tmp")


def test_the_model_list_shows_a_stored_path_that_no_longer_exists(tmp_path):
    from LiverUNetSlicerLib.models import ModelEntry, modelChoices

    mine = tmp_path / "mine.pt"
    entries = [ModelEntry("Shipped model for the image (CT or MRI)", None), ModelEntry("mine", mine)]
    assert modelChoices(entries, "") == ([("Shipped model for the image (CT or MRI)", ""), ("mine", str(mine))], 0)
    assert modelChoices(entries, str(mine))[1] == 1
    items, index = modelChoices(entries, str(tmp_path / "deleted.pt"))
    assert items[index] == ("Missing: deleted.pt", str(tmp_path / "deleted.pt")), "never claim the automatic choice"
