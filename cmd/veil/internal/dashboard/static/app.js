// The veil dashboard: renders the node's status from server-sent events.
// Everything is built with textContent: nothing from the node is parsed
// as HTML.
"use strict";

const key = document.querySelector('meta[name="veil-key"]').content;
const q = "?k=" + encodeURIComponent(key);
const $ = (id) => document.getElementById(id);
$("metrics").href = "/metrics" + q;

function bytes(n) {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
}
function rate(n) { return bytes(n) + "/s"; }
function age(s) {
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function short(id) { return id ? id.slice(0, 8) : ""; }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function fillRows(table, rows, cols) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el("tr", "empty");
    const td = el("td", "", "none");
    td.colSpan = cols;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) tr.append(c);
    body.append(tr);
  }
}
function list(id, items) {
  const ul = $(id);
  ul.replaceChildren();
  if (items.length === 0) { ul.append(el("li", "muted", "none")); return; }
  for (const it of items) ul.append(el("li", "", it));
}

function renderCircuits(st) {
  const cs = (st.own_circuits || []).slice().sort((a, b) => a.id - b.id);
  fillRows("circuits", cs.map((c) => [
    el("td", "mono", String(c.id)),
    el("td", "", c.use || ""),
    el("td", "", String((c.path || []).length)),
    el("td", "mono", (c.path || []).map(short).join(" → ")),
    el("td", "", age(c.age_seconds || 0)),
    el("td", "", bytes(c.bytes_sent)),
    el("td", "", bytes(c.bytes_recv)),
  ]), 7);
}

function renderPeers(st) {
  fillRows("peers", (st.peers || []).map((p) => [
    el("td", "mono", short(p.id)), el("td", "mono", p.addr), el("td", "", p.inbound ? "them" : "us"),
  ]), 3);
}

function renderTransfers(st) {
  fillRows("transfers", (st.transfers || []).map((t) => {
    const frac = t.chunks_total ? t.chunks_held / t.chunks_total : 0;
    const prog = el("td");
    const bar = el("span", "bar");
    const fill = el("span");
    fill.style.width = (100 * frac).toFixed(1) + "%";
    bar.append(fill);
    prog.append(bar, el("span", "", " " + (100 * frac).toFixed(0) + "% (" + t.chunks_held + "/" + t.chunks_total + ")"));
    const rates = (t.circuit_rates || []).map(rate).join(", ") || "–";
    return [el("td", "mono", short(t.hash_name)), prog, el("td", "", bytes(t.size)), el("td", "", rates),
      el("td", "", String(t.attempts)), el("td", "", age(t.seconds))];
  }), 6);
}

function renderORDB(st) {
  const o = st.ordb;
  $("ordb-section").hidden = !o;
  if (!o) return;
  list("ordbs", o.ordbs.map(short));
  list("ordbs-ever", o.ordbs_ever.map(short));
  const dl = $("ordb-stats");
  dl.replaceChildren();
  const pairs = [["queries", o.relay.Queries], ["forwarded", o.relay.Forwards], ["delivered", o.relay.Delivered],
    ["DHT lookups", o.relay.Lookups], ["provider records stored", o.relay.Stores], ["peer queries", o.peer.Queries],
    ["chunks served by our peer", o.peer.Chunks], ["advertisements", o.peer.Adverts]];
  for (const [k, v] of pairs) dl.append(el("dt", "", k), el("dd", "", String(v)));
}

function renderChart(hist) {
  const W = 800, H = 200, top = 20;
  let peak = 1;
  for (const s of hist) peak = Math.max(peak, s.in, s.out);
  const grid = $("chart-grid");
  grid.replaceChildren();
  for (let i = 1; i < 4; i++) {
    const y = top + (H - top) * i / 4;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", 0); line.setAttribute("x2", W);
    line.setAttribute("y1", y); line.setAttribute("y2", y);
    grid.append(line);
  }
  const pts = (field) => hist.map((s, i) => {
    const x = hist.length > 1 ? W * i / (hist.length - 1) : W;
    const y = H - (H - top) * s[field] / peak;
    return x.toFixed(1) + "," + y.toFixed(1);
  }).join(" ");
  $("chart-in").setAttribute("points", pts("in"));
  $("chart-out").setAttribute("points", pts("out"));
  $("chart-max").textContent = "peak " + rate(peak);
  $("chart-span").textContent = hist.length ? "last " + age((hist[hist.length - 1].t - hist[0].t) / 1000) : "gathering samples…";
}

function render(ev) {
  const st = ev.status;
  $("node-id").textContent = short(st.id);
  $("node-id").title = st.id;
  $("links").textContent = st.links;
  $("own").textContent = (st.own_circuits || []).length;
  $("joined").textContent = st.joined_circuits;
  $("dht").textContent = st.dht_table_size;
  $("dht-records").textContent = st.dht_records + " records held";
  $("directory").textContent = st.directory_size;
  $("traffic").textContent = bytes(ev.bytes_in) + " / " + bytes(ev.bytes_out);
  renderCircuits(st);
  renderTransfers(st);
  renderPeers(st);
  renderORDB(st);
  renderChart(ev.history || []);
  $("conn").textContent = "updated " + new Date(ev.t).toLocaleTimeString();
  document.body.dataset.updated = String(ev.t);
}

// A snapshot at once, then the stream of events, which takes over a
// second later (events come a second apart). Opening the stream after the
// first render also lets a headless browser's virtual time end (it stops
// while a request is open) with the page drawn.
function stream() {
  const es = new EventSource("/dashboard/events" + q);
  let events = 0;
  es.onmessage = (m) => {
    render(JSON.parse(m.data));
    document.body.dataset.events = String(++events);
    if (events === 2) console.info("veil dashboard: live, " + events + " events rendered");
  };
  es.onerror = () => { $("conn").textContent = "disconnected: retrying…"; };
}
fetch("/dashboard/status" + q).then((r) => r.ok ? r.json() : Promise.reject(r.status)).then((ev) => {
  render(ev);
  setTimeout(stream, 1000);
}).catch((e) => {
  $("conn").textContent = "cannot read the node's status (" + e + ")";
  setTimeout(stream, 1000);
});
