// chatd's operator dashboard: the same WebSocket conversation as the chat page (log in with a
// nick and its password), then `/admin status|who|rooms|bans|mutes` every 2 s and the moderation
// forms, each sent as the `/admin ...` line an operator could type. The broker checks the
// account's admin role on every request; a `Denied` answer ends the dashboard. Server text
// goes into the page with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);

const POLL_MS = 2000;
// Samples kept for the charts: five minutes at one every 2 s.
const SAMPLES = 150;
const BACKOFF_SECONDS = [1, 2, 5, 10, 20, 30];

const state = {
  socket: null,
  nick: null,
  password: null,
  passwordSent: false,
  plainAfterPassword: 0,
  loggedIn: false,
  denied: false,
  pollTimer: null,
  // Replies still expected from the last poll: the next poll waits for them (or 10 s).
  waiting: 0,
  polledAt: 0,
  samples: [],
  attempt: 0,
  lastSystem: "",
};

// ---- formatting ----------------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) {
    node.className = cls;
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  return node;
}

function seconds(total) {
  total = Math.max(0, Math.floor(total));
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  if (m > 0) return m + "m " + s + "s";
  return s + "s";
}

function pad2(n) {
  return n < 10 ? "0" + n : String(n);
}

function when(unix) {
  if (!unix) return "—";
  const d = new Date(unix * 1000);
  return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
    pad2(d.getHours()) + ":" + pad2(d.getMinutes());
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function rate(n) {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function ms(secondsValue) {
  if (secondsValue === null || secondsValue === undefined) return "—";
  const value = secondsValue * 1000;
  return (value >= 10 ? value.toFixed(0) : value.toFixed(2)) + " ms";
}

// One word of an `/admin` line: a nick, an address or a duration has no spaces (`1h 30m` is
// written `1h30m`, which the broker reads the same).
function word(text) {
  return text.trim().replace(/\s+/g, "");
}

// ---- the socket ----------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

function send(line) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(line);
    return true;
  }
  return false;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  state.passwordSent = false;
  state.plainAfterPassword = 0;
  setStatus("connecting…");
  const socket = new WebSocket(scheme + location.host + "/ws");
  state.socket = socket;
  socket.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (err) {
      return;
    }
    if (event && typeof event.t === "string") {
      onEvent(event);
    }
  });
  socket.addEventListener("close", () => {
    if (state.socket !== socket) {
      return;
    }
    state.socket = null;
    stopPolling();
    if (state.denied) {
      return;
    }
    if (!state.loggedIn) {
      loginMessage(state.lastSystem || "The server closed the connection.", true);
      setStatus("");
      $("login").hidden = false;
      return;
    }
    const wait = BACKOFF_SECONDS[Math.min(state.attempt, BACKOFF_SECONDS.length - 1)];
    state.attempt += 1;
    state.loggedIn = false;
    setStatus("connection lost; trying again in " + wait + " s");
    setTimeout(connect, wait * 1000);
  });
}

function loginMessage(text, error) {
  const node = $("login-message");
  node.textContent = text;
  node.classList.toggle("error", !!error);
}

function onEvent(event) {
  switch (event.t) {
    case "prompt":
      if (!event.secret) {
        if (state.passwordSent) {
          // The first plain prompt after the password ends the password step; a second one
          // asks for a nickname again: the password was refused.
          state.plainAfterPassword += 1;
          if (state.plainAfterPassword > 1) {
            fail(state.lastSystem || "Login failed.");
          }
          return;
        }
        send(state.nick);
      } else if (!state.passwordSent) {
        state.passwordSent = true;
        send(state.password);
      } else {
        // A second password step (a reset password must be changed): not from here.
        fail(state.lastSystem || "This account must change its password: log in on the chat page first.");
      }
      return;
    case "you":
      if (!state.loggedIn) {
        state.loggedIn = true;
        state.attempt = 0;
        $("who-am-i").textContent = event.nick;
        setStatus("connected");
        startPolling();
      }
      return;
    case "line":
      // The last thing the server said that is not a prompt: why a login failed.
      if (event.kind === "system" && !/:\s*$/.test(event.text)) {
        state.lastSystem = event.text;
      }
      return;
    case "admin":
      onReply(event.reply);
      return;
    case "closed":
      state.lastSystem = event.reason;
      if (state.loggedIn) {
        outcome("Disconnected: " + event.reason, true);
      }
      return;
    default:
      return;
  }
}

function fail(text) {
  loginMessage(text, true);
  state.loggedIn = false;
  const socket = state.socket;
  state.socket = null;
  if (socket) {
    socket.close();
  }
  $("login").hidden = false;
  setStatus("");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.nick = word($("login-nick").value);
  state.password = $("login-password").value;
  $("login-password").value = "";
  state.denied = false;
  state.lastSystem = "";
  loginMessage("Logging in…", false);
  $("denied").hidden = true;
  connect();
});

// ---- polling -------------------------------------------------------------------------------

function startPolling() {
  stopPolling();
  poll();
  state.pollTimer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
  state.waiting = 0;
}

function poll() {
  const now = Date.now();
  if (state.waiting > 0 && now - state.polledAt < 10000) {
    return;
  }
  state.polledAt = now;
  state.waiting = 5;
  for (const line of ["/admin status", "/admin who", "/admin rooms", "/admin bans", "/admin mutes"]) {
    send(line);
  }
}

function onReply(reply) {
  if (!reply || typeof reply !== "object") {
    return;
  }
  const [kind] = Object.keys(reply);
  const value = reply[kind];
  if (["Status", "Users", "Rooms", "Bans", "Mutes", "Denied"].includes(kind) && state.waiting > 0) {
    state.waiting -= 1;
  }
  switch (kind) {
    case "Denied":
      denied(value);
      return;
    case "Status":
      showDashboard();
      showStatus(value);
      return;
    case "Users":
      showDashboard();
      showUsers(value);
      return;
    case "Rooms":
      showRooms(value);
      return;
    case "Bans":
      showBans(value);
      return;
    case "Mutes":
      showMutes(value);
      return;
    case "Done":
      outcome(value, false);
      state.waiting = 0;
      poll();
      return;
    case "Failed":
      outcome(value, true);
      return;
    case "Motd":
      outcome(value ? "Message of the day: " + value : "There is no message of the day.", false);
      return;
    default:
      return;
  }
}

function denied(detail) {
  state.denied = true;
  stopPolling();
  $("dashboard").hidden = true;
  $("login").hidden = true;
  $("denied").hidden = false;
  $("denied-detail").textContent = detail ? "The server said: " + detail : "";
  $("who-am-i").textContent = "";
  setStatus("");
  send("/quit");
  const socket = state.socket;
  state.socket = null;
  if (socket) {
    socket.close();
  }
}

function showDashboard() {
  if ($("dashboard").hidden && !state.denied) {
    $("login").hidden = true;
    $("dashboard").hidden = false;
  }
}

function outcome(text, failed) {
  const node = $("outcome");
  node.textContent = text;
  node.classList.toggle("failed", !!failed);
}

// ---- status --------------------------------------------------------------------------------

function figure(label, value, bad) {
  const box = el("div", "figure" + (bad ? " bad" : ""));
  box.appendChild(el("span", "label", label));
  box.appendChild(el("span", "value", value));
  return box;
}

// The fan-out latency's quantile q from its buckets: the upper bound of the bucket it falls in.
function quantile(histogram, q) {
  const counts = histogram.counts || [];
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i];
    if (seen >= q * total) {
      return i < histogram.bounds.length ? histogram.bounds[i] : Infinity;
    }
  }
  return null;
}

function showStatus(status) {
  const master = status.master;
  const figures = $("figures");
  const refused = master ? master.refusals.reduce((sum, r) => sum + r.count, 0) : 0;
  const p50 = quantile(status.fanout_latency, 0.5);
  const p99 = quantile(status.fanout_latency, 0.99);
  const list = [
    figure("Connections", master ? master.connections : "—"),
    figure("Users", status.users),
    figure("Rooms", status.rooms),
    figure("Admitted", master ? master.accepted : "—"),
    figure("Refused", master ? refused : "—", refused > 0),
    figure("Broker restarts", master ? master.broker_restarts : "—", master && master.broker_restarts > 0),
    figure("Session crashes", master ? master.child_crashes : "—", master && master.child_crashes > 0),
    figure("Fan-out p50", p50 === Infinity ? "slow" : "≤ " + ms(p50)),
    figure("Fan-out p99", p99 === Infinity ? "slow" : "≤ " + ms(p99), p99 === Infinity),
    figure("Lines", status.messages),
    figure("Deliveries", status.deliveries),
    figure("Bans / mutes", status.bans + " / " + status.mutes),
  ];
  if (status.accounts !== null && status.accounts !== undefined) {
    list.push(figure("Accounts", status.accounts));
  }
  if (status.store) {
    const store = status.store;
    const failing = !!store.failing;
    list.push(figure("Store (" + store.kind + ")", failing ? "failing" : "ok · " + bytes(store.bytes), failing));
    if (store.dropped_lines > 0) {
      list.push(figure("Lines not stored", store.dropped_lines, true));
    }
  } else {
    list.push(figure("Store", "off"));
  }
  if (status.cluster) {
    // A cluster's health: this node's contact with Redis, the other nodes and their
    // heartbeats, the trip through the stream and what waits for Redis.
    const cluster = status.cluster;
    list.push(figure("Cluster (node " + cluster.node + ")", cluster.connected ? "in contact" : "out of contact", !cluster.connected));
    const others = cluster.nodes.filter((node) => node.name !== cluster.node);
    list.push(figure("Other nodes", others.length
      ? others.map((node) => node.name + " " + (node.heartbeat_age_ms / 1000).toFixed(1) + " s").join(", ")
      : "none seen", others.some((node) => node.heartbeat_age_ms > 15000)));
    list.push(figure("Stream round trip", cluster.round_trip_ms_last.toFixed(1) + " ms"));
    if (cluster.queued > 0 || cluster.dropped > 0) {
      list.push(figure("Waiting for Redis", cluster.queued + (cluster.dropped ? " (" + cluster.dropped + " dropped)" : ""), true));
    }
  }
  if (!master) {
    list.push(figure("Master", "not linked", true));
  }
  figures.replaceChildren(...list);
  const uptime = status.now - status.broker_started_at;
  $("meta").textContent =
    "chatd " + status.version + " · protocol " + status.protocol + " · broker pid " + status.broker_pid +
    ", up " + seconds(uptime) + (master && master.refusals.length
      ? " · refusals: " + master.refusals.map((r) => r.reason + " " + r.count).join(", ")
      : "") +
    // When these figures came: a dashboard whose connection stalled shows its age.
    " · updated " + new Date().toLocaleTimeString();
  // Rates from the counters' differences since the last answer, over the page's clock.
  const sample = { t: performance.now() / 1000, messages: status.messages, deliveries: status.deliveries };
  const previous = state.samples.length ? state.samples[state.samples.length - 1].sample : null;
  let point = null;
  if (previous && sample.t > previous.t) {
    const dt = sample.t - previous.t;
    point = {
      lines: Math.max(0, sample.messages - previous.messages) / dt,
      deliveries: Math.max(0, sample.deliveries - previous.deliveries) / dt,
    };
  }
  state.samples.push({ sample, point });
  if (state.samples.length > SAMPLES) {
    state.samples.shift();
  }
  drawChart($("chart-lines"), state.samples.map((s) => s.point && s.point.lines));
  drawChart($("chart-deliveries"), state.samples.map((s) => s.point && s.point.deliveries));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, String(value));
  }
  return node;
}

// A small line chart of `values` (null where no rate is known yet), newest on the right.
function drawChart(box, values) {
  const width = 300;
  const height = 70;
  const known = values.filter((v) => v !== null && v !== undefined);
  const top = Math.max(1, ...known) * 1.15;
  // The last minute at first, growing to the last five: the newest point on the right.
  const span = Math.min(SAMPLES, Math.max(30, values.length));
  const step = width / (span - 1);
  const offset = span - values.length;
  const points = [];
  values.forEach((v, i) => {
    if (v !== null && v !== undefined) {
      const x = (offset + i) * step;
      const y = height - 2 - (v / top) * (height - 6);
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    }
  });
  let chart = box.querySelector("svg");
  if (!chart) {
    chart = svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none", role: "img" });
    box.appendChild(chart);
  }
  const last = known.length ? known[known.length - 1] : 0;
  chart.setAttribute("aria-label", box.querySelector(".label span").textContent + ": " + rate(last) + " now, at most " + rate(Math.max(0, ...known)));
  chart.replaceChildren(svg("line", { class: "axis", x1: 0, y1: height - 1, x2: width, y2: height - 1 }));
  if (points.length > 1) {
    const first = points[0].split(",")[0];
    const lastX = points[points.length - 1].split(",")[0];
    chart.appendChild(svg("polygon", { class: "area", points: first + "," + height + " " + points.join(" ") + " " + lastX + "," + height }));
    chart.appendChild(svg("polyline", { class: "plot", points: points.join(" ") }));
  }
  const minutes = Math.round((span * POLL_MS) / 60000);
  box.querySelector(".now").textContent =
    (known.length ? rate(last) + "/s now · max " + rate(Math.max(...known)) : "…") + " · last " + minutes + " min";
}

// ---- tables --------------------------------------------------------------------------------

function button(label, text, onClick, cls) {
  const node = el("button", "small" + (cls ? " " + cls : ""), text);
  node.type = "button";
  node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) {
      td.appendChild(cell);
    } else {
      td.textContent = cell === null || cell === undefined ? "" : String(cell);
    }
    tr.appendChild(td);
  }
  return tr;
}

function emptyRow(columns, text) {
  const tr = el("tr");
  const td = el("td", "empty", text);
  td.colSpan = columns;
  tr.appendChild(td);
  return tr;
}

function admin(line) {
  if (!send(line)) {
    outcome("Not connected.", true);
  }
}

function showUsers(users) {
  const body = $("users").querySelector("tbody");
  const rows = users.map((user) => {
    const flags = [];
    if (user.registered) flags.push("registered");
    if (user.away !== null && user.away !== undefined) flags.push("away" + (user.away ? ": " + user.away : ""));
    if (user.muted) flags.push("muted");
    const actions = el("span");
    actions.appendChild(button("Kick " + user.nick, "Kick", () => admin("/admin kick " + user.nick), "danger"));
    actions.appendChild(document.createTextNode(" "));
    actions.appendChild(user.muted
      ? button("Unmute " + user.nick, "Unmute", () => admin("/admin unmute " + user.nick))
      : button("Mute " + user.nick, "Mute", () => admin("/admin mute " + user.nick)));
    // In a cluster, the node the user is on goes with the address.
    const where = user.node ? user.peer + " on " + user.node : user.peer;
    const tr = row([user.nick, user.room, where, user.tls ? "yes" : "no", seconds(user.idle_seconds),
      seconds(user.connected_seconds), flags.join(", "), actions]);
    tr.children[5].className = "num hide-narrow";
    tr.children[4].className = "num";
    return tr;
  });
  body.replaceChildren(...(rows.length ? rows : [emptyRow(8, "nobody is connected")]));
  $("users-count").textContent = String(users.length);
}

// Every mute in force, connected or not (a mute outlives its user's connection).
function showMutes(mutes) {
  const list = $("mutes");
  list.replaceChildren(...mutes.map((mute) => {
    const item = el("li");
    const until = mute.until ? " (until " + when(mute.until) + ")" : " (until lifted)";
    item.appendChild(el("span", "mute-nick", mute.nick));
    item.appendChild(el("span", null, until + " "));
    item.appendChild(button("Unmute " + mute.nick, "Unmute", () => admin("/admin unmute " + mute.nick)));
    return item;
  }));
  if (!mutes.length) {
    list.appendChild(el("li", "empty", "nobody is muted"));
  }
  $("mutes-count").textContent = String(mutes.length);
}

function showRooms(rooms) {
  const body = $("rooms").querySelector("tbody");
  const rows = rooms.map((room) => row([room.name, room.members, room.topic || ""]));
  body.replaceChildren(...(rows.length ? rows : [emptyRow(3, "no rooms")]));
  $("rooms-count").textContent = String(rooms.length);
}

function banTarget(target) {
  if (typeof target === "string") return target;
  if (target && typeof target === "object") {
    const [kind] = Object.keys(target);
    return String(target[kind]);
  }
  return String(target);
}

function showBans(bans) {
  const body = $("bans").querySelector("tbody");
  const rows = bans.map((ban) => {
    const target = banTarget(ban.target);
    return row([target, when(ban.since), ban.until ? when(ban.until) : "until lifted", ban.reason || "",
      button("Lift the ban on " + target, "Unban", () => admin("/admin unban " + target))]);
  });
  body.replaceChildren(...(rows.length ? rows : [emptyRow(5, "no bans")]));
  $("bans-count").textContent = String(bans.length);
}

// ---- forms ---------------------------------------------------------------------------------

function onForm(id, build) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    const line = build();
    if (line) {
      admin(line);
    }
  });
}

function join(words) {
  return words.filter((w) => w !== "").join(" ");
}

onForm("kick-form", () => join(["/admin kick", word($("kick-nick").value), $("kick-reason").value.trim()]));
onForm("ban-form", () =>
  join(["/admin ban", word($("ban-target").value), word($("ban-duration").value), $("ban-reason").value.trim()]),
);
onForm("mute-form", () => join(["/admin mute", word($("mute-nick").value), word($("mute-duration").value)]));
onForm("announce-form", () => {
  const room = word($("announce-room").value).replace(/^#/, "");
  return join(["/admin announce", room ? "#" + room : "", $("announce-text").value.trim()]);
});
onForm("motd-form", () => {
  const text = $("motd-text").value.trim();
  return text ? "/admin motd " + text : "/admin motd";
});
$("motd-clear").addEventListener("click", () => admin("/admin motd -"));
$("motd-show").addEventListener("click", () => admin("/admin motd"));

$("denied-again").addEventListener("click", () => {
  $("denied").hidden = true;
  $("login").hidden = false;
  loginMessage("", false);
  $("login-nick").focus();
});

$("login-nick").focus();
