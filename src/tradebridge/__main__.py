"""Allow ``python -m tradebridge``."""

from tradebridge.cli import main

main()
