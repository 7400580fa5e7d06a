"""The Tradovate simulator: native REST and WebSocket, the TradingView bridge, one state.

It is a product feature (paper trading, demos) and the broker of every test. It follows
``reference/tradovate-api.md``, not our client: ``sim`` and ``brokers`` never import each
other, so two independent readings of the reference catch each other's mistakes.
"""
