"""The alert payload formats: one module per shape an alert may arrive in.

* ``body``: raw bytes to one bounded JSON object, before the format is known;
* ``detect``: which format a body is written in;
* ``tradebridge`` (our own, docs/tradingview.md), ``traderspost``, ``pickmytrade``: each
  parses its shape into the common ``alert.ParsedAlert`` (``_fields`` holds the typed reads
  they share); ``intake/plan.py`` turns that into ledger rows.
"""
