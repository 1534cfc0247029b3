// What the browser tests share: Chromium from playwright-core, and waiting
// for a chat line, a presence list or a transport.
"use strict";
const path = require("path");

const modules = process.env.PLAYWRIGHT_DIR || path.join(__dirname, "../../target/browser/node_modules");
const { chromium } = require(path.join(modules, "playwright-core"));

// Debian's chromium, headless, without the background traffic it would
// start on its own; `extraArgs` go on its command line too.
function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...extraArgs,
    ],
  });
}

// Waits until #log of `page` has a line whose text is exactly `text`.
async function seeLine(page, text, timeout = 10000) {
  await page.waitForFunction(
    (want) => [...document.querySelectorAll("#log div")].some((d) => d.textContent === want),
    text,
    { timeout },
  );
}

// Waits until #here of `page` lists exactly `names`, sorted as the page sorts.
async function seeHere(page, names, timeout = 10000) {
  const want = [...names].sort((a, b) => a.localeCompare(b));
  try {
    await page.waitForFunction(
      (want) => {
        const got = [...document.querySelectorAll("#here li")].map((li) => li.textContent);
        return JSON.stringify(got) === JSON.stringify(want);
      },
      want,
      { timeout },
    );
  } catch (err) {
    const got = await page.locator("#here li").allTextContents();
    throw new Error(`#here: want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`, { cause: err });
  }
}

// Waits until `page` is connected over `transport` ("ws" or "poll").
async function connectedBy(page, transport, timeout = 10000) {
  await page.waitForSelector(`#status.open[data-transport="${transport}"]`, { timeout });
}

// How many lines of #log of `page` read exactly `text`.
async function countLines(page, text) {
  const lines = await page.locator("#log div").allTextContents();
  return lines.filter((line) => line === text).length;
}

// Runs `checks(browser)` with a Chromium of its own (given `extraArgs`),
// closed afterwards; prints "NAME: all checks passed", or the error and
// exits with status 1.
function run(name, checks, extraArgs = []) {
  (async () => {
    const browser = await launch(extraArgs);
    try {
      await checks(browser);
    } finally {
      await browser.close();
    }
    console.log(`${name}: all checks passed`);
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

module.exports = { launch, run, seeLine, seeHere, connectedBy, countLines };
