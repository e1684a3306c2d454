"""Static checks of the Slicer layer: what Slicer's loaders and macros would reject, found without Slicer.

* LiverUNet.py defines the classes Slicer looks up by name, with the right bases;
* every ``ui.<name>`` used in code exists in Resources/UI/LiverUNet.ui, whose top widget is qMRMLWidget;
* every ``SlicerParameterName`` names a parameter-node field, with a widget class that suits its type;
* the CMake lists name exactly the files on disk (LiverUNetLib/**/*.py included, so files added later
  by others are required too);
* the effect's folder, file and class follow the Segment Editor's loader rules;
* the Qt-free glue imports no Qt, and nothing in LiverUNet/ fails to compile.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "LiverUNet"
UI_FILE = MODULE / "Resources" / "UI" / "LiverUNet.ui"
PARAMETERS = MODULE / "LiverUNetGuiLib" / "parameters.py"
EFFECT_DIR = MODULE / "SegmentEditorLiverUNetLib"


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def baseNames(cls: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases]


def pythonFiles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


# --- the module file ----------------------------------------------------------------------------
def test_module_file_defines_the_classes_slicer_looks_up():
    tree = parse(MODULE / "LiverUNet.py")
    found = classes(tree)
    assert "ScriptedLoadableModule" in baseNames(found["LiverUNet"])
    assert baseNames(found["LiverUNetWidget"])[0] == "ScriptedLoadableModuleWidget"
    assert "VTKObservationMixin" in baseNames(found["LiverUNetWidget"])
    assert "ScriptedLoadableModuleTest" in baseNames(found["LiverUNetTest"])
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "LiverUNetSlicerLib" for alias in node.names}
    assert "LiverUNetLogic" in imported, "LiverUNet.py must re-export LiverUNetLogic for console users"
    widgetMethods = {n.name for n in found["LiverUNetWidget"].body if isinstance(n, ast.FunctionDef)}
    assert {"setup", "cleanup", "enter", "exit", "onReload"} <= widgetMethods


def test_self_test_methods_are_independent_and_clear_the_scene():
    test = classes(parse(MODULE / "LiverUNet.py"))["LiverUNetTest"]
    methods = {n.name: n for n in test.body if isinstance(n, ast.FunctionDef)}
    assert len([m for m in methods if m.startswith("test_")]) >= 5
    assert "mrmlScene.Clear" in ast.unparse(methods["setUp"])
    source = (MODULE / "LiverUNetGuiLib" / "self_tests.py").read_text()
    assert "downloadSample" not in source and "urlopen" not in source and "addVolumeFromArray" in source


# --- the .ui file -------------------------------------------------------------------------------
def uiWidgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def usedUiNames() -> dict[str, set[str]]:
    """``self.ui.X`` and ``ui.X`` attribute reads in the module file and the GUI package."""
    used: dict[str, set[str]] = {}
    for path in [MODULE / "LiverUNet.py", *pythonFiles(MODULE / "LiverUNetGuiLib")]:
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            isUi = (isinstance(owner, ast.Attribute) and owner.attr == "ui" and isinstance(owner.value, ast.Name)
                    and owner.value.id in ("self", "widget")) or (isinstance(owner, ast.Name) and owner.id == "ui")
            if isUi:
                used.setdefault(node.attr, set()).add(path.name)
    return used


def test_ui_top_widget_is_qmrmlwidget():
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and root.findtext("class") == top.get("name")


def test_every_ui_name_used_in_code_exists_in_the_ui_file():
    widgets = uiWidgets()
    used = usedUiNames()
    assert len(used) > 20
    missing = {name: files for name, files in used.items() if name not in widgets}
    assert not missing, f"used in code but not in LiverUNet.ui: {missing}"


def test_mrml_widgets_get_the_scene_and_custom_widgets_are_declared():
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    needScene = {n for n, w in uiWidgets().items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget")}
    assert needScene and needScene <= receivers
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in uiWidgets().values()}
    assert {c for c in used if c.startswith(("q", "ctk"))} <= declared


# --- parameter node <-> widgets -----------------------------------------------------------------
RESERVED = {"allParameters", "default", "isCached", "dataType", "getValue", "setValue", "connectGui",
            "connectParametersToGui", "disconnectGui", "StartModify", "EndModify", "AddObserver",
            "RemoveObserver", "Modified", "parameterNode"}
ENUMS = {"Device", "Modality", "StartFrom", "EffectMode"}
NODE_TYPES = {"vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"}


def wrapperFields() -> dict[str, ast.expr]:
    """Dotted parameter name -> annotation, expanding parameterPack fields (``training.epochs``)."""
    found = classes(parse(PARAMETERS))

    def decorated(cls: ast.ClassDef, name: str) -> bool:
        return any(ast.unparse(d) == name for d in cls.decorator_list)

    packs = {n: c for n, c in found.items() if decorated(c, "parameterPack")}
    wrappers = [c for c in found.values() if decorated(c, "parameterNodeWrapper")]
    assert len(wrappers) == 1, "exactly one @parameterNodeWrapper class"

    def fields(cls: ast.ClassDef, prefix: str = "") -> dict[str, ast.expr]:
        out: dict[str, ast.expr] = {}
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                name = prefix + item.target.id
                assert item.target.id not in RESERVED, f"reserved parameter name {item.target.id}"
                annotation = item.annotation
                if isinstance(annotation, ast.Name) and annotation.id in packs:
                    out.update(fields(packs[annotation.id], name + "."))
                else:
                    out[name] = annotation
        return out

    return fields(wrappers[0])


def baseType(annotation: ast.expr) -> tuple[str, list[str]]:
    """('int', ['WithinRange(1, 1000)']) for Annotated[int, WithinRange(1, 1000)]."""
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
        elements = annotation.slice.elts  # type: ignore[attr-defined]
        return ast.unparse(elements[0]), [ast.unparse(e) for e in elements[1:]]
    return ast.unparse(annotation), []


def suits(widgetClass: str, annotation: ast.expr) -> Optional[str]:
    """None when Slicer's GUI connectors can bind ``widgetClass`` to the type, else the reason."""
    typeName, extras = baseType(annotation)
    bounded = any(e.startswith("WithinRange") for e in extras)
    rules = {
        "qMRMLNodeComboBox": typeName in NODE_TYPES,
        "QCheckBox": typeName == "bool", "ctkCheckBox": typeName == "bool",
        "QSpinBox": typeName == "int", "QSlider": typeName == "int" and bounded,
        "QDoubleSpinBox": typeName in ("float", "int"),
        "ctkSliderWidget": typeName in ("float", "int") and bounded,
        "qMRMLSliderWidget": typeName in ("float", "int") and bounded,
        "QComboBox": typeName in ENUMS or (typeName in ("str", "int", "float") and any(e.startswith("Choice") for e in extras)),
        "QLineEdit": typeName == "str", "QLabel": typeName == "str", "QTextEdit": typeName == "str",
        "ctkPathLineEdit": "Path" in typeName, "ctkDirectoryButton": "Path" in typeName,
    }
    if widgetClass not in rules:
        return f"no parameterNodeWrapper connector for {widgetClass}"
    return None if rules[widgetClass] else f"{widgetClass} cannot represent {ast.unparse(annotation)}"


def test_slicer_parameter_names_match_wrapper_fields_and_widget_types():
    fields = wrapperFields()
    bound = {}
    for name, widget in uiWidgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", f"{name}: SlicerParameterName must be a dynamic property"
                bound[prop.findtext("string")] = (name, widget.get("class"))
    assert len(bound) >= 8
    for parameter, (widgetName, widgetClass) in bound.items():
        assert parameter in fields, f"{widgetName}: SlicerParameterName '{parameter}' is no wrapper field"
        problem = suits(widgetClass, fields[parameter])
        assert problem is None, f"{widgetName} ({parameter}): {problem}"


def test_form_layouts_never_put_two_items_in_one_cell():
    """Qt Designer files edited by hand: a repeated row silently stacks two widgets on each other."""
    forms = [layout for layout in ET.parse(UI_FILE).getroot().iter("layout")
             if layout.get("class") in ("QFormLayout", "QGridLayout")]
    assert {layout.get("name") for layout in forms} >= {"segmentFormLayout", "trainFormLayout"}
    for layout in forms:
        cells = [(item.get("row"), item.get("column")) for item in layout.findall("item")]
        assert all(row is not None for row, _ in cells), f"{layout.get('name')}: an item without a row"
        repeated = {cell for cell in cells if cells.count(cell) > 1}
        assert not repeated, f"{layout.get('name')}: rows/columns used twice: {sorted(repeated)}"


def test_the_panel_only_sets_training_settings_that_exist():
    """``trainConfig()`` keys go to ``TrainConfig.from_dict`` in the worker, which refuses unknown ones."""
    from LiverUNetLib.training import TrainConfig

    tree = parse(PARAMETERS)
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "trainConfig")
    returned = next(n.value for n in ast.walk(method) if isinstance(n, ast.Return))
    keys = {k.value for k in returned.keys}
    assert "liver_free_beyond_painting" in keys and "epochs" in keys
    assert keys <= set(TrainConfig.__dataclass_fields__), keys - set(TrainConfig.__dataclass_fields__)


def test_the_panels_epochs_default_to_the_librarys_schedule():
    """Epochs 0 shows "automatic" and sends no epochs, so training from the shipped model takes the short
    fine-tuning schedule and training from scratch the cross-validated one (LiverUNetLib/train_schedule.py)."""
    field = wrapperFields()["training.epochs"]
    assert baseType(field) == ("int", ["WithinRange(0, 1000)"])
    pack = classes(parse(PARAMETERS))["TrainingSettings"]
    default = next(n.value for n in pack.body if isinstance(n, ast.AnnAssign) and n.target.id == "epochs")
    assert ast.literal_eval(default) == 0
    assert '"epochs": self.training.epochs or None' in PARAMETERS.read_text(encoding="utf-8")
    spin = next(w for w in ET.parse(UI_FILE).iter("widget") if w.get("name") == "epochsSpinBox")
    special = next(p for p in spin.findall("property") if p.get("name") == "specialValueText")
    assert special.find("string").text == "automatic"
    from LiverUNetLib.train_schedule import TRAIN_SCHEDULE

    tip = next(p for p in spin.findall("property") if p.get("name") == "toolTip").find("string").text
    assert TRAIN_SCHEDULE.describe() in tip, "the tooltip must state the library's schedule"


def test_enum_fields_use_enums_with_labels():
    tree = parse(MODULE / "LiverUNetSlicerLib" / "options.py")
    for name in ENUMS:
        cls = classes(tree)[name]
        assert "Enum" in baseNames(cls) and any(isinstance(n, ast.FunctionDef) and n.name == "label" for n in cls.body)
    choices = [baseType(a)[0] for n, a in wrapperFields().items() if n.endswith(("device", "modality", "startFrom"))]
    assert choices and set(choices) <= ENUMS


# --- CMake --------------------------------------------------------------------------------------
def cmakeList(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def test_module_cmake_lists_exactly_the_module_files():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = [s.replace("${MODULE_NAME}", "LiverUNet") for s in cmakeList(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", "LiverUNet") for s in cmakeList(text, "MODULE_PYTHON_RESOURCES")]
    for item in scripts + resources:
        assert (MODULE / item).is_file(), f"CMake lists a missing file: {item}"
    onDisk = {p.relative_to(MODULE).as_posix() for p in pythonFiles(MODULE)}
    assert onDisk == set(scripts), f"not listed: {onDisk - set(scripts)}; listed but absent: {set(scripts) - onDisk}"
    dataOnDisk = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*")
                  if p.suffix in (".png", ".svg", ".ui", ".json", ".csv") and "__pycache__" not in p.parts}
    assert dataOnDisk == set(resources)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_module_cmake_ships_every_liverunetlib_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    listed = set(cmakeList(text, "LIVERUNETLIB_PYTHON_SCRIPTS"))
    library = REPO / "LiverUNetLib"
    onDisk = {p.relative_to(library).as_posix() for p in pythonFiles(library)}
    assert listed == onDisk, (f"LiverUNetLib files missing from LiverUNet/CMakeLists.txt: {sorted(onDisk - listed)}; "
                              f"listed but absent: {sorted(listed - onDisk)}")
    patterns = re.findall(r"\$\{LIVERUNETLIB_SOURCE_DIR\}/(models/\*\.\w+)", text)
    data = [p for p in (library / "models").glob("*") if p.is_file()] if (library / "models").is_dir() else []
    for path in data:
        assert any(path.match(pattern.split("/")[-1]) for pattern in patterns), f"{path.name} would not be shipped"


def test_top_level_cmake_describes_the_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\(LiverUNet\)", text) and re.search(r"set\(EXTENSION_NAME LiverUNet\)", text)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL"):
        assert re.search(rf"set\(EXTENSION_{key} ", text), key
    order = [text.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                     "add_subdirectory(LiverUNet)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                     "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)
    for sub in re.findall(r"add_subdirectory\((\w+)\)", text):
        assert (REPO / sub / "CMakeLists.txt").is_file()


# --- the Segment Editor effect ------------------------------------------------------------------
def test_effect_follows_the_segment_editor_loader_rules():
    effectFile = EFFECT_DIR / "SegmentEditorEffect.py"
    # module name = folder name; it must not shadow a package we import (the loader replaces sys.modules[name])
    assert EFFECT_DIR.name not in ("LiverUNetLib", "LiverUNetSlicerLib", "LiverUNetGuiLib")
    assert not (REPO / EFFECT_DIR.name).exists()
    stem = effectFile.stem
    className = stem if stem.endswith("Effect") else stem + "Effect"
    effect = classes(parse(effectFile))[className]
    assert baseNames(effect) == ["AbstractScriptedSegmentEditorEffect"]
    init = next(n for n in effect.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert "scriptedEffect.name = 'Liver U-Net'" in ast.unparse(init)
    methods = {n.name for n in effect.body if isinstance(n, ast.FunctionDef)}
    assert {"clone", "icon", "helpText", "setupOptionsFrame", "setMRMLDefaults", "updateGUIFromMRML",
            "updateMRMLFromGUI"} <= methods
    source = effectFile.read_text()
    assert "saveStateForUndo" in (MODULE / "LiverUNetSlicerLib" / "effect_core.py").read_text()
    assert "EffectJob" in source and "modifySelectedSegmentByLabelmap" not in source.replace("# ", "")
    assert (EFFECT_DIR / "SegmentEditorEffect.png").is_file()
    assert "from .SegmentEditorEffect import" in (EFFECT_DIR / "__init__.py").read_text()
    module = (MODULE / "LiverUNet.py").read_text()
    assert '"SegmentEditorLiverUNetLib" / "SegmentEditorEffect.py"' in module
    assert 'slicer.app.connect("startupCompleted()", registerEditorEffect)' in module


# --- layering -----------------------------------------------------------------------------------
def topLevelImports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", pythonFiles(MODULE / "LiverUNetSlicerLib"), ids=lambda p: p.name)
def test_slicer_glue_imports_no_qt_and_no_torch(path):
    assert not topLevelImports(path) & {"qt", "ctk", "torch", "PythonQt", "SegmentEditorEffects"}


@pytest.mark.parametrize("path", pythonFiles(MODULE), ids=lambda p: p.relative_to(MODULE).as_posix())
def test_every_module_file_compiles_and_stays_small(path):
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
    assert len(path.read_text().splitlines()) < 450, f"{path.name} is too long; split it"


# --- the in-Slicer self-test --------------------------------------------------------------------
SELF_TESTS = [MODULE / "LiverUNetGuiLib" / "self_tests.py", MODULE / "LiverUNetGuiLib" / "self_tests_effect.py"]


def definedAttributes(cls: ast.ClassDef) -> set[str]:
    """Methods of ``cls`` and the ``self.<name>`` it assigns anywhere."""
    names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.add(t.attr)
    return names


def usedAttributes(path: Path, variable: str) -> set[str]:
    return {n.attr for n in ast.walk(parse(path)) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == variable}


def test_the_self_test_does_not_import_the_module_file():
    """LiverUNet.py imports the self-test; the self-test reaches the widget through Slicer instead."""
    for path in SELF_TESTS:
        imported = {a.name for n in ast.walk(parse(path)) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(parse(path)) if isinstance(n, ast.ImportFrom) and n.module}
        assert "LiverUNet" not in imported, f"{path.name} imports LiverUNet.py"


def test_the_self_test_uses_only_what_the_effect_and_the_widget_define():
    effect = classes(parse(EFFECT_DIR / "SegmentEditorEffect.py"))["SegmentEditorEffect"]
    effectNames = definedAttributes(effect) | {"scriptedEffect"}
    missing = usedAttributes(SELF_TESTS[1], "effectSelf") - effectNames
    assert not missing, f"the self-test uses effect attributes that do not exist: {missing}"
    widget = classes(parse(MODULE / "LiverUNet.py"))["LiverUNetWidget"]
    widgetNames = definedAttributes(widget) | {"parent", "Observations", "layout"}  # base class and mixin
    for variable in ("widget", "standalone"):
        missing = usedAttributes(SELF_TESTS[0], variable) - widgetNames
        assert not missing, f"the self-test uses widget attributes that do not exist: {missing}"


def test_the_self_test_presses_the_effects_apply_in_four_situations():
    test = classes(parse(MODULE / "LiverUNet.py"))["LiverUNetTest"]
    methods = {n.name for n in test.body if isinstance(n, ast.FunctionDef)}
    assert {"test_WidgetAndParameterNode", "test_PanelsAfterFailedStart", "test_EffectApply"} <= methods
    tree = parse(SELF_TESTS[1])
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    called = {n.func.id for n in ast.walk(functions["checkEffectApply"]) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Name)}
    assert {"checkSuccess", "checkStaleModel", "checkFailedStart", "checkCancel"} <= called
    assert "effectSelf.onApply()" in ast.unparse(functions["apply"]) + ast.unparse(functions["checkCancel"])
