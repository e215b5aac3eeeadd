"""`python -m maskgan_rl ...`: the same command line as `maskgan ...`."""

import sys

from maskgan_rl.cli import main

sys.exit(main())
