// A room's messages, oldest at the top and newest at the bottom, drawn as a window: of all
// the messages loaded, only about WINDOW near the view are in the page, so a room of any
// length scrolls as lightly as a short one. Scrolling near an end draws the next messages
// there (from memory, or asks for older ones) and drops as many at the far end, keeping
// what is on screen still. Consecutive messages of one author are grouped, days separated.

import { element } from "./dom.js";
import { calmed, dayKey, dayLabel, exactTime, fillText, heavilyCombined, parseTime, relativeTime } from "./text.js";

const WINDOW = 150; // messages in the page at most
const STEP = 50; // drawn (and dropped) at once near an end
const EDGE_PX = 800; // how near an end counts as near
const BOTTOM_PX = 48; // this near the bottom is "at the bottom"
const GROUP_GAP_MS = 5 * 60 * 1000; // a pause this long starts a new group

export class Timeline {
  // render.author(username) -> the author's element; render.mine(username) -> bool;
  // onEdge("older") asks for older messages; onMove() after every scroll.
  constructor(scroller, list, { author, mine, onOlder, onMove }) {
    this.scroller = scroller;
    this.list = list;
    this.author = author;
    this.mine = mine;
    this.onOlder = onOlder;
    this.onMove = onMove;
    this.reset();
    let pending = false;
    scroller.addEventListener("scroll", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        this.scrolled();
      });
    }, { passive: true });
    // While the reader is at the bottom, anything that grows the page (a display name that
    // came, a taller composer, a narrower window) keeps the newest message in view.
    const keepDown = new ResizeObserver(() => {
      if (this.stuck && this.hi === this.messages.length) this.scrollToBottom();
    });
    keepDown.observe(list);
    keepDown.observe(scroller);
    setInterval(() => this.refreshTimes(), 30_000);
  }

  reset(unreadAfter = null) {
    this.messages = [];
    this.lo = 0;
    this.hi = 0;
    this.expanded = new Set();
    this.stuck = true; // following the newest message
    this.unreadAfter = unreadAfter;
    this.list.replaceChildren();
  }

  get newest() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  get oldest() {
    return this.messages.length ? this.messages[0].seq : null;
  }

  // How far the bottom of the content is below the bottom of the view.
  below() {
    return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight;
  }

  atBottom() {
    return this.hi === this.messages.length && this.below() < BOTTOM_PX;
  }

  // The reader is at the newest message and stays there as more come.
  get following() {
    return this.stuck && this.hi === this.messages.length;
  }

  // --- drawing ---------------------------------------------------------------------------

  item(index) {
    const message = this.messages[index];
    const previous = this.messages[index - 1];
    const moment = parseTime(message.created_at);
    const before = previous ? parseTime(previous.created_at) : null;
    const author = String(message.author ?? "");
    const newDay = !previous || dayKey(moment) !== dayKey(before);
    // Above the first message after the last one read, when the room has older ones.
    const unreadLine = this.unreadAfter !== null && message.seq > this.unreadAfter && message.seq > 1
      && (previous ? previous.seq <= this.unreadAfter : message.seq === this.unreadAfter + 1);
    const first = newDay || unreadLine || previous.author !== author
      || !moment || !before || moment - before > GROUP_GAP_MS;
    const item = element("li", { className: `message${first ? " first" : ""}${this.mine(author) ? " mine" : ""}` });
    item.dataset.seq = String(message.seq);
    if (newDay) item.append(element("p", { className: "day", text: dayLabel(moment) }));
    if (unreadLine) item.append(element("p", { className: "unread-line", text: "New messages" }));
    const time = element("time", {
      text: relativeTime(moment),
      attributes: { datetime: moment ? moment.toISOString() : "", title: exactTime(moment) },
    });
    item.append(first
      ? element("div", { className: "meta" }, [this.author(author), time])
      : element("div", { className: "meta grouped" }, [
        element("span", { className: "visually-hidden", text: `${author}:` }), time]));
    const text = String(message.text ?? "");
    const expanded = this.expanded.has(message.seq);
    const heavy = heavilyCombined(text);
    const body = fillText(element("div", { className: expanded ? "text" : "text clamp" }),
      heavy && !expanded ? calmed(text) : text, { links: true });
    item.append(body);
    if (heavy || expanded || text.length > 400 || text.split("\n").length > 8) {
      const more = element("button", {
        className: "more", text: expanded ? "Show less" : "Show more",
        attributes: { type: "button", "aria-expanded": String(expanded) },
      });
      more.addEventListener("click", () => this.toggle(message.seq));
      more.hidden = !(heavy || expanded); // a long text gets it once drawn taller than the clamp
      item.append(more);
    }
    return item;
  }

  // Shows "Show more" under the texts just drawn that the clamp cut.
  measure(items) {
    for (const item of items) {
      const more = item.querySelector(".more[hidden]");
      const body = item.querySelector(".text.clamp");
      if (more && body && body.scrollHeight > body.clientHeight + 1) more.hidden = false;
    }
  }

  toggle(seq) {
    if (this.expanded.has(seq)) this.expanded.delete(seq);
    else this.expanded.add(seq);
    const old = this.list.querySelector(`li[data-seq="${seq}"]`);
    if (!old) return;
    const fresh = this.item(this.messages.findIndex((message) => message.seq === seq));
    old.replaceWith(fresh);
    this.measure([fresh]);
    fresh.querySelector(".more")?.focus();
  }

  draw(lo, hi) {
    this.lo = lo;
    this.hi = hi;
    const items = [];
    for (let index = lo; index < hi; index += 1) items.push(this.item(index));
    this.list.replaceChildren(...items);
    this.measure(items);
  }

  // The first drawn item at least partly in view, and where it is: a change above or below
  // puts it back there, so what the reader looks at does not move.
  anchor() {
    const top = this.scroller.scrollTop;
    for (const child of this.list.children) {
      if (child.offsetTop + child.offsetHeight > top) return { child, offset: child.offsetTop - top };
    }
    return null;
  }

  restore(anchor) {
    if (anchor?.child.isConnected) this.scroller.scrollTop = anchor.child.offsetTop - anchor.offset;
  }

  drawAbove(count) {
    const anchor = this.anchor();
    const lo = Math.max(0, this.lo - count);
    const items = [];
    for (let index = lo; index < this.lo; index += 1) items.push(this.item(index));
    this.list.prepend(...items);
    this.lo = lo;
    while (this.hi - this.lo > WINDOW) {
      this.list.lastElementChild.remove();
      this.hi -= 1;
    }
    this.measure(items);
    this.restore(anchor);
  }

  drawBelow(count) {
    const anchor = this.anchor();
    const hi = Math.min(this.messages.length, this.hi + count);
    const items = [];
    for (let index = this.hi; index < hi; index += 1) items.push(this.item(index));
    this.list.append(...items);
    this.hi = hi;
    while (this.hi - this.lo > WINDOW) {
      this.list.firstElementChild.remove();
      this.lo += 1;
    }
    this.measure(items);
    this.restore(anchor);
  }

  // Moves the unread line to above the first message after `seq`.
  markUnreadAfter(seq) {
    if (this.unreadAfter !== null && this.unreadAfter >= seq) return;
    for (const line of this.list.querySelectorAll(".unread-line")) line.remove();
    this.unreadAfter = seq;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // --- what the room view calls ----------------------------------------------------------

  // The first page: drawn whole, scrolled to the unread line if it is there, else the bottom.
  start(messages) {
    this.messages = [...messages].sort((a, b) => a.seq - b.seq);
    this.draw(Math.max(0, this.messages.length - WINDOW), this.messages.length);
    const line = this.list.querySelector(".unread-line");
    this.stuck = !line;
    if (line) line.scrollIntoView({ block: "start" });
    else this.scrollToBottom();
    this.onMove();
  }

  // Older messages (all below the oldest loaded) go above, without moving the view.
  addOlder(messages) {
    const oldest = this.oldest ?? Infinity;
    const older = messages.filter((message) => message.seq < oldest).sort((a, b) => a.seq - b.seq);
    if (!older.length) return;
    const anchor = this.anchor();
    this.messages = [...older, ...this.messages];
    this.lo += older.length;
    this.hi += older.length;
    // The first drawn message may now join a group or a day above it: draw it again.
    if (this.hi > this.lo) this.list.firstElementChild.replaceWith(this.item(this.lo));
    this.restore(anchor);
    this.drawAbove(STEP);
  }

  // New messages at the end. In the page only when the window reaches the end; the view
  // follows them when it was at the bottom. Returns whether it was.
  addNewer(messages, follow = false) {
    const newest = this.newest;
    const newer = messages.filter((message) => message.seq > newest).sort((a, b) => a.seq - b.seq);
    const wasAtBottom = this.following;
    if (!newer.length) return wasAtBottom;
    const drawnToEnd = this.hi === this.messages.length;
    this.messages.push(...newer);
    if (follow) this.stuck = true;
    if (follow && !drawnToEnd) {
      this.showLatest();
      return true;
    }
    if (drawnToEnd) {
      const items = [];
      for (let index = this.hi; index < this.messages.length; index += 1) items.push(this.item(index));
      this.list.append(...items);
      this.hi = this.messages.length;
      this.measure(items);
      if (wasAtBottom || follow) {
        while (this.hi - this.lo > WINDOW) {
          this.list.firstElementChild.remove();
          this.lo += 1;
        }
        this.scrollToBottom();
      }
    }
    this.onMove();
    return wasAtBottom || follow;
  }

  showLatest() {
    this.stuck = true;
    this.draw(Math.max(0, this.messages.length - STEP), this.messages.length);
    this.scrollToBottom();
    this.onMove();
  }

  scrolled() {
    if (this.scroller.scrollTop < EDGE_PX) {
      if (this.lo > 0) this.drawAbove(STEP);
      else this.onOlder();
    }
    if (this.below() < EDGE_PX && this.hi < this.messages.length) this.drawBelow(STEP);
    this.stuck = this.atBottom();
    this.onMove();
  }

  refreshTimes() {
    for (const time of this.list.querySelectorAll("time")) {
      time.textContent = relativeTime(parseTime(time.getAttribute("datetime")));
    }
  }
}
