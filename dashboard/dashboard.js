// The ServiceCall dashboard: sign in with a tenant's API key, then every few seconds read the
// calls (counts by state, a filtered page, the open call's detail) and the mesh's health, and
// show them without reloading. Plain DOM, no framework: every value from the API goes in as
// text (textContent), never as markup.

import { Api, ApiError, prometheusQuery } from "./api.js";

const POLL_MS = 3000;
// Counts come from the list API itself (it has no count): one page of this many calls per
// state, shown as "100+" when there are more. Bounded work per refresh, and honest.
const COUNT_CAP = 100;
const SESSION_KEY = "servicecall.dashboard.session";
const TENANT_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
const STATES = ["SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"];
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);
const STATE_LABELS = {
  SCHEDULED: "Scheduled",
  DISPATCHED: "Dispatched",
  RUNNING: "Running",
  SUCCEEDED: "Succeeded",
  FAILED: "Failed",
  CANCELED: "Canceled",
};
const OUTCOME_LABELS = { SUCCEEDED: "succeeded", FAILED: "failed", TIMED_OUT: "timed out" };
// Recording rules kept by Prometheus (docs/observability.md); the names are the contract.
const METRICS = {
  p50: "servicecall:lateness_seconds:p50_5m",
  p99: "servicecall:lateness_seconds:p99_5m",
  finished: "servicecall:calls_finished:rate1m",
  submitted: "servicecall:calls_submitted:rate1m",
  lag: "servicecall:consumer_lag:sum",
};

const $ = (id) => document.getElementById(id);

// ---- small helpers ----------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

/** RFC 3339 from the API (up to nanoseconds) as a Date (milliseconds), or null when unset. */
function parseTime(text) {
  if (!text) return null;
  const date = new Date(text.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(date.getTime()) ? null : date;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

function formatTime(date, { millis = false } = {}) {
  if (!date) return "–";
  const now = new Date();
  let text = pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  if (millis) text += "." + pad(date.getMilliseconds(), 3);
  if (date.toDateString() !== now.toDateString()) {
    text = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " + text;
  }
  return text;
}

function timeCell(date, options) {
  return el("time", { datetime: date ? date.toISOString() : undefined, title: date ? date.toISOString() : undefined }, formatTime(date, options));
}

function formatDuration(ms) {
  if (!Number.isFinite(ms)) return "–";
  const sign = ms < 0 ? "−" : "";
  const abs = Math.abs(ms);
  if (abs < 1) return sign + abs.toFixed(2) + " ms";
  if (abs < 1000) return sign + abs.toFixed(abs < 10 ? 1 : 0) + " ms";
  if (abs < 60_000) return sign + (abs / 1000).toFixed(abs < 10_000 ? 2 : 1) + " s";
  if (abs < 3_600_000) return sign + Math.floor(abs / 60_000) + " min " + Math.round((abs % 60_000) / 1000) + " s";
  return sign + (abs / 3_600_000).toFixed(1) + " h";
}

function stateBadge(state) {
  return el("span", { className: "badge state-" + state, "data-state": state }, STATE_LABELS[state] || state);
}

function shortId(id) {
  return id.length > 13 ? id.slice(0, 8) + "…" + id.slice(-4) : id;
}

// ---- session ----------------------------------------------------------------------------

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (saved && typeof saved.tenant === "string" && typeof saved.key === "string") return saved;
  } catch {
    // A damaged entry is the same as none: sign in again.
  }
  return null;
}

// ---- page state -------------------------------------------------------------------------

const view = {
  api: null,
  // The filter as last applied (Enter, a change, "Clear"): what every refresh asks for. The
  // form itself may meanwhile hold text not yet applied, which no refresh may read.
  applied: null,
  // The list's position: the pages seen, the current page's last. Each holds its page token
  // and the exact filter that token was issued for (null on page 1: the applied filter,
  // whose relative "Created" window slides at each refresh; a later page keeps the window
  // of the page before it, as its token requires).
  pages: [{ token: "", filter: null }],
  nextPageToken: "",
  // The filter of the page on screen: the one its next-page token was issued for.
  shownFilter: null,
  detailId: null,
  detailState: null,
  // Bumped when the filter or page changes: answers to older questions are dropped.
  version: 0,
  timer: null,
  running: false,
  again: false,
  lastSuccess: null,
};

/** The filter form as it stands; a relative "Created" window is kept as its span. */
function formFilter() {
  const state = $("filter-state").value;
  const tags = $("filter-tags")
    .value.split(/[\s,]+/)
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
  const created = $("filter-created").value;
  let createdFrom = null;
  let createdBefore = null;
  let createdWithinS = null;
  if (created === "between") {
    createdFrom = $("filter-from").value ? new Date($("filter-from").value) : null;
    createdBefore = $("filter-to").value ? new Date($("filter-to").value) : null;
  } else if (created) {
    createdWithinS = Number(created);
  }
  return { states: state ? [state] : [], tags, createdFrom, createdBefore, createdWithinS };
}

/** The filter a list request sends: a relative window resolved against the clock now. */
function resolveFilter(applied) {
  const { createdWithinS, ...filter } = applied;
  if (createdWithinS !== null) filter.createdFrom = new Date(Date.now() - createdWithinS * 1000);
  return filter;
}

function filterProblem(filter) {
  const { createdFrom, createdBefore } = filter;
  if (createdFrom && Number.isNaN(createdFrom.getTime())) return "“From” is not a valid time.";
  if (createdBefore && Number.isNaN(createdBefore.getTime())) return "“Before” is not a valid time.";
  if (createdFrom && createdBefore && createdFrom >= createdBefore) {
    return "“From” must be earlier than “Before”.";
  }
  return null;
}

// ---- rendering: counts ------------------------------------------------------------------

function buildCounts() {
  const list = $("count-list");
  list.replaceChildren();
  for (const state of STATES) {
    const button = el(
      "button",
      { type: "button", className: "count state-" + state, "data-state": state, "aria-pressed": "false" },
      el("span", { className: "count-label" }, STATE_LABELS[state]),
      el("span", { className: "count-value" }, "–"),
    );
    button.addEventListener("click", () => {
      const select = $("filter-state");
      select.value = select.value === state ? "" : state;
      applyFilters();
    });
    list.append(el("li", {}, button));
  }
}

function renderCounts(counts) {
  const selected = $("filter-state").value;
  for (const button of $("count-list").querySelectorAll("button[data-state]")) {
    const state = button.dataset.state;
    const count = counts[state];
    const text = count === undefined ? "–" : count.more ? count.n + "+" : String(count.n);
    button.querySelector(".count-value").textContent = text;
    button.dataset.count = text;
    button.setAttribute("aria-pressed", String(selected === state));
    button.setAttribute("aria-label", STATE_LABELS[state] + ": " + text + (selected === state ? " (filtering)" : ""));
  }
}

// ---- rendering: the list ----------------------------------------------------------------

function rowCells(call) {
  const request = call.request || {};
  const method = request.httpMethod && request.httpMethod !== "HTTP_METHOD_UNSPECIFIED" ? request.httpMethod : "POST";
  const open = el(
    "button",
    { type: "button", className: "link open-call", title: call.serviceCallId, "aria-label": "Open call " + call.serviceCallId },
    shortId(call.serviceCallId),
  );
  open.addEventListener("click", () => openDetail(call.serviceCallId));
  const tags = el("ul", { className: "tags" }, ...(call.tags || []).map((t) => el("li", {}, t)));
  return [
    el("td", { className: "state" }, stateBadge(call.state)),
    el("td", { className: "id" }, open),
    el("td", { className: "request", title: method + " " + (request.url || "") }, el("span", { className: "method" }, method), " ", request.url || ""),
    el("td", {}, tags),
    el("td", {}, timeCell(parseTime(call.scheduleTime))),
    el("td", {}, timeCell(parseTime(call.createTime))),
    el("td", { className: "num" }, String(call.attemptCount ?? 0)),
  ];
}

function renderList(page) {
  const body = $("call-rows");
  const calls = page.serviceCalls || [];
  const existing = new Map([...body.rows].map((row) => [row.dataset.callId, row]));
  const sameOrder = existing.size === calls.length && calls.every((c, i) => body.rows[i].dataset.callId === c.serviceCallId);
  const rows = calls.map((call) => {
    // Rebuild a row only when what it shows changed, so focus and selection survive polling.
    const signature = JSON.stringify([call.state, call.attemptCount, call.scheduleTime, call.tags, call.request && call.request.url]);
    let row = existing.get(call.serviceCallId);
    if (!row) {
      row = el("tr", { "data-call-id": call.serviceCallId });
    }
    if (row.dataset.signature !== signature) {
      const focused = row.contains(document.activeElement);
      row.replaceChildren(...rowCells(call));
      row.dataset.signature = signature;
      if (focused) row.querySelector("button").focus();
    }
    row.dataset.state = call.state;
    row.classList.toggle("selected", call.serviceCallId === view.detailId);
    return row;
  });
  if (!sameOrder) body.replaceChildren(...rows);
  show($("list-empty"), calls.length === 0);
  view.nextPageToken = page.nextPageToken || "";
  const index = view.pages.length;
  $("page-label").textContent = "Page " + index;
  $("prev-page").disabled = index <= 1;
  $("next-page").disabled = !view.nextPageToken;
}

// ---- rendering: the detail and its timeline ---------------------------------------------

function field(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(el("div", {}, el("dt", {}, name), el("dd", {}, value)));
}

function timelineEvents(call) {
  const created = parseTime(call.createTime);
  const events = [];
  const add = (time, kind, title, details = [], extra = {}) => events.push({ time, kind, title, details, extra });
  add(created, "submitted", "Submitted");
  const attempts = call.attempts || [];
  const due = parseTime(call.scheduleTime);
  if (due) {
    const retry = (call.attemptCount || 1) > 1;
    add(due, "due", retry ? "Due again (attempt " + call.attemptCount + ")" : "Due");
  }
  for (const attempt of attempts) {
    const n = attempt.attemptNumber;
    const start = parseTime(attempt.startTime);
    const end = parseTime(attempt.endTime);
    if (start) add(start, "attempt-start", "Attempt " + n + " started", [], { attempt: n });
    const details = [];
    if (attempt.responseStatus) details.push("HTTP " + attempt.responseStatus);
    if (start && end) details.push("took " + formatDuration(end - start));
    if (attempt.error) details.push("error: " + attempt.error);
    if (attempt.retryReason) details.push(attempt.retryReason);
    if (attempt.retryAfter) details.push("Retry-After " + attempt.retryAfter);
    add(end || start, "attempt", "Attempt " + n + " " + (OUTCOME_LABELS[attempt.outcome] || attempt.outcome), details, {
      attempt: n,
      outcome: attempt.outcome,
      snippet: attempt.responseSnippet,
    });
  }
  const complete = parseTime(call.completeTime);
  if (complete) {
    add(complete, "complete", STATE_LABELS[call.state] || call.state, call.statusReason ? [call.statusReason] : []);
  } else {
    add(new Date(), "now", "Now: " + (STATE_LABELS[call.state] || call.state));
  }
  // Stable: events at the same instant keep the order above (submitted before due, ...).
  return events.filter((e) => e.time).map((e, i) => ({ ...e, i })).sort((a, b) => a.time - b.time || a.i - b.i);
}

function renderDetail(call) {
  view.detailState = call.state;
  $("detail-title").textContent = "Call " + call.serviceCallId;
  $("detail-state").replaceChildren(stateBadge(call.state), call.statusReason ? " " + call.statusReason : "");
  const request = call.request || {};
  const method = request.httpMethod && request.httpMethod !== "HTTP_METHOD_UNSPECIFIED" ? request.httpMethod : "POST";
  const fields = $("detail-fields");
  fields.replaceChildren();
  field(fields, "Request", method + " " + (request.url || ""));
  field(fields, "Tags", (call.tags || []).join(", ") || "none");
  field(fields, "Due", timeCell(parseTime(call.scheduleTime), { millis: true }));
  field(fields, "Created", timeCell(parseTime(call.createTime), { millis: true }));
  field(fields, "Completed", call.completeTime ? timeCell(parseTime(call.completeTime), { millis: true }) : null);
  const policy = call.retryPolicy || {};
  field(fields, "Attempts", String(call.attemptCount ?? 0) + (policy.maxAttempts ? " of at most " + policy.maxAttempts : ""));
  field(fields, "Idempotency key", call.idempotencyKey || null);
  show($("cancel-call"), call.state === "SCHEDULED");

  const created = parseTime(call.createTime);
  const items = timelineEvents(call).map((event) => {
    const offset = created ? "+" + formatDuration(event.time - created) : "";
    const item = el(
      "li",
      {
        className:
          "event event-" + event.kind +
          (event.extra.outcome ? " outcome-" + event.extra.outcome : "") +
          (event.kind === "complete" ? " state-" + call.state : ""),
        "data-kind": event.kind,
        "data-attempt": event.extra.attempt,
        "data-outcome": event.extra.outcome,
      },
      el("div", { className: "when" }, timeCell(event.time, { millis: true }), el("span", { className: "offset" }, offset)),
      el("div", { className: "what" }, el("strong", {}, event.title), ...event.details.map((d) => el("span", { className: "detail-item" }, d))),
    );
    if (event.extra.snippet) {
      item.querySelector(".what").append(el("pre", { className: "snippet", "aria-label": "Response body (first bytes)" }, event.extra.snippet));
    }
    return item;
  });
  $("timeline").replaceChildren(...items);
}

// ---- rendering: mesh health -------------------------------------------------------------

function seconds(samples) {
  const values = samples.map((s) => s.value).filter(Number.isFinite);
  if (!values.length) return "no data yet";
  return formatDuration(Math.max(...values) * 1000);
}

function perSecond(value) {
  return (value < 10 ? value.toFixed(2) : value.toFixed(0)) + "/s";
}

function byLabel(samples, label, format) {
  const usable = samples.filter((s) => Number.isFinite(s.value));
  if (!usable.length) return "no data yet";
  const total = usable.reduce((sum, s) => sum + s.value, 0);
  const parts = usable
    .map((s) => (s.labels[label] || "all") + " " + format(s.value))
    .sort();
  return usable.length === 1 && !usable[0].labels[label] ? format(total) : format(total) + " (" + parts.join(", ") + ")";
}

function total(samples, format) {
  const usable = samples.filter((s) => Number.isFinite(s.value));
  return usable.length ? format(usable.reduce((sum, s) => sum + s.value, 0)) : "no data yet";
}

async function refreshHealth() {
  const names = Object.keys(METRICS);
  const answers = await Promise.all(names.map((name) => prometheusQuery(METRICS[name])));
  const got = Object.fromEntries(names.map((name, i) => [name, answers[i]]));
  return got;
}

function renderHealth(result) {
  const status = $("health-status");
  const figures = $("health-figures");
  if (result instanceof Error) {
    status.textContent = result.message;
    status.dataset.status = "unavailable";
    show(figures, false);
    return;
  }
  status.dataset.status = "ok";
  status.textContent = "From Prometheus, updated " + formatTime(new Date()) + ".";
  $("lateness-p50").textContent = seconds(result.p50);
  $("lateness-p99").textContent = seconds(result.p99);
  $("submitted-rate").textContent = total(result.submitted, perSecond);
  $("finished-rate").textContent = byLabel(result.finished, "outcome", perSecond);
  $("consumer-lag").textContent = byLabel(result.lag, "topic", (v) => Math.round(v) + " messages");
  show(figures, true);
}

// ---- refreshing -------------------------------------------------------------------------

function banner(message) {
  // Set only when it changes: an alert region re-announces text that is written again.
  if ($("banner").textContent !== (message || "")) $("banner").textContent = message || "";
  show($("banner"), Boolean(message));
}

async function loadCounts(api, filter) {
  const base = { ...filter, states: [] };
  const pages = await Promise.all(STATES.map((state) => api.list({ ...base, states: [state] }, COUNT_CAP, "")));
  return Object.fromEntries(
    STATES.map((state, i) => [state, { n: (pages[i].serviceCalls || []).length, more: Boolean(pages[i].nextPageToken) }]),
  );
}

async function refreshOnce() {
  const api = view.api;
  const version = view.version;
  const { token, filter: pageFilter } = view.pages[view.pages.length - 1];
  const filter = pageFilter || resolveFilter(view.applied);
  const problem = filterProblem(filter);
  $("filter-error").textContent = problem || "";
  show($("filter-error"), Boolean(problem));
  const pageSize = Number($("page-size").value);
  const [page, counts, detail, health] = await Promise.allSettled([
    problem ? Promise.resolve(null) : api.list(filter, pageSize, token),
    problem ? Promise.resolve(null) : loadCounts(api, filter),
    view.detailId ? api.get(view.detailId) : Promise.resolve(null),
    refreshHealth(),
  ]);
  if (api !== view.api) return; // signed out meanwhile
  const failures = [page, counts, detail].filter((r) => r.status === "rejected").map((r) => r.reason);
  const auth = failures.find((e) => e instanceof ApiError && e.kind === "auth");
  if (auth) {
    signOut("Your API key is no longer accepted (revoked?). Sign in again.");
    return;
  }
  if (version === view.version) {
    if (page.status === "fulfilled" && page.value) {
      view.shownFilter = filter;
      renderList(page.value);
    }
    if (counts.status === "fulfilled" && counts.value) renderCounts(counts.value);
    const invalid = failures.find((e) => e instanceof ApiError && e.kind === "invalid");
    if (invalid) {
      $("filter-error").textContent = "The filter was refused: " + invalid.message;
      show($("filter-error"), true);
    }
  }
  if (detail.status === "fulfilled" && detail.value && detail.value.serviceCallId === view.detailId) {
    renderDetail(detail.value);
  } else if (detail.status === "rejected" && detail.reason.kind === "not-found") {
    $("detail-message").textContent = "This call no longer exists for this tenant.";
    show($("detail-message"), true);
  }
  renderHealth(health.status === "fulfilled" ? health.value : health.reason);
  const down = failures.find((e) => !(e instanceof ApiError) || e.kind === "network" || e.kind === "unavailable" || e.kind === "other");
  if (down) {
    banner(down.message + " Retrying every " + POLL_MS / 1000 + " s" + (view.lastSuccess ? "; showing data from " + formatTime(view.lastSuccess) + "." : "."));
    $("freshness").textContent = "Update failed";
    $("freshness").dataset.status = "failed";
  } else {
    banner("");
    view.lastSuccess = new Date();
    $("freshness").textContent = "Updated " + formatTime(view.lastSuccess) + " · every " + POLL_MS / 1000 + " s";
    $("freshness").dataset.status = "ok";
  }
}

/** Refresh now; one refresh at a time, and the next one POLL_MS after the last ends. */
async function refresh() {
  if (!view.api) return;
  if (view.running) {
    view.again = true;
    return;
  }
  clearTimeout(view.timer);
  view.running = true;
  try {
    await refreshOnce();
  } catch (error) {
    // A bug in rendering must not stop the polling; say so where a person sees it.
    banner("The dashboard failed to show the latest data: " + error.message);
    console.error(error);
  } finally {
    view.running = false;
  }
  if (!view.api) return;
  if (view.again) {
    view.again = false;
    refresh();
  } else {
    view.timer = setTimeout(refresh, POLL_MS);
  }
}

/** The list now answers another question: until its first page comes, the page on screen
 * is an answer to the old one, and its next-page token must not be followed. */
function turnPage(pages) {
  view.version += 1;
  view.pages = pages;
  view.nextPageToken = "";
  $("next-page").disabled = true;
  $("prev-page").disabled = true;
  refresh();
}

function applyFilters() {
  view.applied = formFilter();
  turnPage([{ token: "", filter: null }]);
}

function toggleBetween() {
  const between = $("filter-created").value === "between";
  show($("between-from"), between);
  show($("between-to"), between);
}

// ---- detail actions ---------------------------------------------------------------------

function openDetail(id) {
  view.detailId = id;
  view.detailState = null;
  show($("detail"), true);
  document.body.classList.add("with-detail");
  $("detail-title").textContent = "Call " + id;
  $("detail-state").replaceChildren("Loading…");
  $("detail-fields").replaceChildren();
  $("timeline").replaceChildren();
  show($("detail-message"), false);
  show($("cancel-call"), false);
  for (const row of $("call-rows").rows) row.classList.toggle("selected", row.dataset.callId === id);
  $("detail-title").focus();
  refresh();
}

function closeDetail() {
  const id = view.detailId;
  view.detailId = null;
  show($("detail"), false);
  document.body.classList.remove("with-detail");
  for (const row of $("call-rows").rows) row.classList.remove("selected");
  const opener = id && $("call-rows").querySelector('tr[data-call-id="' + CSS.escape(id) + '"] button');
  if (opener) opener.focus();
}

async function cancelOpenCall() {
  const id = view.detailId;
  const button = $("cancel-call");
  button.disabled = true;
  const message = $("detail-message");
  try {
    const call = await view.api.cancel(id, "canceled from the dashboard");
    message.textContent = "Canceled.";
    if (call && call.serviceCallId === view.detailId) renderDetail(call);
  } catch (error) {
    message.textContent =
      error.kind === "invalid"
        ? "Not canceled: " + error.message + " (a call can be canceled only until it is handed to an executor)."
        : "Not canceled: " + error.message;
  } finally {
    button.disabled = false;
    show(message, true);
    refresh();
  }
}

// ---- signing in and out -----------------------------------------------------------------

function enterApp(session) {
  view.api = new Api(session.tenant, session.key);
  view.applied = formFilter();
  view.pages = [{ token: "", filter: null }];
  view.lastSuccess = null;
  $("who-tenant").textContent = session.tenant;
  show($("who"), true);
  show($("sign-out"), true);
  show($("sign-in"), false);
  show($("app"), true);
  refresh();
}

function signOut(reason) {
  clearTimeout(view.timer);
  view.api = null;
  view.detailId = null;
  sessionStorage.removeItem(SESSION_KEY);
  show($("app"), false);
  show($("who"), false);
  show($("sign-out"), false);
  show($("detail"), false);
  document.body.classList.remove("with-detail");
  $("call-rows").replaceChildren();
  $("api-key").value = "";
  $("freshness").textContent = "";
  banner("");
  show($("sign-in"), true);
  const error = $("sign-in-error");
  error.textContent = reason || "";
  show(error, Boolean(reason));
  $(reason ? "api-key" : "tenant-id").focus();
}

async function signIn(event) {
  event.preventDefault();
  const tenant = $("tenant-id").value.trim();
  const key = $("api-key").value.trim();
  const error = $("sign-in-error");
  const fail = (message, focus) => {
    error.textContent = message;
    show(error, true);
    $(focus).setAttribute("aria-invalid", "true");
    $(focus).focus();
  };
  $("tenant-id").removeAttribute("aria-invalid");
  $("api-key").removeAttribute("aria-invalid");
  if (!TENANT_PATTERN.test(tenant)) {
    fail("Enter a tenant id: lowercase letters, digits and dashes, starting with a letter or digit.", "tenant-id");
    return;
  }
  if (!key) {
    fail("Enter an API key.", "api-key");
    return;
  }
  const button = $("sign-in-button");
  button.disabled = true;
  button.textContent = "Signing in…";
  show(error, false);
  try {
    // The cheapest authenticated read: the key must be valid AND be this tenant's.
    await new Api(tenant, key).list({ states: [], tags: [] }, 1, "");
    const session = { tenant, key };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    enterApp(session);
  } catch (e) {
    if (e instanceof ApiError && e.kind === "auth") fail(e.message, "api-key");
    else if (e instanceof ApiError && e.kind === "not-found") {
      fail("That API key does not belong to tenant “" + tenant + "” (or there is no such tenant).", "api-key");
    } else fail(e.message, "tenant-id");
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

// ---- start ------------------------------------------------------------------------------

function start() {
  const stateSelect = $("filter-state");
  for (const state of STATES) stateSelect.append(el("option", { value: state }, STATE_LABELS[state]));
  buildCounts();
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  for (const id of ["filter-state", "filter-created", "page-size", "filter-from", "filter-to"]) {
    $(id).addEventListener("change", () => {
      toggleBetween();
      applyFilters();
    });
  }
  $("filter-tags").addEventListener("change", applyFilters);
  $("clear-filters").addEventListener("click", () => {
    $("filters").reset();
    toggleBetween();
    applyFilters();
  });
  $("next-page").addEventListener("click", () => {
    if (!view.nextPageToken) return;
    turnPage([...view.pages, { token: view.nextPageToken, filter: view.shownFilter }]);
  });
  $("prev-page").addEventListener("click", () => {
    if (view.pages.length <= 1) return;
    turnPage(view.pages.slice(0, -1));
  });
  $("close-detail").addEventListener("click", closeDetail);
  $("cancel-call").addEventListener("click", cancelOpenCall);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && view.detailId) closeDetail();
  });
  const session = loadSession();
  if (session) enterApp(session);
  else $("tenant-id").focus();
}

start();
