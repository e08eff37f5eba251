// The chatsys web client: the session, which view shows (from the address's #/... part),
// the room list beside it (a drawer on a phone), the tab title's unread count, and the
// footer line that names the process and the HAProxy server that last answered.

import * as api from "./api.js";
import { setUpAuth } from "./auth.js";
import { byId, clearMessages, parseRoute, showError, showNotice } from "./dom.js";
import { ProfileView } from "./profile.js";
import { forgetDrafts, RoomView } from "./room.js";
import { ReadState, RoomsView } from "./rooms.js";
import { forgetSession, loadSession, saveSession } from "./session.js";
import { userText } from "./text.js";

const VIEWS = ["auth-view", "home-view", "room-view", "profile-view"];
const WARN_BEFORE_END_MS = 5 * 60 * 1000; // the session's end is announced this long before
const PHONE = window.matchMedia("(max-width: 47.99rem)");

let session = null;
let readState = null;
let currentRoom = null;
let endTimers = [];
const roomsView = new RoomsView(() => readState, () => currentRoom);
const roomView = new RoomView(() => session?.username, () => readState);
const profileView = new ProfileView((profile) => showName(profile.display_name));

function show(view, focus) {
  for (const id of VIEWS) byId(id).hidden = id !== view;
  document.body.dataset.view = view;
  byId(focus)?.focus({ preventScroll: view === "room-view" });
}

function showName(displayName) {
  const name = typeof displayName === "string" && displayName ? displayName : session.username;
  const whoami = byId("whoami");
  whoami.replaceChildren("Signed in as ", userText(name));
  if (name !== session.username) whoami.append(` (${session.username})`);
}

function updateTitle() {
  const total = readState ? readState.total() : 0;
  const place = currentRoom ? `${currentRoom} · chatsys` : "chatsys";
  document.title = total ? `(${total}) ${place}` : place;
  roomsView.draw();
}

// --- the drawer: the room list slides over the page on a phone ---------------------------

function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  byId("drawer-toggle").setAttribute("aria-expanded", String(open));
  if (open) byId("room-filter").focus();
}

byId("drawer-toggle").addEventListener("click", () => setDrawer(!document.body.classList.contains("drawer-open")));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("drawer-open")) {
    setDrawer(false);
    byId("drawer-toggle").focus();
  }
});
byId("room-list").addEventListener("click", () => setDrawer(false));

// --- the session -------------------------------------------------------------------------

async function signedIn() {
  const { username } = session;
  readState = new ReadState(username);
  readState.onChange(updateTitle);
  byId("account").hidden = false;
  byId("sidebar").hidden = false;
  byId("drawer-toggle").hidden = false;
  byId("my-profile").href = `#/profile/${encodeURIComponent(username)}`;
  showName(username);
  roomsView.start();
  watchTheEnd();
  let profile;
  try {
    profile = await api.profile(username);
  } catch {
    return; // no profile yet (404) or none to be had now: the user name serves
  }
  if (session?.username === username) showName(profile.display_name);
}

// A session lasts as long as the login service said; it is announced before it ends.
function watchTheEnd() {
  endTimers.forEach(clearTimeout);
  endTimers = [];
  if (!session?.expiresAt) return;
  const left = session.expiresAt - Date.now();
  const ends = new Date(session.expiresAt).toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  endTimers.push(setTimeout(() => {
    showNotice(`Your session ends at ${ends}. Then log in again; what you are writing is kept.`);
  }, Math.max(0, left - WARN_BEFORE_END_MS)));
  endTimers.push(setTimeout(() => endSession("Your session has ended; please log in again. Any draft is kept.", true),
    Math.max(0, left)));
}

function route() {
  if (!session) {
    roomView.close();
    profileView.close();
    currentRoom = null;
    show("auth-view", "login-username");
    return;
  }
  let parts = parseRoute(location.hash);
  if (!parts) {
    showError("That address names no page of this client.");
    parts = [""];
  }
  const [kind, name] = parts;
  currentRoom = kind === "room" && name ? name : null;
  if (currentRoom) {
    profileView.close();
    show("room-view", "message-text");
    roomView.open(name);
  } else if (kind === "profile" && name) {
    roomView.close();
    show("profile-view", "profile-title");
    profileView.open(name, session.username);
  } else {
    roomView.close();
    profileView.close();
    show("home-view", PHONE.matches ? "room-filter" : "home-title");
  }
  updateTitle();
}

function endSession(note, asError) {
  if (!session) return;
  roomView.close();
  roomsView.stop();
  endTimers.forEach(clearTimeout);
  forgetSession();
  api.setToken(null);
  session = null;
  readState = null;
  setDrawer(false);
  for (const id of ["account", "sidebar", "drawer-toggle"]) byId(id).hidden = true;
  byId("whoami").textContent = "";
  route(); // the address stays: logging in again goes back to the same room and draft
  (asError ? showError : showNotice)(note);
}

api.onUnauthorized(() => endSession("Your session has ended; please log in again. Any draft is kept.", true));

api.onAnswer(({ instance, server }) => {
  const who = instance ?? "an unknown process";
  const via = server ? ` through HAProxy server ${server}` : "";
  byId("served-by").textContent = `Last answer from ${who}${via}.`;
});

setUpAuth((answer) => {
  const seconds = Number(answer.expires_in);
  session = {
    username: answer.username, token: answer.token,
    expiresAt: Number.isFinite(seconds) && seconds > 0 ? Date.now() + seconds * 1000 : null,
  };
  saveSession(session);
  api.setToken(session.token);
  signedIn();
  route();
});

byId("logout").addEventListener("click", async () => {
  clearMessages();
  try {
    await api.logout();
  } catch (error) {
    if (error.status !== 401) {
      // Forgetting the token now would leave it alive on the server, out of reach.
      showError(`${api.describe(error)} You are still logged in; try again.`);
      return;
    }
  }
  forgetDrafts(); // logging out on purpose leaves nothing of yours in the tab
  endSession("You are logged out.", false);
});

window.addEventListener("hashchange", () => {
  clearMessages();
  route();
});

// Whatever else goes wrong shows as the error line instead of leaving the page stuck.
window.addEventListener("unhandledrejection", (event) => showError(api.describe(event.reason)));
window.addEventListener("error", (event) => showError(api.describe(event.error ?? event.message)));

// A saved session is drawn at once and checked meanwhile (`GET /validate`): a dead one ends
// with the log-in form and one line, a live one has not waited for the check.
async function start() {
  const saved = loadSession();
  if (!saved) {
    route();
    return;
  }
  session = saved;
  api.setToken(saved.token);
  signedIn();
  route();
  try {
    const answer = await api.validate();
    const end = Date.parse(answer.expires_at);
    if (session === saved && Number.isFinite(end)) {
      session.expiresAt = end;
      watchTheEnd();
    }
  } catch (error) {
    // A 401 ended the session in the handler above, which shows the log-in form.
    if (error.status !== 401) showError(`${api.describe(error)} Your session is kept.`);
  }
}

start();
