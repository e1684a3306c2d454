"""Shared pytest fixtures: where the real data lives, and the skip-or-fail rule for it.

Tests that need ``../shared/data`` skip with a visible reason when it is absent, and fail instead
when ``LIVERUNET_REQUIRE_DATA=1`` (CI sets it), so CI can never go green by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LIVERUNET_DATA", REPO_ROOT.parent / "shared" / "data"))
MRI_SUBJECTS = ["3", "5", "13", "15", "19", "20", "21", "22", "31", "32", "34", "36", "37", "38", "39"]


def require_data(*relative: str) -> Path:
    """Return the data path, or skip (fail under LIVERUNET_REQUIRE_DATA=1) when it is missing."""
    path = DATA_ROOT.joinpath(*relative)
    if not path.exists():
        message = f"real data not found at {path} (see ../shared/data/README.md)"
        if os.environ.get("LIVERUNET_REQUIRE_DATA") == "1":
            pytest.fail(message + " and LIVERUNET_REQUIRE_DATA=1 is set")
        pytest.skip(message)
    return path


@pytest.fixture
def mri_image_path():
    def _path(subject: str) -> Path:
        return require_data("chaos-mr-t2", "images", f"image_{subject}.nii.gz")

    return _path


@pytest.fixture
def mri_label_path():
    def _path(subject: str) -> Path:
        return require_data("chaos-mr-t2", "labels", f"label_{subject}.nii.gz")

    return _path


@pytest.fixture
def ct_sample_dir() -> Path:
    return require_data("chaos-ct-sample")


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests use tiny models; two threads keep CI's two cores from thrashing."""
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # the static Slicer checks need no torch
        pass
    yield
