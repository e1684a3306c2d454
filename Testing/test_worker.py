"""The JSON-lines worker: in-process jobs, errors, cancellation, and the real subprocess."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_phantoms import TINY_SETTINGS, phantom, write_phantom
from LiverUNetLib import image_io
from LiverUNetLib.errors import CancelledError, LiverUNetError
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.progress import CancelToken
from LiverUNetLib.segmentation_file import read_segmentation
from LiverUNetLib.worker import _CancelWatcher, cancel_files, run_job

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("worker")
    cases = []
    for n in range(2):
        image, label = write_phantom(folder, str(n), seed=n)
        cases.append({"name": f"c{n}", "image": str(image), "label": str(label), "label_value": 1})
    result = run_job(
        {"kind": "train", "cases": cases, "output": str(folder / "m.pt"), "settings": TINY_SETTINGS, "init": None},
        lambda _m: None,
        CancelToken(),
    )
    return Path(result["model"])


def segment_job(tmp_path: Path, model: Path, **extra) -> dict:
    image, _ = write_phantom(tmp_path, "s", seed=5)
    job = {
        "kind": "segment", "input": str(image), "output": str(tmp_path / "out.seg.nrrd"),
        "model": str(model), "device": "cpu", "tta": False, "probability_output": None,
    }
    job.update(extra)
    return job


def test_train_job_with_painted_empty_slices(tmp_path):
    image, label = phantom(seed=3)
    values = label.array.copy()
    liver_slices = np.flatnonzero(values.any(axis=(1, 2)))
    values[liver_slices[1::2]] = 0  # sparse: every other liver slice unknown
    empty = [s for s in range(values.shape[0]) if s not in liver_slices][:1]
    values[empty, :3, :3] = 2  # a stroke of "not liver" on a slice without liver
    write_image(image, tmp_path / "image.nii.gz")
    write_image(label.with_array(values), tmp_path / "label.nrrd")
    events = []
    result = run_job(
        {
            "kind": "train",
            "cases": [{"name": "a", "image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nrrd"),
                       "label_value": 1, "empty_label_value": 2}],
            "output": str(tmp_path / "model.pt"),
            "settings": TINY_SETTINGS,
            "init": None,
        },
        events.append,
        CancelToken(),
    )
    assert result["event"] == "result" and result["kind"] == "train"
    assert Path(result["model"]).is_file()
    assert result["epochs"] and "validation_dice" in result
    assert result["annotated_slices"] == {"a": len(liver_slices[0::2]) + len(empty)}
    assert all(e["event"] == "progress" and "stage" in e for e in events)
    json.dumps(result)  # plain JSON


def test_segment_job_writes_mask_and_probability(tmp_path, model_path):
    events = []
    job = segment_job(tmp_path, model_path, probability_output=str(tmp_path / "p.nii.gz"))
    result = run_job(job, events.append, CancelToken())
    assert result["event"] == "result" and result["kind"] == "segment"
    assert result["output"] == job["output"] and result["device"] == "cpu"
    assert isinstance(result["warnings"], list) and result["seconds"] >= 0
    mask, segments = read_segmentation(job["output"])
    image = read_image(job["input"])
    assert mask.array.shape == image.array.shape
    np.testing.assert_allclose(mask.ijk_to_ras, image.ijk_to_ras, atol=1e-4)
    assert segments[0].name == "Liver"
    assert read_image(tmp_path / "p.nii.gz").array.dtype == np.float32
    stages = [e["stage"] for e in events]
    assert stages[0] == "loading" and "inference" in stages and stages[-1] == "done"


def test_cancel_during_inference_leaves_nothing(tmp_path, model_path):
    job = segment_job(tmp_path, model_path)
    Path(job["output"]).write_bytes(b"previous result")
    token = CancelToken()

    def emit(message):
        if message.get("stage") == "inference":
            token.cancel()

    with pytest.raises(CancelledError):
        run_job(job, emit, token)
    assert Path(job["output"]).read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.seg.nrrd", "image_s.nii.gz", "label_s.nii.gz"])


@pytest.mark.parametrize("stage", ["loading", "preprocessing", "training", "writing"])
def test_cancel_during_training_stages(tmp_path, stage):
    image, label = write_phantom(tmp_path, "t")
    output = tmp_path / "model.pt"
    token = CancelToken()
    seen = []

    def emit(message):
        seen.append(message.get("stage"))
        if message.get("stage") == stage:
            token.cancel()

    settings = dict(TINY_SETTINGS, epochs=2)
    job = {"kind": "train", "cases": [{"name": "t", "image": str(image), "label": str(label), "label_value": 1}],
           "output": str(output), "settings": settings, "init": None, "resume": False}
    with pytest.raises(CancelledError):
        run_job(job, emit, token)
    assert stage in seen
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def test_cancel_file_is_noticed(tmp_path, model_path):
    job = segment_job(tmp_path, model_path)
    job_file = tmp_path / "job.json"
    token = CancelToken()
    watcher = _CancelWatcher(cancel_files(job_file), token)

    def emit(message):
        if message.get("stage") == "preprocessing":
            (tmp_path / "job.cancel").write_text("")
        watcher.poll()

    with pytest.raises(CancelledError):
        run_job(job, emit, token)
    assert not Path(job["output"]).exists()


def test_disk_full_while_writing(tmp_path, model_path, monkeypatch):
    job = segment_job(tmp_path, model_path, output=str(tmp_path / "out.nii.gz"))
    real = image_io.sitk.WriteImage

    def full(image, name, *args):
        real(image, name, *args)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io.sitk, "WriteImage", full)
    with pytest.raises(LiverUNetError, match="disk is full"):
        run_job(job, lambda _m: None, CancelToken())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_s.nii.gz", "label_s.nii.gz"]


def test_job_errors(tmp_path, model_path):
    with pytest.raises(LiverUNetError, match="Unknown job kind"):
        run_job({"kind": "dance"}, lambda _m: None, CancelToken())
    with pytest.raises(LiverUNetError, match="not found"):
        run_job(segment_job(tmp_path, model_path, input=str(tmp_path / "none.nii.gz")), lambda _m: None, CancelToken())
    bad_model = tmp_path / "bad.pt"
    bad_model.write_bytes(b"\x00" * 100)
    with pytest.raises(LiverUNetError, match="bad.pt"):
        run_job(segment_job(tmp_path, bad_model), lambda _m: None, CancelToken())
    with pytest.raises(LiverUNetError, match="Unknown training settings"):
        run_job({"kind": "train", "cases": [{"image": "a", "label": "b"}], "output": str(tmp_path / "m.pt"),
                 "settings": {"colour": "blue"}}, lambda _m: None, CancelToken())


def test_train_label_grid_differs(tmp_path):
    image, label = phantom()
    write_image(image, tmp_path / "image.nii.gz")
    job = {"kind": "train", "cases": [{"name": "x", "image": str(tmp_path / "image.nii.gz"),
                                       "label": str(tmp_path / "label.nii.gz"), "label_value": 1}],
           "output": str(tmp_path / "m.pt"), "settings": TINY_SETTINGS}
    moved = label.with_array(label.array)  # shifted by less than a voxel: another grid
    moved.ijk_to_ras[1, 3] += 0.4
    write_image(moved, tmp_path / "label.nii.gz")
    with pytest.raises(LiverUNetError, match="Case 'x'.*grid"):
        run_job(job, lambda _m: None, CancelToken())
    assert not (tmp_path / "m.pt").exists()


# --- the real process ------------------------------------------------------------------------
def _spawn(job_file: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "LiverUNetLib.worker", str(job_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(job_file.parent), env=env,
    )


def test_subprocess_segment_job(tmp_path, model_path):
    job = segment_job(tmp_path, model_path)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    proc = _spawn(job_file)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    messages = [json.loads(line) for line in out.splitlines()]  # every stdout line is JSON
    assert messages[-1]["event"] == "result" and messages[-1]["output"] == job["output"]
    assert all(m["event"] == "progress" for m in messages[:-1])
    assert Path(job["output"]).is_file()


def test_subprocess_bad_job_reports_error(tmp_path):
    job_file = tmp_path / "job.json"
    job_file.write_text("{not json")
    proc = _spawn(job_file)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert json.loads(out.strip())["event"] == "error"


def test_subprocess_sigterm_cancels_training(tmp_path):
    image, label = write_phantom(tmp_path, "c")
    output = tmp_path / "model.pt"
    job = {"kind": "train", "cases": [{"name": "c", "image": str(image), "label": str(label), "label_value": 1}],
           "output": str(output), "settings": dict(TINY_SETTINGS, epochs=10_000, patience=10_000),
           "init": None, "resume": False}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    proc = _spawn(job_file)
    lines = []
    try:
        for line in proc.stdout:  # wait until training really runs, then ask it to stop
            lines.append(json.loads(line))
            if lines[-1].get("stage") == "training":
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 3, err
    assert lines[-1] == {"event": "cancelled"}
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_c.nii.gz", "job.json", "label_c.nii.gz"]
