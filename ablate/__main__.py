"""`python -m ablate`. The first instruction makes Ctrl-C one line and exit 130 (see ablate._startup)."""

from ablate import _startup

_startup.install()

from ablate._timeline import mark  # noqa: E402

mark("python started")
from ablate.cli import main  # noqa: E402 — after the handler: this import is most of the start-up time

mark("cli imported")

raise SystemExit(main())
