// Other people's text on screen as it was written: isolated from its surroundings, with
// every bidirectional embedding, override or isolate control shown as a small mark instead
// of applied, http(s) links made clickable, and a look-alike check for user names.

import { element } from "./dom.js";

// The controls that can reorder text (Unicode's embeddings, overrides and isolates).
const CONTROL_NAMES = {
  "\u202A": "LRE", "\u202B": "RLE", "\u202C": "PDF", "\u202D": "LRO", "\u202E": "RLO",
  "\u2066": "LRI", "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI",
};
const CONTROLS = /[\u202A-\u202E\u2066-\u2069]/g;
const LINK = /\bhttps?:\/\/[^\s<>"'`]+/g;
const TRAILING_PUNCTUATION = /[.,;:!?)\]}]+$/;
// More combining marks than this on one character are cut in the short form.
const MARKS_KEPT = 2;
const EXCESS_MARKS = new RegExp(`(\\p{M}{${MARKS_KEPT}})\\p{M}+`, "gu");

export function hasControls(text) {
  CONTROLS.lastIndex = 0;
  return CONTROLS.test(text);
}

export function heavilyCombined(text) {
  EXCESS_MARKS.lastIndex = 0;
  return EXCESS_MARKS.test(text);
}

// The text with runs of stacked accents cut to MARKS_KEPT per character.
export const calmed = (text) => text.replace(EXCESS_MARKS, "$1");

function appendPlain(parent, text) {
  let last = 0;
  for (const match of text.matchAll(CONTROLS)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    const code = match[0].codePointAt(0).toString(16).toUpperCase();
    parent.append(element("span", {
      className: "control", text: CONTROL_NAMES[match[0]],
      attributes: { title: `U+${code}, a direction control: shown, not applied` },
    }));
    last = match.index + match[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

// A link only for http and https URLs; anything else stays plain text.
export function safeLink(url, label = url) {
  try {
    const parsed = new URL(url);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") {
      const link = element("a", {
        attributes: { href: parsed.href, rel: "noopener noreferrer nofollow", target: "_blank" },
      });
      appendPlain(link, label);
      return link;
    }
  } catch {
    // Not a URL at all.
  }
  const span = element("span");
  appendPlain(span, label);
  return span;
}

// Fills `parent` with `text`: controls shown, links clickable (with `links`).
export function fillText(parent, text, { links = false } = {}) {
  parent.replaceChildren();
  parent.setAttribute("dir", "auto");
  if (!links) {
    appendPlain(parent, text);
    return parent;
  }
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    const url = match[0].replace(TRAILING_PUNCTUATION, "");
    if (match.index > last) appendPlain(parent, text.slice(last, match.index));
    parent.append(safeLink(url));
    last = match.index + url.length;
  }
  if (last < text.length) appendPlain(parent, text.slice(last));
  return parent;
}

// An isolated piece of someone's text, for inside a line of the page's own words.
export const userText = (text, className = "user-text") => fillText(element("bdi", { className }), String(text ?? ""));

// A user name's skeleton after Unicode TS #39 for the name alphabet (A-Z, a-z, 0-9, _ . -):
// the confusable pairs that alphabet holds ("0" as "O", "1" and "I" as "l", "rn" as "m"),
// case folded before the last pair, since "Carol" and "carol" pass for one another too and
// "M" and "RN" fold to "m" and "rn". The login service refuses a new name by the same rule,
// from ICU's full data (login_service/lookalikes.py: it writes "m" as "rn", which joins the
// same names), so this finds accounts from before it or from another login service. Display
// names may hold any character; of those, it knows these pairs alone.
export function skeleton(name) {
  return String(name).replace(/0/g, "O").replace(/[1I]/g, "l").toLowerCase().replace(/rn/g, "m");
}

// Tells which known names look like another known name: user name -> the others.
export class LookAlikes {
  constructor() {
    this.bySkeleton = new Map();
  }

  // Returns true when the name is new and looks like one already known.
  add(name) {
    const key = skeleton(name);
    const names = this.bySkeleton.get(key) ?? new Set();
    if (names.has(name)) return false;
    names.add(name);
    this.bySkeleton.set(key, names);
    return names.size > 1;
  }

  others(name) {
    return [...(this.bySkeleton.get(skeleton(name)) ?? [])].filter((other) => other !== name);
  }
}

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const TIME_OF_DAY = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const DAY = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", year: "numeric" });

export function parseTime(timestamp) {
  const moment = new Date(timestamp);
  return Number.isNaN(moment.getTime()) ? null : moment;
}

// "now", "5 min. ago", "3 hr. ago", then the time of day (the day is on its separator).
export function relativeTime(moment, now = Date.now()) {
  if (!moment) return "";
  const seconds = (now - moment.getTime()) / 1000;
  if (seconds < 45) return "now";
  if (seconds < 3600) return RELATIVE.format(-Math.round(seconds / 60), "minute");
  if (seconds < 6 * 3600) return RELATIVE.format(-Math.round(seconds / 3600), "hour");
  return TIME_OF_DAY.format(moment);
}

export const exactTime = (moment) => (moment ? FULL.format(moment) : "");

export function dayKey(moment) {
  return moment ? `${moment.getFullYear()}-${moment.getMonth()}-${moment.getDate()}` : "";
}

export function dayLabel(moment, now = new Date()) {
  if (!moment) return "Unknown day";
  if (dayKey(moment) === dayKey(now)) return "Today";
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (dayKey(moment) === dayKey(yesterday)) return "Yesterday";
  return DAY.format(moment);
}
