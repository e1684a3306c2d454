"""The README's picture: the shipped models' livers on real scans, one axial slice and a 3D view each.

The CT model segments the CHAOS CT sample and the MRI model CHAOS MRI subject 5, each chosen by the image as
"Segment liver" does; the slice shows the result's outline (orange) over the manual reference (cyan). Needs
``../shared/data`` and the bench extra (matplotlib, scikit-image)::

    python docs/figures/make_readme_figure.py        # writes docs/figures/liver_ct_mri.png
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from LiverUNetLib.image_io import read_image  # noqa: E402
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.metrics import evaluate  # noqa: E402
from LiverUNetLib.preprocessing import canonical_orientation, to_slice_first  # noqa: E402

DATA = Path(os.environ.get("LIVERUNET_DATA", ROOT.parent / "shared" / "data"))
OUTPUT = Path(__file__).resolve().parent / "liver_ct_mri.png"


def case(image_path: Path, reference_path: Path, liver_value: int, window: tuple[float, float]) -> dict:
    image = read_image(image_path)
    reference = read_image(reference_path)
    reference = reference.with_array((reference.array == liver_value).astype(np.uint8))
    result = segment_volume(image, None, InferenceConfig(device="cpu"))
    axis, orientation = image.slice_axis(), canonical_orientation(image)

    def view(array: np.ndarray) -> np.ndarray:
        # the canonical layout (rows toward anterior, columns toward the patient's left), rows flipped so that
        # anterior is up and the patient's right on the left, as radiologists view an axial slice
        return np.asarray(orientation.apply(to_slice_first(array, axis)))[:, ::-1]

    mask, truth = view(result.mask.array) > 0, view(reference.array) > 0
    middle = int(np.argmax(mask.sum(axis=(1, 2))))  # the slice with the most liver
    spacing = [s for a, s in enumerate(image.spacing_kji) if a != axis]
    return {"image": view(image.array)[middle], "mask": mask[middle], "truth": truth[middle], "volume": mask,
            "slice_spacing": float(image.spacing_kji[axis]), "spacing": orientation.spacing(tuple(spacing)),
            "window": window, "dice": evaluate(reference, result.mask).dice, "model": result.model}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.measure import marching_cubes

    cases = {
        "CT (CHAOS CT sample), shipped CT model": case(DATA / "chaos-ct-sample" / "dicom",
                                                      DATA / "chaos-ct-sample" / "liver_gt.nii.gz", 1, (-160, 240)),
        "MRI (CHAOS T2-SPIR subject 5), shipped MRI model": case(DATA / "chaos-mr-t2" / "images" / "image_5.nii.gz",
                                                                 DATA / "chaos-mr-t2" / "labels" / "label_5.nii.gz", 1,
                                                                 (0, 0)),
    }
    figure = plt.figure(figsize=(10, 8))
    grid = figure.add_gridspec(2, 2, width_ratios=(1, 1.2), wspace=0.02, hspace=0.12)
    for row, (title, c) in enumerate(cases.items()):
        axes = figure.add_subplot(grid[row, 0])
        low, high = c["window"] if c["window"] != (0, 0) else np.percentile(c["image"], (1, 99.5))
        aspect = c["spacing"][0] / c["spacing"][1]
        axes.imshow(c["image"], cmap="gray", vmin=low, vmax=high, aspect=aspect)
        axes.contour(c["truth"], levels=[0.5], colors="cyan", linewidths=1.0)
        axes.contour(c["mask"], levels=[0.5], colors="orange", linewidths=1.4)
        axes.set_title(f"{title}\nDice {c['dice']:.3f} (whole volume); orange: result, cyan: manual", fontsize=9)
        axes.axis("off")
        axes3d = figure.add_subplot(grid[row, 1], projection="3d")
        spacing = (c["slice_spacing"], *c["spacing"])
        verts, faces, _, _ = marching_cubes(np.pad(c["volume"], 1).astype(np.float32), 0.5, spacing=spacing, step_size=2)
        # x toward the patient's left, y toward anterior (rows are flipped above), z along the slices
        axes3d.plot_trisurf(verts[:, 2], -verts[:, 1], verts[:, 0], triangles=faces, color=(0.87, 0.51, 0.40),
                            linewidth=0, antialiased=True, shade=True)
        axes3d.set_box_aspect(np.ptp(verts[:, [2, 1, 0]], axis=0), zoom=1.25)
        axes3d.view_init(elev=20, azim=-115)
        axes3d.set_axis_off()
        axes3d.set_title(f"3D: {c['volume'].sum() * np.prod(spacing) / 1000:.0f} mL", fontsize=9)
    figure.savefig(OUTPUT, dpi=90, bbox_inches="tight")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
