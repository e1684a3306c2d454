"""Distributed training (LiverUNetLib.training_distributed): two CPU processes on the gloo backend.

The batch norm synchronised across processes gives what one process computes on the whole batch; torchrun
runs ``liverunet train`` in two processes and the model segments; a cancel on one process stops both, and
the rerun resumes from rank 0's checkpoint. Tiny phantoms and networks keep the file under a minute.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_phantoms import TINY_SETTINGS, phantom, write_phantom

REPO = Path(__file__).resolve().parents[1]
# one process reaches Dice 0.96 on a new phantom with these (12 epochs of 64 slices)
SETTINGS = {**TINY_SETTINGS, "epochs": 12, "samples_per_epoch": 64, "learning_rate": 5e-3, "validation_fraction": 0.2}
SHORT = {**SETTINGS, "epochs": 3, "samples_per_epoch": 16}  # for the cancel: where it stops is what matters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_rank(rank: int, world: int, port: int) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)


# ---- batch norm ----------------------------------------------------------------------------------------
def _batch_norm_rank(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from LiverUNetLib.training_distributed import synchronise_batch_norm

    as_rank(rank, 2, port)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).double()  # no float32 noise
    x = (torch.randn(6, 2, 9, 9, dtype=torch.float64) * 5 + 3)[rank::2].clone().requires_grad_(True)
    synchronise_batch_norm(net, cuda=False)
    y = net(x)
    (y.square() * torch.arange(1, 4).view(1, 3, 1, 1)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    for g in grads:
        dist.all_reduce(g)  # the sum over processes is the gradient of the whole batch's loss
    torch.save({"y": y.detach(), "x_grad": x.grad, "grads": grads, "running": net[1].running_var.clone()},
               Path(folder) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_synchronised_batch_norm_is_the_whole_batch_s(tmp_path):
    torch.multiprocessing.spawn(_batch_norm_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).double()
    x = (torch.randn(6, 2, 9, 9, dtype=torch.float64) * 5 + 3).requires_grad_(True)
    y = net(x)
    (y.square() * torch.arange(1, 4).view(1, 3, 1, 1)).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r, saved in enumerate(ranks):
        torch.testing.assert_close(saved["y"], y.detach()[r::2], atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(saved["x_grad"], x.grad[r::2], atol=1e-9, rtol=1e-9)
        for mine, whole in zip(saved["grads"], net.parameters()):
            torch.testing.assert_close(mine, whole.grad, atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(saved["running"], net[1].running_var, atol=1e-9, rtol=1e-9)


# ---- the split of each batch -------------------------------------------------------------------------
def test_the_processes_split_each_batch_of_the_one_process_order():
    from LiverUNetLib.training import TrainConfig
    from LiverUNetLib.training_sampler import _PreparedCase, _SliceSampler

    case = _PreparedCase("c", torch.zeros(20, 8, 8), torch.zeros(20, 1, 8, 8), np.arange(20), np.ones(20))
    config = TrainConfig(batch_size=6, crop_size=8, context_slices=0)

    def drawn(rank: int, world: int) -> list[list[int]]:
        sampler = _SliceSampler([case], config, 8, torch.Generator().manual_seed(5))
        if world > 1:
            sampler.share(rank, world, torch.Generator().manual_seed(9))
        else:
            sampler.order_generator = torch.Generator().manual_seed(9)
        sampler._sample = lambda _case, position: (torch.full((1, 8, 8), float(position)), torch.zeros(1, 8, 8))
        return [batch.image[:, 0, 0, 0].int().tolist() for batch in sampler.batches(18)]

    whole, first, second = drawn(0, 1), drawn(0, 2), drawn(1, 2)
    assert len(whole) == len(first) == len(second) == 3  # the same number of steps on every process
    for batch, mine, theirs in zip(whole, first, second):
        assert len(mine) == len(theirs) == 3 and sorted(mine + theirs) == sorted(batch)


# ---- training through torchrun -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantoms")
    for number in range(5):
        write_phantom(folder, f"{number}", seed=number)
    return folder


def test_torchrun_trains_in_two_gloo_processes_and_the_model_segments(phantoms, tmp_path):
    from LiverUNetLib.inference import segment_volume
    from LiverUNetLib.model_file import load_model

    output = tmp_path / "ddp.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "LiverUNetLib.cli", "train", "-q",
               "--images", *map(str, sorted(phantoms.glob("image_*"))),
               "--labels", *map(str, sorted(phantoms.glob("label_*"))),
               "-o", str(output), "--settings", json.dumps(SETTINGS)]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    model = load_model(output)
    assert model.card.training["distributed"] == {"processes": 2, "backend": "gloo",
                                                  "batch_norm": "synchronised across processes"}
    assert not output.with_name(output.name + ".resume").exists()
    image, mask = phantom(seed=11)
    result = segment_volume(image, model, None)
    truth, found = mask.array > 0, result.mask.array > 0
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) > 0.8


# ---- cancel and resume ----------------------------------------------------------------------------------
class CancelAfter:
    """A cancel token that one process sets after ``steps`` checks (as a user's cancel would, at any step)."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    @property
    def cancelled(self) -> bool:
        self.left -= 1
        return self.left < 0

    def check(self) -> None:
        if self.left < 0:
            from LiverUNetLib.errors import CancelledError

            raise CancelledError()


def _train_rank(rank: int, port: int, folder: str, cancel_steps: int) -> None:
    from LiverUNetLib.errors import CancelledError
    from LiverUNetLib.training import TrainConfig, TrainingCase, train
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetLib.progress import CancelToken

    as_rank(rank, 2, port)
    cases = []
    for number in range(5):
        image, mask = phantom(seed=number)
        cases.append(TrainingCase(f"case{number}", image, sparse_label_from_mask(image, mask)))
    messages: list[str] = []
    cancel = CancelAfter(cancel_steps) if rank == 1 and cancel_steps else CancelToken()
    outcome = "finished"
    try:
        train(cases, TrainConfig.from_dict(dict(SHORT)), Path(folder) / "model.pt",
              progress=lambda event: messages.append(event.message), cancel=cancel)  # type: ignore[arg-type]
    except CancelledError:
        outcome = "cancelled"
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"outcome": outcome, "messages": messages}))


def test_a_cancel_on_one_process_stops_both_and_the_rerun_resumes(tmp_path):
    steps_per_epoch = SHORT["samples_per_epoch"] // SHORT["batch_size"]
    torch.multiprocessing.spawn(_train_rank, args=(free_port(), str(tmp_path), 2 * steps_per_epoch + 3), nprocs=2)
    first = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [f["outcome"] for f in first] == ["cancelled", "cancelled"]
    assert not (tmp_path / "model.pt").exists() and (tmp_path / "model.pt.resume").is_file()
    assert first[1]["messages"] == []  # only rank 0 reports
    torch.multiprocessing.spawn(_train_rank, args=(free_port(), str(tmp_path), 0), nprocs=2)
    second = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [s["outcome"] for s in second] == ["finished", "finished"]
    assert "Resuming network 1/1, epoch 2" in second[0]["messages"]
    assert (tmp_path / "model.pt").is_file() and not (tmp_path / "model.pt.resume").exists()
