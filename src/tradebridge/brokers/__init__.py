"""Broker adapters: one protocol, one adapter per Tradovate dialect.

``brokers`` and ``sim`` never import each other: the simulator follows the reference, the
adapters follow the reference, and the contract tests make them meet.
"""
