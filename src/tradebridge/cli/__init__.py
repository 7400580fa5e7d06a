"""The ``tradebridge`` command line: ``main.py`` assembles one module per command group."""
