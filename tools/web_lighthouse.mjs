// Lighthouse on the web client's screens in Debian's Chromium, as one user flow: the log-in
// page (a navigation), then logged in the room list, a room (a navigation that keeps the
// tab's session) and a profile (snapshots). Prints one JSON line per step with its scores.
// Run by `python -m tools.web_screenshots --lighthouse DIR`, which copies it into DIR, the folder
// where lighthouse and puppeteer-core are installed, and starts the stack it measures.
//
//   node web_lighthouse.mjs BASE_URL USERNAME PASSWORD ROOM desktop|mobile

import fs from "node:fs";
import puppeteer from "puppeteer-core";
import { startFlow } from "lighthouse";

const [base, username, password, room, preset] = process.argv.slice(2);
const categories = ["accessibility", "performance", "best-practices"];
// Lighthouse's own desktop numbers (its desktop preset); mobile is its default, a slow
// phone on a slow 4G network, simulated.
const settings = preset === "mobile" ? { onlyCategories: categories } : {
  onlyCategories: categories,
  formFactor: "desktop",
  screenEmulation: { mobile: false, width: 1350, height: 940, deviceScaleFactor: 1, disabled: false },
  throttling: { rttMs: 40, throughputKbps: 10240, cpuSlowdownMultiplier: 1, requestLatencyMs: 0,
    downloadThroughputKbps: 0, uploadThroughputKbps: 0 },
};

// No sandbox, as Playwright launches it too: Chromium refuses one when run as root.
const browser = await puppeteer.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const flow = await startFlow(page, { config: { extends: "lighthouse:default", settings } });
  await flow.navigate(`${base}/`, { name: "log in" });
  await page.type("#login-username", username);
  await page.type("#login-password", password);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#home-view:not([hidden])");
  await flow.snapshot({ name: "room list" });
  await page.goto("about:blank"); // a real load of the room, not a change of the address's #
  await flow.navigate(`${base}/#/room/${room}`, { name: "room", disableStorageReset: true });
  await page.waitForSelector("#messages > li");
  await flow.snapshot({ name: "room, loaded" });
  await page.goto(`${base}/#/profile/${username}`);
  await page.waitForSelector("#profile-form:not([hidden])");
  await flow.snapshot({ name: "own profile" });
  const result = await flow.createFlowResult();
  for (const step of result.steps) {
    const { lhr } = step;
    // A snapshot has no load to time: its performance category holds no metric, no score.
    const scores = Object.fromEntries(Object.entries(lhr.categories)
      .filter(([name]) => !(name === "performance" && lhr.gatherMode === "snapshot"))
      .map(([name, category]) => [name, category.score === null ? null : Math.round(category.score * 100)]));
    const failing = Object.values(lhr.audits)
      .filter((audit) => audit.scoreDisplayMode === "binary" && audit.score === 0).map((audit) => audit.id);
    console.log(JSON.stringify({ step: step.name, mode: lhr.gatherMode, scores, failing }));
  }
  fs.writeFileSync(`lighthouse-${preset}.html`, await flow.generateReport());
} finally {
  await browser.close();
}
