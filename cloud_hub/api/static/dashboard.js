// The hub's dashboard: charts as inline SVG from the JSON API, a live feed over
// EventSource. No framework, no build step, nothing from another origin.
//
// Auth: a read API key typed into the form, kept in sessionStorage (this tab only) and
// sent as X-API-Key. The live stream is opened with the HttpOnly cookie that
// POST /v1/live/token sets (Path=/v1/live), renewed before it expires, so neither the
// key nor a token ever goes in a URL.

const KEY_STORE = "audience-hub.api-key";
const GENDERS = ["female", "male", "unknown"];
const AGE_BANDS = ["0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"];
const RANGES = {
  "1h": { span: 3600e3, bucket: "minute", step: 60e3, title: "Traffic by minute" },
  "24h": { span: 86400e3, bucket: "hour", step: 3600e3, title: "Traffic by hour" },
  "7d": { span: 7 * 86400e3, bucket: "day", step: 86400e3, title: "Traffic by day" },
  "30d": { span: 30 * 86400e3, bucket: "day", step: 86400e3, title: "Traffic by day" },
};
const FEED_MAX = 50;
const REPLAY_MS = 60e3; // the live feed starts with the last minute's events
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = {
  key: sessionStorage.getItem(KEY_STORE),
  source: null,
  lastId: null,
  tokenTimer: null,
  refreshTimer: null,
  devicesTimer: null,
  pollTimer: null,
  loading: null,
  names: new Map(),
  reload: false,
};

class AuthError extends Error {}

// --- API ---------------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "X-API-Key": state.key, Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 401) throw new AuthError("The hub does not know this API key.");
  if (response.status === 403) throw new AuthError("This API key's scope is too small (read is needed).");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch { /* not JSON */ }
    throw new Error(`${path.split("?")[0]}: ${response.status} ${detail}`);
  }
  return response.json();
}

function selectedCamera() {
  const value = $("camera").value;
  if (!value) return null;
  const [device_id, camera_id] = value.split("/");
  return { device_id, camera_id };
}

function timeRange() {
  const range = RANGES[$("range").value] || RANGES["24h"];
  // Whole buckets: end at the next bucket boundary (UTC), so the last bar is "now".
  const end = Math.ceil((Date.now() + 1) / range.step) * range.step;
  return { ...range, start: new Date(end - range.span), end: new Date(end) };
}

function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) q.append(name, v);
  }
  return q.toString();
}

// --- SVG helpers -----------------------------------------------------------------------------

function el(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function text(x, y, content, attrs = {}) {
  return el("text", { x, y, ...attrs }, [String(content)]);
}

function titled(node, title) {
  node.append(el("title", {}, [title]));
  return node;
}

function html(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
const pct = (n, total) => (total ? `${Math.round((100 * n) / total)}%` : "0%");
const niceMax = (n) => {
  if (n <= 5) return Math.max(n, 1);
  const p = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= n);
};

function bucketLabel(iso, bucket) {
  const d = new Date(iso);
  if (bucket === "day") return d.toLocaleDateString("en-GB", { day: "2-digit", month: "short", timeZone: "UTC" });
  return d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
}

// --- charts --------------------------------------------------------------------------------

function drawTraffic(stats, range) {
  const W = 760, H = 220, L = 36, R = 8, T = 12, B = 28;
  const buckets = stats.buckets;
  const max = niceMax(Math.max(0, ...buckets.map((b) => b.total)));
  const slot = (W - L - R) / Math.max(buckets.length, 1);
  const bar = Math.max(1, slot * 0.8);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": range.title });
  for (const v of [0, max / 2, max]) {
    svg.append(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(text(L - 4, y(v) + 4, fmt(Math.round(v)), { class: "axis", "text-anchor": "end" }));
  }
  const every = Math.ceil(buckets.length / 12);
  buckets.forEach((b, i) => {
    const x = L + i * slot + (slot - bar) / 2;
    const rect = el("rect", {
      x, y: y(b.total), width: bar, height: y(0) - y(b.total), class: "bar",
      "data-start": b.start, "data-value": b.total, "data-watchers": b.watchers,
    });
    const label = `${bucketLabel(b.start, stats.bucket)}: ${fmt(b.total)} passers-by, ` +
      `${fmt(b.watchers)} watchers (${fmt(b.gender.female)} female, ${fmt(b.gender.male)} male)`;
    svg.append(titled(rect, label));
    // Watchers are some of the passers-by: a darker bar over the foot of theirs.
    if (b.watchers) {
      svg.append(titled(el("rect", {
        x, y: y(b.watchers), width: bar, height: y(0) - y(b.watchers), class: "watchers",
        "data-start": b.start, "data-value": b.watchers,
      }), label));
    }
    if (i % every === 0) {
      svg.append(text(x + bar / 2, H - 10, bucketLabel(b.start, stats.bucket), { class: "axis", "text-anchor": "middle" }));
    }
  });
  $("traffic-title").textContent = range.title;
  $("traffic").replaceChildren(svg);
}

function drawGender(totals) {
  const total = GENDERS.reduce((s, g) => s + totals.gender[g], 0);
  const R = 70, r = 42, C = 90;
  const svg = el("svg", { viewBox: "0 0 180 180", role: "img", "aria-label": "Gender split" });
  let angle = -Math.PI / 2;
  const point = (a, radius) => `${C + radius * Math.cos(a)} ${C + radius * Math.sin(a)}`;
  if (!total) svg.append(el("circle", { cx: C, cy: C, r: (R + r) / 2, class: "empty", "stroke-width": R - r, fill: "none" }));
  for (const g of GENDERS) {
    const n = totals.gender[g];
    if (!n) continue;
    let shape;
    if (n === total) {
      shape = el("circle", { cx: C, cy: C, r: (R + r) / 2, fill: "none", "stroke-width": R - r, class: `stroke-${g}` });
    } else {
      const next = angle + (2 * Math.PI * n) / total;
      const large = next - angle > Math.PI ? 1 : 0;
      shape = el("path", {
        d: `M ${point(angle, R)} A ${R} ${R} 0 ${large} 1 ${point(next, R)} ` +
          `L ${point(next, r)} A ${r} ${r} 0 ${large} 0 ${point(angle, r)} Z`,
        class: `fill-${g}`,
      });
      angle = next;
    }
    svg.append(titled(shape, `${g}: ${n} (${pct(n, total)})`));
  }
  svg.append(text(C, C + 6, fmt(total), { class: "donut-total", "text-anchor": "middle" }));
  const legend = html("ul", { class: "legend" }, GENDERS.map((g) => html("li", { "data-gender": g }, [
    html("span", { class: `swatch fill-${g}` }),
    html("span", { class: "name" }, [g]),
    html("b", { class: "count" }, [String(totals.gender[g])]),
    html("span", { class: "pct" }, [pct(totals.gender[g], total)]),
  ])));
  $("gender").replaceChildren(svg, legend);
}

// The female share corrected for the models' known errors, with its 90% range, in
// words: what a reader should quote, beside the raw split above it.
function drawShares(shares) {
  const box = $("gender-share");
  const g = shares && shares.gender;
  if (!g) {
    box.replaceChildren("No watcher in this range carries a calibrated gender estimate, so no corrected share.");
    box.dataset.share = "";
    return;
  }
  const p = (x) => `${(100 * x).toFixed(0)}%`;
  const level = `${Math.round(100 * shares.level)}%`;
  const c = g.corrected, n = g.naive;
  box.dataset.share = c.share.toFixed(4);
  box.dataset.low = c.low.toFixed(4);
  box.dataset.high = c.high.toFixed(4);
  box.replaceChildren(
    html("b", { class: "share" }, [`Women: ${p(c.share)}`]),
    ` of watchers (${level} range `,
    html("span", { class: "range" }, [`${p(c.low)} to ${p(c.high)}`]),
    `), corrected for the errors the models are known to make (measured on ${g.reference}). ` +
      `Uncorrected: ${p(n.share)} (${p(n.low)} to ${p(n.high)}), from ${fmt(g.watchers)} watchers. ` +
      "The range covers the sample size and the correction's own uncertainty, not faces unlike the reference's.",
  );
}

function drawAge(totals) {
  const W = 380, H = 200, L = 8, T = 18, B = 30;
  const max = niceMax(Math.max(0, ...AGE_BANDS.map((a) => totals.age[a])));
  const slot = (W - 2 * L) / AGE_BANDS.length;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Age histogram" });
  svg.append(el("line", { x1: L, x2: W - L, y1: y(0), y2: y(0), class: "grid" }));
  AGE_BANDS.forEach((band, i) => {
    const n = totals.age[band];
    const x = L + i * slot + slot * 0.1;
    svg.append(titled(el("rect", {
      x, y: y(n), width: slot * 0.8, height: y(0) - y(n),
      class: band === "unknown" ? "bar unknown" : "bar", "data-band": band, "data-value": n,
    }), `${band}: ${n}`));
    svg.append(text(x + slot * 0.4, y(n) - 4, n, { class: "value", "text-anchor": "middle" }));
    svg.append(text(x + slot * 0.4, H - 12, band === "unknown" ? "?" : band, { class: "axis", "text-anchor": "middle" }));
  });
  $("age").replaceChildren(svg);
}

function cameraKey(key) {
  return `${key.device_id}/${key.camera_id}`;
}

function cameraName(id, names = state.names, max = 40) {
  const name = names.get(id) || id;
  return name.length > max ? `${name.slice(0, max - 1)}…` : name;
}

function drawCameras(groups, names, selected) {
  const rows = groups.map((g) => ({ id: cameraKey(g.key), total: g.total, watchers: g.watchers, returns: g.returns }))
    .sort((a, b) => b.total - a.total || a.id.localeCompare(b.id));
  if (!rows.length) {
    $("cameras").replaceChildren(html("p", { class: "muted" }, ["No camera counted anyone in this range."]));
    return;
  }
  const W = 380, row = 26, LBL = 130, NUM = 50;
  const H = rows.length * row + 4;
  const max = Math.max(1, ...rows.map((r) => r.total));
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "People per camera" });
  rows.forEach((r, i) => {
    const g = el("g", {
      class: r.id === selected ? "camera-row selected" : "camera-row",
      "data-camera": r.id, "data-value": r.total, transform: `translate(0 ${i * row + 2})`,
    });
    const width = ((W - LBL - NUM) * r.total) / max;
    g.append(text(0, 16, cameraName(r.id, names, 20), { class: "label" }));
    g.append(titled(el("rect", { x: LBL, y: 3, width: Math.max(width, 1), height: row - 8, class: "bar" }),
      `${names.get(r.id) || r.id}: ${r.total} passers-by, ${r.watchers} watchers, ${r.returns} returns`));
    g.append(text(LBL + width + 6, 16, fmt(r.total), { class: "value" }));
    g.addEventListener("click", () => {
      $("camera").value = r.id === selected ? "" : r.id;
      $("camera").dispatchEvent(new Event("change"));
    });
    svg.append(g);
  });
  $("cameras").replaceChildren(svg);
}

const seconds = (s) => (s === null || s === undefined ? "–" : `${s.toFixed(1)} s`);

function drawKpis(totals) {
  $("kpi-total").textContent = fmt(totals.passers_by);
  $("kpi-watchers").textContent = fmt(totals.watchers);
  $("kpi-watcher-rate").textContent =
    totals.watcher_rate === null ? "–" : `${(100 * totals.watcher_rate).toFixed(1)}%`;
  $("kpi-attention").textContent = seconds(totals.mean_attention_s);
  $("kpi-dwell").textContent = seconds(totals.mean_dwell_s);
  $("kpi-visitors").textContent = fmt(totals.visitors);
  $("kpi-returns").textContent = fmt(totals.returns);
  $("kpi-age").textContent = totals.avg_age === null ? "–" : totals.avg_age.toFixed(1);
  $("kpi-inout").textContent = `${fmt(totals.direction.in)} / ${fmt(totals.direction.out)}`;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function drawDevices(devices) {
  const rows = devices.map((d) => {
    const cams = d.cameras.map((c) => `${c.camera_id} ${c.state}${c.fps ? ` ${c.fps} fps` : ""}`).join(", ");
    const h = d.health;
    return html("tr", { "data-device": d.device_id }, [
      html("td", {}, [d.device_id]),
      html("td", {}, [html("span", { class: `badge state-${d.state}` }, [d.state])]),
      html("td", { title: d.last_heard_at || "" }, [ago(d.last_heard_at)]),
      html("td", {}, [d.agent_version || "–"]),
      html("td", {}, [cams || "–"]),
      html("td", {}, [h ? `${Math.round(h.cpu_percent)}%` : "–"]),
      html("td", {}, [h && h.temperature_c !== null ? `${h.temperature_c.toFixed(0)} °C` : "–"]),
      html("td", {}, [h ? `${h.outbox_depth}${d.outbox_dropped ? ` (${d.outbox_dropped} dropped)` : ""}` : "–"]),
    ]);
  });
  if (!rows.length) rows.push(html("tr", {}, [html("td", { colspan: 8, class: "muted" }, ["No device has reported yet."])]));
  $("devices").tBodies[0].replaceChildren(...rows);
}

function fillCameraOptions(ids, names) {
  const select = $("camera");
  const current = select.value;
  const all = [...new Set([...ids, ...(current ? [current] : [])])].sort();
  const options = [html("option", { value: "" }, ["All cameras"])];
  for (const id of all) {
    const name = names.get(id);
    options.push(html("option", { value: id }, [name ? `${name} (${id})` : id]));
  }
  select.replaceChildren(...options);
  select.value = current;
}

// --- loading ---------------------------------------------------------------------------------

async function load() {
  // One load at a time; a filter changed meanwhile loads again when it ends.
  if (state.loading) { state.reload = true; return; }
  state.loading = (async () => {
    const wanted = `${$("range").value}|${$("camera").value}`;
    const range = timeRange();
    const camera = selectedCamera();
    const common = { start: range.start.toISOString(), end: range.end.toISOString() };
    try {
      const [stats, perCamera, cameras, devices] = await Promise.all([
        api(`/v1/stats?${query({ ...common, bucket: range.bucket, ...camera, shares: "true" })}`),
        api(`/v1/stats?${query({ ...common, bucket: "month", group_by: "camera" })}`),
        api("/v1/cameras"),
        api("/v1/devices"),
      ]);
      const names = new Map(cameras.filter((c) => c.name).map((c) => [cameraKey(c), c.name]));
      state.names = names;
      const ids = new Set([
        ...cameras.map(cameraKey),
        ...(perCamera.totals.groups || []).map((g) => cameraKey(g.key)),
        ...devices.flatMap((d) => d.cameras.map((c) => `${d.device_id}/${c.camera_id}`)),
      ]);
      fillCameraOptions(ids, names);
      drawKpis(stats.totals);
      drawTraffic(stats, range);
      drawGender(stats.totals);
      drawShares(stats.shares);
      drawAge(stats.totals);
      drawCameras(perCamera.totals.groups || [], names, $("camera").value);
      drawDevices(devices);
      $("error").textContent = "";
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}`;
      // What these charts show (a filter changed meanwhile is loaded again next).
      document.body.dataset.loaded = wanted;
      document.body.dataset.range = query(common);
    } catch (error) {
      fail(error);
    }
  })();
  try {
    await state.loading;
  } finally {
    state.loading = null;
    if (state.reload) { state.reload = false; load(); }
  }
}

async function loadDevices() {
  try { drawDevices(await api("/v1/devices")); } catch (error) { fail(error); }
}

function later(timer, fn, ms) {
  if (state[timer]) return;
  state[timer] = setTimeout(() => { state[timer] = null; fn(); }, ms);
}

function fail(error) {
  if (error instanceof AuthError) { logout(error.message); return; }
  $("error").textContent = `Could not load: ${error.message}`;
}

// --- live feed ---------------------------------------------------------------------------------

function ageBand(age) {
  if (!age) return "unknown";
  const v = age.value;
  const bounds = [[13, "0-12"], [18, "13-17"], [25, "18-24"], [35, "25-34"], [45, "35-44"], [55, "45-54"], [65, "55-64"]];
  for (const [limit, band] of bounds) if (v < limit) return band;
  return "65+";
}

function addFeed(event) {
  const feed = $("feed");
  if (feed.querySelector(`[data-event-id="${CSS.escape(event.event_id)}"]`)) return;
  const when = new Date(event.last_seen).toLocaleTimeString("en-GB");
  const gender = event.gender ? event.gender.value : "unknown";
  const item = html("li", { class: "new", "data-event-id": event.event_id, "data-camera": `${event.device_id}/${event.camera_id}` }, [
    html("time", { datetime: event.last_seen }, [when]),
    html("span", { class: "camera" }, [cameraName(`${event.device_id}/${event.camera_id}`)]),
    html("span", { class: `badge fill-${gender}` }, [gender]),
    html("span", { class: "band" }, [ageBand(event.age)]),
    html("span", { class: "dwell" }, [`${event.dwell_s.toFixed(1)} s`]),
    // A 0.1 agent's event (no watcher field) was always a face: a watcher.
    event.watcher === false
      ? html("span", { class: "passing" }, ["passing"])
      : html("span", { class: "watch" }, [
        event.attention_s === null || event.attention_s === undefined
          ? "watching" : `watching ${event.attention_s.toFixed(1)} s`]),
    ...(event.direction ? [html("span", { class: "direction" }, [event.direction])] : []),
    ...(event.return_of ? [html("span", { class: "return" }, ["return"])] : []),
  ]);
  feed.prepend(item);
  setTimeout(() => item.classList.remove("new"), 3000);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  $("feed").dataset.count = String(feed.children.length);
}

function setLive(text) {
  $("live-state").textContent = text;
  $("live-state").className = `badge live-${text}`;
}

async function mintToken() {
  // Sets the hub_live_token cookie (HttpOnly, Path=/v1/live) that EventSource sends.
  const minted = await api("/v1/live/token", { method: "POST" });
  clearTimeout(state.tokenTimer);
  // Renew before it expires, so EventSource's own reconnects find a valid cookie.
  state.tokenTimer = setTimeout(() => mintToken().catch(fail), Math.max(2, minted.expires_in * 0.75) * 1000);
}

function closeLive() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.tokenTimer);
}

async function openLive(resume = false) {
  closeLive();
  setLive("connecting");
  try {
    await mintToken();
  } catch (error) {
    setLive("off");
    fail(error);
    if (!(error instanceof AuthError)) setTimeout(() => openLive(true), 5000);
    return;
  }
  const camera = selectedCamera();
  // New filter: start with the last minute's events; a reconnect resumes after the last.
  const after = resume && state.lastId ? state.lastId : `${Date.now() - REPLAY_MS}-0`;
  const source = new EventSource(`/v1/live/events?${query({ types: ["event", "status"], ...camera, after })}`);
  state.source = source;
  source.addEventListener("open", () => setLive("live"));
  source.addEventListener("event", (message) => {
    state.lastId = message.lastEventId || state.lastId;
    addFeed(JSON.parse(message.data));
    later("refreshTimer", load, 5000); // the charts follow, at most every 5 s
  });
  source.addEventListener("status", () => later("devicesTimer", loadDevices, 1000));
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (say, an expired token) or the hub went away: mint again and resume.
      setLive("reconnecting");
      setTimeout(() => { if (state.source === source) openLive(true); }, 3000);
    } else {
      setLive("reconnecting");
    }
  });
}

// --- key entry -------------------------------------------------------------------------------

function logout(message = "") {
  closeLive();
  clearInterval(state.pollTimer);
  state.key = null;
  sessionStorage.removeItem(KEY_STORE);
  $("dashboard").hidden = true;
  $("filters").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

function start() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("filters").hidden = false;
  $("feed").replaceChildren();
  load();
  openLive();
  clearInterval(state.pollTimer);
  state.pollTimer = setInterval(load, 60e3);
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.key = $("api-key").value.trim();
  try {
    await api("/v1/cameras"); // checks the key before showing anything
  } catch (error) {
    logout(error instanceof AuthError ? error.message : `Could not reach the hub: ${error.message}`);
    return;
  }
  sessionStorage.setItem(KEY_STORE, state.key);
  start();
});
$("range").addEventListener("change", load);
$("camera").addEventListener("change", () => {
  load();
  $("feed").replaceChildren();
  state.lastId = null;
  openLive();
});
$("refresh").addEventListener("click", load);
$("logout").addEventListener("click", () => logout());

if (state.key) start(); else logout();
