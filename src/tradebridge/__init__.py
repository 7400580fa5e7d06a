"""tradebridge: TradingView alerts and Postgres rows to Tradovate orders, placed exactly once."""

__version__ = "0.1.0"
