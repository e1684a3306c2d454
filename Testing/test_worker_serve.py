"""The warm worker (``python -m LiverUNetLib.worker --serve``): several jobs, one process, same answers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from LiverUNetLib import worker
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.model_file import LiverModel, save_model
from LiverUNetLib.networks import NetworkConfig
from LiverUNetLib.preprocessing import PreprocessConfig
from LiverUNetLib.volume import Volume

REPO_ROOT = Path(__file__).resolve().parents[1]


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = LiverModel.create(NetworkConfig(base_channels=4, depth=2), PreprocessConfig(in_plane_spacing_mm=None))
    model_path = save_model(model, tmp_path / "tiny.pt")
    k, j, i = np.mgrid[0:4, 0:24, 0:32]
    array = ((((j - 12) / 9.0) ** 2 + ((i - 16) / 12.0) ** 2 < 1) * 300).astype(np.int16)
    image = write_image(Volume(array, np.diag([1.5, 1.5, 5.0, 1.0])), tmp_path / "image.nii.gz")
    return model_path, image


def _job(tmp_path: Path, name: str, model_path: Path, image: Path) -> Path:
    job = tmp_path / f"{name}.json"
    job.write_text(json.dumps({"kind": "segment", "input": str(image), "output": str(tmp_path / f"{name}_mask.nii.gz"),
                               "model": str(model_path), "device": "cpu"}))
    return job


def _answers(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_serve_runs_jobs_in_one_process(tmp_path):
    model_path, image = _inputs(tmp_path)
    jobs = [_job(tmp_path, f"job{n}", model_path, image) for n in range(2)]
    bad = tmp_path / "missing.json"
    stdin = "\n".join(str(p) for p in [jobs[0], bad, jobs[1]]) + "\n"
    done = subprocess.run([sys.executable, "-m", "LiverUNetLib.worker", "--serve"], input=stdin, capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    finals = [a for a in _answers(done.stdout) if a["event"] != "progress"]
    assert [a["event"] for a in finals] == ["result", "error", "result"]
    for n in range(2):
        assert read_image(tmp_path / f"job{n}_mask.nii.gz").array.shape == (4, 24, 32)


def test_idle_server_stops_on_sigterm(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "LiverUNetLib.worker", "--serve"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_model_cache_reuses_an_unchanged_file(tmp_path):
    model_path, _ = _inputs(tmp_path)
    first = worker.cached_model(model_path)
    assert worker.cached_model(model_path) is first
    time.sleep(0.05)
    save_model(first, model_path)  # rewritten: a new file, a new modification time
    assert worker.cached_model(model_path) is not first
