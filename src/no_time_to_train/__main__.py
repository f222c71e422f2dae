"""``python -m no_time_to_train`` (and ``torchrun -m no_time_to_train``) runs the ``nttt`` command."""

import sys

from .cli import main

sys.exit(main())
