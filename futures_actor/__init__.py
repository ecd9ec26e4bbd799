"""futures-actor: a trading bot for Binance USDT-M perpetual futures (actor model on trio)."""

__version__ = "0.1.0"
