"""`python -m knai`: the same as the `knai` command."""

from ._cli import main

raise SystemExit(main())
