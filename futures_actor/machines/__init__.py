"""Actors as pure state machines (issue 12): `handle(message, now_ms=...) -> effects`, no trio, no I/O.

A machine owns its state and answers each message with a list of typed effects (messages to send,
timers, requests to make, log records) that a runtime performs in order; it never awaits, never reads
a clock and never calls a logger. Runtimes: the trio shells in `futures_actor/actors/` (live, paper,
the acceptance tests, `replay.runtime = "trio"`) and the discrete-event replay runtime in
`futures_actor/runtime/` (`replay.runtime = "events"`, the default for replays). Both produce the same
effects from the same input: `tests/machines/test_*_parity.py` check each machine against its trio
shell, `tests/runtime/test_replay_parity.py` a whole replay (byte-identical trade logs).

- `effects`: the effect vocabulary shared by every machine (`Log`, `write_log`).
- `symbol`: `SymbolMachine`, one symbol's features, regime, strategies and trailing
  (`actors/symbol_actor.py` is its trio shell, `runtime/cells.SymbolCell` its replay cell).
- `risk`: `RiskMachine`, the portfolio's risk decisions (`actors/portfolio_risk.py`,
  `runtime/actor_cells.RiskCell`).
- `execution`: `ExecutionMachine`, every trade's orders (`actors/execution.py`,
  `runtime/actor_cells.ExecutionCell`).

Why a package of its own: `core/` holds decision functions that know nothing of actors and their
messages; a machine is an actor minus its runtime, so it speaks the in-process messages of
`actors/messages.py` (a module without trio) and imports decision code from `core/`, never the other
way round.

Rules every machine keeps (the symbol machine shows each one):
- Every dispatch (`match` on the input union, on the effect union in a runtime) ends in
  `assert_never`. Inputs and effects are closed unions of frozen msgspec Structs; no `Any` channel.
- An outcome the runtime produces (a fetch, an exchange call, a reply, a timer) comes back as an input
  message: `FetchHistory` → `HistoryFetched` / `HistoryFetchFailed`; a report's verdict wait →
  `Verdict` / `VerdictTimedOut` / `VerdictChannelClosed`.
- A request whose answer the machine needs before its next inbox message (the symbol machine's gap
  repair) leaves the machine in a pending state that refuses inbox messages (`SymbolMachineError`): the
  runtime answers it first. A request whose answer only logs (a verdict) may be answered any time.
- A fault in decision code ends with `ReportFault` and `Crash(error)`; the runtime raises the error and
  the supervisor builds a fresh machine. A crashed machine refuses further input.

Design note (written before the risk and execution machines and the replay runtime existed; they follow
it, see their own docstrings for the contracts as built). One addition: where the trio runtime's order
depended on scheduling — a decision before or after a trailed stop's `PositionUpdated` reached risk —
the order became an explicit message, the `ExecutionSync` barrier (`machines/risk.py`).

PortfolioRisk → `RiskMachine`. State: equity, the portfolio (positions, reservations), `RiskState`
calendar, selector and performance state, the open decision batches, safe-mode / kill / REDUCING
flags. Inputs: today's `RiskInbox` plus `BatchDeadline(candle_open_time_ms)` (the timer that closes a
batch after `risk.decision_batch_ms`). `now_ms` must be the injected wall time (the calendar rolls on
UTC days), the event time in a replay. Effects: `SendPlan(SubmitPlan)` and `SendShadowPlan` (the
never-blocking mailbox stays in the runtime), `ReplyVerdict(symbol, candle_open_time_ms, Verdict)` (the
report's reply channel becomes a correlation key the runtime maps to the one-shot channel, or, in a
replay, to a direct `Verdict` message; a reply nobody hears comes back as `VerdictUndelivered` so a
reservation can be released), `SetTimer` / `CancelTimer` for the batch deadline, `Persist(risk state,
selection state)` placed before the `SendPlan` it covers, `Log`, and metric updates as effects (or a
snapshot read by the runtime after each `handle`, never by another actor).

Execution → `ExecutionMachine` around the existing `TradeLifecycle`s (`core/lifecycle.py` is already
events in, commands out). What moves in: the timer heap (`SetTimer(key, at_ms)` / `CancelTimer`, fires
come back as `TtlExpired`-style inputs), persist-before-send (`Persist(snapshot, placements)` emitted
before the `GatewayCall` it covers; a failed persist is a crash, so the call never leaves), gateway
requests as `GatewayCall(request_id, PlaceOrder | CancelOrder | QueryOrder | ...)` whose outcomes come
back as `GatewayReplied(request_id, status)` / `GatewayFailed(request_id, error)`, the journal write as
`WriteJournal(record)` answered by `JournalWritten` (so "record, then TradeClosed, then meta key" stays
ordered), and sends to risk and to the symbol machines. Today's rule "gateway calls awaited inline, one
at a time" maps onto the pending-request pattern above (the trio runtime answers one call before the
next inbox message), which keeps behaviour identical first; concurrency can follow.

The replay runtime needs from every machine: (1) determinism given (input, `now_ms`): no clock reads,
no iteration over unordered sets in decisions, no randomness without a seed in state; (2) time only
through `now_ms` and timers as effects (`SetTimer(at_ms)`), so the loop can put them on its heap of
(time, sequence number, recipient, message); (3) every request effect answerable synchronously (the
paper engine called directly, the history source of the replay, verdicts delivered as messages); (4) a
delivery order the trio runtime reproduces: per-sender FIFO with a global sequence number at emission.
Where trio's order depends on scheduling today (the symbol actor's verdict tasks log whenever trio
runs them; PortfolioRisk's batch closes on "every report in, or the deadline") the order must become an
explicit message or timer, or be excluded from the trade-log parity as these verdict logs are.
"""
