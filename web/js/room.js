// One room: its history newest first with older pages on demand, new messages live through
// long polls (contract v1.1 `wait`), and sending with one Idempotency-Key per message.

import * as api from "./api.js";
import { byId, clearMessages, element, localTime, showError, whileBusy } from "./dom.js";

const PAGE = 50; // history shown at first and per "Older messages"
const LIVE_PAGE = 200; // the contract's largest limit: a backlog comes in few requests
const LONG_POLL_SECONDS = 25; // each long poll's `wait` (the contract allows up to 30)
const POLL_INTERVAL_MS = 1000;
const LONGEST_PAUSE_MS = 5000;
const LIVE = "Live: new messages appear as they are posted.";

export class RoomView {
  constructor(currentUser) {
    this.currentUser = currentUser;
    this.list = byId("messages");
    this.form = byId("send-form");
    this.box = byId("message-text");
    this.olderButton = byId("older");
    this.controller = null;
    this.room = null;
    this.olderButton.addEventListener("click", () => this.older());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
  }

  open(room) {
    if (room === this.room && this.controller) return; // already open and following
    this.close();
    this.room = room;
    this.shown = new Map(); // seq -> its list item
    this.after = 0; // the highest seq the live loop has been given
    this.oldest = null;
    this.pending = null;
    this.list.replaceChildren();
    byId("room-title").textContent = room;
    this.olderButton.hidden = true;
    byId("room-empty").hidden = true;
    this.controller = new AbortController();
    this.run(room, this.controller.signal);
  }

  close() {
    this.controller?.abort();
    this.controller = null;
    this.room = null;
  }

  setLive(text) {
    byId("live-state").textContent = text;
  }

  // The room's loop until `signal` ends it (another room or view, or the session's end):
  // once aborted, nothing it fetched is drawn.
  async run(room, signal) {
    this.setLive("Loading…");
    const first = await this.retrying(signal, () => api.messages(room, { limit: PAGE }, signal));
    if (!first || signal.aborted) return;
    this.add(first.messages);
    this.after = first.next_after;
    this.setLive(LIVE);
    await this.follow(room, signal);
  }

  // Runs `request` until it answers, waiting out transient trouble; undefined when the view
  // closed, the session ended or the error is not worth a retry.
  async retrying(signal, request) {
    for (;;) {
      try {
        return await request();
      } catch (error) {
        const pause = this.trouble(error, signal);
        if (pause === null) return undefined;
        await api.sleep(pause, signal);
      }
    }
  }

  // How long to pause before asking again after `error`, or null to stop: no answer, a 5xx
  // or a 429 is waited out (nothing is lost, the next request starts at the same seq).
  trouble(error, signal) {
    if (signal.aborted || error.status === 401) return null;
    if (!(error instanceof api.ApiError) || !(error.transient || error.status === 429)) {
      showError(api.describe(error));
      this.setLive("");
      return null;
    }
    this.setLive(`${error.message} Still trying; nothing is lost meanwhile.`);
    return Math.min(Math.max(error.retryAfter ?? 1, 1) * 1000, LONGEST_PAUSE_MS);
  }

  async follow(room, signal) {
    let longPoll = true;
    let pause = 0;
    while (!signal.aborted) {
      if (pause) await api.sleep(pause, signal);
      if (signal.aborted) return;
      const started = performance.now();
      const wait = longPoll ? LONG_POLL_SECONDS : undefined;
      let page;
      try {
        page = await api.messages(room, { after: this.after, limit: LIVE_PAGE, wait }, signal);
      } catch (error) {
        // A v1 server refuses `wait` with 400: from then on, plain polls.
        if (longPoll && error.status === 400 && !signal.aborted) {
          longPoll = false;
          this.setLive("Polling every second: this chat service does not hold requests.");
          pause = 0;
          continue;
        }
        pause = this.trouble(error, signal);
        if (pause === null) return;
        continue;
      }
      if (signal.aborted) return;
      this.setLive(longPoll ? LIVE : "Polling every second.");
      this.add(page.messages);
      this.after = Math.max(this.after, page.next_after);
      if (page.messages.length === LIVE_PAGE) pause = 0; // more waiting: fetch it at once
      else if (!longPoll) pause = POLL_INTERVAL_MS;
      else if (page.messages.length) pause = 0;
      // An empty page that came at once (a server that ignores `wait`, or one shutting down)
      // gets a pause, so the loop never asks in a tight circle.
      else pause = performance.now() - started < POLL_INTERVAL_MS ? POLL_INTERVAL_MS : 0;
    }
  }

  async older() {
    if (!this.controller || !(this.oldest > 1)) return;
    const { room, oldest } = this;
    const signal = this.controller.signal;
    // The PAGE messages just below the oldest shown; near the start the page overlaps what
    // is shown already, and add() leaves those out.
    const after = Math.max(0, oldest - PAGE - 1);
    this.olderButton.disabled = true;
    try {
      const page = await api.messages(room, { after, limit: PAGE }, signal);
      if (room === this.room) this.add(page.messages.filter((message) => message.seq < oldest));
    } catch (error) {
      if (!signal.aborted && error.status !== 401) showError(api.describe(error));
    } finally {
      this.olderButton.disabled = false;
    }
  }

  add(messages) {
    for (const message of messages) {
      if (this.shown.has(message.seq)) continue;
      const item = this.render(message);
      this.shown.set(message.seq, item);
      // Newest first: before the first shown message with a lower seq.
      const next = Array.from(this.list.children).find((child) => Number(child.dataset.seq) < message.seq);
      this.list.insertBefore(item, next ?? null);
      if (this.oldest === null || message.seq < this.oldest) this.oldest = message.seq;
    }
    byId("room-empty").hidden = this.shown.size > 0;
    this.olderButton.hidden = !(this.oldest > 1);
  }

  render(message) {
    const author = String(message.author ?? "");
    const item = element("li", { className: author === this.currentUser() ? "message mine" : "message" }, [
      element("div", { className: "meta" }, [
        element("a", { className: "author", text: author, attributes: { href: `#/profile/${encodeURIComponent(author)}` } }),
        element("span", { className: "seq", text: `#${message.seq}` }),
        element("time", { text: localTime(message.created_at), attributes: { datetime: String(message.created_at ?? "") } }),
      ]),
      element("p", { className: "text", text: String(message.text ?? "") }),
    ]);
    item.dataset.seq = String(message.seq);
    return item;
  }

  async send() {
    clearMessages();
    const text = this.box.value;
    if (!text.trim()) {
      showError("Write a message first.");
      this.box.focus();
      return;
    }
    const { room } = this;
    // Sending the same text again after a failure keeps its key: had the first try been
    // stored after all, it is still stored once.
    if (!this.pending || this.pending.room !== room || this.pending.text !== text) {
      this.pending = { room, text, key: api.newIdempotencyKey() };
    }
    const { key } = this.pending;
    try {
      const message = await whileBusy(this.form, () => api.send(room, text, key));
      if (this.pending?.key === key) this.pending = null;
      if (room === this.room) {
        if (this.box.value === text) this.box.value = "";
        if (Number.isInteger(message.seq)) this.add([message]);
      }
    } catch (error) {
      if (error.status !== 401) showError(`Not sent: ${api.describe(error)}`);
    }
    this.box.focus();
  }
}
