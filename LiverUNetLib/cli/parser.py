"""The ``liverunet`` argument parser, assembled from each command module's ``add_parser``."""

from __future__ import annotations

import argparse

from . import evaluate, fill, info, segment, train
from .common import CliParser

#: The commands in the order ``liverunet --help`` lists them.
COMMAND_MODULES = (segment, train, fill, evaluate, info)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of unexpected errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar")

    parser = CliParser(
        prog="liverunet",
        description="Liver segmentation with a 2D U-Net you can train on a few painted slices.",
        parents=[common],
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"liverunet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parser(sub, common)
    return parser
