// The room list with each room's message count, and the form that creates a room.

import * as api from "./api.js";
import { byId, clearMessages, element, showError, whileBusy } from "./dom.js";

export const roomHash = (name) => `#/room/${encodeURIComponent(name)}`;

function count(lastSeq) {
  if (!Number.isInteger(lastSeq)) return "";
  return lastSeq === 1 ? "1 message" : `${lastSeq} messages`;
}

export class RoomsView {
  constructor() {
    this.list = byId("room-list");
    this.loads = 0;
    byId("refresh-rooms").addEventListener("click", () => this.load());
    const form = byId("create-room-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const name = form.elements.name.value.trim();
      if (!name) {
        showError("Give the new room a name.");
        return;
      }
      try {
        const room = await whileBusy(form, () => api.createRoom(name));
        form.reset();
        location.hash = roomHash(typeof room.name === "string" ? room.name : name);
      } catch (error) {
        if (error.status !== 401) showError(api.describe(error));
      }
    });
  }

  async load() {
    const load = ++this.loads; // only the latest load may draw the list
    try {
      const rooms = await api.rooms();
      if (load !== this.loads) return;
      this.list.replaceChildren(...rooms.map((room) => {
        const name = String(room?.name ?? "");
        return element("li", {}, [
          element("a", { text: name, attributes: { href: roomHash(name) } }),
          element("span", { className: "count", text: count(room?.last_seq) }),
        ]);
      }));
    } catch (error) {
      if (load === this.loads && error.status !== 401) showError(api.describe(error));
    }
  }
}
