// Small DOM helpers. Text from the services only ever goes in through textContent.

export const byId = (id) => document.getElementById(id);

// An element with its text (as text, never as markup), class and attributes.
export function element(tag, { text, className, attributes = {} } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

export function showError(message) {
  const line = byId("error");
  line.textContent = message;
  line.hidden = false;
}

export function showNotice(message) {
  const line = byId("notice");
  line.textContent = message;
  line.hidden = false;
}

export function clearMessages() {
  for (const id of ["error", "notice"]) {
    byId(id).hidden = true;
    byId(id).textContent = "";
  }
}

export function localTime(timestamp) {
  const moment = new Date(timestamp);
  return Number.isNaN(moment.getTime()) ? String(timestamp) : moment.toLocaleString();
}

// Runs `work` with the form's submit button disabled, so one press sends one request.
export async function whileBusy(form, work) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

// The route a hash names: "#/room/NAME" -> ["room", "NAME"]; undefined when it is garbled.
export function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/");
  try {
    return parts.map((part) => decodeURIComponent(part));
  } catch {
    return undefined;
  }
}
