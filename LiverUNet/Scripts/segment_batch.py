"""Segment the liver in many image files with Slicer, without the main window.

Usage (installed extension; add ``--additional-module-paths /path/to/LiverUNet`` for a source tree)::

    Slicer --no-splash --no-main-window --python-script /path/to/LiverUNet/Scripts/segment_batch.py \\
        --output-dir /data/livers [--model my_model.pt] [--device cpu] [--tta] /data/scans/*.nii.gz

Each input (NIfTI, NRRD, MHA or a DICOM series folder) is loaded into the scene, segmented with
``LiverUNetLogic.segmentLiver`` exactly as the panel does, and saved as
``<output-dir>/<name>.seg.nrrd`` (a "Liver" segment with the standard name, colour and
terminology, on the input's grid). The exit code is 0 when every file worked, 1 otherwise; the
failures are listed at the end. Works the same in ``PythonSlicer`` with a scene, which is how
Testing/test_slicer_batch.py runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

MODULE_DIR = Path(__file__).resolve().parent.parent
if str(MODULE_DIR) not in sys.path:  # when the module is not on Slicer's module paths
    sys.path.insert(0, str(MODULE_DIR))


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="segment_batch.py", description="Segment the liver in image files.")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or DICOM series folders")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the .seg.nrrd files")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps", "gpu"])
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (slower, a little better)")
    return parser.parse_args(list(argv))


def outputName(path: Path) -> str:
    from LiverUNetSlicerLib.jobs import fileStem

    return f"{fileStem(path)}.seg.nrrd"


def segmentOne(logic, source: Path, outputDir: Path, model: Optional[Path], device: str, tta: bool) -> Path:
    """Load, segment, save and remove the nodes again (so memory does not grow with the batch)."""
    import slicer
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetLib.image_io import read_image
    from LiverUNetSlicerLib.nodes import addVolumeNode

    volumeNode = addVolumeNode(read_image(source), source.name)
    segmentationNode = None
    try:
        segmentationNode = logic.segmentLiver(volumeNode, None, model, device, tta)
        target = outputDir / outputName(source)
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(target))
        if not storage.WriteData(segmentationNode):
            raise LiverUNetError(f"Could not write {target}.")
        return target
    finally:
        for node in (segmentationNode, volumeNode):
            if node is not None and node.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(node)


def main(argv: Sequence[str]) -> int:
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib import LiverUNetLogic

    args = parseArguments(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logic = LiverUNetLogic(keepWorkerWarm=True)  # one worker process for all the files
    failures = []
    try:
        for source in args.inputs:
            try:
                target = segmentOne(logic, source, args.output_dir, args.model, args.device, args.tta)
                print(f"{source} -> {target}", flush=True)
            except LiverUNetError as error:
                failures.append(f"{source}: {error}")
                print(f"{source}: FAILED: {error}", flush=True)
    finally:
        logic.shutdownWorker()
    if failures:
        print(f"{len(failures)} of {len(args.inputs)} files failed:\n" + "\n".join(failures), flush=True)
    return 1 if failures else 0


def exitWith(code: int) -> None:
    import slicer

    if getattr(slicer, "app", None) is not None:
        slicer.util.exit(code)  # --python-script alone would leave Slicer running
    else:
        sys.exit(code)


if __name__ == "__main__":
    exitWith(main(sys.argv[1:]))
