"""``python -m streambatch`` runs the command line."""

import sys

from streambatch.cli import main

sys.exit(main())
