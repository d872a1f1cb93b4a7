"""`python -m bitjax.cli ...`: the same command as `bitjax ...`."""

import sys

from bitjax.cli import main

sys.exit(main())
