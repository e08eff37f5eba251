// The log-in and create-account forms.

import * as api from "./api.js";
import { byId, clearMessages, showError, showNotice, whileBusy } from "./dom.js";

export function setUpAuth(onLoggedIn) {
  const loginForm = byId("login-form");
  const registerForm = byId("register-form");

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
      const answer = await whileBusy(loginForm, () => api.login(username, password));
      if (typeof answer.token !== "string" || typeof answer.username !== "string") {
        throw new api.ApiError("The login service answered without a token.");
      }
      loginForm.reset();
      onLoggedIn(answer);
    } catch (error) {
      showError(api.describe(error));
      loginForm.elements.password.focus();
    }
  });

  registerForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const username = registerForm.elements.username.value.trim();
    const password = registerForm.elements.password.value;
    try {
      const created = await whileBusy(registerForm, () => api.register(username, password));
      registerForm.reset();
      const name = typeof created.username === "string" ? created.username : username;
      showNotice(`Account ${name} created. Log in with it now.`);
      loginForm.elements.username.value = name;
      loginForm.elements.password.focus();
    } catch (error) {
      showError(api.describe(error));
    }
  });
}
