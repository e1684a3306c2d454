"""Batch segmentation (LiverUNetLib.batch, ``liverunet segment`` on folders and manifests): the report table,
resume after an interruption or a kill, manifests and shards, Dask and local worker processes.

Tiny phantoms and a tiny model keep every run to seconds; the speed and the 40-scan figures are in
bench/batch_scale.py and docs/cohort.md.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_phantoms import TINY_SETTINGS, write_phantom
from LiverUNetLib.batch import BatchSettings, Shard, cases_from_inputs, read_manifest
from LiverUNetLib.batch.records import STATE_FOLDER
from LiverUNetLib.cli import main
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    image, label = write_phantom(folder, "t")
    model = folder / "tiny.pt"
    assert main(["train", "-q", "--images", str(image), "--labels", str(label), "-o", str(model),
                 "--settings", json.dumps(TINY_SETTINGS)]) == 0
    return model


def scans(folder: Path, count: int, broken: bool = False, **shape) -> Path:
    for number in range(count):
        write_phantom(folder, f"{number:02d}", seed=number + 1, **shape)
        (folder / f"label_{number:02d}.nii.gz").unlink()
    if broken:
        (folder / "broken.nii.gz").write_bytes(b"not an image")
    return folder


def report_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Inode and modification time of each mask: a case redone gets a new file."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*_liver.nii.gz")}


@pytest.fixture
def counted(monkeypatch):
    """Counts the segmentations per input in this process (the in-process engine looks segment_volume up per call)."""
    import LiverUNetLib.inference as inference

    real, calls = inference.segment_volume, {}

    def counting(volume, *args, **kwargs):
        name = Path(volume.metadata.get("source", "?")).name
        calls[name] = calls.get(name, 0) + 1
        return real(volume, *args, **kwargs)

    monkeypatch.setattr(inference, "segment_volume", counting)
    return calls


@pytest.mark.parametrize("engine", ["dask", "processes"])
def test_two_workers_segment_the_batch_and_report_the_corrupt_file(engine, tiny_model, tmp_path, capsys):
    if engine == "dask":
        pytest.importorskip("distributed", reason='dask is an optional extra: pip install -e ".[cluster]"')
    folder = scans(tmp_path / "scans", 3, broken=True)
    alone, together = tmp_path / "alone", tmp_path / "together"
    assert main(["segment", "-q", str(folder), "-o", str(alone), "--model", str(tiny_model)]) == 2
    capsys.readouterr()
    code = main(["segment", "-q", str(folder), "-o", str(together), "--model", str(tiny_model), "--workers", "2",
                 "--engine", engine, "--threads-per-worker", "1"])
    out, err = capsys.readouterr()
    assert code == 2  # a case failed, and the exit code says so
    assert "1 of 4 images failed" in err and "broken.nii.gz: Cannot read" in err
    rows = report_rows(together / "report.csv")
    assert rows["broken"]["status"] == "failed" and "Cannot read" in rows["broken"]["error"]
    for case in ("image_00", "image_01", "image_02"):
        assert rows[case]["status"] == "done" and float(rows[case]["liver_ml"]) > 0
        assert rows[case]["model"] == f"the model {tiny_model}" and rows[case]["device"] == "cpu"
        # the same mask as one process gives
        assert np.array_equal(read_image(together / f"{case}_liver.nii.gz").array,
                              read_image(alone / f"{case}_liver.nii.gz").array)
    summary = json.loads((together / "report.json").read_text())["summary"]
    assert summary["engine"] == engine and summary["workers"] == 2
    assert summary["done"] == 3 and summary["failed"] == 1
    assert not (together / "broken_liver.nii.gz").exists()


def test_a_running_dask_cluster_takes_the_batch_through_its_scheduler(tiny_model, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed", reason='dask is an optional extra: pip install -e ".[cluster]"')
    from distributed import LocalCluster

    from LiverUNetLib.batch.dask_runner import worker_environment

    assert "MALLOC_TRIM_THRESHOLD_" not in worker_environment()  # it halved segmentation speed in the workers
    folder, out = scans(tmp_path / "scans", 2), tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model),
                     "--scheduler", cluster.scheduler_address]) == 0
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert summary["engine"] == "dask" and summary["scheduler"] == cluster.scheduler_address and summary["done"] == 2
    monkeypatch.setattr("LiverUNetLib.batch.dask_runner.CONNECT_TIMEOUT", "2s")
    assert main(["segment", "-q", str(folder), "-o", str(tmp_path / "elsewhere"), "--model", str(tiny_model),
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_an_interrupted_batch_resumes_and_does_each_case_once(tiny_model, tmp_path, capsys, counted, monkeypatch):
    import LiverUNetLib.inference as inference

    folder, out = scans(tmp_path / "scans", 5), tmp_path / "out"
    counting = inference.segment_volume

    def interrupted_on_the_third(volume, *args, **kwargs):
        if len(counted) == 2 and Path(volume.metadata["source"]).name not in counted:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third case
        return counting(volume, *args, **kwargs)

    monkeypatch.setattr(inference, "segment_volume", interrupted_on_the_third)
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model)]) == 130
    rows = report_rows(out / "report.csv")
    assert [rows[c]["status"] for c in sorted(rows)] == ["done", "done", "not run", "not run", "not run"]
    first = stamps(out)
    assert len(first) == 2 and not list(out.glob(".*tmp*"))  # no staged file left behind

    monkeypatch.setattr(inference, "segment_volume", counting)
    capsys.readouterr()
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model)]) == 0
    assert "2 of 5 cases were done earlier" in capsys.readouterr().err
    assert counted == {f"image_0{n}.nii.gz": 1 for n in range(5)}  # every case segmented exactly once
    assert {k: v for k, v in stamps(out).items() if k in first} == first  # the finished ones untouched
    rows = report_rows(out / "report.csv")
    assert sorted(r["status"] for r in rows.values()) == ["done"] * 3 + ["done earlier"] * 2
    assert all(float(r["liver_ml"]) > 0 and r["model"] for r in rows.values())  # earlier rows kept in full


def test_a_killed_batch_loses_no_finished_case(tiny_model, tmp_path, counted):
    folder, out = scans(tmp_path / "scans", 10, shape=(16, 96, 96)), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "LiverUNetLib.cli", "segment", "-q", str(folder), "-o", str(out),
                                "--model", str(tiny_model)], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / STATE_FOLDER).glob("*.json"))) < 2:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # as a scheduler ends a job: the whole process group, at once
    process.wait()
    recorded = {json.loads(p.read_text())["report"]["case_id"] for p in (out / STATE_FOLDER).glob("*.json")}
    written = stamps(out)
    assert 2 <= len(recorded) < 10, "the kill came after the run had finished; the test needs it mid-run"
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model)]) == 0
    # each case done once in the end: the rerun did exactly the ones without a finished output
    assert sorted(counted) == sorted(f"image_{n:02d}.nii.gz" for n in range(10) if f"image_{n:02d}_liver.nii.gz"
                                     not in written)
    assert all(count == 1 for count in counted.values())
    assert {k: v for k, v in stamps(out).items() if k in written} == written
    assert all(row["status"] in ("done", "done earlier") for row in report_rows(out / "report.csv").values())


def test_manifest_and_shards_split_the_cases_the_same_way_every_time(tiny_model, tmp_path, capsys, counted):
    folder = scans(tmp_path / "cohort" / "scans", 4)
    manifest = tmp_path / "cohort" / "cases.csv"
    manifest.write_text("input,output,case_id\n"
                        "scans/image_00.nii.gz,,subject-a\n"
                        "scans/image_01.nii.gz,masks/b.nrrd,subject-b\n"
                        f"{folder / 'image_02.nii.gz'},,\n"
                        "scans/image_03.nii.gz,,subject-d\n"
                        "scans/missing.nii.gz,,subject-e\n", encoding="utf-8")
    out = tmp_path / "out"
    cases = read_manifest(manifest, out, ".nii.gz")
    assert [c.case_id for c in cases] == ["subject-a", "subject-b", "image_02", "subject-d", "subject-e"]
    assert cases[0].input == folder / "image_00.nii.gz" and cases[0].output == out / "subject-a_liver.nii.gz"
    assert cases[1].output == tmp_path / "cohort" / "masks" / "b.nrrd"
    shards = [Shard.parse(f"{i}/3").select(cases) for i in range(3)]
    assert sorted(c.case_id for s in shards for c in s) == sorted(c.case_id for c in cases)  # disjoint, complete
    assert [c.case_id for c in shards[0]] == ["image_02", "subject-d"]  # every 3rd of the ids sorted
    assert Shard.parse("1/3").select(list(reversed(cases))) == shards[1]  # the order given does not matter

    codes = [main(["segment", "-q", "--manifest", str(manifest), "-o", str(out), "--model", str(tiny_model),
                   "--shard", f"{i}/3"]) for i in range(3)]
    assert codes == [0, 2, 0]  # the shard holding the missing input failed
    for i, shard in enumerate(shards):
        assert set(report_rows(out / f"report-shard-{i}-of-3.csv")) == {c.case_id for c in shard}
    assert report_rows(out / "report-shard-1-of-3.csv")["subject-e"]["error"].startswith("Input not found")
    assert sum(counted.values()) == 4
    # the whole report afterwards: every done case skipped, only the missing input tried again
    assert main(["segment", "-q", "--manifest", str(manifest), "-o", str(out), "--model", str(tiny_model)]) == 2
    rows = report_rows(out / "report.csv")
    assert [rows[c.case_id]["status"] for c in cases] == ["done earlier"] * 4 + ["failed"]
    assert sum(counted.values()) == 4


def test_manifest_mistakes_are_one_line_errors(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    for text, expected in (("path\nx.nii.gz\n", "no 'input' column"),
                           ("input,case_id\na.nii.gz,x\nb.nii.gz,x\n", "same case_id"),
                           ("input,output\na.nii.gz,out.png\n", "does not end in"),
                           ("input,scanner\na.nii.gz,x\n", "unknown columns")):
        manifest.write_text(text, encoding="utf-8")
        with pytest.raises(LiverUNetError, match=expected):
            read_manifest(manifest, tmp_path, ".nii.gz")
        code = main(["segment", "-q", "--manifest", str(manifest), "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0]


def test_quality_estimate_fields_go_into_the_report(tiny_model, tmp_path, monkeypatch):
    import LiverUNetLib.inference as inference

    class Quality:  # what quality.QualityEstimate gives, with fixed numbers
        def to_dict(self):
            return {"estimated_dice": 0.91, "estimated_dice_low": 0.85, "estimated_dice_high": 0.95,
                    "least_sure_slices": [3, 7], "summary": self.summary()}

        def summary(self):
            return "estimated Dice 0.91 (0.85-0.95)"

    real = inference.segment_volume

    def with_quality(*args, **kwargs):
        result = real(*args, **kwargs)
        result.quality = Quality()
        return result

    monkeypatch.setattr(inference, "segment_volume", with_quality)
    folder, out = scans(tmp_path / "scans", 2), tmp_path / "out"
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model),
                 "--report", str(tmp_path / "copy.json")]) == 0
    row = report_rows(out / "report.csv")["image_00"]
    assert row["estimated_dice"] == "0.91" and row["least_sure_slices"] == "3 | 7"
    case = json.loads((tmp_path / "copy.json").read_text())["cases"][0]
    assert case["estimated_dice_high"] == 0.95 and case["least_sure_slices"] == [3, 7]
    single = tmp_path / "one.json"  # one image: the report only when asked for
    assert main(["segment", "-q", str(folder / "image_01.nii.gz"), "-o", str(tmp_path / "one.nii.gz"),
                 "--model", str(tiny_model), "--report", str(single)]) == 0
    (one,) = json.loads(single.read_text())["cases"]
    assert one["status"] == "done" and one["estimated_dice"] == 0.91 and one["liver_ml"] > 0


def test_other_settings_are_refused_and_overwrite_redoes(tiny_model, tmp_path, capsys, counted):
    folder, out = scans(tmp_path / "scans", 2), tmp_path / "out"
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model)]) == 0
    capsys.readouterr()
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model), "--tta"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "made with another model or other settings" in line and "--overwrite" in line
    assert sum(counted.values()) == 2
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model), "--tta",
                 "--overwrite"]) == 0
    assert sum(counted.values()) == 4


def test_an_output_without_a_record_is_skipped_when_whole_and_redone_when_cut(tiny_model, tmp_path, counted):
    folder, out = scans(tmp_path / "scans", 2), tmp_path / "out"
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model)]) == 0
    for record in (out / STATE_FOLDER).iterdir():
        record.unlink()  # as a run killed between writing the mask and its record
    cut = out / "image_01_liver.nii.gz"
    cut.write_bytes(cut.read_bytes()[:60])
    assert main(["segment", "-q", str(folder), "-o", str(out), "--model", str(tiny_model)]) == 0
    assert counted == {"image_00.nii.gz": 1, "image_01.nii.gz": 2}
    rows = report_rows(out / "report.csv")
    assert rows["image_00"]["status"] == "done earlier" and "no record" in rows["image_00"]["warnings"]
    assert float(rows["image_00"]["liver_ml"]) > 0 and rows["image_01"]["status"] == "done"


def test_without_dask_the_scheduler_says_how_to_install_it_and_workers_use_processes(tmp_path, capsys, monkeypatch):
    import LiverUNetLib.batch.dask_runner as dask_runner
    from LiverUNetLib.batch import Engine, RunOptions

    monkeypatch.setattr(dask_runner, "dask_available", lambda: False)
    folder = scans(tmp_path / "scans", 2)
    code = main(["segment", "-q", str(folder), "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:8786"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and 'pip install -e ".[cluster]"' in line
    assert RunOptions(workers=2).engine_used() is Engine.PROCESSES
    monkeypatch.setattr(dask_runner, "dask_available", lambda: True)
    assert RunOptions(workers=2).engine_used() is Engine.DASK and RunOptions(workers=1).engine_used() is Engine.PROCESSES


def test_folder_glob_and_single_image_inputs(tmp_path):
    folder = scans(tmp_path / "scans", 3)
    cases, batch = cases_from_inputs([str(folder / "image_0[12].nii.gz")], tmp_path / "out", ".nrrd", probability=True)
    assert batch and [c.case_id for c in cases] == ["image_01", "image_02"]
    assert cases[0].output == tmp_path / "out" / "image_01_liver.nrrd"
    assert cases[0].probability_output == tmp_path / "out" / "image_01_liver_probability.nrrd"
    (case,), batch = cases_from_inputs([str(folder / "image_00.nii.gz")], tmp_path / "liver.seg.nrrd", ".nii.gz")
    assert not batch and case.output == tmp_path / "liver.seg.nrrd"
    with pytest.raises(LiverUNetError, match="No file matches"):
        cases_from_inputs([str(folder / "*.mha")], tmp_path / "out", ".nii.gz")
    with pytest.raises(LiverUNetError, match="--shard"):
        Shard.parse("3/3")
    from LiverUNetLib.batch import Engine
    from LiverUNetLib.cli.segment import ENGINES

    assert set(ENGINES) == {engine.value for engine in Engine}
    assert BatchSettings(tta=True).recipe() != BatchSettings().recipe()
    assert BatchSettings(threads=4, batch_size=2).recipe() == BatchSettings().recipe()  # speed settings only


def test_the_warm_worker_runs_the_batch_with_a_progress_event_per_case(tiny_model, tmp_path):
    from LiverUNetLib.progress import CancelToken
    from LiverUNetLib.worker import run_job

    folder, out = scans(tmp_path / "scans", 2), tmp_path / "out"
    events = []
    job = {"kind": "segment_batch", "output_folder": str(out), "model": str(tiny_model), "device": "cpu",
           "cases": [{"input": str(folder / "image_00.nii.gz")}, {"input": str(folder / "image_01.nii.gz")},
                     {"input": str(tmp_path / "missing.nii.gz"), "case_id": "gone"}]}
    result = run_job(job, events.append, CancelToken())
    per_case = [e["extra"]["case"] for e in events if "case" in e.get("extra", {})]
    assert [row["case_id"] for row in per_case] == ["image_00", "image_01", "gone"]
    assert [row["status"] for row in per_case] == ["done", "done", "failed"]
    assert result["failed"] == 1 and Path(result["report"]).is_file()
    assert (out / "image_00_liver.seg.nrrd").is_file()  # the Slicer format by default
    again = run_job(job, events.append, CancelToken())
    assert [r["status"] for r in again["rows"]] == ["done earlier", "done earlier", "failed"]
