"""The training recipe the accuracy benchmarks vary, and the training and inference settings it gives.

One ``Recipe`` holds every choice a run can change with ``--set FIELD=VALUE``; its defaults are the recipe
the rows without a tag used, and its record in each result file says exactly what was run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from LiverUNetLib.fill_recipe import FILL_RECIPE
from LiverUNetLib.inference import InferenceConfig


@dataclass
class Recipe:
    """The training recipe under test (also the default model's recipe)."""

    epochs: int = 40
    samples_per_epoch: int = 256
    base_channels: int = 16
    depth: int = 4
    normalization: str = "batch"  # batch, instance or group (LiverUNetLib.networks.Normalization)
    boundary_weight: float = 0.0  # U-Net paper's border weighting of the BCE term (w0); 0 off
    liver_free_beyond_painting: bool = False  # slices beyond the painting by more than its interval: no liver
    in_plane_spacing_mm: float = 2.5
    context_slices: int = 1
    crop_size: int = 128
    learning_rate: float = 2e-3
    # densifying: the values Slicer's "Fill from painted slices" uses (LiverUNetLib/fill_recipe.py)
    finetune_epochs: int = FILL_RECIPE.finetune_epochs
    finetune_learning_rate: float = FILL_RECIPE.finetune_learning_rate
    scratch_epochs: int = FILL_RECIPE.scratch_epochs
    intensity_region: str = "body"
    appearance_augmentation: bool = True
    bias_field_augmentation: bool = False  # MRI coil shading (augmentation.RandomBiasField)
    augmentation_strength: float = 1.0  # geometry and intensity transforms; 0 off, 2 strongest
    mixed_precision: bool = True  # bfloat16 autocast on GPUs and on CPUs with AMX / AVX-512-BF16
    # densifying learns one scan's own appearance: appearance transforms only slow the fit there
    densify_appearance_augmentation: bool = FILL_RECIPE.appearance_augmentation
    # the fill's fine-tuned network averaged with the CV network it started from, as the product's fill does;
    # false repeats the fills without that guard (densify_liver_free/)
    densify_keep_start_network: bool = FILL_RECIPE.keep_start_network
    seed: int = 0  # another value repeats a run with other random draws (run-to-run spread)
    networks_per_fold: int = 1  # networks from different random starts, averaged (TrainConfig.networks_per_fold)
    # 3: both kidneys and the spleen (the CHAOS labels 2-4) as extra outputs learnt beside the liver
    # (TrainConfig.neighbour_organs); their labels are read on the painted slices only, like the liver's
    neighbour_organs: int = 0
    # the product averages neighbouring slices' probabilities before the threshold (InferenceConfig); off
    # here so every row stays comparable with the rows scored without it (its gain: bench/studies/slice_smoothing.py)
    slice_smoothing: bool = False
    # 0: each fold trains on all its subjects and keeps the last epoch (every CV row). Above 0: that share
    # of them is held out for a validation Dice, the best checkpoint is kept and training stops after
    # ``patience`` epochs without gain, as the product's *Train* does (TrainConfig: 0.2 and 15, only from five
    # cases up, and only checkpoints of the annealed phase: training.checkpoint_selectable)
    validation_fraction: float = 0.0
    patience: int = 0
    # an epoch draws at least every annotated slice (True, every MRI row) or exactly samples_per_epoch (the CT
    # recipe: training length independent of how many slices are labelled; TrainConfig.every_slice_each_epoch)
    every_slice_each_epoch: bool = True
    # the CT intensity window in Hounsfield units (TrainConfig.ct_window); MRI ignores it
    ct_window_low: float = -200.0
    ct_window_high: float = 300.0

    def with_overrides(self, pairs: list[str]) -> "Recipe":
        """``["epochs=60", "intensity_region=volume"]`` -> a recipe with those fields changed (typed)."""
        values = asdict(self)
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep or key not in values:
                raise SystemExit(f"--set expects field=value with a Recipe field ({', '.join(values)}); got {pair!r}")
            kind = type(values[key])
            values[key] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
        return Recipe(**values)

    @classmethod
    def from_record(cls, recipe: dict[str, Any]) -> "Recipe":
        """The recipe stored in a result file (fields the file lacks take their defaults; fields Recipe lacks are ignored)."""
        fields = asdict(cls())
        return cls(**{key: value for key, value in recipe.items() if key in fields})


def train_config(recipe: Recipe, seed: int, **overrides: Any):
    """``TrainConfig`` for ``recipe`` (``overrides`` replace single fields, e.g. a fill's epochs)."""
    from LiverUNetLib.training import TrainConfig

    values = dict(
        epochs=recipe.epochs,
        samples_per_epoch=recipe.samples_per_epoch,
        base_channels=recipe.base_channels,
        depth=recipe.depth,
        normalization=recipe.normalization,
        boundary_weight=recipe.boundary_weight,
        liver_free_beyond_painting=recipe.liver_free_beyond_painting,
        in_plane_spacing_mm=recipe.in_plane_spacing_mm,
        context_slices=recipe.context_slices,
        crop_size=recipe.crop_size,
        learning_rate=recipe.learning_rate,
        intensity_region=recipe.intensity_region,
        appearance_augmentation=recipe.appearance_augmentation,
        bias_field_augmentation=recipe.bias_field_augmentation,
        augmentation_strength=recipe.augmentation_strength,
        mixed_precision=recipe.mixed_precision,
        validation_fraction=recipe.validation_fraction,
        patience=recipe.patience,
        seed=seed,
        networks_per_fold=recipe.networks_per_fold,
        neighbour_organs=recipe.neighbour_organs,
        every_slice_each_epoch=recipe.every_slice_each_epoch,
        ct_window=(recipe.ct_window_low, recipe.ct_window_high),
        save_half_precision=True,
    )
    values.update(overrides)
    return TrainConfig(**values)


def inference_config(recipe: Recipe) -> InferenceConfig:
    """How the benchmark segments: on the CPU, with the recipe's post-processing."""
    return InferenceConfig(device="cpu", slice_smoothing=recipe.slice_smoothing)


def every_tenth_epoch(prefix: str) -> Callable[[Any], None]:
    """A training progress callback that prints every tenth epoch's loss."""
    def report(event: Any) -> None:
        if event.epoch and event.epoch % 10 == 0:
            print(f"  {prefix} {event.message} loss={event.loss}", flush=True)
    return report
