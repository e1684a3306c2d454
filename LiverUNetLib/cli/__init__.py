"""The ``liverunet`` command: segment, train, evaluate, info.

Every failure ends in one line on stderr, ``liverunet: error: <what is wrong and what to do>``,
and a non-zero exit code: 2 for problems the user can fix (bad input, missing model, usage),
130 after Ctrl-C, 1 for unexpected errors (run again with ``--debug`` for the traceback).
Progress goes to stderr as a simple text bar; results go to stdout. Each command is a module of
this package (``segment``, ``train``, ``evaluate``, ``info``) with ``add_parser`` and ``run``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Optional, Sequence

from ..errors import CancelledError, LiverUNetError
from .common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USER_ERROR,
    case_key,
    match_cases,
    one_line,
)
from .parser import build_parser
from .progress_bar import ProgressBar

__all__ = [
    "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNEXPECTED", "EXIT_USER_ERROR", "ProgressBar", "build_parser",
    "case_key", "main", "match_cases",
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # --help, --version, usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USER_ERROR
    debug = getattr(args, "debug", False)
    bar = ProgressBar(sys.stderr, enabled=not getattr(args, "quiet", False))
    func: Callable[[argparse.Namespace, ProgressBar], int] = args.func
    try:
        return func(args, bar)
    except CancelledError as error:
        bar.finish()
        print(f"liverunet: error: {one_line(error)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LiverUNetError as error:
        bar.finish()
        print(f"liverunet: error: {one_line(error)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        bar.finish()
        print("liverunet: error: interrupted (Ctrl-C); no partial output was kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        bar.finish()
        print("liverunet: error: out of memory. Close other programs, use --batch-size 1, or crop "
              "the image to the abdomen.", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as error:  # noqa: BLE001 - the last line of defence
        bar.finish()
        if debug:
            traceback.print_exc()
        print(
            f"liverunet: error: unexpected {type(error).__name__}: {one_line(error)} "
            "(this is a bug; run again with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
