"""The one image type of the library: voxels in KJI order plus the 4x4 IJK-to-RAS matrix.

This is exactly what a Slicer volume node holds (``arrayFromVolume`` is KJI, ``GetIJKToRASMatrix``
gives the matrix), so the Slicer layer converts without touching voxels, and file readers convert
LPS to RAS once, here, instead of everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import LiverUNetError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Voxel sizes outside this range (mm) are no CT or MRI of a body: a broken header, or metres or
#: micrometres written as millimetres. Resampling such a grid to the model's spacing would
#: allocate terabytes or squeeze the scan into a few pixels.
PLAUSIBLE_SPACING_MM = (0.05, 50.0)
#: No scan of a person is longer than this along any axis (mm).
PLAUSIBLE_EXTENT_MM = 3000.0


@dataclass
class Volume:
    """A 3D scalar image.

    ``array[k, j, i]`` is voxel IJK ``(i, j, k)``; ``ijk_to_ras @ [i, j, k, 1]`` is its centre in RAS
    millimetres. ``metadata`` carries free-form strings (for example the modality or the source file).
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if self.ijk_to_ras.shape != (4, 4):
            raise LiverUNetError(
                f"The IJK-to-RAS matrix must be 4x4, got shape {self.ijk_to_ras.shape}."
            )
        if not np.allclose(self.ijk_to_ras[3], [0, 0, 0, 1]):
            raise LiverUNetError("The IJK-to-RAS matrix must be affine (last row 0 0 0 1).")
        if np.linalg.matrix_rank(self.ijk_to_ras[:3, :3]) < 3:
            raise LiverUNetError("The IJK-to-RAS matrix is singular: the image geometry is broken.")

    # --- geometry -------------------------------------------------------------------------------
    @property
    def spacing_ijk(self) -> np.ndarray:
        """Voxel size along I, J, K in mm (Slicer's ``GetSpacing()`` order)."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def spacing_kji(self) -> np.ndarray:
        """Voxel size along the numpy axes (0, 1, 2) = (K, J, I) in mm."""
        return self.spacing_ijk[::-1].copy()

    @property
    def directions(self) -> np.ndarray:
        """3x3 unit direction matrix: rows are R, A, S; columns are the I, J, K axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing_ijk

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position of the centre of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])) / 1000.0)

    def slice_axis(self) -> int:
        """The numpy axis whose index direction is closest to the patient's superior (S) direction.

        Axial scans give 0 (K); sagittal and coronal acquisitions give 1 or 2. Painting and 2D
        inference happen on slices perpendicular to this axis. A scan with a thick slice axis (1.5 times
        the others' spacing or more) within 60 degrees of head-foot is cut along its acquired slices: an
        axial scan tilted past 45 degrees would otherwise be cut along a thin in-plane axis into slices of
        the acquisition's thick spacing (Dice 0.17 at 46 degrees). Sagittal and coronal acquisitions, whose
        thick axis lies across head-foot, keep the axis closest to it.
        """
        superior = np.abs(self.directions[2, :])  # |S| of the I, J, K directions
        spacing = self.spacing_ijk
        ijk_axis = int(np.argmax(superior))
        thick = int(np.argmax(spacing))
        thinner = max(spacing[a] for a in range(3) if a != thick)
        if thick != ijk_axis and spacing[thick] >= 1.5 * thinner and superior[thick] >= 0.5:
            ijk_axis = thick
        return 2 - ijk_axis

    def slice_tilt_degrees(self) -> float:
        """Angle between the slice axis and the patient's head-foot direction."""
        superior = abs(float(self.directions[2, 2 - self.slice_axis()]))
        return float(np.degrees(np.arccos(min(1.0, superior))))

    def same_grid(self, other: "Volume", tolerance_mm: float = 1e-3) -> bool:
        """True when both volumes have the same shape and voxel positions (within ``tolerance_mm``)."""
        if self.array.shape != other.array.shape:
            return False
        return bool(np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tolerance_mm))

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid holding other voxels (for example a mask or a probability map)."""
        if array.shape != self.array.shape:
            raise LiverUNetError(
                f"Array shape {array.shape} does not match the volume's grid {self.array.shape}."
            )
        return Volume(array, self.ijk_to_ras.copy(), dict(self.metadata))

    def check_plausible_geometry(self, what: str = "image") -> None:
        """Refuse a voxel size or extent no scan of a person has (:data:`PLAUSIBLE_SPACING_MM`,
        :data:`PLAUSIBLE_EXTENT_MM`), naming the values, instead of working on a wrong grid."""
        spacing = self.spacing_ijk
        low, high = PLAUSIBLE_SPACING_MM
        if not np.all(np.isfinite(spacing)) or spacing.min() < low or spacing.max() > high:
            raise LiverUNetError(
                f"The {what} has voxel size {np.round(spacing, 6).tolist()} mm; CT and MRI voxels measure "
                f"{low:g} to {high:g} mm. The file's geometry (spacing) is wrong: fix it in its header or "
                "export the scan again."
            )
        extent = spacing * np.asarray(self.array.shape[::-1][: spacing.size], dtype=np.float64)
        if extent.max() > PLAUSIBLE_EXTENT_MM:
            raise LiverUNetError(
                f"The {what} spans {np.round(extent).tolist()} mm, more than any scan of a person "
                f"({PLAUSIBLE_EXTENT_MM:g} mm). The file's geometry (spacing) is wrong: fix it or export "
                "the scan again."
            )

    def validate_scalar_3d(self, what: str = "image") -> None:
        """Refuse what a liver model cannot use: 2D, 4D, vector/RGB, NaN/Inf voxels, or a voxel
        size or extent no scan of a person has."""
        a = self.array
        if a.ndim == 2:
            raise LiverUNetError(f"The {what} is 2D; a 3D volume (several slices) is needed.")
        if a.ndim != 3:
            raise LiverUNetError(
                f"The {what} has {a.ndim} dimensions (shape {a.shape}); a single 3D scalar volume is "
                "needed. Split 4D series or convert RGB/vector images to one grey channel first."
            )
        if a.dtype.kind not in "iufb":
            raise LiverUNetError(f"The {what} has voxel type {a.dtype}; a numeric scalar type is needed.")
        if a.shape[self.slice_axis()] < 2 or min(a.shape) < 1:
            raise LiverUNetError(
                f"The {what} has shape {a.shape}: a single slice is a 2D image; a 3D volume is needed."
            )
        self.check_plausible_geometry(what)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(np.size(a) - np.isfinite(a).sum())
            raise LiverUNetError(
                f"The {what} has {bad} NaN or infinite voxels. Replace them (for example with the "
                "background value) before segmenting or training."
            )

    # --- LPS (ITK, NIfTI, NRRD) helpers -----------------------------------------------------------
    @property
    def ijk_to_lps(self) -> np.ndarray:
        return LPS_TO_RAS @ self.ijk_to_ras

    @classmethod
    def from_lps(
        cls,
        array: np.ndarray,
        spacing_ijk: "np.ndarray | tuple[float, float, float]",
        origin_lps: "np.ndarray | tuple[float, float, float]",
        direction_lps: "np.ndarray | tuple[float, ...]",
        metadata: dict[str, str] | None = None,
    ) -> "Volume":
        """Build from ITK-style geometry: spacing (I, J, K), origin and row-major direction in LPS."""
        direction = np.asarray(direction_lps, dtype=np.float64).reshape(3, 3)
        matrix = np.eye(4)
        matrix[:3, :3] = direction * np.asarray(spacing_ijk, dtype=np.float64)[None, :]
        matrix[:3, 3] = np.asarray(origin_lps, dtype=np.float64)
        return cls(array, LPS_TO_RAS @ matrix, dict(metadata or {}))

    def lps_geometry(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """(spacing IJK, origin LPS, row-major direction LPS), as SimpleITK wants them."""
        m = self.ijk_to_lps
        spacing = self.spacing_ijk
        direction = m[:3, :3] / spacing[None, :]
        return (
            tuple(float(s) for s in spacing),
            tuple(float(o) for o in m[:3, 3]),
            tuple(float(d) for d in direction.ravel()),
        )
