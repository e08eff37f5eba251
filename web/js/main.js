// The chatsys web client: the session, which view shows (from the address's #/... part),
// and the footer line that names the process and the HAProxy server that last answered.

import * as api from "./api.js";
import { setUpAuth } from "./auth.js";
import { byId, clearMessages, parseRoute, showError, showNotice } from "./dom.js";
import { ProfileView } from "./profile.js";
import { RoomView } from "./room.js";
import { RoomsView } from "./rooms.js";
import { forgetSession, loadSession, saveSession } from "./session.js";

const VIEWS = ["auth-view", "rooms-view", "room-view", "profile-view"];

let session = null;
const roomsView = new RoomsView();
const roomView = new RoomView(() => session?.username);
const profileView = new ProfileView((profile) => showName(profile.display_name));

function show(view, focus) {
  for (const id of VIEWS) byId(id).hidden = id !== view;
  byId(focus)?.focus();
}

function showName(displayName) {
  const name = typeof displayName === "string" && displayName ? displayName : session.username;
  byId("whoami").textContent = name === session.username ? `Signed in as ${name}` : `Signed in as ${name} (${session.username})`;
}

async function signedIn() {
  const { username } = session;
  byId("account").hidden = false;
  byId("my-profile").href = `#/profile/${encodeURIComponent(username)}`;
  showName(username);
  let profile;
  try {
    profile = await api.profile(username);
  } catch {
    return; // no profile yet (404) or none to be had now: the user name serves
  }
  if (session?.username === username) showName(profile.display_name);
}

function route() {
  if (!session) {
    roomView.close();
    profileView.close();
    show("auth-view", "login-username");
    return;
  }
  let parts = parseRoute(location.hash);
  if (!parts) {
    showError("That address names no page of this client.");
    parts = [""];
  }
  const [kind, name] = parts;
  if (kind === "room" && name) {
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
    show("rooms-view", "rooms-title");
    roomsView.load();
  }
}

function endSession(note, asError) {
  if (!session) return;
  roomView.close();
  forgetSession();
  api.setToken(null);
  session = null;
  byId("account").hidden = true;
  byId("whoami").textContent = "";
  route();
  (asError ? showError : showNotice)(note);
}

api.onUnauthorized(() => endSession("Your session has ended; please log in again.", true));

api.onAnswer(({ method, path, status, instance, server }) => {
  const who = instance ?? "unknown process";
  const via = server ? ` (HAProxy server ${server})` : "";
  byId("served-by").textContent = `${who}${via} answered ${method} ${path}: ${status}`;
});

setUpAuth((answer) => {
  session = { username: answer.username, token: answer.token };
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
  endSession("You are logged out.", false);
});

window.addEventListener("hashchange", () => {
  clearMessages();
  route();
});

// Whatever else goes wrong shows as the error line instead of leaving the page stuck.
window.addEventListener("unhandledrejection", (event) => showError(api.describe(event.reason)));
window.addEventListener("error", (event) => showError(api.describe(event.error ?? event.message)));

async function start() {
  const saved = loadSession();
  if (saved) {
    session = saved;
    api.setToken(saved.token);
    try {
      await api.validate();
    } catch (error) {
      if (error.status === 401) return; // ended by the handler above, which shows the log-in
      showError(`${api.describe(error)} Your session is kept.`);
    }
    signedIn();
  }
  route();
}

start();
