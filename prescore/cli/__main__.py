"""``python -m prescore.cli``: the operator CLI, as the ``prescore`` command."""

import sys

from prescore.cli.main import main

sys.exit(main())
