// One room: its newest messages, older ones as you scroll up, new ones live through long
// polls (contract v1.1 `wait`), and sending with one Idempotency-Key per message. Authors
// show by display name (the user name on hover); a name that looks like another is marked.

import * as api from "./api.js";
import { byId, clearMessages, element, showError, whileBusy } from "./dom.js";
import { LookAlikes, skeleton, userText } from "./text.js";
import { Timeline } from "./timeline.js";

const PAGE = 50; // the newest messages a room opens with
const OLDER_PAGE = 100; // older messages fetched at once while scrolling up
const LIVE_PAGE = 200; // the contract's largest limit: a backlog comes in few requests
const LONG_POLL_SECONDS = 25; // each long poll's `wait` (the contract allows up to 30)
const POLL_INTERVAL_MS = 1000;
const LONGEST_PAUSE_MS = 5000;
const PROFILE_FETCHES = 4; // profiles asked for at once
const LIVE = "Live";
const DRAFTS = "chatsys.draft.";

// Where the unsent text of a room is kept in this tab: per user, so that another log-in in
// the same tab never finds it.
const draftKey = (username, room) => `${DRAFTS}${username}.${room}`;

export function forgetDrafts() {
  for (const key of Object.keys(sessionStorage)) if (key.startsWith(DRAFTS)) sessionStorage.removeItem(key);
}

export class RoomView {
  constructor(currentUser, readState) {
    this.currentUser = currentUser;
    this.readState = readState;
    this.form = byId("send-form");
    this.box = byId("message-text");
    this.jump = byId("jump");
    this.controller = null;
    this.room = null;
    this.names = new Map(); // user name -> display name (null: none, undefined: not asked yet)
    this.asking = [];
    this.fetching = 0;
    this.lookAlikes = new LookAlikes();
    this.timeline = new Timeline(byId("scroller"), byId("messages"), {
      author: (username) => this.author(username),
      mine: (username) => username === this.currentUser(),
      onOlder: () => this.older(),
      onMove: () => this.moved(),
    });
    this.jump.addEventListener("click", () => {
      this.timeline.showLatest();
      this.box.focus();
    });
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
    // A draft outlives a reload and the end of a session (it is kept in this tab).
    this.box.addEventListener("input", () => {
      if (this.room) sessionStorage.setItem(draftKey(this.currentUser(), this.room), this.box.value);
    });
    document.addEventListener("visibilitychange", () => this.moved());
  }

  open(room) {
    if (room === this.room && this.controller) return; // already open and following
    this.close();
    this.room = room;
    this.pending = null;
    this.loadingOlder = false;
    const state = this.readState();
    this.timeline.reset(state && state.read.has(room) ? state.lastRead(room) : null);
    byId("room-title").textContent = room;
    byId("room-missing").hidden = true;
    byId("scroller").hidden = false;
    this.form.hidden = false;
    byId("room-empty").hidden = true;
    byId("history-state").textContent = "";
    this.jump.hidden = true;
    this.box.value = sessionStorage.getItem(draftKey(this.currentUser(), room)) ?? "";
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

  // --- authors ----------------------------------------------------------------------------

  author(username) {
    if (this.lookAlikes.add(username)) this.markLookAlikes();
    if (this.names.get(username) === undefined && !this.asking.includes(username)) {
      this.asking.push(username);
      this.askProfiles();
    }
    const link = element("a", { className: "author", attributes: { href: `#/profile/${encodeURIComponent(username)}` } });
    link.dataset.user = username;
    this.fillAuthor(link, username);
    return link;
  }

  // The display name, the user name on hover, and a mark when either looks like another
  // user's name: then the user name is shown too, so that the two can be told apart.
  fillAuthor(link, username) {
    const display = this.names.get(username) || username;
    const others = this.lookAlikes.others(username);
    const displayKey = skeleton(display);
    const mimics = display !== username ? [...this.lookAlikes.bySkeleton.entries()]
      .filter(([key]) => key === displayKey).flatMap(([, names]) => [...names]).filter((name) => name !== username) : [];
    const warned = [...new Set([...others, ...mimics])];
    link.title = `@${username}`;
    link.replaceChildren(userText(display, "name"));
    if (display !== username && !warned.length) return;
    if (display !== username || warned.length) link.append(element("span", { className: "handle", text: ` @${username}` }));
    if (warned.length) {
      link.append(element("span", {
        className: "look-alike", text: `looks like ${warned.join(", ")}`,
        attributes: { title: "This name can be mistaken for another user's: check the @name." },
      }));
    }
  }

  markLookAlikes() {
    for (const link of document.querySelectorAll("#messages .author")) this.fillAuthor(link, link.dataset.user);
  }

  async askProfiles() {
    while (this.asking.length && this.fetching < PROFILE_FETCHES) {
      const username = this.asking.shift();
      this.fetching += 1;
      let name = null;
      try {
        const profile = await api.profile(username);
        name = typeof profile.display_name === "string" && profile.display_name.trim() ? profile.display_name : null;
      } catch {
        // No profile (404) or none to be had now: the user name serves.
      } finally {
        this.fetching -= 1;
      }
      this.names.set(username, name);
      if (name) {
        for (const link of document.querySelectorAll(`#messages .author[data-user="${CSS.escape(username)}"]`)) {
          this.fillAuthor(link, username);
        }
      }
    }
  }

  // --- history and live -------------------------------------------------------------------

  // The room's loop until `signal` ends it (another room or view, or the session's end):
  // once aborted, nothing it fetched is drawn.
  async run(room, signal) {
    this.setLive("Loading…");
    let first;
    try {
      first = await this.retrying(signal, () => api.messages(room, { limit: PAGE }, signal));
    } catch (error) {
      if (error.status === 404) this.missing(room);
      return;
    }
    if (!first || signal.aborted) return;
    this.readState()?.seen(room, first.next_after);
    this.history(first.messages.length ? Math.min(...first.messages.map((message) => message.seq)) : null);
    for (const message of first.messages) this.lookAlikes.add(String(message.author ?? ""));
    this.timeline.start(first.messages);
    this.timeline.scrolled();
    this.setLive(LIVE);
    await this.follow(room, signal);
  }

  missing(room) {
    this.setLive("");
    byId("room-missing-text").textContent = `There is no room named ${room}. Pick one from the list, or create it.`;
    byId("room-missing").hidden = false;
    byId("scroller").hidden = true;
    this.form.hidden = true;
    this.jump.hidden = true;
  }

  // Runs `request` until it answers, waiting out transient trouble; undefined when the view
  // closed or the session ended; throws a 404, shows any other error.
  async retrying(signal, request) {
    for (;;) {
      try {
        return await request();
      } catch (error) {
        if (error.status === 404 && !signal.aborted) throw error;
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
        page = await api.messages(room, { after: this.timeline.newest, limit: LIVE_PAGE, wait }, signal);
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
      this.arrived(page.messages);
      if (page.messages.length === LIVE_PAGE) pause = 0; // more waiting: fetch it at once
      else if (!longPoll) pause = POLL_INTERVAL_MS;
      else if (page.messages.length) pause = 0;
      // An empty page that came at once (a server that ignores `wait`, or one shutting down)
      // gets a pause, so the loop never asks in a tight circle.
      else pause = performance.now() - started < POLL_INTERVAL_MS ? POLL_INTERVAL_MS : 0;
    }
  }

  arrived(messages, follow = false) {
    if (!messages.length) return;
    // Messages that come while you are scrolled up or in another tab get the unread line.
    const state = this.readState();
    const away = !this.timeline.following || document.visibilityState !== "visible";
    if (state && away && !follow && messages.some((message) => message.seq > state.lastRead(this.room))) {
      this.timeline.markUnreadAfter(state.lastRead(this.room));
    }
    this.timeline.addNewer(messages, follow);
    this.readState()?.seen(this.room, this.timeline.newest);
    this.readState()?.changed();
    this.history();
    this.moved();
  }

  async older() {
    const oldest = this.timeline.oldest;
    if (!this.controller || this.loadingOlder || !(oldest > 1)) return;
    const { room } = this;
    const signal = this.controller.signal;
    this.loadingOlder = true;
    byId("history-state").textContent = "Loading older messages…";
    try {
      const page = await api.messages(room, { after: Math.max(0, oldest - OLDER_PAGE - 1), limit: OLDER_PAGE }, signal);
      if (room === this.room && !signal.aborted) this.timeline.addOlder(page.messages);
    } catch (error) {
      if (!signal.aborted && error.status !== 401) showError(api.describe(error));
    } finally {
      this.loadingOlder = false;
      if (room === this.room) this.history();
    }
  }

  // The line above the first message: loading, or the start of the room.
  history(oldest = this.timeline.oldest) {
    byId("room-empty").hidden = oldest !== null;
    byId("history-state").textContent = oldest === 1 ? `This is the start of ${this.room}.` : "";
  }

  // After any scroll or new message: read what is seen, offer the way down when not there.
  moved() {
    if (!this.room || !this.controller) return;
    const state = this.readState();
    const newest = this.timeline.newest;
    const atBottom = this.timeline.following;
    if (atBottom && newest && document.visibilityState === "visible") state?.markRead(this.room, newest);
    const unread = state ? state.unread(this.room) : 0;
    const drawnToEnd = this.timeline.hi === this.timeline.messages.length;
    this.jump.hidden = atBottom || (!unread && drawnToEnd && this.timeline.below() < byId("scroller").clientHeight);
    this.jump.textContent = unread ? `${unread} new message${unread === 1 ? "" : "s"} ↓` : "Jump to the latest ↓";
  }

  async send() {
    clearMessages();
    const text = this.box.value;
    if (!text.trim()) {
      showError("Write a message first.");
      this.box.focus();
      return;
    }
    if (text.length > 2000) {
      showError(`A message can be up to 2,000 characters; this one has ${text.length}.`);
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
        if (this.box.value === text) {
          this.box.value = "";
          sessionStorage.removeItem(draftKey(this.currentUser(), room));
        }
        if (Number.isInteger(message.seq)) {
          // The long poll brings every message up to ours first; ours shows once it is
          // next, or at once when nothing is missing before it.
          if (message.seq === this.timeline.newest + 1) this.arrived([message], true);
          else this.timeline.showLatest();
        }
      }
    } catch (error) {
      if (error.status !== 401) showError(`Not sent: ${api.describe(error, "message")}`);
    }
    this.box.focus();
  }
}
