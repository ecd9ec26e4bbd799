"""report.html: one self-contained page (no network: inline CSS, inline SVG drawn by inline JS).

The tables are plain HTML rendered here; the equity and drawdown charts are drawn in the browser by
the small script at the end of the page from the JSON embedded in `<script type="application/json">`.
When the script has drawn them it sets `data-charts-drawn` on `<body>` to the number of charts and
`data-points` on each chart to the number of points plotted (the browser test checks both).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from futures_actor.core.drawdown import drawdown_series
from futures_actor.core.summary import GroupStats, RunSummary
from futures_actor.tearsheet.load import RunData
from futures_actor.tearsheet.metrics import DAYS_PER_YEAR, Metrics, monthly_returns, parse_iso_ms

__all__ = ["CHART_IDS", "render_html"]

CHART_IDS = ("equity-chart", "drawdown-chart")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(ms: int | None) -> str:
    if ms is None:
        return "n/a"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _pct(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.{digits}f}%" if round(value * 100, digits) != 0 else f"{0:.{digits}f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _signed(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:+,.{digits}f}" if round(value, digits) != 0 else f"{0:.{digits}f}"


def _duration(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    minutes = ms / 60_000
    if minutes < 120:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def _cls(value: float | None) -> str:
    if value is None or value == 0:
        return ""
    return "pos" if value > 0 else "neg"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", row_ids: Sequence[str] = ()
) -> str:
    """A table; `row_ids[i]`, when given, becomes the `data-id` of row i (the trade list: trade ids)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        (f'<tr data-id="{_e(row_ids[i])}">' if i < len(row_ids) else "<tr>") + "".join(row) + "</tr>"
        for i, row in enumerate(rows)
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">none</td></tr>'
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(text: str, css: str = "") -> str:
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def _group_rows(groups: Mapping[str, GroupStats]) -> list[list[str]]:
    rows = []
    for name, g in sorted(groups.items(), key=lambda kv: -kv[1].pnl_usd):
        rows.append(
            [
                _td(_e(name)),
                _td(str(g.trades), "r"),
                _td(_pct(g.win_rate, 1), "r"),
                _td(_signed(g.expectancy_r, 3), "r " + _cls(g.expectancy_r)),
                _td(_signed(g.pnl_usd), "r " + _cls(g.pnl_usd)),
                _td(_num(g.fees_usd), "r"),
                _td(_signed(g.funding_usd), "r"),
            ]
        )
    return rows


_GROUP_HEADERS = ("", "trades", "win rate", "expectancy R", "net PnL $", "fees $", "funding $")


def _card(label: str, value: str, title: str, css: str = "") -> str:
    return (
        f'<div class="card" title="{_e(title)}"><div class="label">{_e(label)}</div>'
        f'<div class="value {css}">{_e(value)}</div></div>'
    )


def _cards(m: Metrics) -> str:
    fees = f"{_num(m.fees_usd)} ({_pct(m.fees_share_of_gross, 1)})"
    funding = f"{_signed(-m.funding_usd)} ({_pct(m.funding_share_of_gross, 1)})"
    cards = [
        _card("Total return", _pct(m.total_return), "end equity / start equity - 1", _cls(m.total_return)),
        _card("CAGR", _pct(m.cagr), "compound annual growth rate, 365-day years", _cls(m.cagr)),
        _card("Sharpe", _num(m.sharpe), "mean / stdev of daily returns x sqrt(365)", _cls(m.sharpe)),
        _card(
            "Sortino", _num(m.sortino), "mean daily return / downside deviation x sqrt(365)", _cls(m.sortino)
        ),
        _card("Max drawdown", _pct(m.max_drawdown), "deepest peak-to-trough fall of the equity curve", "neg"),
        _card("Calmar", _num(m.calmar), "CAGR / max drawdown", _cls(m.calmar)),
        _card("Trades", str(m.trades), "closed trades whose entry filled"),
        _card("Win rate", _pct(m.win_rate, 1), "share of trades with R > 0"),
        _card("Profit factor", _num(m.profit_factor), "gross wins / gross losses (net PnL)"),
        _card(
            "Expectancy", f"{_signed(m.expectancy_r, 3)} R", "mean R multiple per trade", _cls(m.expectancy_r)
        ),
        _card("Exposure", _pct(m.exposure, 1), "share of time with a position open"),
        _card("Average hold", _duration(m.average_hold_ms), "mean time from open to close"),
        _card("Net PnL", f"{_signed(m.net_pnl_usd)} $", "sum of the trades' net PnL", _cls(m.net_pnl_usd)),
        _card("Gross PnL", f"{_signed(m.gross_pnl_usd)} $", "price PnL before fees and funding"),
        _card("Fees (share of gross)", fees, "fees paid, as a share of |gross PnL|"),
        _card("Funding paid (share)", funding, "funding paid (+) or received (-), share of |gross PnL|"),
        _card("Entries not filled", str(m.unfilled_entries), "entry orders that expired or were rejected"),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _monthly(points: Sequence[tuple[int, float]]) -> str:
    months = monthly_returns(points)
    if not months:
        return '<p class="empty">no equity data</p>'
    years = sorted({y for y, _ in months})
    rows = []
    for y in years:
        cells = [_td(str(y))]
        compounded = 1.0
        for m in range(1, 13):
            value = months.get((y, m))
            if value is None:
                cells.append('<td class="hm"></td>')
                continue
            compounded *= 1.0 + value
            alpha = min(1.0, abs(value) / 0.10) * 0.85 + 0.1
            color = f"rgba(22,163,74,{alpha:.2f})" if value >= 0 else f"rgba(220,38,38,{alpha:.2f})"
            cells.append(f'<td class="hm" style="background:{color}">{_pct(value, 1)}</td>')
        cells.append(_td(_pct(compounded - 1.0, 1), "r " + _cls(compounded - 1.0)))
        rows.append(cells)
    return _table(["year", *_MONTHS, "total"], rows, cls="heat")


def _price(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return ""


def _part(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    return value if isinstance(value, Mapping) else {}


def _trade_rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for r in records:
        entry, result, costs = _part(r, "entry_order"), _part(r, "result"), _part(r, "costs")
        qty = entry.get("filled_qty", 0)
        filled = isinstance(qty, int | float) and qty > 0
        t_open, t_close = parse_iso_ms(r.get("timestamp_open")), parse_iso_ms(r.get("timestamp_close"))
        hold = (t_close - t_open) if filled and t_open is not None and t_close is not None else None
        pnl = result.get("pnl_usd")
        rr = result.get("pnl_r_multiple")
        pnl_f = float(pnl) if isinstance(pnl, int | float) else None
        rr_f = float(rr) if isinstance(rr, int | float) else None
        rows.append(
            [
                _td(_e(_time(t_open)), "" if filled else "muted"),
                _td(_e(r.get("symbol", "?"))),
                _td(_e(r.get("direction", "?"))),
                _td(_e(r.get("strategy", "?"))),
                _td(_e(r.get("regime", "?"))),
                _td(_price(entry.get("filled_avg_price")) if filled else "not filled", "r"),
                _td(_price(result.get("exit_price")) if filled else "", "r"),
                _td(_e(result.get("reason", "?")) if filled else "entry expired"),
                _td(_duration(hold) if hold is not None else "", "r"),
                _td(_signed(rr_f, 2) if filled else "", "r " + (_cls(rr_f) if filled else "")),
                _td(_signed(pnl_f) if filled else "", "r " + (_cls(pnl_f) if filled else "")),
                _td(_num(float(costs.get("fees_usd", 0) or 0)) if filled else "", "r"),
            ]
        )
    return rows


_CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--pos:#15803d;--neg:#b91c1c;--accent:#2563eb}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);
margin:0;background:#f8fafc}main{max-width:1200px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);
padding-bottom:4px}.sub{color:var(--muted);margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.card .label{color:var(--muted);font-size:12px}.card .value{font-size:18px;font-weight:600;margin-top:2px}
.pos{color:var(--pos)}.neg{color:var(--neg)}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);font-size:13px;margin:4px 0 8px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{background:#f1f5f9;font-weight:600}td.r{text-align:right;font-variant-numeric:tabular-nums}
td.empty{color:var(--muted);text-align:center}td.muted{color:var(--muted)}.heat td.hm{text-align:center;min-width:58px;color:#111}
.chart{background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px;margin-bottom:10px}
.chart svg{width:100%;display:block}.chart .title{font-weight:600;margin:2px 6px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:0 24px}
.grid2.wide{grid-template-columns:repeat(auto-fit,minmax(640px,1fr))}
.problems{background:#fef3c7;border:1px solid #f59e0b;border-radius:8px;padding:8px 14px;margin:10px 0}
.scroll{max-height:520px;overflow:auto;border:1px solid var(--line)}.scroll table{margin:0;border:0}
details{margin-top:8px}dt{font-weight:600;margin-top:6px}dd{margin:0 0 0 16px;color:#374151}
.tip{position:fixed;pointer-events:none;background:#111827;color:#fff;font-size:12px;padding:3px 7px;
border-radius:4px;display:none}
"""

# The chart script: plain DOM and SVG, no library. Reads the embedded JSON, draws both charts, sets the
# markers the browser test reads, and shows the value under the pointer.
_JS = """
(function(){
  var NS='http://www.w3.org/2000/svg';
  var data=JSON.parse(document.getElementById('equity-data').textContent);
  var W=1100,H=260,L=70,R=12,T=10,B=28;
  function el(name,attrs,parent){var n=document.createElementNS(NS,name);
    for(var k in attrs){n.setAttribute(k,attrs[k]);} if(parent){parent.appendChild(n);} return n;}
  function fmtDate(ms){var d=new Date(ms);return d.toISOString().slice(0,10);}
  function draw(id,ys,opts){
    var svg=document.getElementById(id);
    svg.setAttribute('viewBox','0 0 '+W+' '+H);
    var xs=data.t; var n=ys.length; if(n===0){return 0;}
    var x0=xs[0],x1=xs[n-1]; if(x1===x0){x1=x0+1;}
    var lo=Math.min.apply(null,ys),hi=Math.max.apply(null,ys);
    if(opts.zeroTop){hi=0;} if(hi===lo){hi=lo+1;lo=lo-1;}
    var pad=(hi-lo)*0.05; if(!opts.zeroTop){hi+=pad;} lo-=pad;
    function X(v){return L+(v-x0)/(x1-x0)*(W-L-R);}
    function Y(v){return T+(hi-v)/(hi-lo)*(H-T-B);}
    var g=el('g',{'class':'axes'},svg);
    for(var i=0;i<=4;i++){var v=lo+(hi-lo)*i/4,y=Y(v);
      el('line',{x1:L,x2:W-R,y1:y,y2:y,stroke:'#e5e7eb'},g);
      var tx=el('text',{x:L-6,y:y+4,'text-anchor':'end','font-size':11,fill:'#6b7280'},g);
      tx.textContent=opts.fmt(v);}
    for(var j=0;j<=5;j++){var xv=x0+(x1-x0)*j/5,xx=X(xv);
      var t2=el('text',{x:xx,y:H-8,'text-anchor':j===0?'start':(j===5?'end':'middle'),'font-size':11,fill:'#6b7280'},g);
      t2.textContent=fmtDate(xv);}
    var pts=[];for(var k=0;k<n;k++){pts.push(X(xs[k]).toFixed(1)+','+Y(ys[k]).toFixed(1));}
    if(opts.fill){el('polygon',{points:X(xs[0]).toFixed(1)+','+Y(0).toFixed(1)+' '+pts.join(' ')+' '+
      X(xs[n-1]).toFixed(1)+','+Y(0).toFixed(1),fill:opts.fill,stroke:'none'},svg);}
    el('polyline',{points:pts.join(' '),fill:'none',stroke:opts.color,'stroke-width':1.5,'class':'series'},svg);
    var tip=document.getElementById('tip');
    var cross=el('line',{y1:T,y2:H-B,stroke:'#9ca3af','stroke-dasharray':'3 3',visibility:'hidden'},svg);
    svg.addEventListener('mousemove',function(ev){
      var box=svg.getBoundingClientRect(),vx=(ev.clientX-box.left)/box.width*W;
      var tv=x0+(vx-L)/(W-L-R)*(x1-x0),a=0,b=n-1;
      while(b-a>1){var m=(a+b)>>1;if(xs[m]<tv){a=m;}else{b=m;}}
      var idx=Math.abs(xs[a]-tv)<Math.abs(xs[b]-tv)?a:b;
      cross.setAttribute('x1',X(xs[idx]));cross.setAttribute('x2',X(xs[idx]));cross.setAttribute('visibility','visible');
      tip.style.display='block';tip.style.left=(ev.clientX+12)+'px';tip.style.top=(ev.clientY-10)+'px';
      tip.textContent=new Date(xs[idx]).toISOString().slice(0,16).replace('T',' ')+'  '+opts.fmt(ys[idx]);});
    svg.addEventListener('mouseleave',function(){tip.style.display='none';cross.setAttribute('visibility','hidden');});
    svg.setAttribute('data-points',String(n));
    return 1;
  }
  var drawn=0;
  drawn+=draw('equity-chart',data.e,{color:'#2563eb',fmt:function(v){return v.toLocaleString('en-US',{maximumFractionDigits:0});}});
  drawn+=draw('drawdown-chart',data.d.map(function(v){return -100*v;}),{color:'#b91c1c',fill:'rgba(220,38,38,0.15)',zeroTop:true,
    fmt:function(v){return v.toFixed(1)+'%';}});
  document.body.setAttribute('data-charts-drawn',String(drawn));
})();
"""


def _equity_json(data: RunData) -> str:
    """The charts' data: the equity curve and its drawdown, computed as the Max drawdown card's
    (`core.drawdown` on the same points)."""
    equity = [e for _, e in data.equity]
    payload = {
        "t": [t for t, _ in data.equity],
        "e": [round(e, 2) for e in equity],
        "d": [round(d, 6) for d in drawdown_series(equity)],
    }
    # `</` inside a script element would end it: escape the slash (still valid JSON).
    return json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")


_DEFINITIONS = (
    (
        "Daily return",
        "r_d = E_d / E_(d-1) - 1 with E_d the last equity sample of UTC day d (equity.csv); "
        "E_0 is the first sample. Days without a sample carry the previous equity.",
    ),
    (
        "CAGR",
        f"(E_last / E_first)^({DAYS_PER_YEAR} / days) - 1; n/a for a span under one day. Short runs "
        "extrapolate: read it with the span.",
    ),
    ("Sharpe", f"mean(r_d) / stdev(r_d) x sqrt({DAYS_PER_YEAR}), sample stdev (n-1), risk-free rate 0."),
    ("Sortino", f"mean(r_d) / sqrt(sum(min(r_d,0)^2) / n) x sqrt({DAYS_PER_YEAR}); n/a when no day lost."),
    ("Max drawdown", "max over the equity samples of (peak so far - equity) / peak so far."),
    ("Calmar", "CAGR / max drawdown."),
    (
        "Trades",
        "trade records whose entry filled (filled_qty > 0). Entries that never filled (expired or "
        "rejected) are counted apart as 'entries not filled'; the console summary counts the same way.",
    ),
    (
        "Win rate / expectancy",
        "share of trades with R > 0 / mean R multiple (net PnL over the planned risk).",
    ),
    ("Profit factor", "sum of winning trades' net PnL / |sum of losing trades' net PnL|."),
    ("Exposure", "share of the run's span during which at least one trade was open."),
    ("Average hold", "mean of close time - open time over the trades."),
    (
        "Gross PnL, fees and funding shares",
        "gross = sum(net PnL + fees - funding) (funding signed, + received);"
        " fees share = fees / |gross|; funding share = -funding / |gross| (positive when funding was paid).",
    ),
)


def render_html(
    data: RunData,
    metrics: Metrics,
    summary: RunSummary,
    *,
    generated_at: str,
    version: str,
) -> str:
    """The whole page as one string."""
    span = data.span
    title = (
        f"futures-actor report — {_time(span[0]) if span else 'n/a'} to {_time(span[1]) if span else 'n/a'}"
    )
    parts: list[str] = []
    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append(
        f'<p class="sub">log directory {_e(data.log_dir)} · mode {_e(data.run_mode or "n/a")} · '
        f"equity: {_e(data.equity_source)} · generated {_e(generated_at)} by futures-actor {_e(version)}</p>"
    )
    if data.problems:
        shown = data.problems[:20]
        more = len(data.problems) - len(shown)
        items = "".join(f"<li>{_e(p)}</li>" for p in shown)
        extra = f"<li>… and {more} more</li>" if more > 0 else ""
        parts.append(
            f'<div class="problems"><b>Some input could not be read:</b><ul>{items}{extra}</ul></div>'
        )
    parts.append(_cards(metrics))
    parts.append("<h2>Equity and drawdown</h2>")
    parts.append(
        '<div class="chart"><div class="title">Equity (USDT)</div>'
        '<svg id="equity-chart" role="img" aria-label="equity curve" data-points="0"></svg></div>'
        '<div class="chart"><div class="title">Drawdown from peak</div>'
        '<svg id="drawdown-chart" role="img" aria-label="drawdown" data-points="0"></svg></div>'
    )
    parts.append("<h2>Monthly returns</h2>")
    parts.append(_monthly(data.equity))
    parts.append('<div class="grid2 wide">')
    parts.append(
        "<div><h2>By strategy</h2>" + _table(_GROUP_HEADERS, _group_rows(summary.by_strategy)) + "</div>"
    )
    parts.append(
        "<div><h2>By regime</h2>" + _table(_GROUP_HEADERS, _group_rows(summary.by_regime)) + "</div>"
    )
    parts.append(
        "<div><h2>By symbol</h2>" + _table(_GROUP_HEADERS, _group_rows(summary.by_symbol)) + "</div>"
    )
    total = sum(summary.by_reason.values())
    reason_rows = [
        [_td(_e(k)), _td(str(v), "r"), _td(_pct(v / total if total else None, 1), "r")]
        for k, v in sorted(summary.by_reason.items(), key=lambda kv: -kv[1])
    ]
    parts.append("<div><h2>Exit reasons</h2>" + _table(("reason", "trades", "share"), reason_rows) + "</div>")
    parts.append("</div>")
    parts.append("<h2>Periods without trading</h2>")
    parts.append(
        '<p class="sub">Gaps with no open trade, and what events.jsonl says happened meanwhile '
        "(risk refusals by code, strategies not eligible, stops, safe mode, and the regimes decided).</p>"
    )
    idle_rows = [
        [
            _td(_e(_time(p.start_ms))),
            _td(_e(_time(p.end_ms))),
            _td(_duration(p.end_ms - p.start_ms), "r"),
            _td("<br>".join(f"{_e(k)} × {v}" if v else _e(k) for k, v in p.reasons) or "no event logged"),
        ]
        for p in data.idle_periods
    ]
    parts.append(_table(("from", "to", "length", "why (events in the gap)"), idle_rows))
    block_rows = [
        [
            _td(_e(b.kind)),
            _td(_e(_time(b.start_ms))),
            _td(_e(_time(b.end_ms)) if b.end_ms is not None else "still on"),
            _td(_e(b.detail)),
        ]
        for b in data.blocks
    ]
    parts.append("<h2>Trading blocks</h2>")
    parts.append(_table(("block", "from", "to", "detail"), block_rows))
    parts.append('<div class="grid2">')
    rej_rows = [[_td(_e(k)), _td(str(v), "r")] for k, v in data.rejections.items()]
    parts.append("<div><h2>Entries refused by risk</h2>" + _table(("code", "signals"), rej_rows) + "</div>")
    inel_rows = [[_td(_e(k)), _td(str(v), "r")] for k, v in list(data.ineligible.items())[:30]]
    parts.append(
        "<div><h2>No eligible strategy</h2>" + _table(("explanation", "signals"), inel_rows) + "</div>"
    )
    parts.append("</div>")
    parts.append(f"<h2>Trades ({metrics.trades}, and {metrics.unfilled_entries} entries not filled)</h2>")
    trade_headers = (
        "opened",
        "symbol",
        "side",
        "strategy",
        "regime",
        "entry",
        "exit",
        "reason",
        "hold",
        "R",
        "net PnL $",
        "fees $",
    )
    ids = [str(r.get("trade_id", "")) for r in data.records]
    table = _table(trade_headers, _trade_rows(data.records), cls="trades", row_ids=ids)
    parts.append('<div class="scroll">' + table + "</div>")
    if data.daily_reports:
        links = " · ".join(f'<a href="{_e(name)}">{_e(name[13:23])}</a>' for name in data.daily_reports)
        parts.append(f"<h2>Daily reports ({len(data.daily_reports)})</h2><p>{links}</p>")
    defs = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _DEFINITIONS)
    parts.append(f"<details><summary>How the metrics are defined</summary><dl>{defs}</dl></details>")
    files = ", ".join(data.trade_files + data.event_files) or "none"
    parts.append(f'<p class="sub">read: {_e(files)}</p>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f'<body data-charts-drawn="0"><main>{"".join(parts)}</main><div id="tip" class="tip"></div>'
        f'<script type="application/json" id="equity-data">{_equity_json(data)}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )
