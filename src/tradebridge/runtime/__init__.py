"""The composition root: ``serve`` and ``up`` build every part from the settings and run it;
``/healthz``, the endpoints file and the HTTP guard live here too."""
