// The saga board's page: the list (from /api/sagas or /api/deadletters) and one saga's lanes
// (/api/sagas/{id}), both refreshed every POLL_MS. No library, nothing loaded from elsewhere.
"use strict";

const POLL_MS = 1000;
const LIMIT = 100;
const LANE_NAMES = { order_svc: "orders", inventory_svc: "inventory", payment_svc: "payments", other: "not a service" };
const MARK_SIGNS = { compensation: "↺", outcome: "★", dead_letter: "✕", foreign: "⚑", duplicate: "❐" };
const MARK_WORDS = { compensation: "compensation", outcome: "outcome", dead_letter: "dead letter", foreign: "from outside", duplicate: "duplicate" };

const state = { view: "all", selected: null, listKey: "", sagaKey: "", lastSaga: null, focusedSeq: null };

function $(id) { return document.getElementById(id); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

// --- formatting ---------------------------------------------------------------------------
function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  if (ms < 7200000) return `${Math.round(ms / 60000)} min`;
  if (ms < 172800000) return `${Math.round(ms / 3600000)} h`;
  return `${Math.round(ms / 86400000)} d`;
}
function clockShort(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const at = new Date(ms);
  const time = at.toLocaleTimeString([], { hour12: false });
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString()} ${time}`;
}
function clock(ms) {
  if (ms === null || ms === undefined) return "—";
  const at = new Date(ms);
  const time = at.toLocaleTimeString([], { hour12: false }) + "." + String(at.getMilliseconds()).padStart(3, "0");
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString()} ${time}`;
}
// an event type may break after its underscores, never inside a word
function breakable(name) {
  const parts = [];
  name.split("_").forEach((part, index) => { if (index) parts.push("_", el("wbr")); parts.push(part); });
  return parts;
}
function short(id) { return id ? id.slice(0, 8) : "—"; }

// --- fetching -----------------------------------------------------------------------------
async function getJson(path) {
  const answer = await fetch(path, { cache: "no-store" });
  let body = null;
  try { body = await answer.json(); } catch (error) { body = null; }
  if (!answer.ok) {
    const detail = body && body.detail ? body.detail : `${answer.status} ${answer.statusText}`;
    const failure = new Error(detail);
    failure.status = answer.status;
    throw failure;
  }
  return body;
}

function listPath() {
  const params = new URLSearchParams({ limit: String(LIMIT) });
  const search = $("search").value.trim();
  if (search) params.set("q", search);
  for (const name of ["since", "until"]) {
    const value = $(name).value;
    if (value) params.set(name, String(new Date(value).getTime()));
  }
  if (state.view === "dead_letters") return `/api/deadletters?${params}`;
  params.set("status", state.view);
  if ($("reason").value) params.set("reason", $("reason").value);
  if ($("customer").value.trim()) params.set("customer", $("customer").value.trim());
  return `/api/sagas?${params}`;
}

// --- the list -----------------------------------------------------------------------------
function renderOverview(answer) {
  for (const [name, count] of Object.entries(answer.counts)) {
    const slot = document.querySelector(`[data-count="${name}"]`);
    if (slot) slot.textContent = count;
  }
  const follow = answer.follow;
  const from = follow.since_ms === null ? "their beginning" : clock(follow.since_ms);
  const progress = follow.caught_up ? "live" : "reading what is already there…";
  $("follow").textContent = `From the topics since ${from} · ${follow.records} records · ${progress} · refreshed ${clock(answer.now_ms)}`;
  $("follow").setAttribute("data-caught-up", follow.caught_up ? "yes" : "no");
  $("problem").textContent = follow.problem ? `Kafka: ${follow.problem}` : "";
  $("stuck-after").textContent = `${answer.stuck_after_s} s`;
}

function renderReasons(reasons) {
  const select = $("reason");
  const known = new Set([...select.options].map((option) => option.value));
  for (const reason of reasons) {
    if (!known.has(reason)) select.append(el("option", { value: reason }, reason));
  }
}

function statusCell(saga) {
  const cell = el("td", {}, el("span", { class: `status ${saga.status}` }, saga.status === "IN_FLIGHT" ? (saga.cancelling ? "CANCELLING" : "IN FLIGHT") : saga.status));
  if (saga.stuck) cell.append(el("span", { class: "flag stuck", title: "in flight longer than the order deadline" }, "⚠ stuck"));
  if (saga.dead_letters) cell.append(el("span", { class: "flag dead_letter", title: "dead letters of this saga" }, `✕ ${saga.dead_letters}`));
  if (saga.reason) cell.append(el("div", { class: "reason" }, saga.reason));
  for (const wait of saga.waiting_for || []) {
    cell.append(el("span", { class: "flag waits", title: `after ${wait.after}, since ${wait.since}` }, `◷ waits for ${wait.service}: ${wait.events.join(" or ")}`));
  }
  return cell;
}

function sagaRow(saga) {
  const row = el("tr", { "data-order-id": saga.order_id, "data-status": saga.status, "data-stuck": saga.stuck ? "yes" : "no",
                         class: saga.order_id === state.selected ? "selected" : "" },
    el("td", { class: "mono" }, el("a", { href: `#saga=${saga.order_id}`, title: saga.order_id, class: "row-link" }, short(saga.order_id)),
       el("div", { class: "reason", title: clock(saga.started_ms) }, clockShort(saga.started_ms))),
    statusCell(saga),
    el("td", { class: "customer", title: saga.customer_id || "" }, saga.customer_id || "—",
       saga.amount ? el("div", { class: "reason" }, `${saga.amount} ${saga.currency || ""}`) : null),
    el("td", { class: "num", title: "age: since it started · took: first event to outcome" }, duration(saga.age_ms),
       el("div", { class: "reason" }, saga.duration_ms === null ? "running" : `took ${duration(saga.duration_ms)}`)));
  row.addEventListener("click", (event) => { if (event.target.tagName !== "A") open(saga.order_id); });
  return row;
}

function letterRow(letter) {
  const saga = letter.saga_id
    ? el("a", { href: `#saga=${letter.saga_id}`, title: letter.saga_id, class: "row-link" }, short(letter.saga_id))
    : el("span", { class: "muted", title: "its key is no order id" }, letter.key ? `key ${letter.key.slice(0, 24)}` : "no key");
  const row = el("tr", { "data-dead-letter-id": letter.id, "data-order-id": letter.saga_id || "",
                         class: letter.saga_id && letter.saga_id === state.selected ? "selected" : "" },
    el("td", { class: "num", title: letter.at }, clockShort(Date.parse(letter.at))),
    el("td", { class: "mono" }, saga),
    el("td", {}, letter.consumer || "?"),
    el("td", { class: "error" }, el("strong", {}, letter.event_type || "a record"), ` from ${letter.topic}[${letter.partition}]@${letter.offset}`,
       el("div", { class: "reason" }, letter.error)));
  if (letter.saga_id) row.addEventListener("click", (event) => { if (event.target.tagName !== "A") open(letter.saga_id); });
  return row;
}

function renderList(answer) {
  const letters = state.view === "dead_letters";
  const rows = letters ? answer.dead_letters : answer.sagas;
  const key = JSON.stringify([state.view, state.selected, rows, Math.floor(answer.now_ms / 1000)]);
  if (key === state.listKey) return;
  state.listKey = key;
  const focusedId = document.activeElement && document.activeElement.closest("tr")
    ? document.activeElement.closest("tr").getAttribute(letters ? "data-dead-letter-id" : "data-order-id") : null;
  $("sagas").hidden = letters;
  $("letters").hidden = !letters;
  const body = document.querySelector(letters ? "#letters tbody" : "#sagas tbody");
  body.replaceChildren(...rows.map(letters ? letterRow : sagaRow));
  $("list-title").firstChild.textContent = letters ? "Dead letters " : "Sagas ";
  $("list-note").textContent = (rows.length === answer.limit ? `(the newest ${rows.length})` : `(${rows.length})`)
    + (answer.follow.caught_up ? "" : " — still reading the topics: in flight and stuck are not final yet");
  $("empty").hidden = rows.length > 0;
  $("empty").textContent = letters ? "No dead letters match." : "No saga matches.";
  if (focusedId) {
    const again = body.querySelector(`tr[${letters ? "data-dead-letter-id" : "data-order-id"}="${CSS.escape(focusedId)}"] a`);
    if (again) again.focus();
  }
}

async function refreshList() {
  const answer = await getJson(listPath());
  renderOverview(answer);
  if (answer.reasons) renderReasons(answer.reasons);
  renderList(answer);
}

// --- one saga: lanes ----------------------------------------------------------------------
function stepCard(step, lanes) {
  const classes = ["step", ...step.marks].join(" ");
  const sign = step.marks.filter((mark) => mark === "compensation" || mark === "dead_letter").map((mark) => MARK_SIGNS[mark]).join("");
  const card = el("article", {
    class: classes, id: `step-${step.seq}`, tabindex: "0",
    "data-seq": step.seq, "data-lane": step.lane, "data-event-type": step.event_type,
    "data-marks": step.marks.join(" "), "data-cause-seq": step.cause_seq === null ? "" : step.cause_seq,
    "aria-label": `event ${step.seq}: ${step.event_type} by ${step.lane}` + (step.marks.length ? ` (${step.marks.map((m) => MARK_WORDS[m]).join(", ")})` : ""),
  },
    el("div", { class: "title" },
      el("span", { class: "seq" }, `#${step.seq}`),
      el("span", { class: "type" }, sign ? `${sign} ` : "", ...breakable(step.event_type))),
    step.marks.length ? el("div", { class: "badges" },
      ...step.marks.map((mark) => el("span", { class: `badge ${mark}`, title: MARK_WORDS[mark] }, `${MARK_SIGNS[mark]} ${MARK_WORDS[mark]}`))) : null,
    step.detail ? el("p", { class: "detail" }, step.detail) : null,
    el("p", { class: "meta muted" },
      `+${duration(step.since_start_ms)}`,
      step.cause_seq !== null
        ? el("span", {}, ` · hop ${duration(step.hop_ms)} · caused by `,
             el("a", { href: `#step-${step.cause_seq}`, class: "cause", "data-seq": step.cause_seq,
                       title: `#${step.cause_seq} ${step.caused_by || ""}` }, `#${step.cause_seq}`))
        : (step.event_type === "ORDER_CREATED" ? " · starts the saga" : " · no cause on the topics")));
  card.style.gridColumn = String(lanes.indexOf(step.lane) + 2);
  return card;
}

function waitingCard(wait, lanes, row) {
  const card = el("article", { class: "waiting-card", tabindex: "0", "data-lane": wait.lane, "data-after-seq": wait.after_seq || "",
                               "data-events": wait.events.join(" "), id: `waiting-${wait.lane}` },
    el("strong", {}, `◷ waiting for ${wait.lane}`), el("br"),
    `${wait.events.join(" or ")}`, el("br"),
    el("span", {}, `after #${wait.after_seq || "?"} ${wait.after}, since ${clock(Date.parse(wait.since))} (${duration(wait.waited_ms)})`),
    wait.dead_letter ? el("div", { class: "detail" }, `✕ refused: ${wait.dead_letter}`) : null);
  card.style.gridColumn = String(lanes.indexOf(wait.lane) + 2);
  card.style.gridRow = String(row);
  return card;
}

function renderSaga(saga) {
  const lanes = saga.lanes;
  const grid = el("div", { class: "lanes", id: "lanes", "data-lanes": lanes.join(" ") });
  grid.style.gridTemplateColumns = `3.9rem repeat(${lanes.length}, minmax(0, 1fr))`;
  const rows = saga.steps.length + saga.waiting.length + 1;
  lanes.forEach((lane, index) => {
    const band = el("div", { class: "lane-band", "aria-hidden": "true" });
    band.style.gridColumn = String(index + 2);
    band.style.gridRow = `1 / ${rows + 1}`;
    grid.append(band);
  });
  const corner = el("div", { class: "gutter" }, "+time");
  corner.style.gridColumn = "1";
  corner.style.gridRow = "1";
  grid.append(corner);
  lanes.forEach((lane, index) => {
    const head = el("div", { class: "lane-head", "data-lane": lane }, lane, el("small", {}, LANE_NAMES[lane] || ""));
    head.style.gridColumn = String(index + 2);
    head.style.gridRow = "1";
    grid.append(head);
  });
  saga.steps.forEach((step, index) => {
    const gutter = el("div", { class: "gutter" }, `+${duration(step.since_start_ms)}`);
    gutter.style.gridColumn = "1";
    gutter.style.gridRow = String(index + 2);
    const card = stepCard(step, lanes);
    card.style.gridRow = String(index + 2);
    grid.append(gutter, card);
  });
  saga.waiting.forEach((wait, index) => {
    const row = saga.steps.length + 2 + index;
    const gutter = el("div", { class: "gutter" }, "now");
    gutter.style.gridColumn = "1";
    gutter.style.gridRow = String(row);
    grid.append(gutter, waitingCard(wait, lanes, row));
  });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "arrows");
  svg.setAttribute("aria-hidden", "true");
  grid.append(svg);

  const outcome = saga.outcome === "IN_FLIGHT" ? "IN FLIGHT" : saga.outcome;
  const facts = el("dl", {},
    el("dt", {}, "order"), el("dd", { class: "mono" }, saga.order_id),
    el("dt", {}, "outcome"), el("dd", {}, el("span", { class: `status ${saga.outcome}`, id: "saga-outcome", "data-outcome": saga.outcome }, outcome),
                                     saga.reason ? ` · ${saga.reason}` : ""),
    el("dt", {}, "customer"), el("dd", {}, saga.customer_id || "—"),
    el("dt", {}, "amount"), el("dd", {}, saga.amount ? `${saga.amount} ${saga.currency || ""}` : "—"),
    el("dt", {}, "started"), el("dd", {}, clock(saga.started_ms)),
    el("dt", {}, "events"), el("dd", {}, `${saga.steps.length} in ${duration(saga.duration_ms)}`));
  const waits = saga.waiting.length
    ? el("p", { class: "flag waits", id: "saga-waiting" }, ...saga.waiting.map((wait) =>
        `◷ waiting for ${wait.lane}: ${wait.events.join(" or ")} after ${wait.after}, for ${duration(wait.waited_ms)}. `))
    : null;
  $("saga-title").textContent = `Saga ${short(saga.order_id)}`;
  $("saga-hint").hidden = true;
  const container = $("saga");
  container.setAttribute("data-order-id", saga.order_id);
  container.setAttribute("data-outcome", saga.outcome);
  container.replaceChildren(facts, waits || "", grid);
  requestAnimationFrame(() => drawArrows(grid, saga));
  if (state.focusedSeq !== null) {
    const again = $(`step-${state.focusedSeq}`);
    if (again) { again.focus({ preventScroll: true }); markCause(again); }
  }
}

function drawArrows(grid, saga) {
  const svg = grid.querySelector("svg.arrows");
  if (!svg) return;
  const box = grid.getBoundingClientRect();
  svg.setAttribute("width", String(box.width));
  svg.setAttribute("height", String(box.height));
  const ns = "http://www.w3.org/2000/svg";
  const defs = document.createElementNS(ns, "defs");
  const marker = document.createElementNS(ns, "marker");
  for (const [name, value] of Object.entries({ id: "head", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" })) marker.setAttribute(name, value);
  const tip = document.createElementNS(ns, "path");
  tip.setAttribute("d", "M 0 0 L 10 5 L 0 10 z");
  tip.setAttribute("fill", "#6e7781");
  marker.append(tip);
  defs.append(marker);
  const paths = [];
  const link = (from, to, kind) => {
    const a = from.getBoundingClientRect();
    const b = to.getBoundingClientRect();
    const x1 = a.left + a.width / 2 - box.left;
    const y1 = a.bottom - box.top;
    const x2 = b.left + Math.min(24, b.width / 4) - box.left;
    const y2 = b.top - box.top;
    const path = document.createElementNS(ns, "path");
    const bend = Math.max(12, (y2 - y1) / 2);
    path.setAttribute("d", `M ${x1} ${y1} C ${x1} ${y1 + bend}, ${x2} ${y2 - bend}, ${x2} ${y2}`);
    path.setAttribute("marker-end", "url(#head)");
    if (kind) path.setAttribute("class", kind);
    paths.push(path);
  };
  for (const step of saga.steps) {
    if (step.cause_seq === null) continue;
    const from = $(`step-${step.cause_seq}`);
    const to = $(`step-${step.seq}`);
    if (from && to) link(from, to, step.marks.includes("dead_letter") ? "dead_letter" : step.marks.includes("compensation") ? "compensation" : "");
  }
  for (const wait of saga.waiting) {
    const from = wait.after_seq ? $(`step-${wait.after_seq}`) : null;
    const to = $(`waiting-${wait.lane}`);
    if (from && to) link(from, to, "waiting");
  }
  svg.replaceChildren(defs, ...paths);
}

async function refreshSaga() {
  if (!state.selected) return;
  const orderId = state.selected;
  let saga;
  try {
    saga = await getJson(`/api/sagas/${encodeURIComponent(orderId)}`);
  } catch (error) {
    if (orderId !== state.selected) return;
    $("saga").replaceChildren(el("p", { class: "muted", id: "saga-missing" }, `Saga ${orderId}: ${error.message}`));
    $("saga").setAttribute("data-order-id", orderId);
    state.sagaKey = "";
    return;
  }
  if (orderId !== state.selected) return;
  const key = JSON.stringify({ ...saga, waiting: saga.waiting.map((wait) => ({ ...wait, waited_ms: Math.floor(wait.waited_ms / 1000) })) });
  if (key === state.sagaKey) return;
  state.sagaKey = key;
  state.lastSaga = saga;
  renderSaga(saga);
}

// --- navigation ---------------------------------------------------------------------------
function open(orderId) {
  if (location.hash !== `#saga=${orderId}`) location.hash = `saga=${orderId}`;
  else select(orderId);
}

function select(orderId) {
  if (orderId === state.selected) return;
  state.selected = orderId;
  state.sagaKey = "";
  state.focusedSeq = null;
  state.listKey = "";
  for (const row of document.querySelectorAll("tbody tr")) row.classList.toggle("selected", row.getAttribute("data-order-id") === orderId);
  $("saga").replaceChildren(el("p", { class: "muted" }, `Reading saga ${orderId} from the topics…`));
  refreshSaga().then(() => { const first = document.querySelector("#saga .step"); if (first && document.activeElement === document.body) first.focus(); });
}

function fromHash() {
  const match = /^#saga=([0-9A-Za-z-]{1,64})$/.exec(location.hash);
  if (match) select(match[1].toLowerCase());
}

function setView(view) {
  state.view = view;
  state.listKey = "";
  for (const button of document.querySelectorAll("#views button")) button.setAttribute("aria-pressed", String(button.dataset.view === view));
  $("reason").disabled = $("customer").disabled = view === "dead_letters";
  refreshList().catch(showProblem);
}

function moveIn(items, current, by) {
  const index = items.indexOf(current);
  const next = items[Math.max(0, Math.min(items.length - 1, index + by))] || items[0];
  if (next) next.focus();
  return next;
}

function markCause(card) {
  for (const old of document.querySelectorAll(".cause-of-current, .step.current")) old.classList.remove("cause-of-current", "current");
  card.classList.add("current");
  const cause = card.getAttribute("data-cause-seq");
  if (cause) { const found = $(`step-${cause}`); if (found) found.classList.add("cause-of-current"); }
}

function onKey(event) {
  const target = event.target;
  const typing = target.matches("input, select, textarea");
  if (event.key === "/" && !typing) { event.preventDefault(); $("search").focus(); $("search").select(); return; }
  if (event.key === "Escape") {
    if (typing) { target.blur(); return; }
    const row = document.querySelector("tbody tr.selected a") || document.querySelector("tbody tr a");
    if (row) row.focus();
    return;
  }
  if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
  const by = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1 }[event.key];
  if (target.closest("#saga")) {
    const steps = [...document.querySelectorAll("#saga .step, #saga .waiting-card")];
    const current = target.closest(".step, .waiting-card");
    if (by && current) { event.preventDefault(); moveIn(steps, current, by); return; }
    if (event.key === "c" && current && current.getAttribute("data-cause-seq")) {
      const cause = $(`step-${current.getAttribute("data-cause-seq")}`);
      if (cause) cause.focus();
    }
    return;
  }
  const row = target.closest("tbody tr");
  if (by && row) {
    event.preventDefault();
    const links = [...row.parentElement.querySelectorAll("a.row-link")];
    moveIn(links, row.querySelector("a.row-link"), by);
  } else if (by && !row && target === document.body) {
    const first = document.querySelector("table:not([hidden]) a.row-link");
    if (first) { event.preventDefault(); first.focus(); }
  }
}

function showProblem(error) {
  $("problem").textContent = `The board did not answer: ${error.message}`;
}

async function pollList() {
  try { await refreshList(); } catch (error) { showProblem(error); }
  setTimeout(pollList, POLL_MS);
}

async function pollSaga() {
  try { await refreshSaga(); } catch (error) { showProblem(error); }
  setTimeout(pollSaga, POLL_MS);
}

function start() {
  for (const button of document.querySelectorAll("#views button")) button.addEventListener("click", () => setView(button.dataset.view));
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  // Enter in the search box opens the saga typed (a whole id: even one the list does not hold),
  // or the first one listed (the form has several fields, so no implicit submission)
  $("search").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const typed = $("search").value.trim().toLowerCase();
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(typed)) { open(typed); return; }
    const first = document.querySelector("table:not([hidden]) tbody tr[data-order-id] a.row-link");
    if (first) { open(first.closest("tr").getAttribute("data-order-id")); first.focus(); }
  });
  $("filters").addEventListener("reset", () => setTimeout(() => { state.listKey = ""; refreshList().catch(showProblem); }));
  for (const id of ["search", "customer", "since", "until", "reason"]) {
    $(id).addEventListener(id === "reason" ? "change" : "input", () => { state.listKey = ""; refreshList().catch(showProblem); });
  }
  document.addEventListener("keydown", onKey);
  document.addEventListener("focusin", (event) => {
    const card = event.target.closest && event.target.closest("#saga .step");
    if (card) { state.focusedSeq = Number(card.getAttribute("data-seq")); markCause(card); }
  });
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a.cause");
    if (link) { event.preventDefault(); const cause = $(`step-${link.getAttribute("data-seq")}`); if (cause) cause.focus(); }
  });
  window.addEventListener("hashchange", fromHash);
  window.addEventListener("resize", () => { const grid = $("lanes"); if (grid && state.lastSaga) drawArrows(grid, state.lastSaga); });
  fromHash();
  pollList();
  pollSaga();
}

start();
