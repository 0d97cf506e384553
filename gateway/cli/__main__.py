"""``python -m gateway.cli``: the ``loragate`` command."""

from gateway.cli.main import main

raise SystemExit(main())
