// caddy-chat pages. Every URL is relative to the page, so the chat works at
// any mount point. User text only ever enters the page as textContent.
"use strict";

(function () {
  // Reopening a refused stream waits 0.5-1 s, then twice as long each time,
  // up to 15-30 s. A post is tried 4 times, waiting 0.5-1 s, 1-2 s, 2-4 s.
  const streamRetryBase = 1000;
  const streamRetryCap = 30000;
  const sendAttempts = 4;
  const sendRetryBase = 1000;
  const sendRetryCap = 10000;
  // Answers to a post that may pass if it is sent again.
  const retryable = new Set([408, 429, 500, 502, 503, 504]);
  // Times in the reader's zone and locale: the clock on each message, the
  // full time in its title, the date on a day separator.
  const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full" });

  const body = document.body;
  if (body.classList.contains("room")) {
    room(body);
  } else if (body.classList.contains("index")) {
    index();
  }

  // backoff is how long to wait before try n+1 (n from 0): base doubled n
  // times, up to cap, of which a random half, so that the pages a server
  // refused do not all come back at once.
  function backoff(n, base, cap) {
    const full = Math.min(cap, base * 2 ** n);
    return full / 2 + Math.random() * full / 2;
  }

  // newKey returns an Idempotency-Key. (crypto.randomUUID exists only on
  // HTTPS and localhost.)
  function newKey() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  function setClock(time, when) {
    time.textContent = clockFormat.format(when);
    time.title = fullFormat.format(when);
  }

  // dayKey is when's date in the reader's zone, as YYYY-MM-DD.
  function dayKey(when) {
    const pad = (n) => String(n).padStart(2, "0");
    return when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate());
  }

  function daySeparator(when) {
    const li = document.createElement("li");
    li.className = "day";
    const time = document.createElement("time");
    time.dateTime = dayKey(when);
    time.textContent = dayFormat.format(when);
    li.append(time);
    return li;
  }

  function index() {
    const list = document.getElementById("rooms");
    async function refresh() {
      try {
        const resp = await fetch("rooms", { headers: { Accept: "application/json" } });
        if (!resp.ok) return;
        const data = await resp.json();
        list.replaceChildren(...data.rooms.map((r) => {
          const li = document.createElement("li");
          const a = document.createElement("a");
          a.href = "room/" + encodeURIComponent(r.name);
          a.textContent = r.name;
          const count = document.createElement("span");
          count.className = "count";
          count.textContent = r.subscribers + " online";
          li.append(a, " ", count);
          return li;
        }));
        if (data.rooms.length === 0) {
          const li = document.createElement("li");
          li.className = "empty";
          li.textContent = "No rooms yet. Open one above.";
          list.append(li);
        }
      } catch (e) {
        // Offline for a moment; the next refresh tries again.
      }
    }
    setInterval(refresh, 5000);
  }

  function room(body) {
    const name = body.dataset.room;
    const list = document.getElementById("messages");
    const status = document.getElementById("status");
    const notice = document.getElementById("notice");
    const form = document.getElementById("compose");
    const userField = document.getElementById("user");
    const textField = document.getElementById("message");
    const deleteButton = document.getElementById("delete");
    const sendButton = form.querySelector("button[type=submit]");
    const sendError = document.getElementById("send-error");
    const seen = new Set();
    for (const li of list.querySelectorAll("li[data-id]")) seen.add(li.dataset.id);
    let shownDay = ""; // the reader's date of the last message shown
    localTimes();

    // The name is remembered in this browser, unless the server says who
    // the author is.
    const storageKey = "caddy-chat-user";
    if (!body.dataset.identity) {
      userField.value = localStorage.getItem(storageKey) || "";
      userField.addEventListener("change", () => localStorage.setItem(storageKey, userField.value.trim()));
    }

    function setStatus(text, state) {
      status.textContent = text;
      status.dataset.state = state;
    }

    function show(text) {
      notice.textContent = text;
      notice.hidden = false;
    }

    // The server renders times in UTC; here they become the reader's, with
    // a day separator wherever the reader's date changes.
    function localTimes() {
      for (const li of list.querySelectorAll("li.day")) li.remove();
      for (const li of list.querySelectorAll("li[data-id]")) {
        const time = li.querySelector("time");
        const when = new Date(time.dateTime);
        setClock(time, when);
        if (dayKey(when) !== shownDay) {
          shownDay = dayKey(when);
          li.before(daySeparator(when));
        }
      }
    }

    function append(m) {
      if (seen.has(m.id)) return; // a replay after a reconnect may repeat
      seen.add(m.id);
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
      const when = new Date(m.time);
      setClock(time, when);
      const text = document.createElement("p");
      text.className = "text";
      text.textContent = m.message;
      li.append(" ", time, text);
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
      if (dayKey(when) !== shownDay) {
        shownDay = dayKey(when);
        list.append(daySeparator(when));
      }
      list.append(li);
      if (atBottom) li.scrollIntoView({ block: "end" });
    }

    // The page holds history up to data-last-id; the stream resumes after
    // it (or, for a room that was empty, replays what came since), and every
    // stream the page opens later resumes after the last id it received.
    // EventSource reconnects by itself when a stream ends, but gives up for
    // good when an answer is not a stream (a 503 when the server is full, a
    // 429): then the page waits a backoff and opens a new one.
    let lastID = body.dataset.lastId;
    let refusals = 0;
    let retryTimer = 0;
    let deleted = false;

    function connect() {
      retryTimer = 0;
      const source = new EventSource("../stream/" + encodeURIComponent(name) +
        (lastID ? "?last_event_id=" + encodeURIComponent(lastID) : "?history=50"));
      source.onopen = () => {
        refusals = 0;
        setStatus("live", "live");
      };
      source.onerror = () => {
        if (source.readyState !== EventSource.CLOSED) {
          setStatus("reconnecting", "reconnecting");
          return;
        }
        source.close();
        const wait = backoff(refusals++, streamRetryBase, streamRetryCap);
        setStatus("offline, retrying in " + Math.ceil(wait / 1000) + " s", "offline");
        retryTimer = setTimeout(connect, wait);
      };
      source.addEventListener("message", (e) => {
        lastID = e.lastEventId;
        append(JSON.parse(e.data));
      });
      source.addEventListener("reset", () =>
        show("Some messages may have been missed while you were away."));
      source.addEventListener("close", () => {
        source.close();
        deleted = true;
        setStatus("closed", "closed");
        show("This room was deleted.");
        form.querySelectorAll("input, textarea, button").forEach((el) => (el.disabled = true));
        if (deleteButton) deleteButton.disabled = true;
      });
    }
    setStatus("connecting", "connecting");
    connect();
    // Back online: try now rather than at the end of the backoff.
    window.addEventListener("online", () => {
      if (retryTimer && !deleted) {
        clearTimeout(retryTimer);
        connect();
      }
    });

    // Enter sends; Shift+Enter adds a line.
    textField.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });

    // One post at a time: while one is in flight the form takes no other,
    // so a double Enter posts once.
    let sending = false;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const message = textField.value;
      if (sending || message.trim() === "") return;
      sending = true;
      sendButton.disabled = true;
      textField.readOnly = true;
      form.setAttribute("aria-busy", "true");
      const problem = await post(JSON.stringify({ user: userField.value.trim(), message: message }));
      sending = false;
      sendButton.disabled = false;
      textField.readOnly = false;
      form.removeAttribute("aria-busy");
      if (problem) {
        // The text stays in the box, to send again.
        sendError.textContent = problem;
        sendError.hidden = false;
      } else {
        textField.value = "";
        sendError.hidden = true;
      }
      textField.focus();
    });

    // post sends a message and returns "" once the server has it, or what
    // to tell the user. A failure that may pass (no connection, a 5xx, a
    // 429) is retried with the same Idempotency-Key, so the server stores
    // the message once even when only its answer was lost.
    async function post(payload) {
      const key = newKey();
      let problem = "";
      for (let attempt = 0; attempt < sendAttempts; attempt++) {
        let wait = backoff(attempt, sendRetryBase, sendRetryCap);
        try {
          const resp = await fetch("", {
            method: "POST",
            headers: { "Content-Type": "application/json", "Idempotency-Key": key },
            body: payload,
          });
          if (resp.ok) return "";
          const err = await resp.json().catch(() => ({}));
          problem = "Not sent: " + (err.error || "the server answered " + resp.status) + ".";
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

    if (deleteButton) {
      deleteButton.hidden = false;
      deleteButton.addEventListener("click", async () => {
        if (!confirm("Delete room " + name + " and its history?")) return;
        const resp = await fetch("", { method: "DELETE" });
        if (!resp.ok) {
          const err = await resp.json().catch(() => ({}));
          show(err.error || "The room was not deleted.");
        }
      });
    }
    const last = list.lastElementChild;
    if (last) last.scrollIntoView({ block: "end" });
  }
})();
