"""`python -m zbrain` is the `zbrain` command line."""

from .cli import main

raise SystemExit(main())
