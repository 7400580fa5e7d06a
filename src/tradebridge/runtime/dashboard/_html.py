"""The dashboard's HTML: one layout, small builders, inline SVG charts, its CSS and script.

Every value goes through ``esc`` (HTML-escaped) on its way into a page; only the builders here
put markup together. The script and the stylesheet are served from ``/ui/assets`` so that the
Content-Security-Policy can forbid inline code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

NAV = (("signals", "Signals"), ("accounts", "Accounts"), ("health", "Health"),
       ("latency", "Latency"))  # fmt: skip


def esc(value: object) -> str:
    """Return ``value`` as escaped HTML text ('' for None)."""
    return "" if value is None else escape(str(value), quote=True)


def url(path: str, **query: object) -> str:
    """Return ``/ui/<path>`` with the non-empty ``query`` parameters, escaped for an attribute."""
    params = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items() if v)
    return esc(f"/ui/{path}" + (f"?{params}" if params else ""))


def trace_url(signal_id: str) -> str:
    """Return the trace page of ``signal_id`` (any characters), escaped for an attribute."""
    return url("trace/" + quote(signal_id, safe=""))


def page(
    title: str, body: str, *, active: str = "", csrf: str | None = None, live: bool = False
) -> str:
    """Return a whole page: head, navigation (with logout when logged in), ``body``; with
    ``live``, a banner saying that orders trade real money."""
    nav = ""
    if csrf is not None:
        links = "".join(
            f'<a href="/ui/{name}"{" class=active" if name == active else ""}>{label}</a>'
            for name, label in NAV
        )
        nav = (
            f'<nav><span class="brand">tradebridge</span>{links}'
            f'<form method="post" action="/ui/logout" class="logout">{csrf_field(csrf)}'
            '<button type="submit">Log out</button></form></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · tradebridge</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/assets/app.css">'
        '<script src="/ui/assets/app.js" defer></script>'
        f"</head><body>{nav}{_LIVE if live else ''}"
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )


_LIVE = (
    '<p class="live-banner" id="live-banner">LIVE: tradovate.environment is live, orders '
    "trade real money</p>"
)


def csrf_field(token: str) -> str:
    """Return the hidden CSRF input of a form."""
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, body_attrs: str = "") -> str:
    """Return a table; ``rows`` hold cell HTML already escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = rows_html(rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody {body_attrs}>{body}</tbody></table>"


def rows_html(rows: Iterable[Sequence[str]]) -> str:
    """Return table rows from cells of escaped HTML."""
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)


def badge(status: str) -> str:
    """Return a status as a coloured label."""
    return f'<span class="badge s-{esc(status)}" data-status="{esc(status)}">{esc(status)}</span>'


def facts(items: Mapping[str, object]) -> str:
    """Return a definition list of ``items`` (values escaped; None shown as a dash)."""
    rows = "".join(
        f"<dt>{esc(k)}</dt><dd>{'—' if v is None or v == '' else esc(v)}</dd>"
        for k, v in items.items()
    )
    return f"<dl>{rows}</dl>"


def pretty(value: Any) -> str:
    """Return JSON data as an escaped, indented block."""
    return f"<pre>{esc(json.dumps(value, indent=2, default=str, ensure_ascii=False))}</pre>"


def note(text: str, kind: str = "info") -> str:
    """Return a message box."""
    return f'<p class="note {esc(kind)}" role="status">{esc(text)}</p>'


def percent(share: float | None) -> str:
    """Return a share as a percentage ('—' for None)."""
    return "—" if share is None else f"{share * 100:.1f} %"


_BAR_COLOURS = ("#4c8bf5", "#f5a623", "#d0021b")


def bar_chart(series: Sequence[tuple[str, Sequence[float]]], labels: Sequence[str]) -> str:
    """Return an inline SVG of horizontal bars: one group per series, one bar per label."""
    top = max((v for _, values in series for v in values), default=0.0) or 1.0
    label_w, width, bar_h, gap = 170, 640, 12, 10
    group_h = bar_h * max(len(labels), 1) + gap
    height = group_h * max(len(series), 1) + 30
    view = f"0 0 {label_w + width + 80} {height}"
    parts = [f'<svg class="chart" role="img" viewBox="{view}" xmlns="http://www.w3.org/2000/svg">']
    for g, (name, values) in enumerate(series):
        y0 = g * group_h
        parts.append(f'<text x="0" y="{y0 + bar_h + 2}" class="axis">{esc(name)}</text>')
        for i, value in enumerate(values):
            w = max(1.0, value / top * width)
            y = y0 + i * bar_h
            colour = _BAR_COLOURS[i % len(_BAR_COLOURS)]
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                f'fill="{colour}"><title>{esc(name)} {esc(labels[i])}: {value:.1f} ms</title>'
                f'</rect><text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" class="value">'
                f"{value:.1f}</text>"
            )
    legend_y = height - 8
    for i, label in enumerate(labels):
        x = label_w + i * 90
        parts.append(
            f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" '
            f'fill="{_BAR_COLOURS[i % len(_BAR_COLOURS)]}"></rect>'
            f'<text x="{x + 14}" y="{legend_y}" class="axis">{esc(label)} (ms)</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


CSS = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { margin: 0; }
nav { display: flex; gap: 1rem; align-items: center; padding: .6rem 1rem;
      background: #1d2733; color: #fff; }
nav a { color: #cfe0ff; text-decoration: none; } nav a.active { color: #fff; font-weight: 600; }
nav .brand { font-weight: 700; margin-right: 1rem; } nav .logout { margin-left: auto; }
main { padding: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border-bottom: 1px solid #8884; padding: .3rem .5rem; text-align: left;
         vertical-align: top; }
pre { background: #8881; padding: .5rem; overflow: auto; max-height: 30rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
.badge { padding: .1rem .4rem; border-radius: .3rem; background: #8883; }
.s-filled, .s-ok, .s-sent { background: #2e7d3255; }
.s-working, .s-partially_filled { background: #f5a62355; }
.s-denied, .s-rejected, .s-failed, .s-failing { background: #d0021b55; }
.s-unknown, .s-needs_review, .s-degraded { background: #ff980055; }
.note { padding: .5rem; border-left: 4px solid #4c8bf5; background: #4c8bf511; }
.note.error { border-color: #d0021b; } .note.ok { border-color: #2e7d32; }
.danger { background: #d0021b; color: #fff; border: 0; padding: .4rem .8rem; }
form.inline { display: inline; } .filters { display: flex; gap: .5rem; flex-wrap: wrap; }
.chart text { font-size: 11px; fill: currentColor; } #live { font-size: .8rem; opacity: .7; }
section { margin-bottom: 1.5rem; }
.live-banner { margin: 0; padding: .5rem 1rem; background: #d0021b; color: #fff;
               font-weight: 700; }
"""

# Live rows: the signals page names its stream; each "rows" event replaces the table body.
SCRIPT = """
"use strict";
(function () {
  const body = document.getElementById("signal-rows");
  const live = document.getElementById("live");
  if (!body || !body.dataset.stream || !window.EventSource) { return; }
  const source = new EventSource(body.dataset.stream);
  source.addEventListener("rows", function (event) {
    body.innerHTML = JSON.parse(event.data).html;
    if (live) { live.textContent = "live · updated " + new Date().toLocaleTimeString(); }
  });
  source.addEventListener("error", function () {
    if (live) { live.textContent = "live updates interrupted; reconnecting"; }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
"""
