"""`python -m consul_leader` runs the sidecar, like the `consul-leader` command."""

import sys

from consul_leader.adapters.cli import main

sys.exit(main())
