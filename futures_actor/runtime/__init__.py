"""Runtimes that run the actor machines of `futures_actor.machines` (issue 12).

- `loop`: `EventLoop`, a single-threaded discrete-event loop (a heap of time-stamped messages).
- `replay`: the replay runtime: recorded klines through the machines on an `EventLoop`, the paper
  matching engine called directly; no trio, no channels, no task switches.

The trio runtime is the set of shells in `futures_actor/actors/` (live, paper, the acceptance tests).
"""
