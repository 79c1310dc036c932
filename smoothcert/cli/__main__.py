"""`python -m smoothcert.cli`: the same as the `smoothcert` command."""
import sys

from . import main

sys.exit(main())
