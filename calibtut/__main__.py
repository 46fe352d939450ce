"""``python -m calibtut``: the same command line as the ``calibtut`` console script."""

from calibtut.cli import main

raise SystemExit(main())
