"""``python -m fam_skull`` (and ``torchrun -m fam_skull train ...``)."""

import sys

from fam_skull.cli import main

sys.exit(main())
