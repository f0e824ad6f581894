// caddy-chat pages. Every URL is relative to the page, so the chat works at
// any mount point. User text only ever enters the page as textContent.
"use strict";

(function () {
  const body = document.body;
  if (body.classList.contains("room")) {
    room(body);
  } else if (body.classList.contains("index")) {
    index();
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
    const seen = new Set();
    for (const li of list.children) seen.add(li.dataset.id);

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

    function append(m) {
      if (seen.has(m.id)) return; // a replay after a reconnect may repeat
      seen.add(m.id);
      const li = document.createElement("li");
      li.dataset.id = m.id;
      const user = document.createElement("span");
      user.className = "user";
      user.textContent = m.user;
      const time = document.createElement("time");
      time.dateTime = m.time;
      time.textContent = m.time.slice(11, 16);
      const text = document.createElement("p");
      text.className = "text";
      text.textContent = m.message;
      li.append(user, " ", time, text);
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
      list.append(li);
      if (atBottom) li.scrollIntoView({ block: "end" });
    }

    // The page holds history up to data-last-id; the stream resumes after
    // it (or, for a room that was empty, replays what came since). On a
    // reconnect the browser sends the last id it received itself.
    const lastID = body.dataset.lastId;
    const streamURL = "../stream/" + encodeURIComponent(name) +
      (lastID ? "?last_event_id=" + encodeURIComponent(lastID) : "?history=50");
    const source = new EventSource(streamURL);
    setStatus("connecting", "connecting");
    source.onopen = () => setStatus("live", "live");
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("offline", "offline");
      } else {
        setStatus("reconnecting", "reconnecting");
      }
    };
    source.addEventListener("message", (e) => append(JSON.parse(e.data)));
    source.addEventListener("reset", () =>
      show("Some messages may have been missed while you were away."));
    source.addEventListener("close", () => {
      source.close();
      setStatus("closed", "closed");
      show("This room was deleted.");
      form.querySelectorAll("input, textarea, button").forEach((el) => (el.disabled = true));
      if (deleteButton) deleteButton.disabled = true;
    });

    // Enter sends; Shift+Enter adds a line.
    textField.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const message = textField.value;
      if (message.trim() === "") return;
      const payload = JSON.stringify({ user: userField.value.trim(), message: message });
      // A retry after a failed connection carries the same key, so the
      // server stores the message once.
      const key = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          const resp = await fetch("", {
            method: "POST",
            headers: { "Content-Type": "application/json", "Idempotency-Key": key },
            body: payload,
          });
          if (resp.ok) {
            textField.value = "";
            notice.hidden = true;
          } else {
            const err = await resp.json().catch(() => ({}));
            show(err.error || "The message was not sent (" + resp.status + ").");
          }
          break;
        } catch (err) {
          await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
        }
      }
      textField.focus();
    });

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
