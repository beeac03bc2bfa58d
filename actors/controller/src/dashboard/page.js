// The vpblu dashboard: renders the controller's read model (/api/v1/mesh)
// and follows it live over server-sent events (/api/v1/stream). Text only
// ever goes in through textContent, never as HTML.
"use strict";

// A view older than this (no event received) is shown as stale.
const STALE_AFTER_MS = 5000;

let lastUpdate = 0;
let lastView = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h";
  return Math.round(seconds / 86400) + " d";
}

function rate(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return "–";
  const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
  let value = bytesPerSecond;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return value.toFixed(unit === 0 ? 0 : 1) + " " + units[unit];
}

function conditionBadge(condition) {
  if (!condition) return el("span", { class: "badge warn" }, "unknown");
  const cls = condition.status === "True" ? "ok" : condition.status === "False" ? "bad" : "warn";
  return el("span", { class: "badge " + cls, title: condition.message }, condition.status + " · " + condition.reason);
}

function table(id, header, rows) {
  const t = document.getElementById(id);
  t.replaceChildren(el("tr", {}, ...header.map((h) => el("th", {}, h))));
  for (const row of rows) {
    t.append(el("tr", row.attrs || {}, ...row.cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c)))));
  }
  if (rows.length === 0) t.append(el("tr", {}, el("td", { colspan: header.length }, "none")));
}

function renderBanners(view) {
  const banners = document.getElementById("banners");
  banners.replaceChildren();
  const leader = view.leader;
  if (leader.state !== "Held") {
    banners.append(el("div", { class: "banner bad", id: "no-leader" },
      "No leader: Lease " + leader.lease + " is " + leader.state.toLowerCase() +
      (leader.holder ? " (last holder " + leader.holder + ")" : "") +
      ". Nothing is being pushed to the daemons; their data planes keep the last state."));
  }
  if (!view.served.leading) {
    banners.append(el("div", { class: "banner warn", id: "standby" },
      "This is the standby (" + (view.served.by || "?") + "); the leader is " + (leader.holder || "nobody") +
      ". Only the leader has the per-peer matrix: port-forward to its pod to see it."));
  }
}

function renderNodes(view) {
  table("nodes", ["Node", "Key", "Key age", "Endpoint", "Backend", "MTU", "Version", "Applied / desired", "Peers up", "Last handshake", "Ready", "Connected", "Rotation"],
    view.nodes.map((n) => ({
      attrs: { "data-node": n.name },
      cells: [n.name, (n.shortKey || "–") + (n.stagedShortKey ? " → " + n.stagedShortKey : ""), age(n.keyAgeSeconds),
        n.endpoint || "–", n.backend || "–", n.mtu ?? "–", n.version || "–",
        (n.appliedGeneration ?? "–") + " / " + (n.desiredGeneration ?? "–"),
        (n.peersUp ?? "–") + "/" + (n.peers ?? "–"), age(n.lastHandshakeSeconds),
        el("td", { title: n.ready ? n.ready.message : "" }, conditionBadge(n.ready), n.ready && n.ready.status !== "True" ? el("div", {}, n.ready.message) : null),
        conditionBadge(n.connected), n.rotationPhase || "–"],
    })));
}

function renderMatrix(view) {
  const box = document.getElementById("matrix");
  if (!view.served.leading) {
    box.replaceChildren(el("p", {}, "Not available on the standby."));
    return;
  }
  const names = view.nodes.map((n) => n.name);
  const links = new Map(view.links.map((l) => [l.from + "\u0000" + l.to, l]));
  const t = el("table", { id: "peer-matrix" }, el("tr", {}, el("th", {}, "from \\ to"), ...names.map((n) => el("th", {}, n))));
  for (const from of names) {
    const row = el("tr", {}, el("th", {}, from));
    for (const to of names) {
      if (from === to) { row.append(el("td", { class: "cell self" }, "")); continue; }
      const link = links.get(from + "\u0000" + to);
      if (!link) { row.append(el("td", { class: "cell" }, "no report")); continue; }
      const cls = link.stale ? "stale" : link.state === "Up" ? "ok" : "bad";
      row.append(el("td", { class: "cell " + cls, "data-link": from + "->" + to, "data-state": link.stale ? "Stale" : link.state, title: "endpoint " + (link.endpoint || "?") + ", key " + (link.shortKey || "?") },
        el("div", {}, (link.stale ? "stale " : "") + link.state + " · " + age(link.lastHandshakeSeconds)),
        el("div", {}, "↓ " + rate(link.rxBytesPerSecond) + " ↑ " + rate(link.txBytesPerSecond))));
    }
    t.append(row);
  }
  box.replaceChildren(t);
}

function renderPolicies(view) {
  table("policies", ["Kind", "Name", "What", "State", "Conditions"],
    view.policies.map((p) => ({
      attrs: { "data-policy": p.kind + "/" + p.name },
      cells: [p.kind, p.name, p.summary, el("td", {}, conditionBadge(p.state), p.outdated ? " (not caught up)" : ""),
        el("td", {}, ...p.conditions.map((c) => el("div", {}, c.type + "=" + c.status + " (" + c.reason + ")" + (c.message ? ": " + c.message : ""))))],
    })));
}

function renderRotations(view) {
  table("rotations", ["Node", "Phase", "In phase", "Policy", "Started", "Message", "Last result", "Last rotated"],
    view.rotations.map((r) => ({
      attrs: { "data-rotation": r.node },
      cells: [r.node, el("td", {}, el("span", { class: "badge " + (r.running ? "warn" : "ok") }, r.phase)),
        r.running ? age(r.phaseSeconds) : "–", r.policy || "–", r.startedAt || "–", r.message || "–", r.lastResult || "–", r.lastRotatedAt || "–"],
    })));
  const timeline = document.getElementById("timeline");
  timeline.replaceChildren(...view.rotationHistory.slice(-40).map((s) =>
    el("li", { "data-step": s.node + ":" + s.phase }, s.at + " " + s.node + " → " + s.phase + (s.result ? " (" + s.result + ")" : ""))));
  if (view.rotationHistory.length === 0) timeline.append(el("li", {}, "no phase change seen by this controller yet"));
}

function render(view) {
  lastView = view;
  document.getElementById("served").textContent =
    "served by " + (view.served.by || "?") + (view.served.leading ? " (leader)" : " (standby)") + " · " + view.generatedAt;
  renderBanners(view);
  const verdict = document.getElementById("verdict");
  verdict.replaceChildren(el("span", { class: "badge " + (view.verdict.healthy ? "ok" : "bad"), id: "healthy" }, view.verdict.healthy ? "healthy" : "degraded"),
    el("ul", {}, ...view.verdict.problems.map((p) => el("li", {}, p))));
  renderNodes(view);
  renderMatrix(view);
  renderPolicies(view);
  renderRotations(view);
  table("events", ["Age", "Type", "Reason", "Object", "Message", "Count"],
    view.events.map((e) => ({ cells: [age(e.ageSeconds), e.type, e.reason, e.object, e.message, e.count] })));
  document.getElementById("notes").replaceChildren(...view.notes.map((n) => el("li", {}, n)));
  document.getElementById("notes-section").hidden = view.notes.length === 0;
}

function showFreshness() {
  const badge = document.getElementById("freshness");
  const since = Date.now() - lastUpdate;
  if (lastView === null) {
    badge.className = "badge bad";
    badge.textContent = "no data from the controller";
  } else if (since > STALE_AFTER_MS) {
    badge.className = "badge bad";
    badge.id = "freshness";
    badge.textContent = "stale: no update for " + Math.round(since / 1000) + " s (controller unreachable?)";
    document.body.classList.add("stale");
  } else {
    badge.className = "badge ok";
    badge.textContent = "live";
    document.body.classList.remove("stale");
  }
}

function start() {
  const initial = JSON.parse(document.getElementById("initial-view").textContent || "null");
  if (initial) { render(initial); lastUpdate = Date.now(); }
  showFreshness();
  setInterval(showFreshness, 1000);
  // Live updates start once the page has loaded, so the first render
  // never waits on a stream that does not end.
  window.addEventListener("load", () => setTimeout(follow, 0));
}

function follow() {
  const events = new EventSource("/api/v1/stream");
  events.addEventListener("mesh", (e) => {
    render(JSON.parse(e.data));
    lastUpdate = Date.now();
    showFreshness();
  });
}

start();
