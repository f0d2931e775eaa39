"""``python -m videoedit <command>`` = the ``videoedit`` console script (e.g. under
``accelerate launch -m videoedit run +experiment=...``)."""

import sys

from videoedit.cli import main

sys.exit(main())
