"""LiverUNetLogic end to end on real MRML (slicer-core) with the real worker process.

A tiny model is trained once (module fixture) on CHAOS MR subject 3, painted on every 4th liver
slice, through ``LiverUNetLogic.train``; it is then used to segment, to fill from painted slices
through the effect job, and to segment files. Tiny settings keep the whole module near a minute
on two CPU cores; accuracy is measured by the library's own tests and benchmarks, not here.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from slicer_effect_adapter import ScriptedEffectAdapter
from slicer_harness import (addSegmentation, addVolume, blobImage, mrml, paintSegment,  # noqa: F401
                            requires_slicer_core, segmentArray, slicerCore)

pytestmark = [*requires_slicer_core, pytest.mark.slow, pytest.mark.data]

TINY = {"epochs": 3, "base_channels": 8, "depth": 3, "samples_per_epoch": 48, "batch_size": 8, "crop_size": 96,
        "in_plane_spacing_mm": 3.0, "validation_fraction": 0.0, "device": "cpu", "mixed_precision": False}


def _chaos(subject: str):
    from LiverUNetLib.image_io import read_image

    image = read_image(require_data("chaos-mr-t2", "images", f"image_{subject}.nii.gz"))
    label = read_image(require_data("chaos-mr-t2", "labels", f"label_{subject}.nii.gz"))
    return image, label.array == 1


def _paintedCase(image, liver, every: int = 4):
    """A volume node and a segmentation painted on every ``every``-th liver slice, as a person would."""
    from LiverUNetSlicerLib.nodes import addVolumeNode

    volume = addVolumeNode(image, "chaos")
    segmentation = addSegmentation(volume, "painted")
    slices = np.flatnonzero(liver.any(axis=(1, 2)))[::every]
    sparse = np.zeros_like(liver)
    sparse[slices] = liver[slices]
    return volume, segmentation, paintSegment(segmentation, volume, sparse, "liver"), slices


@pytest.fixture(scope="module")
def tinyModel(tmp_path_factory) -> Path:
    from LiverUNetSlicerLib import LiverUNetLogic, ModelLibrary, TrainingCaseNodes

    core = slicerCore()
    core.clear()
    image, liver = _chaos("3")
    volume, segmentation, segmentId, _ = _paintedCase(image, liver)
    folder = tmp_path_factory.mktemp("models")
    events = []
    logic = LiverUNetLogic(modelLibrary=ModelLibrary(folder))
    model = logic.train([TrainingCaseNodes(volume, segmentation, segmentId)], folder / "tiny.pt", TINY,
                        onProgress=events.append, timeoutSeconds=300)
    assert model.is_file() and model.with_suffix(".provenance.json").is_file()
    assert [e.epoch for e in events if e.stage.value == "training"][-1] == TINY["epochs"]
    core.clear()
    return model


@pytest.fixture
def logic(tmp_path):
    from LiverUNetSlicerLib import LiverUNetLogic, ModelLibrary

    return LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), tempRoot=tmp_path / "tmp")


def _noTempLeft(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    assert not folder.exists() or not any(folder.iterdir()), f"left behind: {list(folder.iterdir())}"


def test_segment_liver_on_a_chaos_subject(mrml, tinyModel, logic, tmp_path):
    import json

    from LiverUNetSlicerLib.liver_segment import LIVER_TERMINOLOGY
    from LiverUNetSlicerLib.nodes import addVolumeNode

    image, liver = _chaos("5")
    volume = addVolumeNode(image, "subject 5")
    segmentation = logic.segmentLiver(volume, None, tinyModel, "cpu", timeoutSeconds=300)
    assert segmentation.GetName() == "subject 5 liver"
    segment = segmentation.GetSegmentation().GetSegment("Liver")
    assert segment.GetName() == "Liver" and segment.GetTerminology() == LIVER_TERMINOLOGY
    result = segmentArray(segmentation, "Liver", volume)
    assert result.shape == liver.shape
    assert result.sum() > 0 and (result & liver).sum() > 0.3 * liver.sum(), "the prediction misses the liver"
    provenance = json.loads(tinyModel.with_suffix(".provenance.json").read_text())
    assert provenance["cases"][0]["painted_slices"] and provenance["settings"]["epochs"] == TINY["epochs"]
    assert logic.restorePreviousLiver(segmentation)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    _noTempLeft(tmp_path)


def test_async_replace_then_restore_keeps_other_segments(mrml, tinyModel, logic, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus

    image, liver = blobImage((8, 48, 48))
    volume = addVolume(image, np.diag([1.5, 1.5, 4.0, 1.0]), "blob")
    segmentation = addSegmentation(volume)
    old = np.zeros_like(liver)
    old[3:5, 10:20, 10:20] = True
    liverId = paintSegment(segmentation, volume, old, "Liver")
    kidneyId = paintSegment(segmentation, volume, liver, "kidney")
    scheduler, results, progress = BlockingScheduler(), [], []
    logic.segmentLiverAsync(volume, segmentation, tinyModel, "cpu", onProgress=progress.append,
                            onFinished=results.append, scheduler=scheduler)
    scheduler.runUntilIdle(300)
    assert results[0].status is JobStatus.SUCCEEDED and results[0].value is segmentation
    assert progress and progress[-1].stage.value == "done"
    assert list(segmentation.GetSegmentation().GetSegmentIDs()) == [liverId, kidneyId]
    assert logic.canRestore(segmentation)
    logic.restorePreviousLiver(segmentation)
    np.testing.assert_array_equal(segmentArray(segmentation, liverId, volume), old)
    np.testing.assert_array_equal(segmentArray(segmentation, kidneyId, volume), liver)
    _noTempLeft(tmp_path)


def test_cancel_leaves_the_scene_and_models_untouched(mrml, tinyModel, logic, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus, TrainingCaseNodes

    image, liver = blobImage((8, 48, 48))
    volume = addVolume(image, None, "blob")
    segmentation = addSegmentation(volume)
    segmentId = paintSegment(segmentation, volume, liver, "liver")
    nodesBefore = mrml.scene.GetNumberOfNodes()
    scheduler, results = BlockingScheduler(), []
    job = logic.segmentLiverAsync(volume, None, tinyModel, "cpu", onFinished=results.append, scheduler=scheduler)
    job.cancel()
    scheduler.runUntilIdle(60)
    assert results[0].status is JobStatus.CANCELLED and mrml.scene.GetNumberOfNodes() == nodesBefore

    output = tmp_path / "models" / "never.pt"
    cancelled = []

    def cancelOnFirstEpoch(event):
        if event.stage.value == "training" and not cancelled:
            cancelled.append(True)
            handle.cancel()

    handle = logic.trainAsync([TrainingCaseNodes(volume, segmentation, segmentId)], output, {**TINY, "epochs": 50},
                              tinyModel, "cpu", onProgress=cancelOnFirstEpoch, onFinished=results.append,
                              scheduler=scheduler)
    scheduler.runUntilIdle(300)
    assert results[1].status is JobStatus.CANCELLED and cancelled
    assert not output.exists() and not output.with_suffix(".provenance.json").exists()
    _noTempLeft(tmp_path)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_worker_crash_gives_a_clear_message_and_changes_nothing(mrml, logic, tmp_path):
    from LiverUNetSlicerLib import BlockingScheduler, JobStatus, TrainingCaseNodes

    image, liver = blobImage((8, 48, 48))
    volume = addVolume(image, None, "blob")
    segmentation = addSegmentation(volume)
    segmentId = paintSegment(segmentation, volume, liver, "liver")
    output = tmp_path / "models" / "crashed.pt"
    scheduler, results = BlockingScheduler(), []

    def killOnFirstProgress(event):
        if handle.running and not results:
            os.kill(handle.pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would

    handle = logic.trainAsync([TrainingCaseNodes(volume, segmentation, segmentId)], output, TINY, None, "cpu",
                              onProgress=killOnFirstProgress, onFinished=results.append, scheduler=scheduler)
    scheduler.runUntilIdle(120)
    assert results[0].status is JobStatus.FAILED
    assert "killed by signal 9" in results[0].message and "Nothing was changed" in results[0].message
    assert not output.exists()
    _noTempLeft(tmp_path)


def test_worker_error_reaches_the_caller(mrml, logic, tmp_path):
    from LiverUNetLib.errors import LiverUNetError

    image, _ = blobImage((6, 32, 32))
    volume = addVolume(image, None, "blob")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a model")
    with pytest.raises(LiverUNetError) as caught:
        logic.segmentLiver(volume, None, broken, "cpu", timeoutSeconds=120)
    assert "broken.pt" in str(caught.value)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    _noTempLeft(tmp_path)


def test_bad_inputs_are_refused_before_any_work(mrml, logic, tmp_path, tinyModel):
    import slicer
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib import TrainingCaseNodes

    image, _ = blobImage((6, 32, 32))
    volume = addVolume(image, None, "blob")
    segmentation = addSegmentation(volume)
    emptyId = segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
    with pytest.raises(LiverUNetError, match="No input volume"):
        logic.segmentLiver(None)
    rgb = slicer.util.addVolumeFromArray(np.zeros((6, 32, 32, 3), np.uint8), None, "rgb", "vtkMRMLVectorVolumeNode")
    with pytest.raises(LiverUNetError, match="RGB"):
        logic.segmentLiver(rgb)
    with pytest.raises(LiverUNetError, match="has no painted slice"):
        logic.train([TrainingCaseNodes(volume, segmentation, emptyId)], tmp_path / "m.pt", TINY)
    with pytest.raises(LiverUNetError, match="No training case"):
        logic.train([], tmp_path / "m.pt", TINY)
    with pytest.raises(LiverUNetError, match="Model file not found"):
        logic.segmentLiver(volume, None, tmp_path / "missing.pt")
    _noTempLeft(tmp_path)


def test_segment_files_writes_seg_nrrd(logic, tinyModel, tmp_path):
    from LiverUNetLib.segmentation_file import read_segmentation

    source = require_data("chaos-mr-t2", "images", "image_5.nii.gz")
    written = logic.segmentFiles([source], tmp_path / "out", tinyModel, "cpu")
    assert written == [tmp_path / "out" / "image_5.seg.nrrd"]
    labelmap, segments = read_segmentation(written[0])
    assert [s.name for s in segments] == ["Liver"] and labelmap.array.any()
    from LiverUNetLib.errors import LiverUNetError

    with pytest.raises(LiverUNetError, match="1 of 2 files failed"):
        logic.segmentFiles([source, tmp_path / "missing.nii.gz"], tmp_path / "out2", tinyModel, "cpu")
    _noTempLeft(tmp_path)


def test_effect_fill_from_painted_slices_with_the_real_worker(mrml, tinyModel, tmp_path):
    import slicer
    from LiverUNetSlicerLib import BlockingScheduler, EffectMode, JobStatus
    from LiverUNetSlicerLib.effect_jobs import EffectJob

    image, liver = _chaos("5")
    volume, segmentation, segmentId, painted = _paintedCase(image, liver, every=5)
    before = segmentArray(segmentation, segmentId, volume)
    effect = ScriptedEffectAdapter(slicer.mrmlScene, segmentation, volume, segmentId)
    scheduler, results, progress = BlockingScheduler(), [], []
    job = EffectJob(effect, EffectMode.FILL_FROM_PAINTED, scheduler, slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet,
                    model=tinyModel, device="cpu", fillSettings={**TINY, "epochs": 1},
                    onProgress=progress.append, onFinished=results.append, tempRoot=tmp_path / "tmp")
    job.start()
    scheduler.runUntilIdle(300)
    assert results[0].status is JobStatus.SUCCEEDED, results[0].message
    assert effect.calls == ["saveStateForUndo", "modifySelectedSegmentByLabelmap"]
    after = segmentArray(segmentation, segmentId, volume)
    np.testing.assert_array_equal(after[painted], before[painted])  # painted slices kept as painted
    unpainted = np.setdiff1d(np.flatnonzero(liver.any(axis=(1, 2))), painted)
    assert after[unpainted].any(), "nothing was filled between the painted slices"
    fractions = [p.fraction for p in progress if p.fraction is not None]
    assert fractions == sorted(fractions) or max(fractions) <= 1.0
    effect.logic.Undo()
    np.testing.assert_array_equal(segmentArray(segmentation, segmentId, volume), before)
    _noTempLeft(tmp_path)


def test_effect_fill_on_ct_from_an_mri_model_with_the_real_worker(mrml, tinyModel, tmp_path):
    """Filling a CT from an MRI model tunes a CT model: a tuned model that still said MRI would refuse that
    CT at the segment step (the bug the CHAOS CT fill found). The tuned model is a CT model and the fill completes."""
    import slicer
    from LiverUNetLib.image_io import read_image
    from LiverUNetSlicerLib import BlockingScheduler, EffectMode, JobStatus
    from LiverUNetSlicerLib.effect_jobs import EffectJob

    image = read_image(require_data("chaos-ct-sample", "dicom"))
    liver = read_image(require_data("chaos-ct-sample", "liver_gt.nii.gz")).array > 0
    volume, segmentation, segmentId, painted = _paintedCase(image, liver, every=10)
    effect = ScriptedEffectAdapter(slicer.mrmlScene, segmentation, volume, segmentId)
    scheduler, results = BlockingScheduler(), []
    job = EffectJob(effect, EffectMode.FILL_FROM_PAINTED, scheduler, slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet,
                    model=tinyModel, device="cpu", fillSettings={**TINY, "epochs": 1},
                    onFinished=results.append, tempRoot=tmp_path / "tmp")
    job.start()
    scheduler.runUntilIdle(300)
    assert results[0].status is JobStatus.SUCCEEDED, results[0].message
    after = segmentArray(segmentation, segmentId, volume)
    unpainted = np.setdiff1d(np.flatnonzero(liver.any(axis=(1, 2))), painted)
    assert after[unpainted].any(), "nothing was filled between the painted slices"
    _noTempLeft(tmp_path)


def test_segment_liver_on_a_ct_picks_the_shipped_ct_model(mrml, logic, tmp_path):
    """"Segment liver" with no model chosen on the CHAOS CT sample, through the real worker: the volume node
    carries no DICOM tag, so its Hounsfield intensities pick the shipped CT model, and the log says so."""
    from LiverUNetLib.image_io import read_image
    from LiverUNetSlicerLib import BlockingScheduler
    from LiverUNetSlicerLib.nodes import addVolumeNode

    image = read_image(require_data("chaos-ct-sample", "dicom"))
    liver = read_image(require_data("chaos-ct-sample", "liver_gt.nii.gz")).array > 0
    volume = addVolumeNode(image, "chaos ct")
    scheduler, results = BlockingScheduler(), []
    logic.segmentLiverAsync(volume, None, None, "cpu", onFinished=results.append, scheduler=scheduler)
    scheduler.runUntilIdle(600)
    assert results and results[0].succeeded, results[0].message if results else "no result"
    assert "shipped CT model" in results[0].message and "Hounsfield" in results[0].message
    result = segmentArray(results[0].value, "Liver", volume)
    assert 2 * (result & liver).sum() / (result.sum() + liver.sum()) > 0.90
    _noTempLeft(tmp_path)


def test_batch_script_segments_files_through_the_scene(mrml, tinyModel, tmp_path, capsys):
    import importlib.util

    from LiverUNetLib.segmentation_file import read_segmentation
    from slicer_harness import MODULE_DIR

    spec = importlib.util.spec_from_file_location("segment_batch", MODULE_DIR / "Scripts" / "segment_batch.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # __name__ is not "__main__": nothing runs on import
    source = require_data("chaos-mr-t2", "images", "image_5.nii.gz")
    code = script.main([str(source), str(tmp_path / "missing.nii.gz"), "--output-dir", str(tmp_path / "out"),
                        "--model", str(tinyModel), "--device", "cpu"])
    assert code == 1  # one of two inputs failed, and the run said so
    out = capsys.readouterr().out
    assert "1 of 2 files failed" in out and "missing.nii.gz" in out
    labelmap, segments = read_segmentation(tmp_path / "out" / "image_5.seg.nrrd")
    assert [s.name for s in segments] == ["Liver"] and labelmap.array.any()
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0  # nodes removed after each file
