"""`python -m adapters` runs the sidecar, like the `consul-leader` command."""

import sys

from adapters.cli import main

sys.exit(main())
