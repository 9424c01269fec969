"""``python -m lit_prune``: the same command as the ``lit-prune`` console script."""

import sys

from lit_prune.cli import main

sys.exit(main())
