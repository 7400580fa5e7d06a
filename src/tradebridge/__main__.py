"""Allow ``python -m tradebridge``."""

from tradebridge.cli.main import main

main()
