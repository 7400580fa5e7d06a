"""The alert payload formats: one module per shape an alert may arrive in.

* ``body``: raw bytes to one bounded JSON object, before the format is known;
* ``detect``: which format a body is written in;
* ``tradebridge`` (our own, docs/tradingview.md), ``traderspost``, ``pickmytrade``: each
  parses its shape into the common ``alert.ParsedAlert`` (with the typed reads of
  ``_fields``) and documents it with an OpenAPI model (``_schema``) naming the same fields;
  ``intake/plan.py`` turns a parsed alert into ledger rows.
"""
