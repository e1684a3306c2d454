"""``liverunet info``: show a model file's card."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK
from .progress_bar import ProgressBar


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this command's options to the ``liverunet`` subcommands."""
    info = sub.add_parser("info", parents=[common], help="show a model card")
    info.add_argument("model", metavar="MODEL")
    info.set_defaults(func=run)


def run(args: argparse.Namespace, bar: ProgressBar) -> int:
    from ..model_file import load_model

    model = load_model(args.model)
    print(model.describe())
    return EXIT_OK
