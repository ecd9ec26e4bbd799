"""Actors as pure state machines (issue 12): `handle(message, now_ms=...) -> effects`, no trio, no I/O.

A machine owns its state and answers each message with a list of typed effects (messages to send,
timers, requests to make, log records) that a runtime performs in order; it never awaits, never reads
a clock and never calls a logger. Runtimes: the trio shells in `futures_actor/actors/` (live, paper,
the acceptance tests) and, to come, a discrete-event replay loop; both must produce the same effects
from the same input (`tests/actors/test_symbol_parity.py` checks it for the symbol machine).

- `effects`: the effect vocabulary shared by every machine (`Log`, `write_log`).
- `symbol`: `SymbolMachine`, one symbol's features, regime, strategies and trailing.
"""
