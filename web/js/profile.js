// A user's profile, and for your own the form that edits it.

import * as api from "./api.js";
import { byId, clearMessages, element, localTime, showError, showNotice, whileBusy } from "./dom.js";
import { fillText, safeLink } from "./text.js";

export class ProfileView {
  constructor(onSaved) {
    this.onSaved = onSaved;
    this.opens = 0;
    this.form = byId("profile-form");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
  }

  // Another view took over: a profile still loading must not draw any more.
  close() {
    this.opens += 1;
  }

  async open(username, me) {
    const open = ++this.opens; // only the latest open may draw the view
    this.username = username;
    byId("profile-title").textContent = `Profile of ${username}`;
    for (const id of ["profile-details", "profile-missing", "profile-form"]) byId(id).hidden = true;
    let profile = null;
    try {
      profile = await api.profile(username);
    } catch (error) {
      if (open !== this.opens) return;
      if (error.status === 404) {
        byId("profile-missing").textContent = `${username} has not written a profile yet.`;
        byId("profile-missing").hidden = false;
      } else {
        if (error.status !== 401) showError(api.describe(error));
        return;
      }
    }
    if (open !== this.opens) return;
    if (profile) this.render(profile);
    if (username === me) {
      this.fill(profile ?? { display_name: username, bio: "", avatar_url: "" });
      this.form.hidden = false;
    }
  }

  render(profile) {
    fillText(byId("profile-display-name"), String(profile.display_name ?? ""));
    fillText(byId("profile-bio"), String(profile.bio ?? ""), { links: true });
    const avatar = String(profile.avatar_url ?? "");
    byId("profile-avatar").replaceChildren(avatar ? safeLink(avatar) : element("span", { className: "hint", text: "none" }));
    byId("profile-updated").textContent = localTime(profile.updated_at);
    byId("profile-missing").hidden = true;
    byId("profile-details").hidden = false;
  }

  fill(profile) {
    const fields = this.form.elements;
    fields.display_name.value = String(profile.display_name ?? "");
    fields.bio.value = String(profile.bio ?? "");
    fields.avatar_url.value = String(profile.avatar_url ?? "");
  }

  async save() {
    clearMessages();
    const fields = this.form.elements;
    const changes = {
      display_name: fields.display_name.value,
      bio: fields.bio.value,
      avatar_url: fields.avatar_url.value.trim(),
    };
    const username = this.username;
    try {
      const profile = await whileBusy(this.form, () => api.updateProfile(username, changes));
      if (username !== this.username) return;
      this.render(profile);
      this.fill(profile);
      showNotice("Profile saved.");
      this.onSaved(profile);
    } catch (error) {
      if (error.status !== 401) showError(api.describe(error, "profile"));
    }
  }
}
