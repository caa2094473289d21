"""`python -m stages.cli`: the `llmops` command."""

import sys

from stages.cli import main

sys.exit(main())
