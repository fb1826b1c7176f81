// Crossbook dashboard: renders the server's pre-formatted view (strings, no float math here).
"use strict";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fillTable(id, rows, cells, rowClass) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", rowClass ? rowClass(r) : "");
    for (const c of cells(r)) tr.appendChild(el("td", c[1] || "", c[0]));
    return tr;
  }));
}

function render(s) {
  const lag = s.lag;
  document.getElementById("lag").textContent = lag ? lag.lag_items + " items / " + lag.lag_ms + " ms" : "-";
  document.getElementById("lag-detail").textContent = lag ?
    "settle p50 " + lag.settle_p50_ms + " ms, p99 " + lag.settle_p99_ms + " ms" : "";
  document.getElementById("seqs").textContent = lag ? lag.matched_seq + " / " + lag.settled_seq : "-";
  document.getElementById("insurance").textContent = s.insurance_fund;
  fillTable("markets", s.markets, (m) => [[m.symbol], [m.oracle], [m.best_bid, "bid"], [m.best_ask, "ask"]],
            () => "market-row");
  const books = document.getElementById("books");
  books.replaceChildren(...s.markets.map((m) => {
    const d = el("div", "book");
    d.appendChild(el("h2", "", m.symbol));
    const t = el("table");
    const rows = Math.max(m.bids.length, m.asks.length, 1);
    for (let i = 0; i < rows; i++) {
      const tr = el("tr");
      const b = m.bids[i] || ["", ""], a = m.asks[i] || ["", ""];
      tr.append(el("td", "bid", b[1]), el("td", "bid", b[0]), el("td", "ask", a[0]), el("td", "ask", a[1]));
      t.appendChild(tr);
    }
    d.appendChild(t);
    return d;
  }));
  fillTable("trades", s.trades, (t) => [[String(t.seq)], [t.symbol], [t.side, t.side], [t.price], [t.size],
                                        [new Date(t.ts_ms).toLocaleTimeString()]], () => "trade-row");
  // the row class lets tests and scripts find liquidations; the full owner is the row's tooltip
  fillTable("liquidations", s.liquidations, (l) => [[String(l.block)], [l.owner.slice(0, 10) + "…/" + l.sub],
                                                    [l.market], [l.size], [l.price], [l.penalty]],
            () => "liquidation-row");
  document.querySelectorAll("#liquidations tr.liquidation-row").forEach((tr, i) => {
    tr.title = s.liquidations[i].owner + "/" + s.liquidations[i].sub + " tx " + s.liquidations[i].tx;
  });
  const errs = Object.values(s.errors || {});
  document.getElementById("errors").textContent = errs.join(" · ");
  document.getElementById("halted").textContent = s.halted ? "TRADING HALTED: " + s.halted : "";
}

function connect() {
  const badge = document.getElementById("conn");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => { badge.textContent = "live"; badge.className = "badge live"; };
  ws.onmessage = (ev) => render(JSON.parse(ev.data));
  ws.onclose = () => {
    badge.textContent = "reconnecting…"; badge.className = "badge";
    setTimeout(connect, 1000);
  };
}

async function lookup(ev) {
  ev.preventDefault();
  const owner = document.getElementById("owner").value.trim();
  const sub = document.getElementById("sub").value || "0";
  const out = document.getElementById("account");
  out.textContent = "loading…";
  const r = await fetch("/api/account?owner=" + encodeURIComponent(owner) + "&sub=" + encodeURIComponent(sub));
  const a = await r.json();
  if (!r.ok) { out.replaceChildren(el("div", "bad", a.error)); return; }
  const t = el("table", "", undefined);
  t.id = "account-summary";
  const rows = [["Equity (USD)", a.equity], ["Initial health", a.initial_health],
                ["Maintenance health", a.maintenance_health], ["Leverage", a.leverage],
                ["Liquidatable", a.liquidatable === null
                  ? "unknown: no price for " + a.unpriced.join(", ") + " (reduce-only)"
                  : (a.liquidatable ? "YES" : "no")]];
  for (const [k, v] of rows) {
    const tr = el("tr");
    const cls = k !== "Liquidatable" ? "" : (a.liquidatable === false ? "good" : "bad");
    tr.append(el("td", "", k), el("td", cls, v));
    t.appendChild(tr);
  }
  const p = el("table");
  p.id = "account-positions";
  const head = el("tr");
  for (const h of ["Market", "Size", "Oracle", "Notional", "uPnL", "Liq. price"]) head.appendChild(el("th", "", h));
  p.appendChild(head);
  for (const pos of a.positions) {
    const tr = el("tr", "position-row");
    for (const v of [pos.symbol, pos.size, pos.oracle, pos.notional, pos.upnl, pos.liquidation_price])
      tr.appendChild(el("td", "", v));
    p.appendChild(tr);
  }
  out.replaceChildren(t, el("h2", "", "Positions"), p);
}

document.getElementById("account-form").addEventListener("submit", lookup);
fetch("/api/state").then((r) => r.json()).then(render).catch(() => {});
connect();
