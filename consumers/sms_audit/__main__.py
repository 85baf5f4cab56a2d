"""``python -m consumers.sms_audit query ...``: see :mod:`consumers.sms_audit.query`."""

import os
import sys

from consumers.sms_audit.query import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:  # `... | head`: the reader left; say nothing more
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
raise SystemExit(code)
