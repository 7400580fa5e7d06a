"""Signal intake: the TradingView webhook and its payload formats; it only writes the ledger."""
