// caddy-chat's shared client: the room page (chat.js) and the <chat-room>
// element (widget.js) both build on it, so that resuming, retrying and
// rendering behave the same in both. User text only ever enters the page as
// textContent.

// Reopening a refused stream waits 0.5-1 s, then twice as long each time,
// up to 15-30 s. A post is tried 4 times, waiting 0.5-1 s, 1-2 s, 2-4 s.
const streamRetryBase = 1000;
const streamRetryCap = 30000;
const sendAttempts = 4;
const sendRetryBase = 1000;
const sendRetryCap = 10000;
// How many older messages a step back through history loads.
const olderPage = 50;
// Answers to a post that may pass if it is sent again.
const retryable = new Set([408, 429, 500, 502, 503, 504]);
// Times in the reader's zone and locale: the clock on each message, the
// full time in its title, the date on a day separator.
const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full" });

// backoff is how long to wait before try n+1 (n from 0): base doubled n
// times, up to cap, of which a random half, so that the pages a server
// refused do not all come back at once.
export function backoff(n, base, cap) {
  const full = Math.min(cap, base * 2 ** n);
  return full / 2 + Math.random() * full / 2;
}

// newKey returns an Idempotency-Key. (crypto.randomUUID exists only on
// HTTPS and localhost.)
function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export function setClock(time, when) {
  time.textContent = clockFormat.format(when);
  time.title = fullFormat.format(when);
}

// dayKey is when's date in the reader's zone, as YYYY-MM-DD.
export function dayKey(when) {
  const pad = (n) => String(n).padStart(2, "0");
  return when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate());
}

export function daySeparator(when) {
  const li = document.createElement("li");
  li.className = "day";
  const time = document.createElement("time");
  time.dateTime = dayKey(when);
  time.textContent = dayFormat.format(when);
  li.append(time);
  return li;
}

// MessageList shows messages in a list, once each, with a day separator
// wherever the reader's date changes. The list's parent scrolls; it stays
// at the bottom while the reader is there, as messages come and as it
// changes size (shown, resized, a header that grows).
export class MessageList {
  // decorate(li) adds to each message's item what the reader may do to
  // it (see MessageActions).
  constructor(list, decorate = () => {}) {
    this.list = list;
    this.decorate = decorate;
    this.seen = new Set();
    this.shownDay = ""; // the reader's date of the last message shown
    const scroller = list.parentElement;
    this.atBottom = true;
    scroller.addEventListener("scroll", () => {
      this.atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    });
    new ResizeObserver(() => {
      if (this.atBottom) scroller.scrollTop = scroller.scrollHeight;
    }).observe(scroller);
  }

  // localTimes rewrites the times of server-rendered messages, which are
  // in UTC, in the reader's zone, with the reader's day separators.
  localTimes() {
    for (const li of this.list.querySelectorAll("li.day")) li.remove();
    for (const li of this.list.querySelectorAll("li[data-id]")) {
      this.seen.add(li.dataset.id);
      const time = li.querySelector("time");
      const when = new Date(time.dateTime);
      setClock(time, when);
      const edited = li.querySelector(".edited");
      if (edited) edited.title = "edited " + fullFormat.format(new Date(edited.dataset.time));
      if (dayKey(when) !== this.shownDay) {
        this.shownDay = dayKey(when);
        li.before(daySeparator(when));
      }
      this.decorate(li);
    }
  }

  append(m) {
    if (this.seen.has(m.id)) return; // a replay after a reconnect may repeat
    this.seen.add(m.id);
    const when = new Date(m.time);
    const scroller = this.list.parentElement;
    if (dayKey(when) !== this.shownDay) {
      this.shownDay = dayKey(when);
      this.list.append(daySeparator(when));
    }
    this.list.append(this.item(m));
    // Scrolled within the list's box only: an embedded list never moves
    // its host page.
    if (this.atBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  // item is the list item of m, with what the reader may do to it.
  item(m) {
    const li = messageItem(m);
    this.decorate(li);
    return li;
  }

  // edit shows the new text of an edit e's target, marked edited.
  edit(e) {
    const li = shownItem(this.list, e.target);
    if (li) editItem(li, e.message, e.time);
  }

  // remove takes the target of a delete e out of the list, with its day's
  // separator when it was the day's only message. Focus within it moves
  // to the next message's first button, or the one before's.
  remove(e) {
    const li = shownItem(this.list, e.target);
    if (!li) return;
    if (li.contains(li.getRootNode().activeElement)) {
      const near = [nextMessage(li, "nextElementSibling"), nextMessage(li, "previousElementSibling")];
      const button = near.map((n) => n && n.querySelector("button")).find(Boolean);
      if (button) button.focus();
    }
    const before = li.previousElementSibling;
    const after = li.nextElementSibling;
    li.remove();
    if (before && before.matches("li.day") && (!after || after.matches("li.day"))) {
      before.remove();
      if (!after) {
        const days = this.list.querySelectorAll("li.day time");
        this.shownDay = days.length ? days[days.length - 1].dateTime : "";
      }
    }
  }

  // oldestID is the id of the oldest message shown, "" when none is.
  oldestID() {
    const first = this.list.querySelector("li[data-id]");
    return first ? first.dataset.id : "";
  }

  // prepend shows older messages, given oldest first, above the shown
  // ones, and returns how many it added. The list is not live while they
  // go in, so that a screen reader announces the status that says they
  // came, not each of them.
  prepend(msgs) {
    const items = [];
    let day = "";
    for (const m of msgs) {
      if (this.seen.has(m.id)) continue;
      this.seen.add(m.id);
      const when = new Date(m.time);
      if (dayKey(when) !== day) {
        day = dayKey(when);
        items.push(daySeparator(when));
      }
      items.push(this.item(m));
    }
    if (items.length === 0) return 0;
    const live = this.list.getAttribute("aria-live");
    this.list.setAttribute("aria-live", "off");
    this.keepPlace(() => {
      const top = this.list.firstElementChild;
      if (!top) this.shownDay = day;
      // The older messages end on the day the list began with: one separator.
      else if (top.matches("li.day") && top.querySelector("time").dateTime === day) top.remove();
      this.list.prepend(...items);
    });
    // Live again once the browser has taken in the change, a frame later.
    requestAnimationFrame(() => requestAnimationFrame(() => this.list.setAttribute("aria-live", live)));
    return items.filter((li) => li.dataset.id).length;
  }

  // keepPlace runs change, which changes what is above the shown
  // messages, and scrolls so that they stay where they were.
  keepPlace(change) {
    const anchor = this.list.querySelector("li[data-id]");
    const top = anchor && anchor.getBoundingClientRect().top;
    change();
    if (anchor) this.list.parentElement.scrollTop += anchor.getBoundingClientRect().top - top;
  }
}

// messageItem is the list item that shows message m.
function messageItem(m) {
  const li = document.createElement("li");
  li.dataset.id = m.id;
  const user = document.createElement("span");
  user.className = "user";
  user.textContent = m.user;
  li.append(user);
  if (m.verified === true) {
    // The mark follows the server's flag, never the name.
    const mark = document.createElement("span");
    mark.className = "verified";
    mark.setAttribute("role", "img");
    mark.setAttribute("aria-label", "verified");
    mark.title = "verified: signed in as this name";
    mark.textContent = "✓";
    li.append(" ", mark);
  }
  const time = document.createElement("time");
  time.dateTime = m.time;
  setClock(time, new Date(m.time));
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = m.message;
  li.append(" ", time, text);
  if (m.edited) editItem(li, m.message, m.edited);
  return li;
}

// shownItem is the item of the message id in list, null when it is not
// shown.
function shownItem(list, id) {
  return list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
}

// editItem shows text in the message item li, marked edited at when.
function editItem(li, text, when) {
  li.querySelector(".text").textContent = text;
  let mark = li.querySelector(".edited");
  if (!mark) {
    mark = document.createElement("span");
    mark.className = "edited";
    mark.textContent = "edited";
    li.querySelector("time").after(" ", mark);
  }
  mark.dataset.time = when;
  mark.title = "edited " + fullFormat.format(new Date(when));
}

// nextMessage is the message item next to li in direction, a sibling
// property, past day separators; null when there is none.
function nextMessage(li, direction) {
  let n = li[direction];
  while (n && !n.dataset.id) n = n[direction];
  return n;
}

// ownKey is where this browser keeps, for the messages its reader wrote,
// the secret that lets them edit and delete each ("" for a signed-in
// author) and until when: {url of the message: {secret, until}}.
const ownKey = "caddy-chat-own";

// ownMessages reads what ownKey holds.
function ownMessages() {
  try {
    return JSON.parse(localStorage.getItem(ownKey)) || {};
  } catch {
    return {};
  }
}

// MessageActions puts on each message of list the buttons for what the
// reader may do to it: on their own, while the edit window lasts, Edit and
// Delete; on a moderate mount, on every message, Delete, and on others',
// Ban author with a duration and a purge choice. url is the room's
// …/rooms/{room}/messages; settings are the handler's (see configure);
// say(text) tells the reader how an action went; token, a tokenSource,
// signs the actions in.
export class MessageActions {
  constructor(list, url, settings, say, token = null) {
    this.list = list;
    this.url = new URL(url, document.baseURI).href;
    this.say = say;
    this.token = token;
    // The reader's messages in this room, by id: read from storage once,
    // and added to by keep.
    this.kept = new Map();
    for (const [url, entry] of Object.entries(ownMessages())) {
      const id = url.startsWith(this.url + "/") && decodeURIComponent(url.slice(this.url.length + 1));
      if (id) this.kept.set(id, entry);
    }
    this.timers = new Map(); // message id: the end of its edit window
    this.configure(settings);
  }

  // configure takes the handler's settings: moderate, edit_window in
  // seconds, and the reader's identity, and decorates the shown messages
  // again.
  configure({ moderate = false, edit_window = 0, identity = "" } = {}) {
    this.moderate = moderate;
    this.window = edit_window * 1000;
    this.identity = identity;
    for (const li of this.list.querySelectorAll("li[data-id]")) this.decorate(li);
  }

  messageURL(id) {
    return this.url + "/" + encodeURIComponent(id);
  }

  // keep remembers the submit answer m of the reader's own post, with its
  // secret, for the edit window, and offers its actions at once: the
  // stream may have shown it before the answer came.
  keep(m) {
    if (!m || !m.id || this.window <= 0) return;
    const own = ownMessages();
    const now = Date.now();
    for (const [url, v] of Object.entries(own)) if (v.until <= now) delete own[url];
    const entry = { secret: m.secret || "", until: Date.parse(m.time) + this.window };
    own[this.messageURL(m.id)] = entry;
    this.kept.set(m.id, entry);
    try {
      localStorage.setItem(ownKey, JSON.stringify(own));
    } catch {
      // Storage full or off: the actions last as long as the page.
    }
    const li = shownItem(this.list, m.id);
    if (li) this.decorate(li);
  }

  // signedInAuthor reports whether the reader, by the identity the server
  // knows them by, wrote the message of li.
  signedInAuthor(li) {
    return this.identity !== "" && li.querySelector(".verified") !== null &&
      li.querySelector(".user").textContent === this.identity;
  }

  // authorship is how the reader proves they wrote the message of li, and
  // until when they may: null when they did not, or may no longer.
  authorship(li) {
    const id = li.dataset.id;
    let own = this.kept.get(id) || null;
    if (!own && this.signedInAuthor(li)) {
      own = { secret: "", until: Date.parse(li.querySelector("time").dateTime) + this.window };
    }
    return own && this.window > 0 && own.until > Date.now() ? own : null;
  }

  // decorate puts the actions the reader may take on the message item li.
  decorate(li) {
    li.querySelector(":scope > .actions")?.remove();
    const own = this.authorship(li);
    if (!own && !this.moderate) return;
    const group = document.createElement("div");
    group.className = "actions";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Message by " + li.querySelector(".user").textContent + ", " + li.querySelector("time").textContent);
    const button = (label, open) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.addEventListener("click", () => open(b));
      group.append(b);
    };
    if (own) button("Edit", (b) => this.openEdit(li, own, b));
    button("Delete", (b) => this.openDelete(li, own, b));
    if (this.moderate && !own && !this.signedInAuthor(li)) button("Ban author", (b) => this.openBan(li, b));
    li.querySelector(".text").after(group);
    const id = li.dataset.id;
    if (own && !this.timers.has(id)) {
      // When the window closes, the author's buttons go.
      this.timers.set(id, setTimeout(() => {
        this.timers.delete(id);
        if (li.isConnected) this.decorate(li);
      }, Math.min(own.until - Date.now() + 100, 2 ** 31 - 1)));
    }
  }

  // panel opens a form under the message li, built by fill, which returns
  // what to focus: Escape or Cancel closes it and gives focus back to
  // opener; submitting runs act, which returns "" when it is done, or
  // what went wrong, shown in the form.
  panel(li, opener, fill, act) {
    li.querySelector(":scope > form.panel")?.remove();
    const form = document.createElement("form");
    form.className = "panel";
    const error = document.createElement("p");
    error.className = "action-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const focus = fill(form);
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    form.append(cancel, error);
    const close = () => {
      form.remove();
      if (opener.isConnected) opener.focus();
    };
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        close();
      }
    });
    let busy = false;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      // One request at a time. The button is not disabled, which would
      // take the focus from it.
      if (busy) return;
      busy = true;
      form.setAttribute("aria-busy", "true");
      const problem = await act();
      busy = false;
      form.removeAttribute("aria-busy");
      if (problem) {
        error.textContent = problem;
        error.hidden = false;
      } else {
        close();
      }
    });
    li.append(form);
    focus.focus();
    // All of the message and its form in sight, by scrolling the list's
    // box only: an embedded list never moves its host page.
    const scroller = this.list.parentElement;
    const below = li.getBoundingClientRect().bottom - scroller.getBoundingClientRect().bottom;
    if (below > 0) scroller.scrollTop += below;
  }

  openEdit(li, own, opener) {
    let field;
    this.panel(li, opener, (form) => {
      field = document.createElement("textarea");
      field.rows = 2;
      field.required = true;
      field.value = li.querySelector(".text").textContent;
      field.setAttribute("aria-label", "New text of the message");
      field.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          form.requestSubmit();
        }
      });
      form.append(field, submitButton("Save"));
      return field;
    }, async () => {
      const { problem, answer } = await this.send("PATCH", this.messageURL(li.dataset.id), own, { message: field.value });
      if (!problem) editItem(li, answer.message, answer.time);
      return problem;
    });
  }

  openDelete(li, own, opener) {
    this.panel(li, opener, (form) => {
      const ask = document.createElement("span");
      ask.textContent = "Delete this message for everyone?";
      const submit = submitButton("Delete");
      form.append(ask, submit);
      return submit;
    }, async () => {
      const { problem } = await this.send("DELETE", this.messageURL(li.dataset.id), own);
      if (!problem) this.say("Message deleted.");
      return problem;
    });
  }

  openBan(li, opener) {
    let duration, purge;
    this.panel(li, opener, (form) => {
      const label = document.createElement("label");
      label.textContent = "Ban for ";
      duration = document.createElement("select");
      for (const [value, text] of [["1h", "1 hour"], ["24h", "24 hours"], ["7d", "7 days"], ["forever", "forever"]]) {
        duration.append(new Option(text, value, value === "24h", value === "24h"));
      }
      label.append(duration);
      const purgeLabel = document.createElement("label");
      purge = document.createElement("input");
      purge.type = "checkbox";
      purgeLabel.append(purge, " Also delete their messages in this room");
      form.append(label, purgeLabel, submitButton("Ban"));
      return duration;
    }, async () => {
      const user = li.querySelector(".user").textContent;
      const bans = this.url.replace(/messages$/, "bans");
      const { problem } = await this.send("POST", bans, null, { message: li.dataset.id, for: duration.value, purge: purge.checked });
      if (!problem) this.say(user + " is banned for " + duration.selectedOptions[0].text + ".");
      return problem;
    });
  }

  // send asks the server for an action on a message, as its author with
  // own's secret when there is one, and returns what went wrong ("" when
  // nothing did) and the answer.
  async send(method, url, own, body) {
    const headers = {};
    if (own && own.secret) headers["Chat-Secret"] = own.secret;
    if (this.token) {
      try {
        headers.Authorization = "Bearer " + await this.token.get();
      } catch (err) {
        return { problem: "Not signed in: " + err.message + "." };
      }
    }
    const init = { method, headers };
    if (body) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const resp = await fetch(url, init);
      const answer = await resp.json().catch(() => ({}));
      if (resp.ok) return { problem: "", answer };
      return { problem: (answer.error || "the server answered " + resp.status) + "." };
    } catch {
      return { problem: "The server cannot be reached. Try again." };
    }
  }
}

// submitButton is a form's button that submits it, saying label.
function submitButton(label) {
  const b = document.createElement("button");
  b.type = "submit";
  b.textContent = label;
  return b;
}

// pageBack loads older messages into messages, olderPage at a time, from
// url (…/rooms/{room}/messages), before the oldest message shown: when
// the reader scrolls up to the top of the list, or presses button. status
// says how it went, for screen readers too. Once an answer says history
// starts there, the button goes and scrolling loads nothing more. With
// token, a tokenSource, the requests are signed in, as a private room's
// history needs.
export function pageBack(messages, url, button, status, token = null) {
  const scroller = messages.list.parentElement;
  // The status line is above the list too.
  const say = (text) => messages.keepPlace(() => (status.textContent = text));
  let loading = false;
  let lastTop = scroller.scrollTop;
  async function load() {
    if (loading || button.hidden) return;
    loading = true;
    say("Loading older messages…");
    try {
      let before, page;
      do {
        before = messages.oldestID();
        const query = new URLSearchParams({ limit: olderPage });
        if (before) query.set("before", before);
        const headers = { Accept: "application/json" };
        if (token) headers.Authorization = "Bearer " + await token.get();
        const resp = await fetch(url + "?" + query, { headers });
        // A room that was never made keeps nothing.
        if (resp.status === 404) page = { messages: [], start: true };
        else if (resp.ok) page = await resp.json();
        else throw new Error("the server answered " + resp.status);
        // Messages came live into a list that was empty: the answer may
        // hold newer ones than they are, so ask again, before them.
      } while (messages.oldestID() !== before);
      const added = messages.prepend(page.messages);
      // A reset: the oldest shown is of a room since deleted, which
      // keeps nothing older.
      if (page.start || page.reset || page.messages.length === 0) {
        const focused = button.getRootNode().activeElement === button;
        messages.keepPlace(() => (button.hidden = true));
        say("This is the start of the room.");
        if (focused) status.focus();
      } else {
        say(added + " older messages loaded.");
      }
    } catch {
      say("Older messages could not be loaded. Try again.");
    }
    loading = false;
  }
  button.hidden = false;
  button.addEventListener("click", load);
  scroller.addEventListener("scroll", () => {
    // Up to the top, that is: not a list that fills up, nor one scrolled
    // down to its newest message. A keyboard user who tabs to the button
    // scrolls there too, and presses it when they choose.
    const up = scroller.scrollTop < lastTop && scroller.scrollTop < 80;
    if (up && button.getRootNode().activeElement !== button) load();
    lastTop = scroller.scrollTop;
  });
}

// Tokens of a page that signs in by token: one source per token URL.
const tokenSources = new Map();

// tokenSource returns the source of the tokens that url gives, a function
// of the site that answers {"token": "..."} to a signed-in user.
export function tokenSource(url) {
  let t = tokenSources.get(url);
  if (!t) {
    t = new TokenSource(url);
    tokenSources.set(url, t);
  }
  return t;
}

// A TokenSource fetches a token before it is needed and a fresh one before
// the last expires. EventSource sends no headers, so a stream carries its
// token in the query; a post, in an Authorization header.
class TokenSource {
  constructor(url) {
    this.url = url;
    this.token = "";
    this.exp = 0; // ms since the epoch
    this.life = 0;
    this.pending = null;
  }

  // get resolves to a token not about to expire; it rejects with what to
  // tell the reader when the site gives none (not signed in).
  get() {
    // A refresh under way gives the fresh token, not the one it replaces.
    if (this.pending) return this.pending;
    if (this.token && Date.now() < this.exp - Math.min(30000, this.life / 2)) return Promise.resolve(this.token);
    return this.refresh();
  }

  // refresh fetches a fresh token, once for every caller that asks
  // meanwhile.
  refresh() {
    if (!this.pending) {
      this.pending = fetchToken(this.url).then((token) => {
        this.token = token;
        this.exp = expiry(token);
        this.life = this.exp - Date.now();
        return token;
      }).finally(() => (this.pending = null));
    }
    return this.pending;
  }
}

async function fetchToken(url) {
  let resp;
  try {
    resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  } catch (err) {
    throw new Error("the sign-in service cannot be reached");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok || typeof body.token !== "string") throw new Error(body.error || "sign in to read this room");
  return body.token;
}

// expiry is when a JWT expires, in ms since the epoch, from its exp; the
// signature is the server's to check.
function expiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return 1000 * (JSON.parse(atob(payload)).exp || 0);
  } catch (err) {
    return 0;
  }
}

// Connections are shared: every view of one room's stream URL on a page
// listens to one EventSource.
const connections = new Map();

// kept is how many received messages a connection holds for views that
// join it later.
const kept = 1000;

// subscribe adds a view to the stream at url (…/stream/{room}). The view's
// methods are called as the stream goes: state(text, state), message(m),
// edit(e), remove(e) for a delete e, presence(users), reset(), close(),
// denied(text). lastID resumes after a message the view already shows;
// history asks for that many recent messages instead; user, a function,
// names the reader in the room's presence each time the stream opens;
// token, a tokenSource, signs the stream in. A view that joins an open
// connection is first given what the connection has received. It returns
// the function that removes the view; the connection closes with its last
// view.
export function subscribe(url, view, { lastID = "", history = 50, user = () => "", token = null } = {}) {
  let c = connections.get(url);
  if (!c) {
    c = new Connection(url, lastID, user, token);
    connections.set(url, c);
  }
  c.add(view, history);
  return () => {
    c.views.delete(view);
    if (c.views.size === 0) {
      c.stop();
      connections.delete(url);
    }
  };
}

// A Connection is one room's stream. EventSource reconnects by itself when
// a stream ends, resuming after the last id it received, but gives up for
// good when an answer is not a stream (a 503 when the server is full, a
// 429): then the connection waits a backoff and opens a new one, resuming
// after the last id it received, so that nothing is missed or repeated.
// A stream signed in by token ends at the token's exp with an expired
// event: the connection opens again at once with a fresh token.
class Connection {
  constructor(url, lastID, user, token) {
    this.url = url;
    this.lastID = lastID;
    this.user = user;
    this.token = token;
    // Who is here: a stream's first presence event names everyone, the
    // next ones who came and went.
    this.here = new Set();
    this.freshPresence = true;
    this.history = 0;
    this.views = new Set();
    this.received = [];
    this.state = ["connecting", "connecting"];
    this.closed = false;
    this.stopped = false;
    this.refusals = 0;
    this.backedOff = 0; // refusals before the stream last opened
    this.openedAt = 0;
    this.retryTimer = 0;
    this.source = null;
    this.online = () => {
      // Back online: try now rather than at the end of the backoff.
      if (this.retryTimer && !this.closed) {
        clearTimeout(this.retryTimer);
        this.connect();
      }
    };
    window.addEventListener("online", this.online);
    // Views added in the same task (every <chat-room> of a page, as it
    // loads) are counted before the stream asks for history.
    queueMicrotask(() => this.connect());
  }

  add(view, history) {
    this.views.add(view);
    this.history = Math.max(this.history, history);
    view.state(...this.state);
    view.presence([...this.here].sort());
    for (const m of this.received.slice(-history)) view.message(m);
    if (this.closed) view.close();
  }

  emit(method, ...args) {
    for (const v of this.views) v[method](...args);
  }

  setState(text, state) {
    this.state = [text, state];
    this.emit("state", text, state);
  }

  // retry opens the stream again after a backoff.
  retry() {
    const wait = backoff(this.refusals++, streamRetryBase, streamRetryCap);
    this.setState("offline, retrying in " + Math.ceil(wait / 1000) + " s", "offline");
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  // deny tells the views why the stream is refused.
  deny(text) {
    this.setState("refused", "refused");
    this.emit("denied", text);
  }

  async connect() {
    if (this.views.size === 0 || this.stopped) return;
    this.retryTimer = 0;
    const query = new URLSearchParams({ presence: "1" });
    let token = "";
    if (this.token) {
      try {
        token = await this.token.get();
        query.set("access_token", token);
      } catch (err) {
        this.deny("Not signed in: " + err.message + ".");
        this.retry();
        return;
      }
      if (this.views.size === 0 || this.stopped) return;
    }
    if (this.lastID) query.set("last_event_id", this.lastID);
    else query.set("history", this.history);
    const user = this.user();
    if (user) query.set("user", user);
    const url = this.url + "?" + query;
    const source = new EventSource(url);
    this.source = source;
    source.onopen = () => {
      this.openedAt = Date.now();
      this.backedOff = this.refusals;
      this.refusals = 0;
      this.freshPresence = true;
      this.setState("live", "live");
    };
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        this.setState("reconnecting", "reconnecting");
        return;
      }
      source.close();
      if (this.token) this.explain(token);
      else this.retry();
    };
    source.addEventListener("message", (e) => {
      this.lastID = e.lastEventId;
      const m = JSON.parse(e.data);
      this.received.push(m);
      if (this.received.length > kept) this.received.splice(0, this.received.length - kept);
      this.emit("message", m);
    });
    // An edit or a delete changes what the connection holds for views
    // yet to join, as it changes what each view shows.
    source.addEventListener("edit", (e) => {
      this.lastID = e.lastEventId;
      const edit = JSON.parse(e.data);
      const m = this.received.find((m) => m.id === edit.target);
      if (m) Object.assign(m, { message: edit.message, edited: edit.time });
      this.emit("edit", edit);
    });
    source.addEventListener("delete", (e) => {
      this.lastID = e.lastEventId;
      const del = JSON.parse(e.data);
      this.received = this.received.filter((m) => m.id !== del.target);
      this.emit("remove", del);
    });
    source.addEventListener("presence", (e) => {
      const change = JSON.parse(e.data);
      if (this.freshPresence) this.here.clear();
      this.freshPresence = false;
      for (const u of change.joined) this.here.add(u);
      for (const u of change.left) this.here.delete(u);
      this.emit("presence", [...this.here].sort());
    });
    source.addEventListener("reset", () => this.emit("reset"));
    source.addEventListener("expired", () => {
      // The token ran out: open again with a fresh one (from the token
      // source, or the cookie the site's sign-in keeps fresh), after the
      // last message received, before EventSource retries with the old.
      // A stream that expires within a second of opening had a token
      // no fresher than the last: back off, as after a refusal, rather
      // than open again and again.
      source.close();
      if (this.token) this.token.refresh().catch(() => {});
      if (Date.now() - this.openedAt < 1000) {
        this.refusals = this.backedOff;
        this.retry();
      } else {
        this.connect();
      }
    });
    source.addEventListener("close", () => {
      source.close();
      this.closed = true;
      this.setState("closed", "closed");
      this.emit("close");
    });
  }

  // explain asks why a stream signed in by token was refused, as
  // EventSource does not tell, of the room's presence, which needs the
  // same grant and joins no one: a stream without the grant is refused for
  // good, with the server's reason; an expired or invalid token is
  // fetched again, as is one that reads the room but opened no stream
  // (past its exp, within the server's allowance for clock skew).
  async explain(token) {
    let status = 0;
    let problem = "";
    try {
      const presence = this.url.replace(/\/stream\/([^/]+)$/, "/rooms/$1/presence");
      const resp = await fetch(presence, { headers: { Accept: "application/json", Authorization: "Bearer " + token } });
      status = resp.status;
      if (!resp.ok) problem = (await resp.json().catch(() => ({}))).error || "";
    } catch (err) {
      // Offline: retry as any stream does.
    }
    if (this.stopped) return;
    if (status === 403) {
      this.deny("Refused: " + (problem || "you may not read this room") + ".");
      return;
    }
    if (status === 401) this.deny("Refused: " + (problem || "sign in again") + ".");
    if (status === 401 || status === 200) this.token.refresh().catch(() => {});
    this.retry();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    window.removeEventListener("online", this.online);
    if (this.source) this.source.close();
  }
}

// post sends a message and returns "" once the server has it, or what to
// tell the user; posted(answer) is given the server's answer, the message
// as stored. A failure that may pass (no connection, a 5xx, a 429) is
// retried with the same Idempotency-Key, so the server stores the message
// once even when only its answer was lost. With token, a tokenSource, the
// post is signed in, and sent again with a fresh token when the last one
// expired. posted(answer) is given the server's answer, the message as
// stored.
export async function post(url, payload, { token = null, posted = () => {} } = {}) {
  const key = newKey();
  let problem = "";
  let renewed = false;
  for (let attempt = 0; attempt < sendAttempts; attempt++) {
    let wait = backoff(attempt, sendRetryBase, sendRetryCap);
    const headers = { "Content-Type": "application/json", "Idempotency-Key": key };
    if (token) {
      try {
        headers.Authorization = "Bearer " + await token.get();
      } catch (err) {
        return "Not sent: " + err.message + ".";
      }
    }
    try {
      const resp = await fetch(url, { method: "POST", headers, body: payload });
      if (resp.ok) {
        posted(await resp.json().catch(() => null));
        return "";
      }
      const err = await resp.json().catch(() => ({}));
      problem = "Not sent: " + (err.error || "the server answered " + resp.status) + ".";
      if (token && resp.status === 401 && !renewed) {
        renewed = true;
        await token.refresh().catch(() => {});
        attempt--;
        continue;
      }
      if (!retryable.has(resp.status)) return problem;
      const after = 1000 * Number(resp.headers.get("Retry-After"));
      if (after > sendRetryCap) return problem;
      wait = Math.max(wait, after);
    } catch (err) {
      problem = "Not sent: the server cannot be reached.";
    }
    if (attempt + 1 < sendAttempts) await new Promise((r) => setTimeout(r, wait));
  }
  return problem;
}

// compose wires a message form: Enter sends and Shift+Enter adds a line;
// one post at a time, so a double Enter posts once; the text stays in the
// box when it was not sent. send(message) posts and returns post's answer.
export function compose(form, textField, sendError, send) {
  const sendButton = form.querySelector("button[type=submit]");
  textField.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  let sending = false;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const message = textField.value;
    if (sending || message.trim() === "") return;
    sending = true;
    sendButton.disabled = true;
    textField.readOnly = true;
    form.setAttribute("aria-busy", "true");
    const problem = await send(message);
    sending = false;
    sendButton.disabled = false;
    textField.readOnly = false;
    form.removeAttribute("aria-busy");
    if (problem) {
      sendError.textContent = problem;
      sendError.hidden = false;
    } else {
      textField.value = "";
      sendError.hidden = true;
    }
    textField.focus();
  });
}

// rememberName keeps the name typed in field in this browser.
export function rememberName(field) {
  const storageKey = "caddy-chat-user";
  field.value = localStorage.getItem(storageKey) || "";
  field.addEventListener("change", () => localStorage.setItem(storageKey, field.value.trim()));
}

// showHere writes who is here into element.
export function showHere(element, users) {
  element.textContent = users.length ? "Here: " + users.join(", ") : "";
}

export const notices = {
  reset: "Some messages may have been missed while you were away.",
  close: "This room was deleted.",
};
