"""``python -m router`` is ``attentive-router``."""

import sys

from router.cli import main

sys.exit(main())
