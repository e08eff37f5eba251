// The logged-in user, kept in this tab's sessionStorage: it survives a reload of the tab
// and ends with it, and the token never travels in a cookie or a URL.

const KEY = "chatsys.session";

export function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY));
    if (saved && typeof saved.username === "string" && typeof saved.token === "string") {
      return { username: saved.username, token: saved.token, expiresAt: Number(saved.expiresAt) || null };
    }
  } catch {
    // Unreadable or not ours: as good as no session.
  }
  return null;
}

export function saveSession(session) {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function forgetSession() {
  sessionStorage.removeItem(KEY);
}
