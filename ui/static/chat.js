// caddy-chat pages. Every URL is relative to the page, so the chat works at
// any mount point.
import { MessageActions, MessageList, compose, notices, pageBack, post, rememberName, showHere, subscribe, tokenSource } from "./core.js";

const body = document.body;
if (body.classList.contains("room")) {
  room(body);
} else if (body.classList.contains("index")) {
  index(body);
}

// pageToken is the source of the page's tokens, with the token block's
// token_url; null without.
function pageToken(body) {
  return body.dataset.tokenUrl ? tokenSource(new URL(body.dataset.tokenUrl, document.baseURI).href) : null;
}

function index(body) {
  const list = document.getElementById("rooms");
  const token = pageToken(body);
  async function refresh() {
    try {
      const headers = { Accept: "application/json" };
      // Signed in, the list has the private rooms the token grants;
      // not signed in, the public ones.
      const signedIn = token ? await token.get().catch(() => "") : "";
      if (signedIn) headers.Authorization = "Bearer " + signedIn;
      const resp = await fetch("rooms", { headers });
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
  const here = document.getElementById("here");
  const older = document.getElementById("older");
  // With the token block's token_url, the page signs in by token.
  const token = pageToken(body);
  const messagesURL = "../rooms/" + encodeURIComponent(name) + "/messages";
  const actionStatus = document.getElementById("action-status");
  const actions = new MessageActions(list, messagesURL, {
    moderate: "moderate" in body.dataset,
    edit_window: Number(body.dataset.editWindow),
    identity: body.dataset.identity,
  }, (text) => (actionStatus.textContent = text), token);
  const messages = new MessageList(list, (li) => actions.decorate(li));
  messages.localTimes();

  // The name is remembered in this browser, unless the server says who
  // the author is.
  if (!body.dataset.identity) rememberName(userField);

  function show(text) {
    notice.textContent = text;
    notice.hidden = false;
  }

  // The page offers older messages when the room keeps more than it shows.
  if (older) {
    pageBack(messages, messagesURL, older, document.getElementById("older-status"), token);
  }

  // The page holds history up to data-last-id; the stream resumes after
  // it, or, for a room that was empty, replays what came since.
  subscribe("../stream/" + encodeURIComponent(name), {
    state(text, state) {
      status.textContent = text;
      status.dataset.state = state;
    },
    message: (m) => messages.append(m),
    edit: (e) => messages.edit(e),
    remove: (e) => messages.remove(e),
    presence: (users) => showHere(here, users),
    reset: () => show(notices.reset),
    close() {
      show(notices.close);
      form.querySelectorAll("input, textarea, button").forEach((el) => (el.disabled = true));
      if (deleteButton) deleteButton.disabled = true;
    },
    denied: show,
  }, { lastID: body.dataset.lastId, history: 50, user: () => userField.value.trim(), token });

  compose(form, textField, document.getElementById("send-error"), (message) =>
    post("", JSON.stringify({ user: userField.value.trim(), message: message }), { token, posted: (m) => actions.keep(m) }));

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
  const main = list.parentElement;
  main.scrollTop = main.scrollHeight;
}
