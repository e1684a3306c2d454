"""A developer's Reload: after it, every module of the extension sees one copy of each class.

Slicer's ``reloadScriptedModule`` re-executes only ``LiverUNet.py`` (Base/Python/slicer/util.py, 5.10);
``LiverUNetWidget.onReload`` first forgets the helper packages (LiverUNetSlicerLib/reload.py). Each case
runs in a fresh interpreter, imports every glue module, "reloads", re-imports what ``LiverUNet.py`` and
the panels import, and then uses the logic's ``toDevice`` and ``JobStatus`` with the enums the panels hold.
The Qt panels cannot load here, so a stand-in ``LiverUNetGuiLib`` makes the same two imports they make
(``parameters.py``: ``Device``; ``segment_panel.py``: ``JobStatus``), in the same place in the load order.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from slicer_harness import MODULE_DIR, REPO_ROOT, requires_slicer_core

pytestmark = requires_slicer_core

STAND_IN = {"__init__.py": "", "parameters.py": "from LiverUNetSlicerLib.options import Device\n",
            "segment_panel.py": "from LiverUNetSlicerLib.worker_runner import JobStatus\n"}

PROBE = """
import importlib, json, pkgutil, sys
sys.path[:0] = [{guiStandIn!r}, {module!r}, {root!r}]
import LiverUNetSlicerLib
for info in pkgutil.iter_modules(LiverUNetSlicerLib.__path__):
    importlib.import_module("LiverUNetSlicerLib." + info.name)
import LiverUNetGuiLib.parameters, LiverUNetGuiLib.segment_panel
{reload}
from LiverUNetSlicerLib import LiverUNetLogic, JobStatus as exported
from LiverUNetGuiLib.parameters import Device            # what the panel's parameter node holds
from LiverUNetGuiLib.segment_panel import JobStatus      # what the panels compare results with
from LiverUNetLib.errors import LiverUNetError
logic = sys.modules[LiverUNetLogic.__module__]
report = {{}}
try:
    report["device"] = logic.toDevice(Device.AUTO).value
except Exception as error:
    report["device"] = f"{{type(error).__name__}}: {{error}}"
outcome = sys.modules["LiverUNetSlicerLib.worker_runner"].WorkerOutcome(
    sys.modules["LiverUNetSlicerLib.worker_runner"].JobStatus.SUCCEEDED)   # how a finished worker reports
report["statusSeenByLogic"] = outcome.status is logic.JobStatus.SUCCEEDED
report["statusSeenByPanel"] = outcome.status is JobStatus.SUCCEEDED
report["exportedStatus"] = exported is JobStatus
report["errorClass"] = sys.modules["LiverUNetSlicerLib.jobs"].LiverUNetError is LiverUNetError
print(json.dumps(report))
"""

IN_PLACE = """
for name in sorted(sys.modules):
    if name.split(".")[0] in ("LiverUNetLib", "LiverUNetSlicerLib", "LiverUNetGuiLib") and sys.modules[name]:
        importlib.reload(sys.modules[name])
"""

FORGET = """
from LiverUNetSlicerLib.reload import forgetPackages
forgetPackages()
"""


def probe(tmp_path, reload: str) -> dict:
    gui = tmp_path / "gui" / "LiverUNetGuiLib"
    gui.mkdir(parents=True)
    for name, text in STAND_IN.items():
        (gui / name).write_text(text, encoding="utf-8")
    code = PROBE.format(guiStandIn=str(gui.parent), module=str(MODULE_DIR), root=str(REPO_ROOT), reload=reload)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_forgetting_the_packages_gives_one_copy_of_each_class(tmp_path):
    assert probe(tmp_path, FORGET) == {"device": "auto", "statusSeenByLogic": True, "statusSeenByPanel": True,
                                       "exportedStatus": True, "errorClass": True}


def test_reloading_in_place_splits_class_identities(tmp_path):
    """Why the module does not reload module by module: the issue's symptoms, reproduced."""
    report = probe(tmp_path, IN_PLACE)
    assert report["device"] == "LiverUNetError: Unknown device 'Device.AUTO'; use auto, cpu, cuda or mps."
    assert report["statusSeenByLogic"] is False  # a finished training would be taken as failed, its model deleted
    assert report["statusSeenByPanel"] is False


def test_the_widget_forgets_the_packages_before_slicer_reloads_the_module_file():
    tree = ast.parse((MODULE_DIR / "LiverUNet.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LiverUNetWidget")
    onReload = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "onReload")
    source = ast.unparse(onReload)
    assert "importlib.reload" not in source
    assert source.index("forgetPackages()") < source.index("ScriptedLoadableModuleWidget.onReload(self)")
