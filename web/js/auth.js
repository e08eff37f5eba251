// The log-in and create-account forms. Creating an account logs you in with it.

import * as api from "./api.js";
import { byId, clearMessages, showError, whileBusy } from "./dom.js";

const USERNAME = /^[A-Za-z0-9_.-]{3,32}$/;

export function setUpAuth(onLoggedIn) {
  const loginForm = byId("login-form");
  const registerForm = byId("register-form");

  async function logIn(form, username, password) {
    const answer = await whileBusy(form, () => api.login(username, password));
    if (typeof answer.token !== "string" || typeof answer.username !== "string") {
      throw new api.ApiError("The login service answered without a token.");
    }
    onLoggedIn(answer);
  }

  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const username = loginForm.elements.username.value.trim();
    const password = loginForm.elements.password.value;
    if (!username || !password) {
      showError("Give your user name and your password.");
      return;
    }
    try {
      await logIn(loginForm, username, password);
      loginForm.reset();
    } catch (error) {
      showError(api.describe(error, "login"));
      // A wrong password never stays in the field to be sent again by mistake.
      loginForm.elements.password.value = "";
      loginForm.elements.password.focus();
    }
  });

  registerForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const fields = registerForm.elements;
    const username = fields.username.value.trim();
    const password = fields.password.value;
    // The rules are stated above the form; they are checked here before anything is sent.
    const broken = !USERNAME.test(username) ? ["username", "A user name is 3 to 32 letters, digits, _, . or -."]
      : password.length < 8 || password.length > 128 ? ["password", "A password is 8 to 128 characters."] : null;
    if (broken) {
      showError(broken[1]);
      fields[broken[0]].focus();
      return;
    }
    try {
      await whileBusy(registerForm, () => api.register(username, password));
    } catch (error) {
      showError(api.describe(error, "register"));
      fields.username.focus();
      return;
    }
    try {
      await logIn(registerForm, username, password);
      registerForm.reset();
    } catch (error) {
      showError(`Your account ${username} is made, but logging in failed: ${api.describe(error)}`);
      loginForm.elements.username.value = username;
      loginForm.elements.password.focus();
    }
  });
}
