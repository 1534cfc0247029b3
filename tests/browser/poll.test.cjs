// The chat page's long-polling fallback in headless Chromium.
//
//   node tests/browser/poll.test.cjs http://HOST:PORT/ http://HOST2:PORT2/
//
// The first server is a plain chat: a page forced onto polling talks with
// one on a WebSocket. The second runs with --refuse-upgrades, and the test
// refuses /events in the browser: pages there must find their own way to
// polling. Start the first with short `--poll-hold` and `--poll-grace`
// (the script uses 5 and 2) so that a poller's leaving shows quickly; the
// defaults work too, only slower.
//
// Needs playwright-core (scripts/browser-test.sh installs it under
// target/browser) and Debian's chromium at /usr/bin/chromium.
"use strict";
const assert = require("assert");
const { run, seeLine, seeHere, connectedBy, countLines } = require("./lib.cjs");

const [plain, refusing] = process.argv.slice(2);
if (!plain || !refusing) {
  console.error("usage: node poll.test.cjs http://HOST:PORT/ http://HOST2:PORT2/");
  process.exit(2);
}

// Opens `path` on `base` in a new page, counting the WebSockets and the
// event streams it opens.
async function open(context, base, path) {
  const page = await context.newPage();
  page.sockets = 0;
  page.streams = 0;
  page.on("websocket", () => { page.sockets += 1; });
  page.on("request", (req) => { if (new URL(req.url()).pathname === "/events") page.streams += 1; });
  await page.goto(new URL(path, base).href);
  return page;
}

async function say(page, text) {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

// A poll page and a WebSocket page in one room.
async function mixed(browser) {
  const context = await browser.newContext();
  const pat = await open(context, plain, "/?transport=poll&room=mix&name=pat");
  await connectedBy(pat, "poll");
  assert.match(await pat.textContent("#status"), /^connected to mix \(long polling\)$/);
  const wes = await open(context, plain, "/?room=mix&name=wes");
  await connectedBy(wes, "ws");
  assert.match(await wes.textContent("#status"), /^connected to mix \(WebSocket\)$/);

  await seeLine(pat, "* wes joined");
  await seeHere(pat, ["pat", "wes"]);
  await seeHere(wes, ["pat", "wes"]);

  await say(pat, "hello from polling");
  await seeLine(wes, "pat: hello from polling");
  await seeLine(pat, "pat: hello from polling");
  await say(wes, "hello from a socket");
  await seeLine(pat, "wes: hello from a socket");

  // Wes's socket drops; what pat says meanwhile arrives once, on the socket
  // that resumes after the last id Wes saw.
  await wes.evaluate(() => socket.close());
  await wes.waitForSelector("#status.closed", { timeout: 5000 });
  await say(pat, "said while wes was away");
  await connectedBy(wes, "ws");
  await seeLine(wes, "pat: said while wes was away");
  await say(wes, "back again");
  await seeLine(pat, "wes: back again");
  await seeLine(wes, "wes: back again");
  for (const [page, line] of [
    [wes, "pat: said while wes was away"],
    [wes, "pat: hello from polling"],
    [pat, "pat: hello from polling"],
    [pat, "wes: hello from a socket"],
  ]) {
    assert.strictEqual(await countLines(page, line), 1, `${line} shown once`);
  }
  assert.strictEqual(await countLines(wes, "* (missed messages; showing the latest)"), 0);
  await seeHere(pat, ["pat", "wes"]);
  await seeHere(wes, ["pat", "wes"]);
  assert.strictEqual(pat.sockets, 0, "?transport=poll opened a WebSocket");
  assert.strictEqual(pat.streams, 0, "?transport=poll opened an event stream");

  // A poller that stops polling is announced as gone after the hold and
  // the grace period.
  await pat.close();
  await seeLine(wes, "* pat left", 45000);
  await seeHere(wes, ["wes"]);
  await context.close();
}

// Two pages on a server that refuses every upgrade, behind what passes
// no event stream either (here the browser answers /events with 404),
// fall back to polling by themselves.
async function fallback(browser) {
  const context = await browser.newContext();
  await context.route((url) => url.pathname === "/events", (route) => route.fulfill({ status: 404 }));
  const rita = await open(context, refusing, "/?room=fallback&name=rita");
  const rex = await open(context, refusing, "/?room=fallback&name=rex");
  await connectedBy(rita, "poll", 10000);
  await connectedBy(rex, "poll", 10000);
  assert.ok(rita.sockets > 0 && rex.sockets > 0, "the pages tried a WebSocket first");
  assert.ok(rita.streams > 0 && rex.streams > 0, "then SSE");
  await seeHere(rita, ["rex", "rita"]);
  await seeHere(rex, ["rex", "rita"]);

  await say(rita, "polling by necessity");
  await seeLine(rex, "rita: polling by necessity");
  await say(rex, "same here");
  await seeLine(rita, "rex: same here");
  await seeLine(rex, "rex: same here");
  assert.strictEqual(await countLines(rita, "rex: same here"), 1);
  await context.close();
}

// The HTTP side of polling, as the page relies on it.
async function requests(browser) {
  const context = await browser.newContext();
  const http = context.request;
  const url = (path) => new URL(path, plain).href;
  // Room, name and the client token the page makes once.
  const room = "room=checks&name=probe&client=probe-token-0123";

  const joined = await http.get(url(`/poll?${room}&after=0`));
  assert.strictEqual(joined.status(), 200);
  assert.strictEqual(joined.headers()["cache-control"], "no-store");
  const body = await joined.json();
  assert.ok(Array.isArray(body.here) && body.here.includes("probe"), JSON.stringify(body));
  assert.strictEqual(body.reset, false);
  assert.deepStrictEqual(body.messages, []);

  assert.strictEqual((await http.get(url(`/poll?${room}`))).status(), 400, "poll without after");
  assert.strictEqual((await http.get(url(`/poll?${room}&after=zz`))).status(), 400, "garbled after");
  const untokened = "/poll?room=checks&name=probe&after=0";
  assert.strictEqual((await http.get(url(untokened))).status(), 400, "poll without a client token");
  assert.strictEqual((await http.get(url(`${untokened}&client=short`))).status(), 400, "short token");
  assert.strictEqual((await http.post(url(`/send?${room}`), { data: "" })).status(), 400, "empty line");
  const long = await http.post(url(`/send?${room}`), { data: "x".repeat(2001) });
  assert.strictEqual(long.status(), 413, "line over 2000 bytes");
  const sent = await http.post(url(`/send?${room}`), {
    data: "hi", headers: { "content-type": "text/plain" },
  });
  assert.strictEqual(sent.status(), 204);
  // What another site's page would send from a visitor's browser.
  const foreign = { origin: "http://evil.example" };
  const forged = await http.post(url(`/send?${room}`), {
    data: "forged", headers: { "content-type": "text/plain", ...foreign },
  });
  assert.strictEqual(forged.status(), 403, "a send from another site");
  assert.strictEqual((await http.get(url(`/poll?${room}&after=0`), { headers: foreign })).status(), 403,
    "a poll from another site");
  await context.close();
}

run("browser poll test", async (browser) => {
  await requests(browser);
  await fallback(browser);
  await mixed(browser);
});
