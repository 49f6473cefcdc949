"""``python -m claas_cli``: the same as the ``claas`` command."""

from claas_cli.app import main

main()
