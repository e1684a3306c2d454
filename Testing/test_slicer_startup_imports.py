"""What Slicer's process imports when the module loads: neither SimpleITK nor torch.

Slicer imports ``LiverUNet.py`` (and through it the Qt-free glue ``LiverUNetSlicerLib``) at start-up.
SimpleITK and torch are only needed once a job starts (writing the job's images) or in the worker
process, so loading them at start-up would only slow Slicer's start and, for torch, lock its files.
A fresh interpreter imports every glue module and reports ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from slicer_harness import MODULE_DIR, REPO_ROOT, requires_slicer_core

pytestmark = requires_slicer_core

PROBE = """
import json, pkgutil, sys, importlib
sys.path[:0] = [{module!r}, {root!r}]
import LiverUNetSlicerLib
names = sorted(m.name for m in pkgutil.iter_modules(LiverUNetSlicerLib.__path__))
for name in names:
    importlib.import_module("LiverUNetSlicerLib." + name)
print(json.dumps({{"modules": names, "loaded": sorted(sys.modules)}}))
"""


def test_glue_modules_import_neither_simpleitk_nor_torch():
    code = PROBE.format(module=str(MODULE_DIR), root=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "logic" in report["modules"] and "effect_jobs" in report["modules"]
    loaded = set(report["loaded"])
    assert "SimpleITK" not in loaded, "SimpleITK is imported when the module loads"
    assert "torch" not in loaded, "torch is imported when the module loads"
    assert "LiverUNetLib.image_io" not in loaded
