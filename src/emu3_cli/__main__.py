"""``python -m emu3_cli ...`` runs the ``emu3`` command (what ``accelerate launch`` / ``torchrun`` need: a module)."""

import sys

from emu3_cli import main

sys.exit(main())
