// ringlb dashboard: polls /_ringlb/status every second and redraws. No framework, no build step.
"use strict";
(function () {
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const colours = new Map();
  let previous = null; // {at, requests: Map name -> count}

  function colour(name) {
    if (!colours.has(name)) colours.set(name, PALETTE[colours.size % PALETTE.length]);
    return colours.get(name);
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function age(seconds) {
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    return Math.floor(seconds / 3600) + " h";
  }
  function arcPath(from, to, r) {
    // Angles in turns (0..1), clockwise from the top.
    const a0 = 2 * Math.PI * from - Math.PI / 2, a1 = 2 * Math.PI * to - Math.PI / 2;
    const large = to - from > 0.5 ? 1 : 0;
    const p = (a) => (r * Math.cos(a)).toFixed(2) + " " + (r * Math.sin(a)).toFixed(2);
    return "M " + p(a0) + " A " + r + " " + r + " 0 " + large + " 1 " + p(a1);
  }

  function drawRing(status) {
    const svg = document.getElementById("ring");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const ns = "http://www.w3.org/2000/svg";
    const arcs = [];
    if (status.ring_positions.length > 0) {
      // The slot ring: a key is served by the next virtual node clockwise, so each node owns the
      // arc from the node before it.
      const m = status.hashing.positions;
      const nodes = status.ring_positions.slice().sort((a, b) => a[0] - b[0]);
      nodes.forEach((node, i) => {
        const prev = i === 0 ? nodes[nodes.length - 1][0] - m : nodes[i - 1][0];
        arcs.push({ from: (prev + 1) / m, to: (node[0] + 1) / m, name: node[1] });
      });
      document.getElementById("ring-note").textContent =
        "The slot ring: " + m + " slots, " + nodes.length + " virtual nodes; each arc ends at a virtual node.";
    } else {
      let at = 0;
      for (const member of status.members) {
        arcs.push({ from: at, to: at + member.share, name: member.name });
        at += member.share;
      }
      document.getElementById("ring-note").textContent =
        "Maglev (" + status.hashing.positions + " entries, interleaved): arcs show each replica's share.";
    }
    for (const arc of arcs) {
      if (arc.to - arc.from <= 0) continue;
      const from = arc.from < 0 ? arc.from + 1 : arc.from;
      const to = arc.from < 0 ? arc.to + 1 : arc.to;
      const path = document.createElementNS(ns, "path");
      path.setAttribute("d", arcPath(from, Math.min(to, from + 0.9999), 90));
      path.setAttribute("stroke", colour(arc.name));
      path.setAttribute("stroke-width", "18");
      path.setAttribute("fill", "none");
      path.setAttribute("data-replica", arc.name);
      const title = document.createElementNS(ns, "title");
      title.textContent = arc.name;
      path.appendChild(title);
      svg.appendChild(path);
    }
    const label = document.createElementNS(ns, "text");
    label.setAttribute("text-anchor", "middle");
    label.setAttribute("dominant-baseline", "middle");
    label.setAttribute("font-size", "14");
    label.setAttribute("fill", "#3b4660");
    label.textContent = status.ring.length + " in the ring";
    svg.appendChild(label);
  }

  function render(status) {
    const now = Date.now();
    const requests = new Map(status.replicas.map((r) => [r.name, r.requests]));
    let total = 0;
    const rps = new Map();
    if (previous) {
      const seconds = (now - previous.at) / 1000;
      for (const [name, count] of requests) {
        const before = previous.requests.get(name);
        if (before !== undefined && seconds > 0) {
          const rate = Math.max(0, (count - before) / seconds);
          rps.set(name, rate);
          total += rate;
        }
      }
    }
    previous = { at: now, requests };

    document.getElementById("ready-count").textContent = status.ready;
    document.getElementById("desired-count").textContent = status.desired;
    document.getElementById("manifest-version").textContent = status.manifest_version;
    document.getElementById("hashing").textContent = status.hashing.algorithm + ", key " + status.hashing.key;
    document.getElementById("total-rps").textContent = previous && rps.size ? total.toFixed(1) : "-";

    const alerts = document.getElementById("alerts");
    alerts.textContent = "";
    if (status.last_manifest_error) alerts.appendChild(el("div", { class: "alert" }, "Manifest refused: " + status.last_manifest_error));
    for (const p of status.problems) alerts.appendChild(el("div", { class: "alert" }, p.replica + ": " + p.error));

    const body = document.querySelector("#replicas tbody");
    body.textContent = "";
    const rows = status.replicas.slice().sort((a, b) => a.name.localeCompare(b.name));
    for (const r of rows) {
      const tr = el("tr", { "data-replica": r.name });
      const name = el("td");
      name.appendChild(el("span", { class: "swatch", style: "background:" + colour(r.name) }));
      name.appendChild(document.createTextNode(r.name));
      tr.appendChild(name);
      const state = el("td");
      state.appendChild(el("span", { class: "state state-" + r.state }, r.state));
      tr.appendChild(state);
      tr.appendChild(el("td", {}, r.address || "-"));
      tr.appendChild(el("td", { class: "num" }, String(r.id)));
      tr.appendChild(el("td", { class: "num" }, age(r.age_seconds)));
      tr.appendChild(el("td", { class: "num" }, String(r.inflight)));
      tr.appendChild(el("td", { class: "num" }, String(r.requests)));
      tr.appendChild(el("td", { class: "num" }, rps.has(r.name) ? rps.get(r.name).toFixed(1) : "-"));
      tr.appendChild(el("td", { class: "num" }, (100 * r.share).toFixed(1) + " %"));
      body.appendChild(tr);
    }

    drawRing(status);

    const answers = document.getElementById("answers");
    answers.textContent = "";
    for (const name of status.recent_answers.slice(-40)) {
      answers.appendChild(el("span", { class: "chip", style: "background:" + colour(name) }, name));
    }
    if (status.recent_answers.length === 0) answers.appendChild(el("span", { class: "note" }, "no request yet"));

    const events = document.getElementById("events");
    events.textContent = "";
    for (const e of status.events.slice(-30).reverse()) {
      const li = el("li", { class: e.level });
      li.appendChild(el("span", { class: "time" }, new Date(e.at_ms).toLocaleTimeString()));
      li.appendChild(document.createTextNode(e.message));
      events.appendChild(li);
    }
    document.body.setAttribute("data-rendered", "js");
  }

  async function poll() {
    try {
      const response = await fetch("/_ringlb/status", { cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (e) {
      // The load balancer is restarting: keep the last picture and try again.
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
