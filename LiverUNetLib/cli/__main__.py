"""``python -m LiverUNetLib.cli`` (and ``torchrun -m LiverUNetLib.cli``) runs the ``liverunet`` command."""

import sys

from . import main

sys.exit(main())
