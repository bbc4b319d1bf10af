"""``python -m pixelmodels`` (also what ``torchrun -m pixelmodels`` runs)."""

import sys

from pixelmodels.app.cli import main

sys.exit(main())
