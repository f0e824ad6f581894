// <chat-room>: a live room on any page of the site.
//
//   <script type="module" src="/chat/widget.js"></script>
//   <chat-room room="lobby"></chat-room>
//
// Attributes: room; src, the chat's mount point (by default where this
// script was loaded from); history, how many messages to show at first
// (default 50; older ones load as the reader scrolls up); user, a preset
// name; token-url, a URL of the site that answers {"token": "..."}, for
// private rooms: the element fetches a token before it connects and a
// fresh one before it expires. It renders in a shadow root, styled by
// static/widget.css, which it fetches once and adopts, so that it runs under
// a host CSP without 'unsafe-inline'. Several elements for one room share
// one stream.
import { MessageActions, MessageList, compose, notices, pageBack, post, rememberName, showHere, subscribe, tokenSource } from "./static/core.js";

const base = new URL(".", import.meta.url);

// One style sheet for every element; it fills in when widget.css arrives.
const sheet = new CSSStyleSheet();
const styled = fetch(new URL("static/widget.css", base))
  .then((resp) => (resp.ok ? resp.text() : ""))
  .then((css) => sheet.replace(css))
  .catch(() => {});

// The element's parts; user text never enters it but as textContent.
const template = document.createElement("template");
template.innerHTML = `<section part="box" hidden>
<header><h2 part="title"></h2><p class="status" role="status" aria-live="polite"></p><p class="here"></p><p class="action-status" role="status" aria-live="polite"></p></header>
<div class="scroller"><div class="older"><button type="button" hidden>Load older messages</button><p class="older-status" role="status" aria-live="polite" tabindex="-1"></p></div><ol class="messages" aria-live="polite" aria-label="Messages"></ol></div>
<p class="notice" role="alert" hidden></p>
<form class="compose">
<input class="name" name="user" maxlength="64" placeholder="name" autocomplete="nickname" aria-label="Name">
<textarea class="message" name="message" rows="1" required aria-label="Message" placeholder="Enter sends, Shift+Enter adds a line"></textarea>
<button type="submit">Send</button>
<p class="send-error" role="alert" hidden></p>
</form>
</section>`;

// settings asks the chat at src what its readers may do to messages
// (see MessageActions.configure), once for every element of one chat. A
// chat that does not answer offers no actions.
const asked = new Map();
function settings(src) {
  const url = new URL("config", src).href;
  if (!asked.has(url)) {
    asked.set(url, fetch(url, { headers: { Accept: "application/json" } })
      .then((resp) => (resp.ok ? resp.json() : {}))
      .catch(() => ({})));
  }
  return asked.get(url);
}

class ChatRoom extends HTMLElement {
  connectedCallback() {
    if (!this.shadowRoot) {
      this.attachShadow({ mode: "open" }).adoptedStyleSheets = [sheet];
    }
    const room = this.getAttribute("room") || "";
    const src = new URL(this.getAttribute("src") || base, document.baseURI);
    if (!src.pathname.endsWith("/")) src.pathname += "/";
    const history = Math.max(0, parseInt(this.getAttribute("history") || "50", 10) || 0);
    const root = this.shadowRoot;
    root.replaceChildren(template.content.cloneNode(true));
    const box = root.querySelector("section");
    const status = root.querySelector(".status");
    const notice = root.querySelector(".notice");
    const form = root.querySelector("form");
    const userField = root.querySelector("input.name");
    root.querySelector("h2").textContent = room;
    if (this.hasAttribute("user")) {
      userField.value = this.getAttribute("user");
      userField.readOnly = true;
    } else {
      rememberName(userField);
    }
    styled.then(() => (box.hidden = false));

    const list = root.querySelector(".messages");
    const show = (text) => {
      notice.textContent = text;
      notice.hidden = false;
    };
    const enc = encodeURIComponent(room);
    const tokenURL = this.getAttribute("token-url");
    const token = tokenURL ? tokenSource(new URL(tokenURL, document.baseURI).href) : null;
    const messagesURL = new URL("rooms/" + enc + "/messages", src).href;
    const actionStatus = root.querySelector(".action-status");
    const actions = new MessageActions(list, messagesURL, {}, (text) => (actionStatus.textContent = text), token);
    settings(src).then((s) => actions.configure(s));
    const messages = new MessageList(list, (li) => actions.decorate(li));
    pageBack(messages, messagesURL, root.querySelector(".older button"), root.querySelector(".older-status"), token);
    this.unsubscribe = subscribe(new URL("stream/" + enc, src).href, {
      state(text, state) {
        status.textContent = text;
        status.dataset.state = state;
      },
      message: (m) => messages.append(m),
      edit: (e) => messages.edit(e),
      remove: (e) => messages.remove(e),
      presence: (users) => showHere(root.querySelector(".here"), users),
      reset: () => show(notices.reset),
      close() {
        show(notices.close);
        form.querySelectorAll("input, textarea, button").forEach((el) => (el.disabled = true));
      },
      denied: show,
    }, { history, user: () => userField.value.trim(), token });
    compose(form, root.querySelector(".message"), root.querySelector(".send-error"), (message) =>
      post(new URL("room/" + enc, src).href, JSON.stringify({ user: userField.value.trim(), message }), { token, posted: (m) => actions.keep(m) }));
  }

  disconnectedCallback() {
    if (this.unsubscribe) this.unsubscribe();
    this.unsubscribe = null;
  }
}

if (!customElements.get("chat-room")) customElements.define("chat-room", ChatRoom);
