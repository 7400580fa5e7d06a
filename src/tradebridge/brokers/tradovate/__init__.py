"""The native Tradovate dialect: REST ``/v1`` for commands and reads, WebSocket user sync."""

from tradebridge.brokers.tradovate.broker import TradovateBroker
from tradebridge.brokers.tradovate.usersync import SyncMirror, UserSync

__all__ = ["SyncMirror", "TradovateBroker", "UserSync"]
