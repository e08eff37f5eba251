// The room list beside the conversation: a filter, the form that creates a room, and each
// room's unread count, kept live by asking for the list every few seconds. What you have
// read is remembered per user in localStorage; the tab title counts what you have not.

import * as api from "./api.js";
import { byId, clearMessages, element, showError, whileBusy } from "./dom.js";

export const roomHash = (name) => `#/room/${encodeURIComponent(name)}`;

const REFRESH_MS = 4000;
const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

// Per user: room -> the highest seq read. A room seen for the first time counts as read up
// to its newest message: joining the list of a busy server is not a pile of unread.
export class ReadState {
  constructor(username) {
    this.key = `chatsys.read.${username}`;
    this.latest = new Map(); // room -> newest seq known
    try {
      this.read = new Map(Object.entries(JSON.parse(localStorage.getItem(this.key)) ?? {}));
    } catch {
      this.read = new Map();
    }
    this.listeners = [];
  }

  save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(Object.fromEntries(this.read)));
    } catch {
      // Storage full or refused: the counts still hold for this tab.
    }
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  changed() {
    this.listeners.forEach((listener) => listener());
  }

  seen(room, latest) {
    if (!Number.isInteger(latest)) return;
    if (!this.read.has(room)) this.read.set(room, latest);
    if (latest > (this.latest.get(room) ?? -1)) this.latest.set(room, latest);
  }

  lastRead(room) {
    return this.read.get(room) ?? 0;
  }

  markRead(room, seq) {
    if (seq <= this.lastRead(room) && this.read.has(room)) return;
    this.read.set(room, seq);
    this.seen(room, seq);
    this.save();
    this.changed();
  }

  unread(room) {
    return Math.max(0, (this.latest.get(room) ?? 0) - this.lastRead(room));
  }

  total() {
    let sum = 0;
    for (const room of this.latest.keys()) sum += this.unread(room);
    return sum;
  }
}

export class RoomsView {
  constructor(readState, currentRoom) {
    this.readState = () => readState();
    this.currentRoom = currentRoom;
    this.list = byId("room-list");
    this.filter = byId("room-filter");
    this.rooms = [];
    this.loads = 0;
    this.timer = null;
    this.filter.addEventListener("input", () => this.draw());
    const form = byId("create-room-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const name = form.elements.name.value.trim();
      if (!ROOM_NAME.test(name)) {
        showError(name ? "A room name is 1 to 64 letters, digits, _ or -, with no spaces." : "Give the new room a name.");
        form.elements.name.focus();
        return;
      }
      try {
        const room = await whileBusy(form, () => api.createRoom(name));
        form.reset();
        location.hash = roomHash(typeof room.name === "string" ? room.name : name);
        this.load();
      } catch (error) {
        if (error.status === 409) showError(`There is a room named ${name} already.`);
        else if (error.status !== 401) showError(api.describe(error));
      }
    });
  }

  start() {
    this.stop();
    this.load();
    this.timer = setInterval(() => this.load(), REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.loads += 1;
    this.drawn = null;
  }

  async load() {
    const load = ++this.loads; // only the latest load may draw the list
    try {
      const rooms = await api.rooms();
      if (load !== this.loads) return;
      const state = this.readState();
      this.rooms = rooms.map((room) => ({ name: String(room?.name ?? ""), lastSeq: room?.last_seq }));
      for (const room of this.rooms) state?.seen(room.name, room.lastSeq);
      this.draw();
      state?.changed();
    } catch (error) {
      // The list is refreshed again in a few seconds: only a first failure is worth a line.
      if (load === this.loads && error.status !== 401 && !this.rooms.length) showError(api.describe(error));
    }
  }

  // The list as filtered, with each room's unread count; the open room is marked current.
  draw() {
    const state = this.readState();
    const wanted = this.filter.value.trim().toLowerCase();
    const open = this.currentRoom();
    const shown = this.rooms.filter((room) => room.name.toLowerCase().includes(wanted));
    const unreadOf = (room) => (state && room.name !== open ? state.unread(room.name) : 0);
    // Drawn again only when something shows differently, and a room link that had the focus
    // keeps it: the list is refreshed every few seconds under a keyboard user's hands.
    const drawn = JSON.stringify([open, shown.map((room) => [room.name, unreadOf(room)])]);
    if (drawn === this.drawn) return;
    this.drawn = drawn;
    const focused = this.list.contains(document.activeElement) ? document.activeElement.closest("li")?.dataset.room : null;
    this.list.replaceChildren(...shown.map((room) => {
      const unread = unreadOf(room);
      const link = element("a", { attributes: { href: roomHash(room.name) } }, [
        element("span", { className: "room-name", text: room.name }),
      ]);
      if (unread) {
        link.append(element("span", { className: "badge", text: String(unread) }),
          element("span", { className: "visually-hidden", text: unread === 1 ? " unread message" : " unread messages" }));
      }
      if (room.name === open) link.setAttribute("aria-current", "page");
      const item = element("li", { className: unread ? "unread" : "" }, [link]);
      item.dataset.room = room.name;
      return item;
    }));
    if (focused !== null) this.list.querySelector(`li[data-room="${CSS.escape(focused)}"] a`)?.focus();
    byId("rooms-empty").hidden = shown.length > 0 || !this.rooms.length;
  }
}
