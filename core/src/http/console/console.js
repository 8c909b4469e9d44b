// The zmanager console: a client of the node's /v1 routes (docs/http.md,
// docs/http-operate.md). Every value goes into the page as text (el()
// below), never as HTML. Views are chosen by the address's # part.
"use strict";

const TOKEN_KEY = "zmanager-token";
const state = { timers: [], tail: null, view: null };

// ---------- helpers ----------

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function fail(message) {
  const box = document.getElementById("error");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = message;
  box.hidden = false;
}

// An error answer: its JSON is {"error": {"code", "name", "message"}}
// (docs/http.md, "Errors").
class ApiFailure extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    const said = error.message || (body && body.message) || `HTTP ${status}`;
    super(status === 401 ? `${said} (paste a token above: zmanager keys token NAME)` : said);
    this.status = status;
    this.code = error.name;
  }
}

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options) {
  const response = await fetch(path, {
    ...(options || {}),
    headers: { Accept: "application/json", ...headers(), ...((options && options.headers) || {}) },
  });
  let body = null;
  const text = await response.text();
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { message: text }; }
  if (response.status === 401) document.getElementById("token-form").hidden = false;
  if (!response.ok && response.status !== 202) throw new ApiFailure(response.status, body);
  return body;
}

const enc = encodeURIComponent;

function micros(us) {
  if (us === null || us === undefined) return "–";
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 2 : 1)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}

function when(us) {
  if (!us) return "–";
  return new Date(us / 1000).toISOString().replace("T", " ").replace("Z", "");
}

function ago(us, now) {
  if (!us) return "–";
  const s = Math.max(0, (now - us) / 1e6);
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function rate(x) {
  return x >= 100 ? String(Math.round(x)) : x.toFixed(1);
}

function every(ms, fn) {
  const run = async () => {
    try { await fn(); fail(null); } catch (e) { fail(e.message); }
  };
  run();
  state.timers.push(setInterval(run, ms));
}

function table(head, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function tile(label, value, id) {
  return el("div", { class: "tile" }, el("div", { class: "label" }, label),
    el("div", { class: "value", id }, value));
}

function json(value) {
  return el("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

// ---------- the live chart ----------

// A line chart of `series` ([{name, values, class}]) over `samples`, in an
// SVG element; its data-samples and data-last attributes say what it shows.
function chart(id, title, samples, series, format) {
  const width = 600, height = 140, pad = 28;
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", id, role: "img" });
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  const top = Math.max(1, ...all);
  const x = (i) => pad + (i * (width - pad - 4)) / Math.max(1, samples.length - 1);
  const y = (v) => height - pad + 8 - (v / top) * (height - pad - 4);
  box.append(svg("line", { x1: pad, y1: y(0), x2: width - 4, y2: y(0), class: "axis" }));
  const label = svg("text", { x: 2, y: 12, class: "tick" });
  label.textContent = format(top);
  box.append(label);
  for (const s of series) {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    });
    box.append(svg("path", { d: d || "M0,0", class: `line ${s.class}` }));
    // Points too, so a second with a value between empty ones shows.
    s.values.forEach((v, i) => {
      if (v !== null) box.append(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 1.8, class: `dot ${s.class}` }));
    });
  }
  const last = series[0].values.length ? series[0].values[series[0].values.length - 1] : null;
  box.setAttribute("data-samples", samples.length);
  box.setAttribute("data-last", last === null ? "" : last);
  const legend = el("div", { class: "legend" }, series.map((s) =>
    el("span", { class: `key ${s.class}` }, `${s.name}: ${last === null ? "–" : format(s.values[s.values.length - 1] ?? 0)}`)));
  return el("figure", { class: "chart-box" }, el("figcaption", {}, title), box, legend);
}

// ---------- views ----------

function overview() {
  const charts = el("section", { class: "charts" });
  const holding = el("section", { class: "tiles" });
  const workers = el("section", {}, el("h2", {}, "Workers"), el("div", { id: "workers" }));
  const services = el("section", {}, el("h2", {}, "Services"), el("div", { id: "services" }));
  const journal = el("section", {}, el("h2", {}, "Journal"), el("div", { id: "journal" }));
  show(el("h1", {}, "Overview"), charts, holding, workers, services, journal);
  every(1000, async () => {
    const o = await api("/v1/overview");
    const h = o.history;
    const throughput = chart("chart-throughput", "Requests per second (last 10 min)", h, [
      { name: "ended", class: "ended", values: h.map((s) => s.ended) },
      { name: "accepted", class: "accepted", values: h.map((s) => s.accepted) },
      { name: "failed", class: "failed", values: h.map((s) => s.failed) },
    ], rate);
    throughput.querySelector("svg").setAttribute("data-ended-total", h.length ? h[h.length - 1].ended_total : 0);
    charts.replaceChildren(throughput,
      chart("chart-latency", "Latency, accepted to ended", h, [
        { name: "p99", class: "p99", values: h.map((s) => s.p99_us) },
        { name: "p50", class: "p50", values: h.map((s) => s.p50_us) },
      ], micros));
    const k = o.holding;
    holding.replaceChildren(
      tile("In flight", k.in_flight, "in-flight"), tile("Pending", k.pending, "pending"),
      tile("At @ASYNC", k.at_async, "at-async"), tile("At services", k.at_services, "at-services"),
      tile("Delayed (retry)", k.delayed, "delayed"), tile("Accepted", o.counters.accepted, "accepted"),
      tile("Results", o.counters.results, "results"), tile("Redelivered", o.counters.redelivered, "redelivered"),
      tile("Dead-lettered", o.counters.dead_lettered, "dead-lettered"));
    workers.lastChild.replaceChildren(
      table(["pid", "in flight", "credits used", "up for"], o.workers.map((w) =>
        el("tr", { "data-pid": w.pid }, el("td", {}, w.pid), el("td", {}, w.in_flight),
          el("td", {}, `${w.in_flight} / ${w.credits}`), el("td", {}, ago(w.ready_us, o.now_us))))),
      el("p", { class: "muted" }, `${o.workers.length} connected, ${o.worker_restarts} restarted by the supervisor`));
    const j = o.journal;
    journal.lastChild.replaceChildren(j
      ? el("p", {}, `size ${bytes(j.bytes)}; ${j.commits ?? 0} commits, p50 ${micros(j.commit && j.commit.p50_us)}, p99 ${micros(j.commit && j.commit.p99_us)}`,
        j.failing ? el("strong", { class: "bad" }, ` — failing: ${j.failing}`) : "")
      : el("p", { class: "muted" }, "off ([journal] enabled = false)"));
  });
  every(5000, async () => {
    const s = await api("/v1/services");
    const status = (x) => el("td", { class: x.status === "up" ? "good" : "bad" }, x.status);
    const registered = (s.services || []).map((x) => el("tr", { "data-service": x.id },
      el("td", {}, x.id), status(x), el("td", {}, (x.flows || []).join(", ")),
      el("td", {}, (x.topics || []).join(", ")), el("td", {}, `${x.last_seen_ms} ms ago`)));
    const steps = (s.steps || []).map((x) => el("tr", { "data-service": x.service },
      el("td", {}, x.service), status(x), el("td", {}, x.backlog), el("td", {}, x.sent),
      el("td", {}, x.instances), el("td", {}, x.oldest_ms === null ? "–" : `${x.oldest_ms} ms`),
      el("td", { class: "bad" }, x.last_error || "")));
    services.lastChild.replaceChildren(
      registered.length
        ? table(["service", "status", "flows", "topics", "last heard"], registered, { id: "registered" })
        : el("p", { class: "muted" }, "no service registered"),
      steps.length
        ? [el("h3", {}, "Taking steps"), table(["service", "status", "backlog", "sent", "instances", "oldest waiting", "last error"], steps, { id: "step-services" })]
        : "");
  });
}

function flows() {
  const list = el("div", { id: "flows" });
  const version = el("span", { class: "badge", id: "catalog-version" });
  show(el("h1", {}, "Flows", version), list);
  let before = null;
  every(2000, async () => {
    const answer = await api("/v1/flows");
    version.textContent = `catalog version ${answer.version}`;
    const at = performance.now();
    const counts = new Map();
    list.replaceChildren(...answer.flows.map((f) => {
      const ended = Object.entries(f.ended || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "none yet";
      const steps = f.steps.map((s, i) => {
        const id = `${f.name}/${s.position}`;
        counts.set(id, s.entered);
        const previous = before && before.counts.get(id);
        const perSecond = previous === undefined || !before ? null : ((s.entered - previous) * 1000) / (at - before.at);
        const badge = { publish: "@PUBLISH", async: "@ASYNC", service: "service", action: "action", done: "done", entry: "entry" }[s.role] || s.role;
        return [i ? el("span", { class: "arrow" }, "→") : "",
          el("div", { class: `step ${s.role}`, "data-key": s.key },
            el("div", { class: "badge" }, badge),
            el("div", { class: "key" }, s.key),
            s.by ? el("div", { class: "by" }, s.by) : "",
            el("div", { class: "figures" }, `${s.entered} in`, perSecond === null ? "" : ` · ${rate(perSecond)}/s`,
              s.failed ? el("span", { class: "bad" }, ` · ${s.failed} failed`) : ""))];
      });
      return el("section", { class: "flow", "data-flow": f.name },
        el("h2", {}, f.name, f.ordered ? el("span", { class: "badge" }, "ordered") : ""),
        el("div", { class: "graph" }, steps),
        el("p", { class: "muted" }, `ended: ${ended}; latency p50 ${micros(f.p50_us)}, p99 ${micros(f.p99_us)} — ${f.file}`));
    }));
    before = { at, counts };
  });
}

function requestRow(r) {
  const link = `#/requests/${enc(r.service)}/${enc(r.id)}`;
  return el("tr", { "data-id": r.id },
    el("td", {}, el("a", { href: link }, `${r.service} / ${r.id}`)), el("td", {}, r.flow),
    el("td", { class: r.state === "dead_lettered" || r.error ? "bad" : "" }, r.state), el("td", {}, r.attempts),
    el("td", {}, when(r.accepted_us)), el("td", {}, r.ended_us && r.accepted_us ? micros(r.ended_us - r.accepted_us) : "–"),
    el("td", {}, r.error || ""));
}

function requests(params) {
  const failed = params.get("failed") === "true";
  const service = el("input", { name: "service", placeholder: "service", value: params.get("service") || "" });
  const id = el("input", { name: "id", placeholder: "id" });
  const search = el("form", { id: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/requests/${enc(service.value.trim())}/${enc(id.value.trim())}`;
  } }, service, id, el("button", { type: "submit" }, "Show its journey"));
  const body = el("tbody", {});
  const more = el("button", { type: "button" }, "Older");
  let next = null;
  const load = async () => {
    const page = await api(`/v1/requests?limit=50${failed ? "&failed=true" : ""}${next ? `&before=${next}` : ""}`);
    body.append(...page.requests.map(requestRow));
    next = page.next;
    more.hidden = next === null;
  };
  more.addEventListener("click", () => load().catch((e) => fail(e.message)));
  show(el("h1", {}, "Requests"), search,
    el("p", {}, failed ? el("a", { href: "#/requests" }, "all requests") : el("a", { href: "#/requests?failed=true" }, "only the failed ones")),
    el("table", { id: "recent" }, el("thead", {}, el("tr", {},
      ["request", "flow", "state", "attempts", "accepted", "took", "error"].map((h) => el("th", {}, h)))), body), more);
  load().then(() => fail(null), (e) => fail(e.message));
}

async function journey(service, id) {
  show(el("h1", {}, "Journey of ", el("code", {}, `${service} / ${id}`)), el("p", { class: "muted" }, "Loading…"));
  let now = null, steps = null, why = null;
  try { now = await api(`/v1/requests/${enc(service)}/${enc(id)}`); } catch (e) { why = e.message; }
  try { steps = (await api(`/v1/requests/${enc(service)}/${enc(id)}/journey`)).steps; } catch (e) { why = why || e.message; }
  if (!steps) { show(el("h1", {}, "Journey"), el("p", { class: "bad" }, why)); return; }
  const start = steps.length ? steps[0].at_us : 0;
  const items = steps.map((s, i) => {
    const took = i ? s.at_us - steps[i - 1].at_us : 0;
    const detail = [];
    if (s.event === "accepted") detail.push(`into ${s.flow}`);
    if (s.event === "dispatched") detail.push(`attempt ${s.attempt} on worker ${s.worker}`);
    if (s.redelivery) detail.push(el("span", { class: "badge bad" }, "redelivery: the attempt before was lost or failed"));
    if (s.step !== undefined) detail.push(`at step ${s.step}${s.key ? ` (${s.key})` : ""}`);
    if (s.status) detail.push(el("span", { class: s.status === "ok" ? "good" : "bad" }, s.status));
    if (s.error) detail.push(el("span", { class: "bad" }, `${s.error.name}: ${s.error.message}`));
    if (s.reason) detail.push(el("span", { class: "bad" }, s.reason));
    const more = [];
    if (s.envelope) more.push(el("h4", {}, "envelope"), json(s.envelope));
    if (s.payload !== undefined) more.push(el("h4", {}, "payload"), json(s.payload));
    return el("li", { class: `step ${s.event}`, "data-event": s.event, "data-attempt": s.attempt ?? "" },
      el("div", { class: "when" }, `+${micros(s.at_us - start)}`, el("small", {}, i ? ` (${micros(took)} after)` : ` ${when(s.at_us)}`)),
      el("div", { class: "what" }, el("strong", {}, s.event), " ", detail.map((d) => [d, " "])),
      more.length ? el("details", {}, el("summary", {}, "envelope and payload"), more) : "");
  });
  const total = steps.length > 1 ? steps[steps.length - 1].at_us - start : 0;
  show(el("h1", {}, "Journey of ", el("code", {}, `${service} / ${id}`)),
    el("p", {}, `now: ${now ? (now.state || now.status || "finished") : why}; ${steps.length} events over ${micros(total)}`),
    el("ol", { id: "journey", class: "timeline" }, items),
    now && now.payload !== undefined ? [el("h3", {}, "result"), json(now)] : "");
}

async function replay(seq) {
  return api(`/v1/dead-letters/${seq}/replay?wait=30s`, { method: "POST" });
}

function deadLetters() {
  const body = el("tbody", {});
  const more = el("button", { type: "button" }, "Older");
  const progress = el("p", { id: "replay-progress", class: "muted" });
  let next = null;
  const row = (d) => el("tr", { "data-seq": d.seq },
    el("td", {}, el("a", { href: `#/dead-letters/${d.seq}` }, `#${d.seq}`)), el("td", {}, d.flow),
    el("td", {}, el("a", { href: `#/requests/${enc(d.service)}/${enc(d.id)}` }, `${d.service} / ${d.id}`)),
    el("td", {}, d.attempts), el("td", { class: "bad" }, (d.errors || []).slice(-1)[0] || ""),
    el("td", { class: "state" }, d.superseded_by ? `replayed, dead again as #${d.superseded_by}` : d.replayed_us ? `replayed ${when(d.replayed_us)}` : "waiting"),
    el("td", {}, d.replayed_us ? "" : el("button", { type: "button", class: "replay", onclick: async (e) => {
      if (!confirm(`Replay dead letter #${d.seq} (${d.flow}, ${d.service} / ${d.id})? It runs again from the step it died at.`)) return;
      e.target.disabled = true;
      try { const r = await replay(d.seq); progress.textContent = `#${d.seq}: ${r.outcome || r.status || "replayed"}`; fail(null); }
      catch (err) { fail(`#${d.seq}: ${err.message}`); }
      route();
    } }, "Replay")));
  const load = async () => {
    const page = await api(`/v1/dead-letters?limit=50${next ? `&before=${next}` : ""}`);
    body.append(...page.dead_letters.map(row));
    next = page.next;
    more.hidden = next === null;
    if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no dead letters")));
  };
  const all = el("button", { type: "button", id: "replay-all", onclick: async () => {
    if (!confirm("Replay every dead letter not replayed yet? Each runs again from the step it died at.")) return;
    let cursor = null, done = 0, failed = 0;
    do {
      const page = await api(`/v1/dead-letters?limit=100${cursor ? `&before=${cursor}` : ""}`);
      for (const d of page.dead_letters.filter((x) => !x.replayed_us)) {
        try { await replay(d.seq); done++; } catch (_) { failed++; }
        progress.textContent = `replayed ${done}, ${failed} refused or failed`;
      }
      cursor = page.next;
    } while (cursor !== null);
    route();
  } }, "Replay all");
  more.addEventListener("click", () => load().catch((e) => fail(e.message)));
  show(el("h1", {}, "Dead letters"), el("p", {}, all), progress,
    el("table", { id: "dead-letters" }, el("thead", {}, el("tr", {},
      ["letter", "flow", "request", "attempts", "last error", "state", ""].map((h) => el("th", {}, h)))), body), more);
  load().then(() => fail(null), (e) => fail(e.message));
}

async function deadLetter(seq) {
  const d = await api(`/v1/dead-letters/${seq}`);
  show(el("h1", {}, `Dead letter #${d.seq}`),
    el("p", {}, `${d.flow}, `, el("a", { href: `#/requests/${enc(d.service)}/${enc(d.id)}` }, `${d.service} / ${d.id}`),
      `, died at step ${d.step} (${d.key}) after ${d.attempts} attempts, ${when(d.at_us)}`),
    el("h2", {}, "Each attempt's reason"), el("ol", { id: "attempts" }, (d.errors || []).map((e) => el("li", {}, e))),
    el("h2", {}, "Payload"), json(d.payload),
    el("h2", {}, "Replays"), d.replays.length ? table(["at", "outcome", "dead again as"], d.replays.map((r) =>
      el("tr", {}, el("td", {}, when(r.at_us)), el("td", {}, r.outcome), el("td", {}, r.dead_letter ?? "")))) : el("p", { class: "muted" }, "none"),
    el("p", {}, el("a", { href: "#/dead-letters" }, "all dead letters")));
}

function tail(params) {
  const prefix = el("input", { name: "prefix", placeholder: "topic prefix (empty: everything you may read)", value: params.get("prefix") || "" });
  const list = el("ol", { id: "tail", class: "tail", reversed: true });
  const status = el("span", { class: "muted", id: "tail-status" }, "stopped");
  const stop = () => { if (state.tail) { state.tail.abort(); state.tail = null; } status.textContent = "stopped"; };
  const start = async (e) => {
    if (e) e.preventDefault();
    stop();
    const controller = new AbortController();
    state.tail = controller;
    status.textContent = "connecting…";
    try {
      const response = await fetch(`/v1/topics?prefix=${enc(prefix.value)}`, { headers: { Accept: "text/event-stream", ...headers() }, signal: controller.signal });
      if (!response.ok) throw new ApiFailure(response.status, await response.json().catch(() => null));
      status.textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (!data) continue;
          const m = JSON.parse(data);
          const item = event === "lagged"
            ? el("li", { class: "bad" }, `lost ${m.lost} publications: this page read too slowly`)
            : el("li", { "data-topic": m.topic }, el("code", {}, m.topic), " ", `${m.service} / ${m.id} ${m.status || ""} `,
              el("span", { class: "muted" }, JSON.stringify(m.payload)));
          list.prepend(item);
          while (list.children.length > 200) list.lastChild.remove();
        }
      }
      status.textContent = "ended";
    } catch (err) {
      if (err.name !== "AbortError") { status.textContent = "failed"; fail(err.message); }
    }
  };
  show(el("h1", {}, "Live tail"),
    el("form", { id: "tail-form", onsubmit: start }, prefix, el("button", { type: "submit" }, "Start"),
      el("button", { type: "button", onclick: stop }, "Stop"), " ", status),
    el("p", { class: "muted" }, "The latest 200 publications, newest first, from the moment you start."), list);
  if (params.get("prefix") !== null) start();
}

// ---------- routing ----------

function route() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.tail) { state.tail.abort(); state.tail = null; }
  fail(null);
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const view = parts[0] || "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.view === view);
  const guard = (p) => Promise.resolve(p).catch((e) => { show(el("h1", {}, "Error"), el("p", { class: "bad" }, e.message)); });
  if (view === "overview") overview();
  else if (view === "flows") flows();
  else if (view === "requests" && parts.length === 3) guard(journey(parts[1], parts[2]));
  else if (view === "requests") requests(params);
  else if (view === "dead-letters" && parts.length === 2) guard(deadLetter(parts[1]));
  else if (view === "dead-letters") deadLetters();
  else if (view === "tail") tail(params);
  else show(el("h1", {}, "No such page"), el("p", {}, el("a", { href: "#/" }, "Overview")));
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("token-form");
  form.hidden = !sessionStorage.getItem(TOKEN_KEY);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    route();
  });
  window.addEventListener("hashchange", route);
  route();
});
