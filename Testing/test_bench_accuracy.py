"""bench/accuracy.py's pieces work: the contour-interpolation peer, the metrics rows, the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
accuracy = pytest.importorskip("bench.accuracy")
if importlib.util.find_spec("itk") is None:  # never imported here: ITK runs in its own process
    pytest.skip("benchmark-only dependency itk is missing: pip install -e .[bench]", allow_module_level=True)

from bench import accuracy_densify, accuracy_ship, product_fills  # noqa: E402
from conftest import require_data  # noqa: E402
from LiverUNetLib.errors import LiverUNetError  # noqa: E402
from LiverUNetLib.volume import Volume  # noqa: E402


def _ellipsoid(shape=(20, 40, 40)) -> Volume:
    k, j, i = np.indices(shape)
    inside = ((k - 10) / 7.0) ** 2 + ((j - 20) / 12.0) ** 2 + ((i - 20) / 10.0) ** 2 <= 1
    return Volume(inside.astype(np.uint8), np.diag([1.5, 1.5, 4.0, 1.0]))


def test_contour_interpolation_fills_between_painted_slices_only():
    liver = _ellipsoid()
    painted = np.array([5, 10, 15])
    filled = accuracy.contour_interpolation(liver, painted)
    assert filled[12].any() and filled[7].any()  # between painted slices
    assert not filled[3].any()  # the peer does not extrapolate beyond the first painted slice
    dice = 2 * (filled[6:15] & liver.array[6:15]).sum() / (filled[6:15].sum() + liver.array[6:15].sum())
    assert dice > 0.8


def test_metrics_row_scores_only_the_requested_slices():
    liver = _ellipsoid()
    wrong = liver.array.copy()
    wrong[5] = 0
    row = accuracy.metrics_row(liver, liver.with_array(wrong), np.array([10, 11]))
    assert row["dice_scored_slices"] == 1.0
    assert row["dice"] < 1.0


def test_report_tables_from_result_files(tmp_path):
    (tmp_path / "generalisation_k1_fold0.json").write_text(json.dumps({
        "protocol": "generalisation", "k": 1, "fold": 0, "test_subjects": ["3"], "annotated_slices": 400,
        "train_seconds": 10.0, "device": "cpu", "recipe": {},
        "subjects": {"3": {"dice": 0.9, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1500.0}}}))
    (tmp_path / "densify_k5_mci_s3.json").write_text(json.dumps({
        "protocol": "densify", "k": 5, "mode": "mci", "subject": "3", "painted": [1], "seconds": 1.0,
        "dice": 0.8, "hd95_mm": 9.0, "assd_mm": 3.0, "volume_ml": 1.0, "dice_scored_slices": 0.7}))
    out = tmp_path / "accuracy.md"
    accuracy.report(tmp_path, out)
    text = out.read_text()
    assert "| 1 | 1/5 | 400 | 1 | 0.900 ± 0.000" in text
    assert "contour interpolation" in text and "0.700 ± 0.000" in text


def test_recipe_overrides_are_typed_and_checked():
    recipe = accuracy.Recipe().with_overrides(["epochs=7", "appearance_augmentation=false", "intensity_region=volume"])
    assert recipe.epochs == 7 and recipe.appearance_augmentation is False and recipe.intensity_region == "volume"
    with pytest.raises(SystemExit, match="Recipe field"):
        accuracy.Recipe().with_overrides(["epoch=7"])
    config = accuracy.train_config(recipe, seed=0)
    assert config.epochs == 7 and config.appearance_augmentation is False


def test_recipe_network_and_loss_variants_reach_the_training_settings():
    recipe = accuracy.Recipe().with_overrides(
        ["depth=5", "normalization=instance", "boundary_weight=5", "bias_field_augmentation=true",
         "liver_free_beyond_painting=true"]
    )
    config = accuracy.train_config(recipe, seed=0)
    assert config.depth == 5 and config.boundary_weight == 5.0 and config.bias_field_augmentation is True
    assert config.liver_free_beyond_painting is True and accuracy.densify_config(recipe, True).liver_free_beyond_painting
    # the benchmark's default recipe trains on the painted slices only, as the rows without the rule did
    assert accuracy.train_config(accuracy.Recipe(), seed=0).liver_free_beyond_painting is False
    # densifying learns one scan's own shading as well as its contrast: the field stays off there
    assert accuracy.densify_config(recipe, fine_tune=True).bias_field_augmentation is False
    # a fill's run-to-run spread is measured with other seeds; the default stays the seed every row used
    assert accuracy.densify_config(recipe, fine_tune=True).seed == 0
    reseeded = accuracy.Recipe().with_overrides(["seed=2"])
    assert accuracy.densify_config(reseeded, fine_tune=True).seed == 2 and accuracy.densify_config(reseeded, False).seed == 2
    assert config.network_config().normalization.value == "instance"
    # networks averaged per fold reach the CV training; the fill fine-tunes one network, as Slicer's does
    two = accuracy.Recipe().with_overrides(["networks_per_fold=2"])
    assert accuracy.train_config(two, seed=0).networks_per_fold == 2 and config.networks_per_fold == 1
    assert accuracy.densify_config(two, fine_tune=True).networks_per_fold == 1
    assert accuracy.densify_config(two, fine_tune=False).networks_per_fold == 1
    with pytest.raises(LiverUNetError, match="normalization must be one of"):
        accuracy.train_config(accuracy.Recipe().with_overrides(["normalization=layer"]), seed=0)


def test_neighbour_organs_reach_cv_training_but_never_a_fill():
    recipe = accuracy.Recipe().with_overrides(["neighbour_organs=3"])
    assert accuracy.train_config(recipe, seed=0).neighbour_organs == 3
    assert accuracy.train_config(accuracy.Recipe(), seed=0).neighbour_organs == 0  # every earlier row
    # a clinician paints the liver alone: fills fine-tune and train from scratch on the liver channel
    assert accuracy.densify_config(recipe, fine_tune=True).neighbour_organs == 0
    assert accuracy.densify_config(recipe, fine_tune=False).neighbour_organs == 0


def test_the_chaos_neighbour_map_holds_both_kidneys_and_the_spleen_and_never_the_liver():
    require_data("chaos-mr-t2", "labels", "label_3.nii.gz")
    _, dense, liver = accuracy.load_subject("3")
    organs = accuracy.neighbour_organ_map("3")
    assert organs.shape == liver.array.shape
    assert set(np.unique(organs).tolist()) == {0, 1, 2, 3}
    assert not (organs[liver.array > 0]).any()
    case = accuracy.training_case("3", liver, dense, accuracy.Recipe().with_overrides(["neighbour_organs=3"]))
    assert case.neighbours is not None and accuracy.training_case("3", liver, dense, accuracy.Recipe()).neighbours is None


def test_the_product_s_validation_hold_out_is_a_recipe_choice_off_by_default():
    """Every cross-validation so far trained each fold on all its subjects; *Train* holds 20 % out."""
    from LiverUNetLib.training import TrainConfig, split_cases

    default = accuracy.train_config(accuracy.Recipe(), seed=0)
    assert default.validation_fraction == 0.0 and default.patience == 0
    assert split_cases(3, default) == [([0, 1, 2], [])]
    as_product = accuracy.Recipe().with_overrides([f"validation_fraction={TrainConfig.validation_fraction}",
                                                   f"patience={TrainConfig.patience}"])
    config = accuracy.train_config(as_product, seed=0)
    assert (config.validation_fraction, config.patience) == (TrainConfig.validation_fraction, TrainConfig.patience)
    assert split_cases(3, config) == [([0, 1, 2], [])]  # three scans all train (TrainConfig.validation_min_cases)
    (train, validation), = split_cases(12, config)
    assert len(train) == 10 and len(validation) == 2
    assert accuracy.densify_config(as_product, fine_tune=True).validation_fraction == TrainConfig.validation_fraction
    assert split_cases(1, accuracy.densify_config(as_product, fine_tune=True)) == [([0], [])]  # a fill: one scan


def test_the_benchmark_scores_without_slice_smoothing_unless_the_recipe_asks():
    """The benchmark's rows are scored without it, so they stay comparable; the product smooths by default."""
    assert accuracy.inference_config(accuracy.Recipe()).slice_smoothing is False
    assert accuracy.inference_config(accuracy.Recipe().with_overrides(["slice_smoothing=true"])).slice_smoothing is True
    assert accuracy.inference_config(accuracy.Recipe()).device == "cpu"


def test_recipe_variants_are_reported_beside_the_default_and_reproducible(tmp_path):
    base = {"protocol": "generalisation", "k": 1, "fold": 0, "test_subjects": ["3"], "annotated_slices": 400,
            "train_seconds": 10.0, "device": "cpu", "recipe": {},
            "subjects": {"3": {"dice": 0.9, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1500.0}}}
    (tmp_path / "generalisation_k1_fold0.json").write_text(json.dumps(base))
    variant = {**base, "tag": "e120", "subjects": {"3": {"dice": 0.95, "hd95_mm": 5.0, "assd_mm": 1.0, "volume_ml": 1.0}}}
    (tmp_path / "generalisation_k1_e120_fold0.json").write_text(json.dumps(variant))
    out = tmp_path / "accuracy.md"
    accuracy.report(tmp_path, out)
    text = out.read_text()
    assert "| 1 | 1/5 | 400 | 1 | 0.900 ± 0.000" in text
    assert "| 1 (e120) | 1/5 | 400 | 1 | 0.950 ± 0.000" in text
    for tag, value in (("", 0.91), ("e120", 0.93)):
        (tmp_path / f"densify_k5_finetune{'_' + tag if tag else ''}_s3.json").write_text(json.dumps({
            "protocol": "densify", "k": 5, "mode": "finetune", "tag": tag, "subject": "3", "painted": [1],
            "seconds": 1.0, "dice": 0.9, "hd95_mm": 9.0, "assd_mm": 3.0, "volume_ml": 1.0, "dice_scored_slices": value}))
    accuracy.report(tmp_path, out)
    text = out.read_text()
    assert "never saw the subject | 1 | 0.910 ± 0.000" in text
    assert "never saw the subject (e120 CV model) | 1 | 0.930 ± 0.000" in text
    (tmp_path / "densify_k5_base_e120_s3.json").write_text(json.dumps({
        "protocol": "densify", "k": 5, "mode": "base", "tag": "e120", "subject": "3", "painted": [1],
        "seconds": 1.0, "dice": 0.9, "hd95_mm": 9.0, "assd_mm": 3.0, "volume_ml": 1.0, "dice_scored_slices": 0.89}))
    accuracy.report(tmp_path, out)
    text = out.read_text()
    assert text.index("not trained on the paint (e120 CV model) | 1 | 0.890 ± 0.000") < text.index("fine-tuned from the CV")
    recipe = asdict(accuracy.Recipe().with_overrides(["epochs=120", "appearance_augmentation=false"]))
    command = accuracy.ship_command(1, "e120", recipe)
    assert "--set epochs=120" in command and "--set appearance_augmentation=false" in command
    assert command.endswith("ship --k 1 --tag e120") and "generalisation --k 1 --tag e120" in command


def test_self_trained_label_keeps_the_paint_and_fills_every_other_slice(tmp_path):
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.model_file import LiverModel, save_model
    from LiverUNetLib.networks.unet import NetworkConfig
    from LiverUNetLib.preprocessing import PreprocessConfig

    liver = _ellipsoid()
    rng = np.random.default_rng(0)
    image = liver.with_array((200 + 300 * liver.array.astype(np.float32) + rng.normal(0, 20, liver.array.shape)).astype(np.float32))
    painted = sparse_label_from_mask(image, liver, dense=True).keep_every_k(5)
    model = save_model(LiverModel.create(NetworkConfig(in_channels=3, base_channels=2, depth=2),
                                         PreprocessConfig(in_plane_spacing_mm=None, context_slices=1)), tmp_path / "m.pt")
    label, quality = accuracy.self_trained_label(image, painted, liver, model)
    assert label.annotated.tolist() == list(range(liver.array.shape[0]))  # every slice now carries a loss
    for index in painted.annotated:
        assert np.array_equal(label.mask[index], liver.array[index] > 0)  # the paint is kept as painted
    unpainted = np.setdiff1d(np.arange(liver.array.shape[0]), painted.annotated)
    filled = label.mask[unpainted]
    expected = 2 * (filled & (liver.array[unpainted] > 0)).sum() / (filled.sum() + (liver.array[unpainted] > 0).sum())
    assert quality == pytest.approx(expected)


def test_densify_base_mode_scores_the_cv_model_alone_with_the_paint_pasted_in(tmp_path, monkeypatch):
    """The baseline that fine-tuning is measured against: no training, the fold model's mask plus the paint."""
    from engine_helpers import pointwise_model
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.model_file import save_model

    liver = _ellipsoid()
    image = liver.with_array(200 + 300 * liver.array.astype(np.float32))
    dense = sparse_label_from_mask(image, liver, dense=True)
    monkeypatch.setattr(accuracy_densify, "load_subject", lambda subject: (image, dense, liver))  # a synthetic subject
    model = accuracy.fold_model_path(tmp_path, 1, "t", accuracy.fold_of("3"))
    model.parent.mkdir(parents=True)
    save_model(pointwise_model(), model)
    accuracy.run_densify(5, ["base"], accuracy.Recipe(), tmp_path, ["3", "13"], base_tag="t")
    record = json.loads((tmp_path / "densify_k5_base_t_s3.json").read_text())
    assert record["mode"] == "base" and record["tag"] == "t" and record["painted"] == dense.keep_every_k(5).annotated.tolist()
    assert record["dice_scored_slices"] > 0.95  # the bright ellipsoid, found without any training
    assert not (tmp_path / "densify_k5_base_t_s13.json").exists(), "subject 13 has no fold model here: skipped"
    assert not list((tmp_path / "models").glob("densify_*")), "nothing was trained"


@pytest.mark.parametrize("fine_tune", [True, False])
def test_the_benchmarked_densify_settings_are_the_fill_recipe_slicer_uses(fine_tune):
    from LiverUNetLib.fill_recipe import FILL_RECIPE

    config = accuracy.densify_config(accuracy.Recipe(), fine_tune)
    for field, value in FILL_RECIPE.train_settings(fine_tune).items():
        assert getattr(config, field) == value, field


def test_ship_all_subjects_trains_one_network_and_cards_the_cross_validation(tmp_path, monkeypatch):
    """``ship --all-subjects``: one network on every subject, the fold records' recipe and scores on the card."""
    require_data("chaos-mr-t2", "images", "image_3.nii.gz")
    from LiverUNetLib.model_file import load_model

    monkeypatch.setattr(accuracy_ship, "SUBJECTS", ["3", "5"])
    recipe = asdict(accuracy.Recipe().with_overrides(
        ["epochs=1", "samples_per_epoch=8", "base_channels=4", "depth=2", "mixed_precision=false"]))
    (tmp_path / "models").mkdir()
    for fold in range(accuracy.FOLDS):
        (tmp_path / f"generalisation_k1_tiny_fold{fold}.json").write_text(json.dumps({
            "protocol": "generalisation", "k": 1, "tag": "tiny", "fold": fold, "train_seconds": 10.0 + fold,
            "device": "cpu", "recipe": recipe,
            "subjects": {str(fold): {"dice": 0.8 + fold / 100, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1.0}}}))
    destination = tmp_path / "shipped" / "default.pt"
    destination.parent.mkdir()
    accuracy.ship(1, tmp_path, destination, "tiny", all_subjects=True)
    model = load_model(destination)
    assert len(model.networks) == 1 and model.network_config.depth == 2 and model.network_config.base_channels == 4
    assert model.card.training["command"].endswith("ship --k 1 --tag tiny --all-subjects")
    assert model.card.training["train_seconds_all_subjects"] > 0
    assert model.card.validation["dice_mean"] == pytest.approx(0.82)
    card = (destination.parent / "MODEL_CARD.md").read_text()
    assert "one network trained on all 2 subjects" in card and "Dice 0.8200" in card


def test_the_fill_keeps_its_start_network_unless_the_recipe_says_otherwise():
    """``densify``'s fine-tuning averages the tuned network with the CV network it began from, as the fill does;
    ``--set densify_keep_start_network=false`` repeats the fills measured without that guard."""
    assert accuracy.densify_config(accuracy.Recipe(), fine_tune=True).keep_start_networks is True
    assert accuracy.densify_config(accuracy.Recipe(), fine_tune=False).keep_start_networks is False
    earlier = accuracy.Recipe().with_overrides(["densify_keep_start_network=false"])
    assert accuracy.densify_config(earlier, fine_tune=True).keep_start_networks is False
    # mode finetune_mean keeps it whatever the recipe says
    assert accuracy.densify_config(earlier, fine_tune=True, keep_start=True).keep_start_networks is True
    assert "finetune_mean" in accuracy.DENSIFY_MODES


def test_a_few_scans_are_a_fixed_nested_draw_from_the_fold_training_subjects():
    """``--train-subjects N``: the learning curve changes how many scans are painted, never which ones."""
    for fold in range(accuracy.FOLDS):
        held_out = {s for s in accuracy.SUBJECTS if accuracy.fold_of(s) == fold}
        every = accuracy.training_subjects(fold)
        assert set(every) == set(accuracy.SUBJECTS) - held_out and len(every) == 12
        three, six = accuracy.training_subjects(fold, 3), accuracy.training_subjects(fold, 6)
        assert len(three) == 3 and len(six) == 6 and set(three) <= set(six) <= set(every)
        assert accuracy.training_subjects(fold, 3) == three  # the same draw every time
    assert accuracy.training_subjects(0, 3) != accuracy.training_subjects(1, 3)
    for wrong in (0, 13):
        with pytest.raises(SystemExit, match="between 1 and 12"):
            accuracy.training_subjects(0, wrong)


def test_a_few_scans_run_is_reported_with_its_subject_count_and_never_shipped(tmp_path):
    held_out = [s for s in accuracy.SUBJECTS if accuracy.fold_of(s) == 0]
    for fold in range(accuracy.FOLDS):
        (tmp_path / f"generalisation_k5_n3_fold{fold}.json").write_text(json.dumps({
            "protocol": "generalisation", "k": 5, "tag": "n3", "fold": fold, "test_subjects": held_out,
            "annotated_slices": 15, "train_subjects": accuracy.training_subjects(fold, 3),
            "train_seconds": 10.0, "device": "cpu", "recipe": {},
            "subjects": {str(fold): {"dice": 0.8, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1.0}}}))
    out = tmp_path / "accuracy.md"
    accuracy.report(tmp_path, out)
    assert "| 5 (n3; 3 training subjects) | 5/5 | 15 | 5 | 0.800 ± 0.000" in out.read_text()
    with pytest.raises(SystemExit, match="few subjects only"):
        accuracy.ship(5, tmp_path, tmp_path / "default.pt", "n3")


def _fill_record(folder: Path, k: int, mode: str, subject: str, dice: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"densify_k{k}_{mode}_e120_bw5_s{subject}.json").write_text(json.dumps({
        "protocol": "densify", "k": k, "mode": mode, "tag": "e120_bw5", "subject": subject, "painted": [1],
        "seconds": 1.0, "dice": dice, "hd95_mm": 9.0, "assd_mm": 2.0, "volume_ml": 1.0, "dice_scored_slices": dice}))


def _product_fill_results(tmp_path: Path, guard_dice: float) -> Path:
    """Two subjects at k=5: subject 3's start network passes the floor, subject 15's does not."""
    (tmp_path / "start_network_check.json").write_text(json.dumps(
        {"floor": 0.8, "chaos_mri": {"k5": {"3": 0.9, "15": 0.7}}}))
    for subject, kept, not_kept in (("3", 0.93, 0.92), ("15", 0.90, 0.91)):
        _fill_record(tmp_path / "densify_keep_start", 5, "finetune_mean", subject, kept)
        _fill_record(tmp_path / "densify_liver_free", 5, "finetune", subject, not_kept)
    _fill_record(tmp_path / "densify_guard", 5, "finetune", "15", guard_dice)
    return tmp_path


def test_the_product_fills_keep_the_start_network_only_where_it_passes_the_floor(tmp_path):
    records = product_fills.product_fill_records(_product_fill_results(tmp_path, guard_dice=0.91))
    chosen = {r["subject"]: (r["dice_scored_slices"], r["start_kept"]) for r in records}
    assert chosen == {"3": (0.93, True), "15": (0.91, False)}
    out = tmp_path / "accuracy.md"
    accuracy.report(tmp_path, out)
    assert "| 5 | LiverUNet as Slicer's *Fill from painted slices* runs" in out.read_text()
    assert "| 2 | 0.920 ± 0.010 |" in out.read_text()


def test_the_product_fills_are_refused_when_a_fill_run_through_the_product_differs(tmp_path):
    with pytest.raises(ValueError, match="subject 15.*does not equal"):
        product_fills.product_fill_records(_product_fill_results(tmp_path, guard_dice=0.90))


def test_the_committed_product_fills_give_the_figures_the_notes_state():
    """docs/accuracy_notes.md quotes 0.937 / 0.934 / 0.924 for the product's fills at k = 3 / 5 / 10."""
    records = product_fills.product_fill_records(Path(__file__).resolve().parents[1] / "docs" / "accuracy_results")
    means = {k: round(float(np.mean([r["dice_scored_slices"] for r in records if r["k"] == k])), 3) for k in (3, 5, 10)}
    assert means == {3: 0.937, 5: 0.934, 10: 0.924}
    assert all(len([r for r in records if r["k"] == k]) == 15 for k in means)


def test_a_run_with_the_product_s_validation_hold_out_says_so_in_the_report(tmp_path):
    held_out = [s for s in accuracy.SUBJECTS if accuracy.fold_of(s) == 0]
    (tmp_path / "generalisation_k5_val_n3_fold0.json").write_text(json.dumps({
        "protocol": "generalisation", "k": 5, "tag": "val_n3", "fold": 0, "test_subjects": held_out,
        "annotated_slices": 15, "train_subjects": accuracy.training_subjects(0, 3),
        "validation_subjects": accuracy.training_subjects(0, 3)[:1], "validation_dice": 0.8, "epochs_run": [37],
        "train_seconds": 10.0, "device": "cpu", "recipe": {},
        "subjects": {"3": {"dice": 0.8, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1.0}}}))
    out = tmp_path / "accuracy.md"
    accuracy.report(tmp_path, out)
    assert "| 5 (val_n3; 3 training subjects, 1 of them validating) | 1/5 |" in out.read_text()


def test_the_report_opens_with_the_shipped_models_then_the_notes_then_every_run(tmp_path, monkeypatch):
    """docs/accuracy.md: the shipped models' figures first, the experiments that did not help next, the tables last."""
    from bench import accuracy_summary

    monkeypatch.setattr(accuracy_summary, "shipped_run", lambda modality: ("t", 1) if modality == "mri" else None)
    for fold, (subject, dice) in enumerate((("3", 0.9), ("5", 0.8))):
        (tmp_path / f"generalisation_k1_t_fold{fold}.json").write_text(json.dumps({
            "protocol": "generalisation", "k": 1, "tag": "t", "fold": fold, "test_subjects": [subject],
            "annotated_slices": 40, "train_seconds": 10.0, "device": "cpu", "recipe": {},
            "subjects": {subject: {"dice": dice, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1.0}}}))
    (tmp_path / "generalisation_k1_other_fold0.json").write_text(json.dumps({
        "protocol": "generalisation", "k": 1, "tag": "other", "fold": 0, "test_subjects": ["3"],
        "annotated_slices": 40, "train_seconds": 10.0, "device": "cpu", "recipe": {},
        "subjects": {"3": {"dice": 0.5, "hd95_mm": 10.0, "assd_mm": 2.0, "volume_ml": 1.0}}}))
    _product_fill_results(tmp_path, guard_dice=0.91)
    (tmp_path / "densify_k5_mci_s3.json").write_text(json.dumps({
        "protocol": "densify", "k": 5, "mode": "mci", "subject": "3", "painted": [1], "seconds": 1.0,
        "dice": 0.8, "hd95_mm": 9.0, "assd_mm": 3.0, "volume_ml": 1.0, "dice_scored_slices": 0.7}))
    out = tmp_path / "accuracy.md"
    out.with_name("accuracy_notes.md").write_text("## Experiments that did not help\n\n| what changed | Dice | HD95 | decision |\n")
    accuracy.report(tmp_path, out)
    text = out.read_text()
    shipped, notes, runs = (text.index(h) for h in ("## The shipped models", "## Experiments that did not help",
                                                    "## All measured runs"))
    assert shipped < notes < runs
    summary = text[shipped:notes]
    assert "| MRI, `liver_mri_t2_default.pt` | 2 CHAOS T2-SPIR subjects" in summary
    assert "| 0.850 ± 0.050 | 10.0 ± 0.0 | 2.00 ± 0.00 |" in summary  # the shipped run's folds only
    assert "0.500" not in summary and "CT, " not in summary  # another tag; no CT model here
    assert "| 2 | every 5th liver slice | 0.920 ± 0.010 | 0.700 |" in summary  # the product's fills beside the peer
    assert "| 1 (other) | 1/5 |" in text[runs:]


def test_the_shipped_models_name_the_cross_validation_they_came_from():
    """The first section follows the shipped models' cards: their ship commands name the run and k."""
    from bench import accuracy_summary
    from LiverUNetLib.model_file import load_model
    from LiverUNetLib.shipped_models import shipped_model_path

    for modality in ("ct", "mri"):
        path = shipped_model_path(modality)
        if path is None:
            assert accuracy_summary.shipped_run(modality) is None
            continue
        tag, k = accuracy_summary.shipped_run(modality)
        command = load_model(path).card.training["command"]
        assert f"--tag {tag}" in command if tag else "--tag" not in command
        assert f"ship --k {k}" in command if modality == "mri" else k == 1
