"""Smaller pieces of the Slicer layer: model library, training curves (real MRML), parameter node, options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from slicer_harness import mrml, requires_slicer_core  # noqa: F401


def slicerCoreOnly(test):
    """Apply the slicer-core marks (skip without it) to one test; the others here need no MRML."""
    for mark in requires_slicer_core:
        test = mark(test)
    return test


def test_model_library_lists_imports_and_exports(tmp_path, monkeypatch):
    import LiverUNetSlicerLib.models as models
    from LiverUNetLib import shipped_models
    from LiverUNetLib.errors import LiverUNetError

    monkeypatch.setattr(shipped_models, "MODELS_FOLDER", tmp_path / "shipped")
    library = models.ModelLibrary(tmp_path / "library")
    assert library.entries() == []
    source = tmp_path / "trained on ward 3.pt"
    source.write_bytes(b"weights")
    models.writeProvenance(source, {"cases": ["a"]})
    imported = library.importModel(source)
    assert imported.parent == library.folder and imported.name == "trained_on_ward_3.pt"
    assert models.provenancePath(imported).is_file()
    again = library.importModel(source)  # never overwrites
    assert again != imported and again.is_file()
    assert [e.path for e in library.entries()][0] in (imported, again)
    exported = library.exportModel(models.ModelEntry("x", imported), tmp_path / "out" / "shared")
    assert exported.name == "shared.pt" and exported.read_bytes() == b"weights"
    assert models.provenancePath(exported).is_file()
    with pytest.raises(LiverUNetError, match="not a LiverUNet model file"):
        library.importModel(tmp_path / "trained on ward 3.provenance.json")
    with pytest.raises(LiverUNetError, match="choose the shipped CT or MRI model"):
        library.exportModel(models.ModelEntry("automatic", None), tmp_path / "d.pt")


def test_model_library_lists_the_automatic_choice_then_each_shipped_model(tmp_path, monkeypatch):
    import LiverUNetSlicerLib.models as models
    from LiverUNetLib import shipped_models

    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(shipped_models, "MODELS_FOLDER", folder)
    for name in shipped_models.SHIPPED_MODEL_FILES.values():
        (folder / name).write_bytes(b"weights")
    entries = models.ModelLibrary(tmp_path / "library").entries()
    assert entries[0].isDefault and "CT or MRI" in entries[0].name
    assert [(e.name, e.path.name) for e in entries[1:]] == [
        ("Shipped CT liver model", "liver_ct_default.pt"), ("Shipped MRI liver model", "liver_mri_t2_default.pt")]
    exported = models.ModelLibrary(tmp_path / "library").exportModel(entries[1], tmp_path / "ct_copy.pt")
    assert exported.read_bytes() == b"weights"


def test_device_and_file_names():
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.jobs import fileStem
    from LiverUNetSlicerLib.options import Device, toDevice

    assert toDevice(None) is Device.AUTO and toDevice("GPU") is Device.CUDA and toDevice(Device.MPS) is Device.MPS
    with pytest.raises(LiverUNetError, match="Unknown device"):
        toDevice("tpu")
    assert fileStem(Path("a/b.seg.nrrd")) == "b" and fileStem(Path("x.nii.gz")) == "x" and fileStem(Path("dicom")) == "dicom"


@slicerCoreOnly
def test_training_curves_fill_a_table_and_chart(mrml):
    import slicer
    from LiverUNetLib.progress import ProgressEvent, Stage
    from LiverUNetSlicerLib.training_curves import TrainingCurves

    curves = TrainingCurves(slicer.mrmlScene, "run")
    assert curves.chartNode.GetNumberOfPlotSeriesNodes() == 2
    assert not curves.add(ProgressEvent(Stage.LOADING, 0.0))
    assert curves.add(ProgressEvent(Stage.TRAINING, 0.1, epoch=1, loss=0.9, fold=0))
    assert not curves.add(ProgressEvent(Stage.VALIDATING, 0.1, epoch=1, loss=0.9, fold=0))  # same epoch
    assert curves.add(ProgressEvent(Stage.TRAINING, 0.2, epoch=2, loss=0.7, validation_dice=0.5, fold=0))
    assert curves.add(ProgressEvent(Stage.TRAINING, 0.6, epoch=1, loss=0.8, fold=1))  # next fold continues the x axis
    table = curves.tableNode.GetTable()
    epochs = [table.GetValue(r, 0).ToDouble() for r in range(curves.rowCount())]
    dice = [table.GetValue(r, 2).ToDouble() for r in range(curves.rowCount())]
    assert epochs == [1, 2, 3] and math.isnan(dice[0]) and dice[1] == 0.5


@slicerCoreOnly
def test_module_parameter_node_is_a_singleton(mrml):
    import slicer
    from LiverUNetSlicerLib.parameter_node import moduleParameterNode

    first = moduleParameterNode(slicer.mrmlScene)
    assert moduleParameterNode(slicer.mrmlScene) is first
    assert first.GetAttribute("ModuleName") == "LiverUNet" and first.GetSingletonTag() == "LiverUNet"
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def test_fill_settings_are_valid_training_settings_without_appearance_augmentation():
    """The effect's "Fill from painted slices" settings reach TrainConfig as they are (the worker's path)."""
    from LiverUNetLib.training import TrainConfig
    from LiverUNetSlicerLib.effect_jobs import FILL_SETTINGS

    config = TrainConfig.from_dict(dict(FILL_SETTINGS))
    assert config.appearance_augmentation is False  # one scan's own contrast: measured better off
    assert config.folds == 1 and config.validation_fraction == 0.0
    # what the fill benchmarks measured (bench/mri_fill.py, bench/ct_fill.py; docs/accuracy_notes.md, *The fill's speed*)
    assert (config.epochs, config.learning_rate, config.samples_per_epoch) == (3, 5e-4, 256)


def test_fill_from_scratch_keeps_its_own_schedule_and_fine_tuning_takes_the_panels_epochs():
    from LiverUNetLib.training import TrainConfig
    from LiverUNetSlicerLib.effect_jobs import fillTrainSettings

    scratch = TrainConfig.from_dict(fillTrainSettings(False, {"epochs": 3, "learning_rate": 1e-5, "base_channels": 4}))
    assert (scratch.epochs, scratch.learning_rate, scratch.base_channels) == (20, 2e-3, 4)
    tuned = TrainConfig.from_dict(fillTrainSettings(True, {"epochs": 3}))
    assert (tuned.epochs, tuned.learning_rate) == (3, 5e-4)
