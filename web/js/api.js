// The service contract as the browser sees it: login, profile and chat on this one origin
// (HAProxy routes by path). Every failure leaves as an ApiError whose message is one line
// for the user: the problem's detail, or what went wrong on the way.

// A message is sent at most this many times, always with the same Idempotency-Key.
export const SEND_ATTEMPTS = 4;
const SEND_BACKOFF_MS = 500;
const RETRY_AFTER_CAP_MS = 5000;
// How long an answer may take before the request is given up (long polls: plus `wait`).
const ANSWER_SECONDS = 15;
const LONGEST_LINE = 300;

export class ApiError extends Error {
  constructor(message, status = 0, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: no HTTP answer at all
    this.retryAfter = retryAfter; // seconds, when the server said
  }

  // Worth sending again: no answer, or a proxy or server in trouble (5xx).
  get transient() {
    return this.status === 0 || this.status >= 500;
  }
}

let token = null;
let unauthorized = () => {};
const answerListeners = [];

export function setToken(value) {
  token = value;
}

// Called with the error when the server refuses the token: the session has ended.
export function onUnauthorized(handler) {
  unauthorized = handler;
}

// Called after every answer with {method, path, status, instance, server}: which service
// process (X-Instance) and which HAProxy server (X-Served-By) answered.
export function onAnswer(listener) {
  answerListeners.push(listener);
}

export function oneLine(text) {
  const line = String(text).replace(/\s+/g, " ").trim();
  return line.length > LONGEST_LINE ? `${line.slice(0, LONGEST_LINE - 1)}…` : line;
}

function retryAfterSeconds(response) {
  const header = response.headers.get("Retry-After");
  if (header === null || header.trim() === "") return null;
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

async function failure(response) {
  let detail = "";
  try {
    const body = await response.json();
    if (body && typeof body === "object") {
      detail = [body.detail, body.title].find((value) => typeof value === "string" && value.trim()) ?? "";
    }
  } catch {
    // Not JSON: the status says what there is to say.
  }
  const message = oneLine(detail) || `The server answered HTTP ${response.status}.`;
  return new ApiError(message, response.status, retryAfterSeconds(response));
}

function combine(signal, seconds) {
  const timeout = AbortSignal.timeout(seconds * 1000);
  if (!signal) return { signal: timeout, timeout };
  if (typeof AbortSignal.any === "function") return { signal: AbortSignal.any([signal, timeout]), timeout };
  return { signal, timeout };
}

export async function request(method, path, { body, headers = {}, authenticated = true, signal,
  seconds = ANSWER_SECONDS } = {}) {
  const sent = { Accept: "application/json, application/problem+json", ...headers };
  if (authenticated) {
    if (!token) throw new ApiError("You are not logged in.", 401);
    sent.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const limits = combine(signal, seconds);
  let response;
  try {
    response = await fetch(path, {
      method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body),
      signal: limits.signal, cache: "no-store", credentials: "omit", redirect: "error",
    });
  } catch (error) {
    if (signal?.aborted) throw error; // the caller gave up on purpose: nothing to report
    throw new ApiError(limits.timeout.aborted ? "The server did not answer in time." : "Cannot reach the server.");
  }
  const answer = {
    method, path: path.split("?")[0], status: response.status,
    instance: response.headers.get("X-Instance"), server: response.headers.get("X-Served-By"),
  };
  answerListeners.forEach((listener) => listener(answer));
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401 && authenticated) unauthorized(error);
    throw error;
  }
  if (response.status === 204) return null;
  let data;
  try {
    data = await response.json();
  } catch {
    throw new ApiError(`The answer to ${method} ${answer.path} is not JSON.`, response.status);
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    throw new ApiError(`The answer to ${method} ${answer.path} is not a JSON object.`, response.status);
  }
  return data;
}

// A name as one path segment: a slash or a question mark typed by a user cannot change the route.
const segment = encodeURIComponent;

export function sleep(milliseconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, milliseconds);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

// The contract allows 1 to 64 of A-Z, a-z, 0-9, _ and -. randomUUID needs a secure context
// (https or this machine); on plain http from elsewhere, 128 random bits in hex do as well.
export function newIdempotencyKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// Login service

export const register = (username, password) =>
  request("POST", "/users", { body: { username, password }, authenticated: false });

export const login = (username, password) =>
  request("POST", "/login", { body: { username, password }, authenticated: false });

export const validate = () => request("GET", "/validate");

export const logout = () => request("POST", "/logout");

// Profile service

export const profile = (username) => request("GET", `/profiles/${segment(username)}`);

export const updateProfile = (username, changes) =>
  request("PUT", `/profiles/${segment(username)}`, { body: changes });

// Chat service

export async function rooms() {
  const answer = await request("GET", "/rooms");
  if (!Array.isArray(answer.rooms)) throw new ApiError("The room list came without rooms.");
  return answer.rooms;
}

export const createRoom = (name) => request("POST", "/rooms", { body: { name } });

// A page of a room's messages. With `wait` (and `after`) the service holds the request until
// a message arrives or `wait` seconds pass (contract v1.1).
export async function messages(room, { after, limit, wait } = {}, signal) {
  const query = new URLSearchParams();
  if (after !== undefined) query.set("after", String(after));
  if (limit !== undefined) query.set("limit", String(limit));
  if (wait !== undefined) query.set("wait", String(wait));
  const page = await request("GET", `/rooms/${segment(room)}/messages?${query}`,
    { signal, seconds: ANSWER_SECONDS + (wait ?? 0) });
  if (!Array.isArray(page.messages) || !Number.isInteger(page.next_after)
      || !page.messages.every((message) => Number.isInteger(message?.seq))) {
    throw new ApiError("A page of messages came in a shape this page does not know.");
  }
  return page;
}

// Post a message; when no answer comes or a server is in trouble, post again with the same
// key, which the chat service stores at most once: a lost answer never becomes a double post.
export async function send(room, text, key = newIdempotencyKey(), attempts = SEND_ATTEMPTS) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await request("POST", `/rooms/${segment(room)}/messages`,
        { body: { text }, headers: { "Idempotency-Key": key } });
    } catch (error) {
      if (!(error instanceof ApiError) || !error.transient || attempt >= attempts) throw error;
      const backoff = SEND_BACKOFF_MS * 2 ** (attempt - 1);
      const told = error.retryAfter === null ? backoff : error.retryAfter * 1000;
      await sleep(Math.min(told, RETRY_AFTER_CAP_MS));
    }
  }
}

// What went wrong, in the words of the page rather than of the validator: by status and,
// for a refused body, by the field the problem names. `context` is what was being done.
const FIELD_RULES = {
  username: "A user name is 3 to 32 letters, digits, _, . or -.",
  password: "A password is 8 to 128 characters.",
  display_name: "A display name is 1 to 64 characters.",
  bio: "A bio is up to 500 characters.",
  avatar_url: "The avatar must be an http or https address, or nothing.",
  name: "A room name is 1 to 64 letters, digits, _ or -, with no spaces.",
  text: "A message is 1 to 2,000 characters.",
};

export function describe(error, context = "") {
  if (!(error instanceof ApiError)) return `Something went wrong in this page: ${oneLine(error?.message ?? error)}`;
  const { status, retryAfter } = error;
  if (status === 401 && context === "login") return "Wrong user name or password.";
  if (status === 409 && context === "register") return "That user name is taken; choose another.";
  if (status === 400 || status === 422) {
    const field = Object.keys(FIELD_RULES).find((name) => new RegExp(`\\b${name}\\b`).test(error.message));
    if (field) return FIELD_RULES[field];
  }
  if (status === 413) return "That is too long to send.";
  if (status === 429) {
    return retryAfter === null ? "Too many requests for now; wait a moment and try again."
      : `Too many requests for now; try again in ${retryAfter} s.`;
  }
  if (status >= 500) return "The server is having trouble; try again in a moment.";
  return error.message;
}
