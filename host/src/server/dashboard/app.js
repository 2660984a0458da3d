// MPREG dashboard: draws /monitor/live once at load, then each update the node streams on
// /dashboard/events (server-sent events, one a second). No libraries, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function fmt(n, digits = 1) {
  if (n === null || n === undefined) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(digits) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(digits) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function tiles(live) {
  const r = live.rates, n = live.node;
  $("requests-rate").textContent = fmt(r.requests_per_s);
  $("calls-rate").textContent = fmt(r.calls_per_s);
  $("errors-rate").textContent = fmt(r.errors_per_s);
  $("latency").textContent = fmt(r.p50_ms, 2) + " / " + fmt(r.p99_ms, 2);
  $("notify-rate").textContent = fmt(r.notifications_per_s);
  const total = n.requests.ok + n.requests.error;
  $("requests-total").textContent = fmt(total, 0);
  $("requests-total").dataset.value = String(total);
  $("clients").textContent = String(n.connections.clients);
  $("rss").textContent = bytes(n.process.rss_bytes);
  $("node-title").textContent = `${n.node_id} · cluster ${n.cluster_id} · region ${n.region} · v${n.version} · up ${Math.round(n.uptime_s)} s`;
  $("updated").textContent = "updated " + new Date(n.now * 1000).toLocaleTimeString();
}

function trend(points) {
  const box = $("trend");
  box.replaceChildren();
  if (points.length < 2) return;
  const w = 600, h = 120;
  const t0 = points[0].at, t1 = points[points.length - 1].at;
  const span = Math.max(t1 - t0, 1);
  const line = (key, cls) => {
    const max = Math.max(...points.map((p) => p[key] || 0), 1e-9);
    const pts = points.map((p) => {
      const x = ((p.at - t0) / span) * w;
      const y = h - 4 - ((p[key] || 0) / max) * (h - 8);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    box.appendChild(svg("polyline", { points: pts.join(" "), class: cls }));
  };
  line("calls_per_s", "calls");
  line("p99_ms", "p99");
  line("errors_per_s", "errors");
}

function map(cluster) {
  const box = $("map");
  box.replaceChildren();
  $("cluster-id").textContent = cluster.cluster_id;
  const nodes = cluster.nodes;
  const cx = 200, cy = 150, radius = nodes.length > 1 ? 105 : 0;
  const pos = new Map();
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
    pos.set(n.node_id, [cx + radius * Math.cos(a), cy + radius * Math.sin(a)]);
  });
  const me = nodes.find((n) => n.self);
  for (const n of nodes) {
    if (n.self || !n.link || !me) continue;
    const [x1, y1] = pos.get(me.node_id), [x2, y2] = pos.get(n.node_id);
    box.appendChild(svg("line", { x1, y1, x2, y2, class: n.link.up ? "up" : "down" }));
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n.node_id);
    const g = svg("g", { "data-node-id": n.node_id });
    g.appendChild(svg("circle", { cx: x, cy: y, r: 26, class: n.self ? "self" : "" }));
    g.appendChild(svg("text", { x, y: y + 4 }, n.node_id));
    g.appendChild(svg("text", { x, y: y + 40, class: "sub" }, `${n.region} · load ${fmt(n.load.load_score)}`));
    box.appendChild(g);
  }
}

function nodeCards(cluster) {
  const box = $("nodes");
  box.replaceChildren();
  for (const n of cluster.nodes) {
    const card = el("div", { class: "node" + (n.self ? " self" : ""), "data-node-id": n.node_id });
    card.appendChild(el("div", { class: "id" }, n.node_id + (n.self ? " (this node)" : "")));
    const link = n.self ? "" : n.link ? (n.link.up ? " · link up" : " · link down") : " · no link";
    card.appendChild(el("div", { class: "meta" },
      `region ${n.region} · ${n.load.active_clients} clients · ${n.load.running_calls} running${link}`));
    const res = el("div", { class: "meta" });
    for (const r of n.resources) res.appendChild(el("span", { class: "tag" }, r));
    card.appendChild(res);
    const fns = el("div", { class: "fns" });
    if (n.functions.length === 0) fns.appendChild(el("span", { class: "empty" }, "no plugin functions"));
    for (const f of n.functions) fns.appendChild(el("span", { class: "tag" }, f));
    card.appendChild(fns);
    box.appendChild(card);
  }
}

function functions(rates) {
  const body = $("functions").tBodies[0];
  body.replaceChildren();
  if (rates.functions.length === 0) {
    const tr = el("tr");
    tr.appendChild(el("td", { colspan: 7, class: "empty" }, "no calls yet"));
    body.appendChild(tr);
  }
  for (const f of rates.functions) {
    const tr = el("tr", { "data-function": f.function });
    tr.appendChild(el("td", { class: f.builtin ? "builtin" : "" }, f.function + (f.builtin ? " (built-in)" : "")));
    tr.appendChild(el("td", {}, fmt(f.calls_per_s)));
    tr.appendChild(el("td", {}, fmt(f.errors_per_s)));
    tr.appendChild(el("td", {}, fmt(f.p50_ms, 3)));
    tr.appendChild(el("td", {}, fmt(f.p99_ms, 3)));
    tr.appendChild(el("td", { class: "total" }, String(f.total_calls)));
    tr.appendChild(el("td", {}, String(f.total_errors)));
    body.appendChild(tr);
  }
}

function queues(list) {
  const body = $("queues").tBodies[0];
  body.replaceChildren();
  if (list.length === 0) {
    const tr = el("tr");
    tr.appendChild(el("td", { colspan: 4, class: "empty" }, "no queues here"));
    body.appendChild(tr);
  }
  for (const q of list) {
    const tr = el("tr", { "data-queue": q.name });
    for (const v of [q.name, q.depth, q.in_flight, q.dead_lettered]) tr.appendChild(el("td", {}, String(v)));
    body.appendChild(tr);
  }
}

function pubsub(live) {
  const box = $("pubsub");
  box.replaceChildren();
  const p = live.pubsub, r = live.rates;
  const rows = [
    ["published/s", fmt(r.published_per_s)], ["notifications/s", fmt(r.notifications_per_s)],
    ["subscriptions", p.subscriptions], ["backlog messages", p.backlog_messages],
    ["published", p.published], ["notifications", p.notifications],
    ["slow consumers cut off", p.slow_consumers],
  ];
  for (const [k, v] of rows) { box.appendChild(el("dt", {}, k)); box.appendChild(el("dd", {}, String(v))); }
}

function draw(live) {
  tiles(live);
  trend(live.trend);
  map(live.cluster);
  nodeCards(live.cluster);
  functions(live.rates);
  queues(live.queues);
  pubsub(live);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

// A node that requires credentials for monitoring is opened as /dashboard?access_token=…:
// the data requests carry the same token.
const token = new URLSearchParams(location.search).get("access_token");
const withToken = (url) => token ? `${url}?access_token=${encodeURIComponent(token)}` : url;

async function start() {
  try {
    const r = await fetch(withToken("/monitor/live"));
    if (r.ok) draw(await r.json());
  } catch (e) { console.error("first load", e); }
  const events = new EventSource(withToken("/dashboard/events"));
  events.addEventListener("live", (e) => { $("live").className = "dot on"; draw(JSON.parse(e.data)); });
  events.onerror = () => { $("live").className = "dot off"; };
}

start();
