"""What the speed benchmark segments: each image with the model that runs on it and its manual reference.

By default the shipped models on the data they are for: the shipped MRI ensemble on a CHAOS T2-SPIR subject
(256x256xN), the shipped CT ensemble on the CHAOS CT sample (512x512x78 DICOM series) and, for peak RAM only, on a
512x512x200 CT made by mirroring that sample along z (real intensities, a long scan's size).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.preprocessing import Modality
from LiverUNetLib.shipped_models import shipped_model_path
from LiverUNetLib.volume import Volume

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LIVERUNET_DATA", REPO_ROOT.parent / "shared" / "data"))
LARGE_CT_SLICES = 200


@dataclass
class Case:
    """One image, the model file run on it and, where there is one, the manual liver label."""

    name: str
    source: Path
    modality: Modality
    model_path: Path
    # the model is the shipped one for this modality: the peak-RAM run is `liverunet segment` with no model
    shipped: bool
    reference: Optional[Path] = None
    # the liver's value in the reference (CHAOS MRI labels hold four organs); None: any non-zero voxel
    reference_value: Optional[int] = None
    # False: peak RAM only (the synthetic 512x512x200 CT), not timed end to end
    timed: bool = True


def chaos_mri(subject: str) -> tuple[Path, Path]:
    """A CHAOS T2-SPIR image and its label file (liver = 1)."""
    folder = DATA_ROOT / "chaos-mr-t2"
    return folder / "images" / f"image_{subject}.nii.gz", folder / "labels" / f"label_{subject}.nii.gz"


def chaos_ct() -> tuple[Path, Path]:
    """The CHAOS CT sample's DICOM folder and its liver mask (same grid)."""
    folder = DATA_ROOT / "chaos-ct-sample"
    return folder / "dicom", folder / "liver_gt.nii.gz"


def model_for(modality: Modality, given: Optional[Path]) -> tuple[Optional[Path], bool]:
    """The model file for ``modality`` (``given``, else the shipped one) and whether it is the shipped one."""
    shipped = shipped_model_path(modality.value)
    if given is None:
        return shipped, shipped is not None
    return given, shipped is not None and given.resolve() == shipped.resolve()


def synthesise_large_ct(source: Path, folder: Path, slices: int = LARGE_CT_SLICES) -> tuple[str, Path]:
    """A CT of ``slices`` slices made by mirroring ``source`` along z (forward, backward, ...), written into
    ``folder``; its name by its size (``ct_512x512x200`` for the CHAOS CT) and its path."""
    volume = read_image(source)
    rows, columns = volume.array.shape[1:]
    name = f"ct_{columns}x{rows}x{slices}"
    output = folder / f"liverunet_{name}.nii.gz"
    array = volume.array
    order: list[int] = []
    forward = True
    while len(order) < slices:
        order.extend(range(array.shape[0]) if forward else range(array.shape[0] - 1, -1, -1))
        forward = not forward
    write_image(Volume(np.ascontiguousarray(array[order[:slices]]), volume.ijk_to_ras.copy()), output)
    return name, output


def build_cases(mri: Optional[Path], mri_model: Optional[Path], ct: Optional[Path], ct_model: Optional[Path],
                large_ct_folder: Optional[Path], mri_reference: Optional[Path] = None,
                ct_reference: Optional[Path] = None) -> list[Case]:
    """The cases to run: MRI and CT where the image and a model exist; ``large_ct_folder`` (where to write the
    512x512x200 CT, or None for none) adds the peak-RAM-only case built from the CT image."""
    cases: list[Case] = []
    if mri is not None and mri.exists():
        model, shipped = model_for(Modality.MRI, mri_model)
        if model is not None:
            cases.append(Case("mri", mri, Modality.MRI, model, shipped, mri_reference, 1))
    if ct is not None and ct.exists():
        model, shipped = model_for(Modality.CT, ct_model)
        if model is not None:
            cases.append(Case("ct", ct, Modality.CT, model, shipped, ct_reference))
            if large_ct_folder is not None:
                name, big = synthesise_large_ct(ct, large_ct_folder)
                cases.append(Case(name, big, Modality.CT, model, shipped, timed=False))
    return cases
