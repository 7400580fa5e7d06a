"""Helpers and fixtures shared by test packages (``pythonpath = ["tests"]`` makes them importable).

* ``database``: ``fresh_database``, a throwaway (migrated or empty) database per test;
* ``fixtures``: ``redis_client``, a client of the session Redis, emptied per test;
* ``native``: a ``TradovateBroker`` on the simulator with tokens in Redis;
* ``rig``: the contract suite's rig, one simulator and either adapter.

A test module imports the fixtures it uses and lists them in ``__all__`` so that linters
see them used.
"""
