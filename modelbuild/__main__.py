"""`python -m modelbuild ...`: see modelbuild/cli.py."""

import sys

from modelbuild.cli import main

sys.exit(main())
