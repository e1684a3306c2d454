"""Training on sparse painted slices: split by case, k-fold ensembles, early stopping, resume.

Cases are split by case, never by slice, so validation Dice measures generalisation to new scans.
With ``folds > 1`` each fold trains on the other folds' cases and the fold networks are saved
together and averaged at inference; ``networks_per_fold > 1`` trains several networks on the same
cases from different random starts, which with sparse paint disagree enough for their average to gain.
The best checkpoint by validation Dice is kept and training stops early when validation stops improving,
both only once the one-cycle learning rate has come down (``checkpoint_selectable``): a checkpoint from
the high-rate phase is not a finished model, however it scores on one held-out scan.
The model file is written only at the end and atomically: a failure or cancellation leaves any
earlier model untouched. A resume checkpoint beside the output lets an interrupted run continue.

``train`` and its settings are here; its parts are beside it: ``training_sampler`` (cases at network
resolution, the batches drawn from them), ``training_folds`` (the split by case, the runs per fold),
``training_checkpoints`` (validation Dice, which checkpoint is kept, the resume checkpoint) and
``training_start`` (fine-tuning from a model, the fill's guard).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from . import __version__
from .augmentation import default_augmentation
from .devices import DeviceChoice, autocast_dtype, describe_device, fast_cpu_math, resolve_device
from .errors import LiverUNetError
from .labels import SparseLabel, liver_free_beyond_painting
from .losses import dice_bce_loss, neighbour_organs_loss
from .model_file import LiverModel, ModelCard, load_model, save_model, weights_digest
from .networks import NetworkConfig, Normalization, UNet
from .preprocessing import IntensityRegion, Modality, PreprocessConfig, modality_of_images
from .progress import CancelToken, ProgressCallback, ProgressEvent, Stage, ignore_progress
# the parts of training, each in its own module; their names stay importable from here
from .training_checkpoints import (  # noqa: F401
    WARMUP_FRACTION,
    _atomic_torch_save,
    _resume_path,
    checkpoint_selectable,
    inputs_digest,
    read_resume_checkpoint,
    validation_dice,
)
from .training_folds import _run_name, split_cases, training_runs  # noqa: F401
from .training_sampler import _PreparedCase, _SliceSampler, neighbour_masks, prepare_case  # noqa: F401
from .training_start import fine_tuning_preprocess, start_network_dice, start_networks_worth_keeping  # noqa: F401
from .train_schedule import TRAIN_SCHEDULE
from .training_distributed import close_process_group, process_group_opened_by_training, training_hooks
from .volume import Volume


@dataclass
class TrainingCase:
    """One scan and its (possibly sparse) liver label."""

    name: str
    image: Volume
    label: SparseLabel
    # other organs (integer map, KJI, 1..N; 0 elsewhere), trusted on the label's annotated slices; read only
    # when TrainConfig.neighbour_organs > 0 (the CHAOS labels hold both kidneys and the spleen)
    neighbours: Optional[np.ndarray] = None


@dataclass
class TrainConfig:
    """Every training choice in one place; stored in the model card.

    The defaults are the recipe chosen by cross-validation on CHAOS MRI (``bench/accuracy.py``,
    docs/accuracy_notes.md): 2.5D (three slices in), base 16, 128-pixel crops at 2.5 mm, 120 epochs,
    border-weighted BCE (w0 = 5); slices well beyond a sparse painting train as liver-free.
    The benchmark trains without a validation hold-out; these defaults keep one (20 % of the cases) from
    five cases up, so the user sees a validation Dice and the best checkpoint of the annealed phase is kept.
    """

    # None: the schedule of how training starts (train_schedule.py): 120 epochs from scratch, fewer from a model;
    # learning_rate likewise (2e-3 from scratch). A value given here wins either way
    epochs: Optional[int] = None
    folds: int = 1
    # networks trained on each fold's cases from different random starts and averaged at inference:
    # with every 5th slice painted two gained +0.007 Dice (docs/accuracy_notes.md), at twice the time
    networks_per_fold: int = 1
    # fine-tuning only: the model written also holds each network training started from, averaged with the
    # tuned one; guards a fill from few painted slices against forgetting what the start knew (fill_recipe.py).
    # A start that scores below keep_start_min_dice on the painted slices is left out, and so is a start made
    # for another modality: on the CHAOS CT sample the MRI start scored 0.83-0.94 there through the CT window,
    # yet averaging it in cost the fill 0.005-0.017 Dice at every painting interval (docs/accuracy_notes.md)
    keep_start_networks: bool = False
    keep_start_min_dice: float = 0.8
    # on CT the start is left out even when it finds the liver: from the shipped CT model, the fine-tuned network
    # alone filled 8 of 12 CT fills better (4 subjects, every 5th to 40th slice painted; +0.004 Dice on average,
    # never more than 0.001 lower), where on MRI the start gained +0.013 with every 10th slice painted
    keep_start_networks_on_ct: bool = False
    batch_size: int = 8
    learning_rate: Optional[float] = None
    weight_decay: float = 1e-4
    augmentation_strength: float = 1.0
    appearance_augmentation: bool = True  # random intensity curves and liver brightness (augmentation.py)
    bias_field_augmentation: bool = False  # MRI coil shading (augmentation.RandomBiasField)
    samples_per_epoch: int = 256
    # True: an epoch draws every annotated slice at least once, max(samples_per_epoch, annotated slices), the
    # recipe the MRI figures were measured with. False: exactly samples_per_epoch, so training length does not
    # grow with the labelled slices (30 densely labelled BTCV CTs hold 3,809 slices: 15x the 256 of an MRI epoch)
    every_slice_each_epoch: bool = True
    patience: int = 15
    validation_fraction: float = 0.2
    # with fewer cases all of them train and the last epoch is kept: with three scans the hold-out cost
    # a third of the data and the run scored far below the same three scans trained to the end (0.772 against
    # 0.812 Dice on new CHAOS subjects; docs/accuracy_notes.md)
    validation_min_cases: int = 5
    validate_every: int = 1
    boundary_weight: float = 5.0  # U-Net paper border weighting of the BCE (w0); cross-validated, 0 turns it off
    # slices farther beyond the painted ones than the painting interval count as liver-free (labels.py);
    # cross-validated with every 3rd and 5th slice painted (docs/accuracy_notes.md); no effect on dense labels
    liver_free_beyond_painting: bool = True
    bce_weight: float = 1.0
    # organs beside the liver learnt as extra output channels from TrainingCase.neighbours (0: liver only),
    # their loss weighted by neighbour_weight; inference reads the liver channel alone
    neighbour_organs: int = 0
    neighbour_weight: float = 0.5
    crop_size: int = 128
    # None: read from the training images (preprocessing.modality_of_images). A fine-tuned model takes its
    # cases' modality too, so an MRI model fine-tuned on painted CT becomes a CT model that accepts CT
    modality: Optional[Modality] = None
    in_plane_spacing_mm: Optional[float] = 2.5
    context_slices: int = 1
    # Hounsfield window CT is clipped to before scaling to [-1, 1]; stored in the model file. The shipped CT
    # model's (bench/accuracy_ct.py): the BTCV CTs hold only [-125, 275], so a model trained on them must not
    # use a wider window (it would see values at inference it never saw in training). Fine-tuning keeps the
    # start model's window; model files without one were trained with [-200, 300] (PreprocessConfig)
    ct_window: tuple[float, float] = (-125.0, 275.0)
    base_channels: int = 16
    depth: int = 4
    normalization: Normalization = Normalization.BATCH
    intensity_region: IntensityRegion = IntensityRegion.BODY
    device: DeviceChoice = DeviceChoice.AUTO
    seed: int = 0
    mixed_precision: bool = True
    save_half_precision: bool = False
    # fine-tuning only: the start model's encoder (and its batch-norm statistics) stays as it is and only the
    # decoder learns, which spares the backward pass through the encoder (a fill study, docs/accuracy_notes.md)
    freeze_encoder: bool = False
    # stop once the network's Dice on its own painted slices (the training slices, at network resolution, after
    # each epoch) reaches this; None trains every epoch (a fill study, docs/accuracy_notes.md)
    stop_when_fitted: Optional[float] = None

    def __post_init__(self) -> None:
        problems = []
        for key, kind in (
            *((("modality", Modality),) if self.modality is not None else ()),
            ("normalization", Normalization),
            ("intensity_region", IntensityRegion),
            ("device", DeviceChoice),
        ):
            try:
                setattr(self, key, kind(getattr(self, key)))
            except ValueError:
                choices = ", ".join(k.value for k in kind)
                problems.append(f"{key} must be one of {choices} (got {getattr(self, key)!r})")
        if self.epochs is not None and self.epochs < 1:
            problems.append(f"epochs must be at least 1 (got {self.epochs})")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            problems.append(f"learning rate must be 0 or more (got {self.learning_rate})")
        if self.folds < 1:
            problems.append(f"folds must be at least 1 (got {self.folds})")
        if self.networks_per_fold < 1:
            problems.append(f"networks per fold must be at least 1 (got {self.networks_per_fold})")
        if self.batch_size < 1:
            problems.append(f"batch size must be at least 1 (got {self.batch_size})")
        if not 0 <= self.validation_fraction < 1:
            problems.append("validation fraction must be in [0, 1)")
        if self.validation_min_cases < 2:
            problems.append(f"validation_min_cases must be at least 2 (got {self.validation_min_cases})")
        if self.depth < 1 or self.base_channels < 1:
            problems.append("network depth and base channels must be positive")
        if self.stop_when_fitted is not None and not 0 < self.stop_when_fitted <= 1:
            problems.append(f"stop_when_fitted must be in (0, 1] or null (got {self.stop_when_fitted})")
        if not 0 <= self.keep_start_min_dice <= 1:
            problems.append(f"keep_start_min_dice must be in [0, 1] (got {self.keep_start_min_dice})")
        if self.validate_every < 1:
            problems.append(f"validate_every must be at least 1 (got {self.validate_every})")
        if self.context_slices < 0:
            problems.append(f"context slices must be 0 or more (got {self.context_slices})")
        if self.neighbour_organs < 0 or self.neighbour_weight < 0:
            problems.append(f"neighbour_organs and neighbour_weight must be 0 or more (got {self.neighbour_organs}, "
                            f"{self.neighbour_weight})")
        given = self.ct_window
        window = list(given) if isinstance(given, (list, tuple)) else list(given.ravel()) if isinstance(given, np.ndarray) else []
        numbers = all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                      and math.isfinite(float(v)) for v in window)
        if len(window) != 2 or not numbers or not window[0] < window[1]:
            problems.append(f"ct_window must be two Hounsfield values, low < high (got {given!r})")
        else:
            self.ct_window = (float(window[0]), float(window[1]))
        if self.samples_per_epoch < 1:
            problems.append(f"samples per epoch must be at least 1 (got {self.samples_per_epoch})")
        if self.in_plane_spacing_mm is not None and not self.in_plane_spacing_mm > 0:
            problems.append(f"in-plane spacing must be positive, or null for native (got {self.in_plane_spacing_mm})")
        if problems:
            raise LiverUNetError("Invalid training settings: " + "; ".join(problems) + ".")

    def scheduled(self, fine_tune: bool) -> "TrainConfig":
        """This config with the schedule filled in where it is unset: the fine-tuning schedule when training
        starts from a model, the cross-validated one from scratch (train_schedule.py)."""
        return replace(
            self,
            epochs=self.epochs if self.epochs is not None else TRAIN_SCHEDULE.epochs(fine_tune),
            learning_rate=self.learning_rate if self.learning_rate is not None else TRAIN_SCHEDULE.learning_rate(fine_tune),
        )

    def network_config(self) -> NetworkConfig:
        return NetworkConfig(
            in_channels=2 * self.context_slices + 1,
            out_channels=1 + self.neighbour_organs,
            base_channels=self.base_channels,
            depth=self.depth,
            normalization=self.normalization,
        )

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(
            modality=self.modality,
            in_plane_spacing_mm=self.in_plane_spacing_mm,
            context_slices=self.context_slices,
            ct_window=self.ct_window,
            intensity_region=self.intensity_region,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("modality", "normalization", "intensity_region", "device"):
            data[key] = None if getattr(self, key) is None else getattr(self, key).value
        data["ct_window"] = list(self.ct_window)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise LiverUNetError(f"Unknown training settings: {', '.join(sorted(unknown))}.")
        return cls(**data)


@dataclass
class TrainResult:
    model_path: Path
    validation_dice: Optional[float]
    epochs_run: list[int]
    fold_dice: list[Optional[float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def with_liver_free_slices(case: TrainingCase, progress: ProgressCallback = ignore_progress) -> TrainingCase:
    """The case with the slices beyond its painting annotated as liver-free (``liver_free_beyond_painting``)."""
    spacing = float(case.image.spacing_kji[case.label.slice_axis])
    label = liver_free_beyond_painting(case.label, spacing)
    added = label.annotated_count - case.label.annotated_count
    if added:
        progress(ProgressEvent(Stage.PREPROCESSING, None,
                               f"{case.name}: {added} slices beyond the painted ones taken as liver-free"))
    return TrainingCase(case.name, case.image, label, case.neighbours)


def _provenance(cases: list[TrainingCase], config: TrainConfig, init: Optional[str]) -> dict[str, Any]:
    return {
        "cases": [
            {
                "name": c.name,
                "slices": int(c.image.array.shape[c.image.slice_axis()]),
                "annotated_slices": c.label.annotated.tolist(),
            }
            for c in cases
        ],
        "settings": config.to_dict(),
        "initialised_from": init or "scratch (He initialisation)",
        "library_version": __version__,
    }


def train(
    cases: list[TrainingCase],
    config: Optional[TrainConfig] = None,
    output_path: Union[str, os.PathLike] = "liver_model.pt",
    init_model: Union[str, os.PathLike, LiverModel, None] = None,
    progress: ProgressCallback = ignore_progress,
    cancel: Optional[CancelToken] = None,
    resume: bool = True,
) -> TrainResult:
    """Train a liver model on ``cases`` and write it to ``output_path``."""
    try:
        return _train(cases, config, output_path, init_model, progress, cancel, resume)
    except BaseException as error:
        # Under torchrun a cancelled or failed run never reaches hooks.finish: its process group is closed here,
        # not at exit, where an open gloo group aborted the process ("terminate called without an active
        # exception"). The traceback's frames hold DDP's reducer, which holds the group: cleared first (only
        # then, so a single-process failure keeps its locals for a debugger). The run's own error is the one
        # raised, even if closing the group fails too.
        if process_group_opened_by_training():
            traceback.clear_frames(error.__traceback__)
            try:
                close_process_group()
            except Exception:  # noqa: BLE001 - a broken group must not hide the error that broke it
                pass
        raise


@fast_cpu_math()
def _train(
    cases: list[TrainingCase],
    config: Optional[TrainConfig],
    output_path: Union[str, os.PathLike],
    init_model: Union[str, os.PathLike, LiverModel, None],
    progress: ProgressCallback,
    cancel: Optional[CancelToken],
    resume: bool,
) -> TrainResult:
    started = time.perf_counter()
    config = config or TrainConfig()
    cancel = cancel or CancelToken()
    output = Path(output_path)
    if not cases:
        raise LiverUNetError("No training case given. Add at least one scan with a painted liver.")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise LiverUNetError("Training case names must be unique.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LiverUNetError(f"Cannot create the folder for {output}: {error.strerror}.") from error
    if not os.access(output.parent, os.W_OK):
        raise LiverUNetError(f"The folder {output.parent} is not writable. Choose another output path.")

    config = replace(config, modality=config.modality or modality_of_images([c.image for c in cases]))
    init: Optional[LiverModel] = None
    init_name = None
    if init_model is not None:
        init = init_model if isinstance(init_model, LiverModel) else load_model(init_model)
        init_name = init.card.name if isinstance(init_model, LiverModel) else str(init_model)
        network_config, preprocess = init.network_config, fine_tuning_preprocess(init, config.modality)
        if config.neighbour_organs and network_config.out_channels != 1 + config.neighbour_organs:
            raise LiverUNetError(
                f"The start model has {network_config.out_channels - 1} neighbouring-organ outputs, not "
                f"{config.neighbour_organs}. Fine-tune with neighbour_organs 0 (the liver alone) or train from scratch.")
    else:
        network_config, preprocess = config.network_config(), config.preprocess_config()
    config = config.scheduled(fine_tune=init is not None)

    torch.manual_seed(config.seed)
    # under torchrun, DDP across the processes (training_distributed.py); in one process the hooks do nothing
    hooks = training_hooks(resolve_device(config.device), config.batch_size)
    device, progress = hooks.device, hooks.progress(progress)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    cpu_generator = torch.Generator().manual_seed(config.seed)
    progress(ProgressEvent(Stage.PREPROCESSING, 0.0, f"Preparing {len(cases)} case(s) on {describe_device(device)}"))
    start_modality = None if init is None else init.preprocess.modality
    if start_modality not in (None, preprocess.modality):
        start, now = start_modality.value.upper(), preprocess.modality.value.upper()
        progress(ProgressEvent(Stage.PREPROCESSING, None, f"Fine-tuning the {start} model on {now} images: the new "
                               f"model is a {now} model, with {now} intensity normalisation"))
    prepared = []
    for case in cases:
        cancel.check()
        if config.liver_free_beyond_painting:
            case = with_liver_free_slices(case, progress)
        prepared.append(prepare_case(case, preprocess, device, config.neighbour_organs))
    splits = split_cases(len(cases), config)
    if config.folds == 1 and config.validation_fraction > 0 and not splits[0][1]:
        progress(ProgressEvent(Stage.PREPROCESSING, None, f"All {len(cases)} case(s) train and the last epoch is kept: "
                               f"a validation case is held out from {config.validation_min_cases} cases up, "
                               "since with fewer it costs more than its Dice tells"))
    runs = training_runs(splits, config.networks_per_fold)
    augment = default_augmentation(
        config.augmentation_strength, config.appearance_augmentation, config.bias_field_augmentation
    )
    amp_dtype = autocast_dtype(device, training=True) if config.mixed_precision else None
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 and device.type == "cuda" else None
    steps_per_epoch = max(1, max(config.samples_per_epoch, 1) // config.batch_size)

    resume_file = _resume_path(output)
    state: dict[str, Any] = {"fold": 0, "epoch": 0, "finished": [], "fold_dice": [], "epochs_run": []}
    start_weights = "scratch" if init is None else weights_digest([n.state_dict() for n in init.networks])
    fingerprint = inputs_digest(cases, start_weights) if resume else ""
    if resume and hooks.from_writer(resume_file.is_file):
        saved = hooks.from_writer(lambda: read_resume_checkpoint(resume_file, config.to_dict(), names, fingerprint))
        if saved is not None:
            state = saved
            resumed = _run_name(state["fold"], runs[state["fold"]][0], len(splits), config.networks_per_fold)
            progress(ProgressEvent(Stage.TRAINING, None, f"Resuming {resumed}, epoch {state['epoch']}"))
        else:
            progress(ProgressEvent(Stage.PREPROCESSING, None, f"Not resuming from {resume_file.name}: it was made with "
                                   "other settings, images or labels (or is unreadable); training starts afresh"))

    finished_states: list[dict[str, torch.Tensor]] = list(state["finished"])
    fold_dice: list[Optional[float]] = list(state["fold_dice"])
    epochs_run: list[int] = list(state["epochs_run"])
    # slices per epoch of each finished run: with every_slice_each_epoch they differ from fold to fold
    samples_run: list[int] = list(state.get("samples_run", []))
    write_checkpoints = True
    total_epochs = config.epochs * len(runs)
    epoch_times: list[float] = []

    # the resume state's "fold" counts training runs (networks), as the progress events' fold/folds do
    for run in range(state["fold"], len(runs)):
        fold, (train_idx, val_idx) = runs[run]
        name = _run_name(run, fold, len(splits), config.networks_per_fold)
        net = UNet(network_config)
        if init is not None:
            net.load_state_dict(init.networks[run % len(init.networks)].state_dict())
        # channels_last pays on every backend measured (CPU oneDNN included): see docs/benchmarks.md
        net = net.to(device, memory_format=torch.channels_last)
        frozen = config.freeze_encoder and init is not None
        net.encoders.requires_grad_(not frozen)
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        total_steps = config.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=total_steps, pct_start=WARMUP_FRACTION
        )
        best_state, best_dice, best_epoch, start_epoch = None, -1.0, 0, 0
        if run == state["fold"] and state["epoch"] > 0 and "net" in state:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best_state, best_dice, best_epoch = state.get("best_state"), state["best_dice"], state["best_epoch"]
            start_epoch = state["epoch"]
            cpu_generator.set_state(state["cpu_rng"])
        train_net = hooks.wrap(net)  # DDP with synchronised batch norm under torchrun; net itself otherwise
        # the context comes from the model (an init model's, when fine-tuning), not from the settings
        sampler = _SliceSampler(
            [prepared[i] for i in train_idx], config, network_config.size_multiple, cpu_generator, preprocess.context_slices
        )
        hooks.split(sampler, config.seed, [cpu_generator, generator])
        validation = [prepared[i] for i in val_idx]
        epoch_samples = sampler.samples(steps_per_epoch * config.batch_size)
        progress(ProgressEvent(Stage.PREPROCESSING, None, f"{name}: {config.epochs} epochs of {epoch_samples} slices "
                               f"({sampler.steps(steps_per_epoch * config.batch_size)} batches of {config.batch_size})"))
        net.train()
        net.encoders.train(not frozen)
        epoch = start_epoch - 1  # a checkpoint written after the last epoch resumes with nothing left to run
        for epoch in range(start_epoch, config.epochs):
            epoch_start = time.perf_counter()
            hooks.start_epoch(run, epoch)
            losses = []
            for batch in sampler.batches(steps_per_epoch * config.batch_size):
                hooks.check_cancel(cancel)
                batch = augment(batch, generator if device.type != "cpu" else cpu_generator)
                image = batch.image.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = train_net(image)
                loss = dice_bce_loss(logits[:, :1], batch.mask[:, :1], batch.valid, config.bce_weight,
                                     config.boundary_weight)
                if config.neighbour_organs:
                    loss = loss + config.neighbour_weight * neighbour_organs_loss(
                        logits[:, 1:], batch.mask[:, 1:], batch.valid)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if scheduler.last_epoch < total_steps - 1:
                    scheduler.step()
                losses.append(float(loss.detach()))
            dice = None
            selectable = checkpoint_selectable((epoch + 1) * steps_per_epoch, total_steps)
            if validation and ((epoch + 1) % config.validate_every == 0 or epoch + 1 == config.epochs):
                progress(ProgressEvent(Stage.VALIDATING, None, f"Validating {name}"))
                dice = hooks.validation_dice(validation_dice, net, validation, network_config.in_channels // 2)
                net.encoders.train(not frozen)
                if selectable and dice > best_dice:
                    best_dice, best_epoch = dice, epoch
                    best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            epoch_times.append(time.perf_counter() - epoch_start)
            done = run * config.epochs + epoch + 1
            remaining = total_epochs - done
            progress(
                ProgressEvent(
                    Stage.TRAINING,
                    done / total_epochs,
                    f"{name} epoch {epoch + 1}/{config.epochs}",
                    epoch=epoch + 1,
                    epochs=config.epochs,
                    fold=run + 1,
                    folds=len(runs),
                    loss=hooks.mean(float(np.mean(losses))) if losses else None,
                    validation_dice=dice,
                    eta_seconds=float(np.mean(epoch_times[-5:]) * remaining),
                )
            )
            stop_early = (validation and config.patience > 0 and best_state is not None
                          and epoch - best_epoch >= config.patience)
            if config.stop_when_fitted is not None and epoch + 1 < config.epochs:
                fitted = hooks.validation_dice(validation_dice, net, [prepared[i] for i in train_idx],
                                               network_config.in_channels // 2)
                net.encoders.train(not frozen)
                progress(ProgressEvent(Stage.TRAINING, None, f"{name}: Dice {fitted:.3f} on the painted slices"))
                stop_early = stop_early or fitted >= config.stop_when_fitted
            if resume and write_checkpoints and hooks.writes:
                try:
                    _atomic_torch_save(
                        {
                            "settings": config.to_dict(),
                            "case_names": names,
                            "inputs": fingerprint,
                            "fold": run,
                            "epoch": epoch + 1,
                            "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "best_state": best_state,
                            "best_dice": best_dice,
                            "best_epoch": best_epoch,
                            "cpu_rng": cpu_generator.get_state(),
                            "finished": finished_states,
                            "fold_dice": fold_dice,
                            "epochs_run": epochs_run,
                            "samples_run": samples_run,
                        },
                        resume_file,
                    )
                except (OSError, RuntimeError) as error:  # a full disk: train on, without a checkpoint
                    write_checkpoints = False
                    progress(ProgressEvent(Stage.TRAINING, None, f"Could not write the resume checkpoint "
                                           f"{resume_file.name} ({error}); training goes on without one"))
            if stop_early:
                break
        final = best_state if best_state is not None else {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        finished_states.append(final)
        fold_dice.append(best_dice if validation else None)
        epochs_run.append(epoch + 1)
        samples_run.append(epoch_samples)

    cancel.check()
    networks = []
    for weights in finished_states:
        net = UNet(network_config)
        net.load_state_dict(weights)
        networks.append(net.eval())
    kept = []
    if config.keep_start_networks and init is not None:
        if start_modality is preprocess.modality is Modality.CT and not config.keep_start_networks_on_ct:
            progress(ProgressEvent(Stage.VALIDATING, None,
                                   "Not keeping the starting network: on CT the fine-tuned network alone fills "
                                   "better (docs/accuracy_notes.md); it is used alone"))
        elif start_modality is preprocess.modality:
            kept = start_networks_worth_keeping(init, len(runs), prepared, config.keep_start_min_dice, device, progress)
        else:
            progress(ProgressEvent(Stage.VALIDATING, None,
                                   f"Not keeping the starting network: it was made for {start_modality.value.upper()}, "
                                   f"these images are {preprocess.modality.value.upper()}; the fine-tuned network "
                                   "alone is used"))
    networks += kept
    scores = [d for d in fold_dice if d is not None]
    mean_dice = float(np.mean(scores)) if scores else None
    model = LiverModel(networks, network_config, preprocess)
    model.card = ModelCard(
        name=output.stem,
        description=f"Trained on {len(cases)} case(s), {sum(c.label.annotated_count for c in cases)} annotated slices"
        + (f"; with the {len(kept)} network(s) it started from, averaged" if kept else "") + ".",
        training={
            **_provenance(cases, config, init_name),
            "epochs_run": epochs_run,
            # what an epoch was: every_slice_each_epoch draws at least every annotated slice, so it can exceed
            # samples_per_epoch; batches of batch_size, one optimiser step each
            "samples_per_epoch_run": samples_run,
            "steps_run": [n * max(1, samples // config.batch_size) for n, samples in zip(epochs_run, samples_run)],
            "device": describe_device(device),
            "precision": "float32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
            "seconds": round(time.perf_counter() - started, 1),
            **hooks.card(),
        },
        validation={
            "split": "by case" + (f", {config.folds}-fold" if config.folds > 1 else "")
            + (f", {config.networks_per_fold} networks per fold" if config.networks_per_fold > 1 else ""),
            "fold_dice": [None if d is None else round(d, 4) for d in fold_dice],
            "mean_dice": None if mean_dice is None else round(mean_dice, 4),
            "note": "Dice on the annotated slices of held-out cases, at network resolution",
        },
    )
    progress(ProgressEvent(Stage.WRITING, 1.0, f"Saving {output}"))
    if hooks.writes:
        save_model(model, output, half_precision=config.save_half_precision)
        resume_file.unlink(missing_ok=True)
    train_net = None  # noqa: F841 - DDP's reducer holds the process group: released before it (hooks.finish)
    hooks.finish()
    progress(ProgressEvent(Stage.DONE, 1.0, "Training finished"))
    return TrainResult(output, mean_dice, epochs_run, fold_dice, time.perf_counter() - started, describe_device(device))
