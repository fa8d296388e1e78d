// chatd's web client: one WebSocket to /ws carrying the same conversation a telnet user has
// (each message sent is one typed line; each message received is one JSON event), shown as a
// chat page. Server text is only ever put into the page with textContent: the page never
// parses server data as HTML. No build step, no external resources (the server's CSP allows
// only this origin's script, style and socket).
"use strict";

// ---- nick colours: the terminal's choice (src/session/terminal.rs `nick_colour`) ----------

// FNV-1a over the UTF-8 bytes of the nick's case fold, modulo the eight nick colours: the same
// nick gets the same colour here and on a colour terminal. The fold is NFC, full case
// folding, NFC; toUpperCase().toLowerCase() is JavaScript's nearest to full case folding
// (ß → ss, as the fold does) and equal to it for every ASCII nick.
const NICK_COLOURS = 8;

function foldNick(nick) {
  return nick.normalize("NFC").toUpperCase().toLowerCase().normalize("NFC");
}

function nickColour(nick) {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(foldNick(nick))) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash % NICK_COLOURS;
}

// ---- page elements -------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const logEl = $("log");
const form = $("say");
const input = $("input");
const inputLabel = $("input-label");
const statusEl = $("status");
const roomEl = $("room");
const topicEl = $("topic");
const membersEl = $("members");
const memberCountEl = $("member-count");
const roomsEl = $("rooms");
const notifyButton = $("notify");

// ---- state ---------------------------------------------------------------------------------

const state = {
  socket: null,
  // "connecting", "nick" (asked for a nickname), "secret" (asked for a password), "waiting"
  // (a password is being checked), "chat", "closed" (no reconnect by itself).
  phase: "connecting",
  me: null,
  room: null,
  account: false,
  // What to type again after a reconnect: the nick, and the password if it was an account.
  // Kept in memory only.
  nick: null,
  password: null,
  // The socket was closed on purpose (the server said `closed`, or the user quit): no reconnect.
  closedOnPurpose: false,
  attempt: 0,
  reconnectTimer: null,
  reconnecting: false,
  // Typed again automatically at this connection's prompts (once each, so a wrong stored
  // password does not loop).
  autoNickTries: 0,
  autoSecretSent: false,
  // This connection has said who I am (a `you` event) at least once.
  greeted: false,
  // The greeting and prompts of a connection made again, shown only if logging in again by
  // itself fails (otherwise every reconnect would repeat the welcome).
  preLogin: [],
  // The last prompt was for a password and nothing has been typed at it yet.
  secretPending: false,
  // Lines typed, for Up/Down as in a terminal.
  typed: [],
  typedIndex: 0,
  members: new Map(),
  rooms: [],
  // The tail of the chat lines shown, for de-duplicating the history sent after a reconnect.
  tail: [],
  // The ids ("SENDER.SEQ") of the room lines shown, oldest first, and the last one of the
  // current room: after a reconnect the page asks for what was said after it (`/missed`).
  seen: new Set(),
  seenOrder: [],
  lastId: null,
  // While a reconnect catches up: { room, after, asked, wentBack, rounds, held,
  // timer } (see below).
  catchUp: null,
  // The private lines shown (nick, text, at), and a held "N messages while you were away:".
  privates: [],
  awayHeading: null,
  dedup: null,
  hidden: document.hidden,
  unread: 0,
  mentions: 0,
  marker: null,
};

const TAIL_KEEP = 500;
// Pages of missed lines asked for after one reconnect (the server sends up to 200 a page).
const MISSED_ROUNDS = 10;
const LOG_KEEP = 2000;
const BACKOFF_SECONDS = [1, 2, 5, 10, 20, 30];

// ---- showing lines -------------------------------------------------------------------------

function pad2(n) {
  return n < 10 ? "0" + n : String(n);
}

function stamp(at) {
  const when = new Date(at * 1000);
  const now = new Date();
  let text = pad2(when.getHours()) + ":" + pad2(when.getMinutes());
  if (when.toDateString() !== now.toDateString()) {
    text = when.getFullYear() + "-" + pad2(when.getMonth() + 1) + "-" + pad2(when.getDate()) + " " + text;
  }
  return { text, full: when.toLocaleString() };
}

function span(cls, text) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  return el;
}

function nickSpan(nick) {
  return span("nick nick-" + nickColour(nick), nick);
}

function atBottom() {
  return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
}

// The log follows new lines unless the reader scrolled up (decided when they scroll, not when a
// line comes: a hidden tab does not lay out, so its position then says nothing).
let follow = true;
logEl.addEventListener("scroll", () => {
  follow = atBottom();
});

function toBottom() {
  if (follow) {
    logEl.scrollTop = logEl.scrollHeight;
  }
}

function append(row) {
  logEl.appendChild(row);
  while (logEl.childElementCount > LOG_KEEP) {
    logEl.firstElementChild.remove();
  }
  toBottom();
}

window.addEventListener("resize", toBottom);

// A line the server's own (not a user's): `*** ` kept in the text, so colour is never the only
// difference, as on a terminal.
function systemLine(text, at) {
  const shown = text.startsWith("*** ") ? text : "*** " + text;
  showRow({ kind: "system", nick: "", text: shown, at: at || Date.now() / 1000, action: false });
}

// One `line` event as a row: time, then the frame a terminal shows (`<nick> `, `* nick `,
// `*nick* `, `-> *nick* `), then the text.
function showRow(line) {
  const row = document.createElement("div");
  const kind = line.kind;
  row.className = "line " + kind + (line.action ? " action" : "") + (line.mention ? " mention" : "");
  const when = stamp(line.at || Date.now() / 1000);
  const time = document.createElement("time");
  time.className = "at";
  time.dateTime = new Date((line.at || 0) * 1000).toISOString();
  time.textContent = when.text;
  time.title = when.full;
  row.appendChild(time);
  row.appendChild(document.createTextNode(" "));
  const text = span("text", line.text);
  if (kind === "system" || !line.nick) {
    row.appendChild(text);
  } else if (kind === "private") {
    row.append(span("frame", "*"), nickSpan(line.nick), span("frame", "* "), text);
  } else if (kind === "sent") {
    row.append(span("frame", "-> *"), nickSpan(line.nick), span("frame", "* "), text);
  } else if (line.action) {
    row.append(span("frame", "* "), nickSpan(line.nick), span("frame", " "), text);
  } else {
    row.append(span("frame", "<"), nickSpan(line.nick), span("frame", "> "), text);
  }
  if (kind === "history") {
    row.title = "history";
  }
  append(row);
  if (line.id) {
    noteSeen(line.id);
  }
  if (kind === "chat" || kind === "history") {
    state.tail.push({ room: state.room, nick: line.nick, text: line.text, action: !!line.action });
    if (state.tail.length > TAIL_KEEP) {
      state.tail.splice(0, state.tail.length - TAIL_KEEP);
    }
  }
  if (kind === "private") {
    state.privates.push({ nick: line.nick, text: line.text, at: line.at || 0 });
    if (state.privates.length > 100) {
      state.privates.shift();
    }
  }
  if (kind !== "history") {
    noteUnread(line, row);
  }
}

// ---- reconnect overlap ---------------------------------------------------------------------

// Lines said in a room carry an id: one shown is never shown again (a resume after a broker
// restart replays the last seconds; a catch-up can overlap the live lines).
function noteSeen(id) {
  state.lastId = id;
  if (state.seen.has(id)) {
    return;
  }
  state.seen.add(id);
  state.seenOrder.push(id);
  if (state.seenOrder.length > LOG_KEEP) {
    state.seen.delete(state.seenOrder.shift());
  }
}

// After a reconnect into the room it was in, the page asks for the lines said after the last
// one it showed (`/missed ID`), in pages, and shows each once, in order: the room's history
// that the login brings is held meanwhile and dropped when the server knew the line (it is
// contained in the answer); if it did not (too old, no store), the history is shown as
// before, less what was shown already. Lines that come while the answer is awaited are held
// and shown after it. A login that lands in another room (the default one) first goes back
// to the room the page was in. Given up after a while, or if the page ends up elsewhere.
// `after` is null when the page showed no line in the room (just joined, nobody spoke): it
// still goes back there, and the history the join brings is all there is to show.
function startCatchUp() {
  if (!state.room) {
    return;
  }
  state.catchUp = {
    room: state.room,
    after: state.lastId,
    asked: false,
    wentBack: false,
    rounds: 0,
    held: [],
    timer: setTimeout(endCatchUp, 15000),
  };
}

function askMissed(after) {
  const catchUp = state.catchUp;
  catchUp.asked = true;
  clearTimeout(catchUp.timer);
  catchUp.timer = setTimeout(endCatchUp, 10000);
  send("/missed " + after);
}

// The catch-up is over: what waited is shown (the held history through its de-duplication,
// unless `dropHistory`), then the lines held meanwhile.
function endCatchUp(dropHistory) {
  const catchUp = state.catchUp;
  if (!catchUp) {
    return;
  }
  clearTimeout(catchUp.timer);
  state.catchUp = null;
  if (dropHistory === true && state.dedup) {
    clearTimeout(state.dedup.timer);
    state.dedup = null;
  }
  flushDedup();
  for (const event of catchUp.held) {
    onEvent(event);
  }
}

function onMissed(answer) {
  const catchUp = state.catchUp;
  if (!catchUp || !catchUp.asked || answer.room !== catchUp.room) {
    return;
  }
  if (!answer.found) {
    // Not known any more: the history the login brought is all there is to show.
    endCatchUp(false);
    systemLine("Lines said while you were away may be missing: /history shows the room's past");
    return;
  }
  for (const line of answer.lines) {
    if (!state.seen.has(line.id)) {
      showRow(line);
    }
  }
  const last = answer.lines.length > 0 ? answer.lines[answer.lines.length - 1].id : null;
  if (answer.more && last && catchUp.rounds + 1 < MISSED_ROUNDS) {
    catchUp.rounds += 1;
    askMissed(last);
    return;
  }
  endCatchUp(true);
  if (answer.more) {
    systemLine("More was said while you were away: /history shows it");
  }
}

// After a reconnect (or a resume) the session sends the room's last lines as history. Those
// already shown are dropped: an incoming history line equal (by nick, text and action) to a
// line among the last ones shown in the room was shown; the rest was missed, and is shown in
// the order it came. The heading and footer around the history are held until then, and
// dropped with it when nothing was missed.
function armDedup(waitMs) {
  const dedup = state.dedup;
  if (dedup) {
    clearTimeout(dedup.timer);
    if (dedup.history.length > 0 || dedup.held.length > 0) {
      dedup.timer = setTimeout(flushDedup, 500);
      return;
    }
  }
  // Disarmed after a while if no history comes (a room without lines, a nick change).
  state.dedup = { history: [], held: [], timer: setTimeout(flushDedup, waitMs || 3000) };
}

function lineKey(line) {
  return JSON.stringify([line.nick, line.text, !!line.action]);
}

function flushDedup() {
  const dedup = state.dedup;
  if (!dedup || state.catchUp) {
    // A catch-up decides what becomes of the held history when it ends.
    return;
  }
  clearTimeout(dedup.timer);
  state.dedup = null;
  const incoming = dedup.history;
  // A line (nick, text, action) shown among the last ones in this room is not shown again,
  // nor twice within one batch: a restarted broker's history may hold a line twice, and in
  // another order than the page showed it. (The price: the same words said twice by the same
  // nick while the page was away show once.)
  const shown = new Set();
  for (const entry of state.tail) {
    if (entry.room === state.room) {
      shown.add(lineKey(entry));
    }
  }
  const missed = [];
  for (const line of incoming) {
    const key = lineKey(line);
    if (!shown.has(key)) {
      shown.add(key);
      missed.push(line);
    }
  }
  if (missed.length === 0 && incoming.length > 0) {
    // Everything was already shown: the heading and footer would frame nothing.
    return;
  }
  const footers = dedup.held.filter((line) => /End of history\.$/.test(line.text));
  for (const line of dedup.held) {
    if (!footers.includes(line)) {
      showRow(line);
    }
  }
  for (const line of missed) {
    showRow(line);
  }
  for (const line of footers) {
    showRow(line);
  }
}

function isHistoryFrame(line) {
  return line.kind === "system" && /(before you came:|End of history\.)$/.test(line.text);
}

// ---- unread and mentions -------------------------------------------------------------------

function updateTitle() {
  document.title = (state.mentions > 0 ? "(" + state.mentions + ") " : "") + "chatd";
  const current = roomsEl.querySelector("[aria-current] .unread");
  if (current) {
    current.textContent = state.unread > 0 ? state.unread + " new" : "";
  }
}

function noteUnread(line, row) {
  if (line.mention) {
    notifyMention(line);
  }
  if (!state.hidden || line.kind === "system") {
    return;
  }
  if (state.unread === 0) {
    if (state.marker) {
      state.marker.remove();
    }
    state.marker = document.createElement("div");
    state.marker.className = "unread-marker";
    state.marker.textContent = "new";
    logEl.insertBefore(state.marker, row);
  }
  state.unread += 1;
  if (line.mention) {
    state.mentions += 1;
  }
  updateTitle();
}

document.addEventListener("visibilitychange", () => {
  state.hidden = document.hidden;
  if (!state.hidden) {
    state.unread = 0;
    state.mentions = 0;
    updateTitle();
    toBottom();
  }
});

const NOTIFY_ASKED = "chatd.notifications-asked";

function askNotifications() {
  if (!("Notification" in window) || Notification.permission !== "default") {
    updateNotifyButton();
    return;
  }
  try {
    localStorage.setItem(NOTIFY_ASKED, "1");
  } catch (err) {
    // Storage may be off: then it is asked once per page load.
  }
  Notification.requestPermission().then(updateNotifyButton, updateNotifyButton);
}

function notifyMention(line) {
  if (!("Notification" in window)) {
    return;
  }
  let asked = false;
  try {
    asked = localStorage.getItem(NOTIFY_ASKED) === "1";
  } catch (err) {
    asked = false;
  }
  if (Notification.permission === "default" && !asked) {
    askNotifications();
    return;
  }
  if (Notification.permission === "granted" && state.hidden) {
    const from = line.nick ? line.nick + ": " : "";
    new Notification("chatd" + (state.room ? " · " + state.room : ""), { body: from + line.text });
  }
}

function updateNotifyButton() {
  const available = "Notification" in window && Notification.permission === "default";
  notifyButton.hidden = !available;
}

notifyButton.addEventListener("click", askNotifications);

// ---- members and rooms ---------------------------------------------------------------------

function renderMembers() {
  membersEl.replaceChildren();
  const nicks = [...state.members.values()].sort((a, b) =>
    foldNick(a.nick) < foldNick(b.nick) ? -1 : 1,
  );
  for (const member of nicks) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "member" + (member.away ? " away" : "");
    button.appendChild(nickSpan(member.nick));
    if (state.me && foldNick(member.nick) === foldNick(state.me)) {
      button.appendChild(span("note", " (you)"));
    }
    if (member.away) {
      button.appendChild(span("note", " away"));
    }
    button.title = "Send " + member.nick + " a private message";
    button.addEventListener("click", () => {
      input.value = "/msg " + member.nick + " ";
      input.focus();
    });
    item.appendChild(button);
    membersEl.appendChild(item);
  }
  memberCountEl.textContent = String(nicks.length);
  // The room list's count of this room follows its members; the other rooms' counts come
  // with the next room list (at the next join).
  const current = state.rooms.find((room) => room.name === state.room);
  if (current && current.members !== nicks.length) {
    current.members = nicks.length;
    renderRooms();
  }
}

function renderRooms() {
  roomsEl.replaceChildren();
  for (const room of state.rooms) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room";
    button.appendChild(span("name", room.name));
    button.appendChild(span("count", String(room.members)));
    button.appendChild(span("unread", ""));
    if (room.topic) {
      button.title = room.topic;
    }
    if (room.name === state.room) {
      button.setAttribute("aria-current", "true");
    } else {
      button.setAttribute("aria-label", "Join " + room.name + ", " + room.members + " in it");
      button.addEventListener("click", () => {
        send("/join " + room.name);
        input.focus();
      });
    }
    item.appendChild(button);
    roomsEl.appendChild(item);
  }
  updateTitle();
}

function setTopic(text) {
  topicEl.textContent = text || "";
  topicEl.title = text || "";
}

// ---- the conversation ----------------------------------------------------------------------

function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
  if (phase === "secret") {
    input.type = "password";
    inputLabel.textContent = "Password";
    input.placeholder = "password";
    input.autocomplete = "current-password";
  } else {
    input.type = "text";
    input.autocomplete = "off";
    if (phase === "nick") {
      inputLabel.textContent = "Nickname";
      input.placeholder = "choose a nickname";
    } else if (phase === "chat") {
      inputLabel.textContent = "Message";
      input.placeholder = "say something, or /help";
    } else if (phase === "waiting") {
      inputLabel.textContent = "Logging in";
      input.placeholder = "";
    } else if (phase === "closed") {
      inputLabel.textContent = "Disconnected";
      input.placeholder = "press Enter to connect again";
    } else {
      inputLabel.textContent = "Connecting";
      input.placeholder = "";
    }
  }
}

function setStatus(text) {
  statusEl.textContent = text;
}

function send(line) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(line);
    return true;
  }
  return false;
}

function onEvent(event) {
  if (event.t === "line" && event.id && state.seen.has(event.id)) {
    return;
  }
  if (state.catchUp && state.catchUp.asked && event.t === "line" && event.kind !== "history" &&
      !isHistoryFrame(event)) {
    state.catchUp.held.push(event);
    return;
  }
  const dedup = state.dedup;
  if (dedup) {
    if (event.t === "line" && (event.kind === "history" || isHistoryFrame(event))) {
      clearTimeout(dedup.timer);
      if (event.kind === "history") {
        dedup.history.push(event);
      } else {
        dedup.held.push(event);
      }
      if (/End of history\.$/.test(event.text)) {
        flushDedup();
      } else {
        dedup.timer = setTimeout(flushDedup, 500);
      }
      return;
    }
    if (dedup.history.length > 0 || dedup.held.length > 0) {
      flushDedup();
    }
  }
  switch (event.t) {
    case "line":
      if (event.kind === "system") {
        afterSecret(event.text);
      }
      if (!keptAgain(event)) {
        return;
      }
      if (state.reconnecting && !state.greeted && event.kind === "system") {
        state.preLogin.push(event);
        return;
      }
      showRow(event);
      if (event.kind === "system" && /The chat service restarted/.test(event.text) && state.tail.length > 0) {
        // The session resumed with a new broker: what it sends again is compared too.
        armDedup(3000);
      }
      return;
    case "prompt":
      onPrompt(event.secret);
      return;
    case "you":
      onYou(event);
      return;
    case "missed":
      onMissed(event);
      return;
    case "members":
      if (event.room === state.room) {
        state.members = new Map(event.members.map((m) => [foldNick(m.nick), m]));
        renderMembers();
      }
      return;
    case "rooms":
      state.rooms = event.rooms;
      for (const room of event.rooms) {
        // A list without topics (null) leaves the header's topic as the topic events set it.
        if (room.name === state.room && typeof room.topic === "string") {
          setTopic(room.topic);
        }
      }
      renderRooms();
      return;
    case "joined":
      if (event.room === state.room) {
        state.members.set(foldNick(event.nick), { nick: event.nick, away: false });
        renderMembers();
      }
      return;
    case "left":
      if (event.room === state.room) {
        state.members.delete(foldNick(event.nick));
        renderMembers();
      }
      return;
    case "renamed": {
      const old = state.members.get(foldNick(event.old));
      if (old) {
        state.members.delete(foldNick(event.old));
        state.members.set(foldNick(event.new), { nick: event.new, away: old.away });
        renderMembers();
      }
      return;
    }
    case "topic":
      if (event.room === state.room) {
        setTopic(event.text);
      }
      return;
    case "closed":
      state.closedOnPurpose = true;
      systemLine("Disconnected: " + event.reason);
      return;
    default:
      return;
  }
}

// After a password was typed, the session's next line says what comes next: another
// password step ("Type it again:", like every password prompt, ends with a colon) keeps the
// field secret; anything else ("registered", "wrong password") makes it a plain field again.
function afterSecret(text) {
  if (state.phase !== "secret" || state.secretPending) {
    return;
  }
  if (/:\s*$/.test(text)) {
    state.secretPending = true;
  } else {
    setPhase(state.me ? "chat" : "nick");
  }
}

// Private lines kept for an account are delivered at its next login, and after a broker
// restart a line the page already showed can come again that way: the same sender, text and
// time (within seconds) is not shown twice. The "N messages while you were away:" before
// them is held until one of them is new. Returns whether `event` is to be shown now.
const REPLAY_SECONDS = 5;

function keptAgain(event) {
  if (event.kind === "system" && /while you were away:$/.test(event.text)) {
    state.awayHeading = event;
    return false;
  }
  if (event.kind === "private") {
    const again = state.privates.some(
      (shown) =>
        shown.nick === event.nick && shown.text === event.text &&
        Math.abs(shown.at - (event.at || 0)) <= REPLAY_SECONDS,
    );
    if (again) {
      return false;
    }
  }
  const heading = state.awayHeading;
  state.awayHeading = null;
  if (heading && event.kind === "private") {
    showRow(heading);
  }
  return true;
}

function showPreLogin() {
  for (const line of state.preLogin) {
    showRow(line);
  }
  state.preLogin = [];
}

function onPrompt(secret) {
  if (secret) {
    setPhase("secret");
    state.secretPending = true;
    if (state.reconnecting && state.password !== null && !state.autoSecretSent) {
      state.autoSecretSent = true;
      typeLine(state.password, { automatic: true });
    } else {
      showPreLogin();
    }
  } else {
    if (state.phase === "secret" && !state.secretPending) {
      // The plain prompt that ends a password step: the session is checking the password
      // (which can take a moment); nothing is to be typed for it.
      setPhase(state.greeted ? "chat" : "waiting");
      return;
    }
    // After login a plain prompt ends a password step (a /nick to a registered nick, a
    // /register); before it, the session asks for a nickname.
    setPhase(state.greeted ? "chat" : "nick");
    if (state.phase === "nick" && state.reconnecting && state.nick && state.autoNickTries < 5) {
      // The old session may still hold the nick for a moment: try again a few times.
      const delay = state.autoNickTries === 0 ? 0 : 2000;
      state.autoNickTries += 1;
      const socket = state.socket;
      setTimeout(() => {
        if (state.socket === socket && state.phase === "nick") {
          typeLine(state.nick, { automatic: true });
        }
      }, delay);
    } else {
      showPreLogin();
    }
  }
}

function onYou(you) {
  const wasRoom = state.room;
  const firstOfConnection = !state.greeted;
  state.greeted = true;
  state.me = you.nick;
  state.nick = you.nick;
  state.account = !!you.account;
  if (!state.account) {
    state.password = null;
  }
  state.room = you.room;
  setPhase("chat");
  roomEl.textContent = you.room;
  setStatus("connected as " + you.nick + (you.account ? " (account)" : ""));
  if (wasRoom !== you.room) {
    state.lastId = null;
    state.members = new Map();
    renderMembers();
    setTopic("");
  }
  if (firstOfConnection && state.reconnecting) {
    state.preLogin = [];
    state.reconnecting = false;
    state.attempt = 0;
    systemLine("reconnected");
  }
  // A resume after a broker restart, or a reconnect, brings the room's last lines again.
  if (wasRoom === you.room && state.tail.length > 0) {
    armDedup(3000);
  }
  const catchUp = state.catchUp;
  if (catchUp && !catchUp.asked) {
    if (you.room === catchUp.room && catchUp.after) {
      askMissed(catchUp.after);
    } else if (you.room === catchUp.room) {
      // Nothing to ask after. Back from the default room, the history held is that room's.
      endCatchUp(catchUp.wentBack);
    } else if (firstOfConnection) {
      // A new connection starts in the default room: back to the one the page was in.
      catchUp.wentBack = true;
      typeLine("/join " + catchUp.room, { automatic: true });
    } else {
      endCatchUp(false);
    }
  }
  renderRooms();
}

// Sends one typed line. At a password prompt the line is a secret: it is not kept in the
// Up/Down list and is remembered (in memory) only to log in again after a reconnect.
function typeLine(line, options) {
  const automatic = options && options.automatic;
  if (state.phase === "secret") {
    state.secretPending = false;
    if (!automatic) {
      state.password = line;
    }
    // The field stays a password field until the server's next line says what comes next
    // (see `afterSecret`).
    send(line);
    return;
  }
  if (state.phase === "nick" && !automatic) {
    state.nick = line.trim();
  }
  if (!automatic) {
    state.typed.push(line);
    if (state.typed.length > 100) {
      state.typed.shift();
    }
    state.typedIndex = state.typed.length;
  }
  if (/^\/quit\b/i.test(line)) {
    state.closedOnPurpose = true;
  }
  send(line);
}

// ---- the socket ----------------------------------------------------------------------------

function connect() {
  clearTimeout(state.reconnectTimer);
  state.closedOnPurpose = false;
  state.autoNickTries = 0;
  state.autoSecretSent = false;
  state.greeted = false;
  state.preLogin = [];
  setPhase("connecting");
  setStatus(state.reconnecting ? "reconnecting…" : "connecting…");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let socket;
  try {
    socket = new WebSocket(scheme + location.host + "/ws");
  } catch (err) {
    scheduleReconnect();
    return;
  }
  state.socket = socket;
  if (state.reconnecting && state.tail.length > 0) {
    // The history may come before the session says who I am: hold it from the start.
    armDedup(15000);
  }
  endCatchUp(false);
  if (state.reconnecting) {
    startCatchUp();
  }
  socket.addEventListener("open", () => {
    setStatus(state.reconnecting ? "reconnecting…" : "connected");
  });
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
    endCatchUp(false);
    flushDedup();
    state.socket = null;
    if (state.closedOnPurpose) {
      setPhase("closed");
      setStatus("disconnected");
      return;
    }
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const seconds = BACKOFF_SECONDS[Math.min(state.attempt, BACKOFF_SECONDS.length - 1)];
  state.attempt += 1;
  if (state.nick) {
    state.reconnecting = true;
  }
  setPhase("connecting");
  systemLine("Connection lost; trying again in " + seconds + " s");
  setStatus("reconnecting in " + seconds + " s…");
  state.reconnectTimer = setTimeout(connect, seconds * 1000);
}

// ---- typing --------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.phase === "closed") {
    state.reconnecting = !!state.nick;
    connect();
    return;
  }
  const line = input.value;
  if (line === "" && state.phase !== "secret") {
    return;
  }
  input.value = "";
  typeLine(line);
});

input.addEventListener("keydown", (event) => {
  if (state.phase === "secret") {
    return;
  }
  if (event.key === "ArrowUp" && state.typedIndex > 0) {
    state.typedIndex -= 1;
    input.value = state.typed[state.typedIndex];
    event.preventDefault();
  } else if (event.key === "ArrowDown" && state.typedIndex < state.typed.length) {
    state.typedIndex += 1;
    input.value = state.typed[state.typedIndex] || "";
    event.preventDefault();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    input.focus();
  }
});

for (const button of document.querySelectorAll("[data-toggle]")) {
  button.addEventListener("click", () => {
    const panel = $(button.dataset.toggle);
    const open = !panel.classList.contains("open");
    panel.classList.toggle("open", open);
    button.setAttribute("aria-expanded", String(open));
  });
}

updateNotifyButton();
setPhase("connecting");
connect();
input.focus();

// For the browser test: the colour a nick gets, from the outside.
window.chatdNickColour = nickColour;
