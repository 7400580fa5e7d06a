"""``tradebridge doctor``: explain a setup or a failed request in plain words."""
