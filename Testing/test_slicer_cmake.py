"""Configure the extension with CMake against a stand-in Slicer, to check where every file lands.

The stand-in ``SlicerConfig.cmake`` (written below, not Slicer's code) repeats the two rules of the
real build that matter here: ``slicerMacroBuildScriptedModule`` fails on a listed file that does not
exist, and ``ctkMacroCompilePythonScript`` copies a relative script to ``<dest>/<path>`` and an
absolute one to ``<dest>/<path relative to CMAKE_CURRENT_BINARY_DIR>`` (resources only by relative
path). The copies are made at configure time, so the test can look at the resulting module folder:
``import LiverUNetLib`` must find the package next to LiverUNet.py. Skips without cmake or a compiler.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STUB_USE_FILE = r"""
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING ON)
set_property(GLOBAL PROPERTY STUB_UNITTESTS "")

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords: ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  foreach(value ${MY_SLICER_SCRIPTS} ${MY_SLICER_RESOURCES})
    if(IS_ABSOLUTE ${value})
      set(value_absolute ${value})
    else()
      set(value_absolute ${CMAKE_CURRENT_SOURCE_DIR}/${value})
    endif()
    if(NOT EXISTS ${value_absolute} AND NOT EXISTS ${value_absolute}.py)
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file or directory '${value}'")
    endif()
  endforeach()
  set(_dest ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
  foreach(file ${MY_SLICER_SCRIPTS})
    if(IS_ABSOLUTE ${file})
      set(src ${file})
      file(RELATIVE_PATH tgt ${CMAKE_CURRENT_BINARY_DIR} ${file})
    else()
      set(src ${CMAKE_CURRENT_SOURCE_DIR}/${file})
      set(tgt ${file})
    endif()
    configure_file(${src} ${_dest}/${tgt} COPYONLY)
  endforeach()
  foreach(file ${MY_SLICER_RESOURCES})
    if(IS_ABSOLUTE ${file})
      message(FATAL_ERROR "ctkMacroCompilePythonScript cannot place the absolute resource ${file}")
    endif()
    configure_file(${CMAKE_CURRENT_SOURCE_DIR}/${file} ${_dest}/${file} COPYONLY)
  endforeach()
endmacro()

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  file(APPEND ${CMAKE_BINARY_DIR}/unittests.txt "${MY_SCRIPT}\n")
endfunction()
"""


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler")
def test_configured_extension_puts_liverunetlib_beside_the_module(tmp_path):
    stub = tmp_path / "slicer"
    stub.mkdir()
    (stub / "UseSlicer.cmake").write_text(STUB_USE_FILE)
    (stub / "Empty.cmake").write_text("")
    (stub / "SlicerConfig.cmake").write_text(
        f'set(Slicer_USE_FILE "{(stub / "UseSlicer.cmake").as_posix()}")\n'
        f'set(Slicer_EXTENSION_GENERATE_CONFIG "{(stub / "Empty.cmake").as_posix()}")\n'
        f'set(Slicer_EXTENSION_CPACK "{(stub / "Empty.cmake").as_posix()}")\n')
    build = tmp_path / "build"
    run = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stub}", "-G", "Ninja"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    modules = build / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    assert (modules / "LiverUNet.py").is_file() and (modules / "Resources" / "UI" / "LiverUNet.ui").is_file()
    assert (modules / "SegmentEditorLiverUNetLib" / "SegmentEditorEffect.py").is_file()
    assert (modules / "SegmentEditorLiverUNetLib" / "SegmentEditorEffect.png").is_file()
    library = REPO / "LiverUNetLib"
    for source in library.rglob("*.py"):
        if "__pycache__" in source.parts:
            continue
        shipped = modules / "LiverUNetLib" / source.relative_to(library)
        assert shipped.is_file() and shipped.read_bytes() == source.read_bytes(), f"{shipped} missing"
    assert not (build / "lib" / "Slicer-5.10" / "LiverUNetLib").exists()
    assert (build / "unittests.txt").read_text().split() == ["LiverUNet.py"]
    # the built folder is importable the way Slicer imports it: module folder on sys.path
    check = subprocess.run([sys.executable, "-c", "import LiverUNetLib, LiverUNetLib.volume; print(LiverUNetLib.__file__)"],
                           cwd=str(modules), capture_output=True, text=True, timeout=60,
                           env={"PYTHONPATH": str(modules), "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0 and str(modules) in check.stdout, check.stderr
