// The live page: asks /status a few times a second and redraws every service from it.
// Names come from peers, so they are only ever set as text (textContent), never as HTML.
"use strict";

const REFRESH_MS = 250;
let offset = 0;
let pageSize = 100; // /status says its own limit

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    node.setAttribute(name, value);
  }
  if (text !== undefined) {
    node.textContent = String(text);
  }
  return node;
}

// One "name: value" pair of a <dl>, with the value findable by a data attribute.
function pair(list, name, value, attribute) {
  const row = element("div");
  row.append(element("dt", {}, name.replaceAll("_", " ")));
  row.append(element("dd", { [attribute]: name }, value));
  list.append(row);
}

function workers(kind, names, count) {
  const list = element("ol", { class: "workers " + kind });
  for (const name of names) {
    list.append(element("li", { class: "worker " + kind, "data-worker": name }, name));
  }
  if (count > names.length) {
    list.append(element("li", { class: "more" }, "and " + (count - names.length) + " more"));
  }
  if (count === 0) {
    list.append(element("li", { class: "none" }, "none"));
  }
  return list;
}

function row(label, ...content) {
  const line = element("div", { class: "row" });
  line.append(element("span", { class: "label" }, label), ...content);
  return line;
}

function service(snapshot) {
  const card = element("section", { class: "service", "data-service": snapshot.name });
  card.append(element("h2", {}, snapshot.name));

  const queue = element("span", { class: "queue" });
  for (let i = 0; i < Math.min(snapshot.requests_waiting, 50); i++) {
    queue.append(element("span", { class: "request" }));
  }
  card.append(row("waiting",
    element("span", { class: "count", "data-count": "requests_waiting" }, snapshot.requests_waiting),
    queue));
  card.append(row("idle (LRU)",
    element("span", { class: "count", "data-count": "workers_idle" }, snapshot.workers_idle),
    workers("idle", snapshot.idle_workers, snapshot.workers_idle)));
  card.append(row("busy",
    element("span", { class: "count", "data-count": "workers_busy" }, snapshot.workers_busy),
    workers("busy", snapshot.busy_workers, snapshot.workers_busy)));

  const counters = element("dl", { class: "counters" });
  const c = snapshot.counters;
  for (const name of ["received", "dispatched", "answered", "expired", "lost_with_worker",
                      "replies_dropped"]) {
    pair(counters, name, c[name], "data-count");
  }
  for (const [reason, count] of Object.entries(c.refused)) {
    pair(counters, "refused_" + reason, count, "data-count");
  }
  const latency = snapshot.latency;
  const mean = latency.count > 0 ? (1000 * latency.sum_seconds / latency.count).toFixed(2) + " ms" : "–";
  pair(counters, "mean_latency", mean, "data-count");
  card.append(counters);
  return card;
}

function draw(status) {
  document.title = status.program + " dashboard";
  document.getElementById("program").textContent = status.program;
  const sequence = document.getElementById("sequence");
  sequence.textContent = status.sequence;
  sequence.dataset.sequence = status.sequence;
  document.getElementById("uptime").textContent = (status.uptime_ms / 1000).toFixed(1) + " s";

  const brokerCounters = element("dl", { id: "broker-counters" });
  for (const [name, value] of Object.entries(status.counters)) {
    if (value !== null) {
      pair(brokerCounters, name, value, "data-broker-counter");
    }
  }
  document.getElementById("broker-counters").replaceWith(brokerCounters);

  const services = element("div", { id: "services" });
  for (const snapshot of status.services) {
    services.append(service(snapshot));
  }
  document.getElementById("services").replaceWith(services);

  pageSize = status.limit;
  const paging = document.getElementById("paging");
  paging.hidden = status.services_total <= status.services.length && status.offset === 0;
  document.getElementById("paging-text").textContent =
    "services " + (status.offset + 1) + " to " + (status.offset + status.services.length) +
    " of " + status.services_total;
  document.getElementById("next").disabled = status.next_offset === undefined;
  document.getElementById("previous").disabled = status.offset === 0;
}

function live(up) {
  const state = document.getElementById("state");
  state.textContent = up ? "live" : "broker not answering";
  state.className = up ? "state" : "state down";
}

async function refresh() {
  try {
    const response = await fetch("/status?offset=" + offset, { cache: "no-store" });
    draw(await response.json());
    live(true);
  } catch (error) {
    live(false);
  }
  setTimeout(refresh, REFRESH_MS);
}

document.getElementById("next").addEventListener("click", () => { offset += pageSize; });
document.getElementById("previous").addEventListener("click", () => { offset = Math.max(0, offset - pageSize); });
refresh();
