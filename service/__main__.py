"""`python -m service ...`: the CLI and the Ray job entrypoint."""

import sys

from service.cli import main

sys.exit(main())
