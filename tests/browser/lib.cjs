// What the browser tests share: Chromium from playwright-core, and waiting
// for a chat line.
"use strict";
const path = require("path");

const modules = process.env.PLAYWRIGHT_DIR || path.join(__dirname, "../../target/browser/node_modules");
const { chromium } = require(path.join(modules, "playwright-core"));

// Debian's chromium, headless, without the background traffic it would
// start on its own.
function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// Waits until #log of `page` has a line whose text is exactly `text`.
async function seeLine(page, text) {
  await page.waitForFunction(
    (want) => [...document.querySelectorAll("#log div")].some((d) => d.textContent === want),
    text,
    { timeout: 10000 },
  );
}

module.exports = { launch, seeLine };
