// The chat page on Server-Sent Events in headless Chromium.
//
//   node tests/browser/sse.test.cjs http://HOST:PORT/ http://HOST2:PORT2/
//
// The first server must end every stream after a short while and keep a
// short history (the script starts it with `--sse-lifetime 2 --history
// 10`; HISTORY=N for another history): a page forced onto SSE chats with a
// WebSocket page while the server cuts its stream again and again, and
// its EventSource reconnects by itself with Last-Event-ID. The test holds
// each reconnect until lines have been said in the gap. The page asks
// for its first stream without `after`, and the browser's reconnects
// repeat that URL, so those lines can only arrive because the server
// resumed after the Last-Event-ID the browser sent. The second server
// runs with --refuse-upgrades: pages there must find their own way to SSE.
//
// Needs playwright-core (scripts/browser-test.sh installs it under
// target/browser) and Debian's chromium at /usr/bin/chromium.
"use strict";
const assert = require("assert");
const { run, seeLine, seeHere, connectedBy, countLines } = require("./lib.cjs");

const [streaming, refusing] = process.argv.slice(2);
if (!streaming || !refusing) {
  console.error("usage: node sse.test.cjs http://HOST:PORT/ http://HOST2:PORT2/");
  process.exit(2);
}

const ROUNDS = 3;
// The chat's --history: messages kept per room (the script gives 10).
const HISTORY = Number(process.env.HISTORY || 10);

const isEvents = (url) => url.pathname === "/events";

// Opens `path` on `base` in a new page, counting the WebSockets it opens
// and keeping each GET /events it makes.
async function open(context, base, path) {
  const page = await context.newPage();
  page.sockets = 0;
  page.streams = [];
  page.on("websocket", () => { page.sockets += 1; });
  page.on("request", (req) => { if (isEvents(new URL(req.url()))) page.streams.push(req); });
  await page.goto(new URL(path, base).href);
  return page;
}

async function say(page, text) {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

// `promise`, or an error naming `what` after `ms`.
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Holds the next GET /events of `page` (the EventSource's reconnect once
// the server has ended its stream) until `release()`. `held` resolves to
// the request once it is held. (Playwright does not show the headers
// Blink adds, such as Last-Event-ID, on a request it holds.)
async function holdNextStream(page) {
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  let heldNow;
  const held = new Promise((resolve) => { heldNow = resolve; });
  await page.route(isEvents, async (route) => {
    heldNow(route.request());
    await released;
    await route.continue();
  }, { times: 1 });
  return { held, release };
}

// Lines of #log of `page`, in order.
const lines = (page) => page.locator("#log div").allTextContents();

// Waits until the SSE page `sse` shows, from the WebSocket page's join
// on, exactly the lines the WebSocket page `ws` shows: every message of
// the room once and in one order, notices included, across every cut.
// (Right after a cut the SSE page is behind until it has resumed: it is
// checked again until both agree, or the time is up.)
async function sameAsSocket(sse, ws, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const got = await lines(sse);
    const want = await lines(ws);
    const since = got.slice(got.indexOf(want[0]));
    if (JSON.stringify(since) === JSON.stringify(want)) return;
    if (Date.now() > deadline) assert.deepStrictEqual(since, want, "the SSE page's lines against the WebSocket page's");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// A page forced onto SSE and a WebSocket page chat both ways while the
// server keeps ending the SSE page's stream.
async function reconnects(browser) {
  const context = await browser.newContext();
  const sam = await open(context, streaming, "/?transport=sse&room=cut&name=sam");
  await connectedBy(sam, "sse");
  assert.match(await sam.textContent("#status"), /^connected to cut \(SSE\)$/);
  await seeLine(sam, "* sam joined");
  const wes = await open(context, streaming, "/?room=cut&name=wes");
  await connectedBy(wes, "ws");
  await seeLine(sam, "* wes joined");
  await seeHere(sam, ["sam", "wes"]);
  await seeHere(wes, ["sam", "wes"]);

  // The lines said, in the one order the test says them in.
  const said = [];

  for (let round = 1; round <= ROUNDS; round++) {
    // The server ends the stream within its lifetime; EventSource asks
    // again a second later, and that request waits here.
    const gate = await holdNextStream(sam);
    const reconnect = await within(gate.held, 10000, `round ${round}: the SSE page reconnecting`);
    await sam.waitForSelector('#status.closed[data-transport="sse"]', { timeout: 5000 });
    assert.strictEqual(new URL(reconnect.url()).searchParams.get("after"), null, "no after= in the URL");

    // Said while the SSE page has no stream: by the WebSocket page, and
    // by the SSE page itself, whose POST /send does not need the stream.
    const away = `wes: said in gap ${round}`;
    await say(wes, `said in gap ${round}`);
    await seeLine(wes, away);
    const own = `sam: also in gap ${round}`;
    await say(sam, `also in gap ${round}`);
    await seeLine(wes, own);
    said.push(away);
    said.push(own);
    assert.strictEqual(await countLines(sam, away), 0, "the stream was down");

    gate.release();
    await connectedBy(sam, "sse");
    await seeLine(sam, away);
    await seeLine(sam, own);

    // And a line each way with the stream up (or cut again meanwhile).
    await say(sam, `round ${round} from sse`);
    await seeLine(wes, `sam: round ${round} from sse`);
    await seeLine(sam, `sam: round ${round} from sse`);
    said.push(`sam: round ${round} from sse`);
    await say(wes, `round ${round} from ws`);
    await seeLine(sam, `wes: round ${round} from ws`);
    await seeLine(wes, `wes: round ${round} from ws`);
    said.push(`wes: round ${round} from ws`);
  }

  // One more cut, with nothing said in it, watched and not held: the
  // reconnect carries the id of the last message the page had. Watched
  // from an open stream, so that the request is the one after this cut.
  await connectedBy(sam, "sse");
  const next = sam.waitForRequest((req) => isEvents(new URL(req.url())), { timeout: 10000 });
  // The last id the page had when its stream ended, read in the page as
  // the badge turns.
  const ended = await sam.waitForFunction(
    () => $("status").classList.contains("closed") && lastId.text, null, { timeout: 10000 });
  const cut = await ended.jsonValue();
  assert.strictEqual(await (await next).headerValue("last-event-id"), cut, "Last-Event-ID of a reconnect");
  await connectedBy(sam, "sse");
  await say(wes, "last from ws");
  await seeLine(wes, "wes: last from ws");
  await say(sam, "last from sse");
  await seeLine(sam, "sam: last from sse");
  await seeLine(wes, "sam: last from sse");
  said.push("wes: last from ws");
  said.push("sam: last from sse");

  // Every line once, in one order, on both pages; no reset. Sam's
  // reconnects and its lines by POST /send are no news to the room: it
  // joined once, with its first stream, and never left.
  assert.deepStrictEqual(await lines(wes), ["* wes joined", ...said], "the WebSocket page's lines");
  await sameAsSocket(sam, wes);
  assert.deepStrictEqual(await lines(sam), ["* sam joined", "* wes joined", ...said], "the SSE page's lines");
  await seeHere(sam, ["sam", "wes"]);
  await seeHere(wes, ["sam", "wes"]);
  assert.match(await sam.textContent("#status"), /^connected to cut \(SSE\)$/);
  assert.strictEqual(sam.sockets, 0, "?transport=sse opened a WebSocket");

  // The first stream, then one reconnect at least for each cut above.
  assert.ok(sam.streams.length >= ROUNDS + 2, `${sam.streams.length} streams`);
  assert.strictEqual(await sam.streams[0].headerValue("last-event-id"), null, "the first stream starts afresh");
  await context.close();
}

// A stream that comes back after more than the room keeps gets the reset
// notice and the room's latest messages, as a WebSocket does; the page
// says what happened, shows each line once, and goes on.
async function reset(browser) {
  const context = await browser.newContext();
  const sue = await open(context, streaming, "/?transport=sse&room=far&name=sue");
  await connectedBy(sue, "sse");
  const wes = await open(context, streaming, "/?room=far&name=wes");
  await connectedBy(wes, "ws");
  await seeLine(sue, "* wes joined");

  const gate = await holdNextStream(sue);
  await within(gate.held, 10000, "the SSE page reconnecting");
  const many = Array.from({ length: HISTORY + 2 }, (_, i) => `wes: far ${i + 1}`);
  for (const line of many) await say(wes, line.slice(5));
  await seeLine(wes, many[many.length - 1]);
  gate.release();

  await seeLine(sue, "* (missed messages; showing the latest)");
  await seeLine(sue, many[many.length - 1]);
  await say(wes, "after the reset");
  await seeLine(sue, "wes: after the reset");
  const got = await lines(sue);
  const said = got.filter((line) => line.startsWith("wes: "));
  assert.strictEqual(new Set(said).size, said.length, `a line shown twice: ${JSON.stringify(got)}`);
  assert.ok(!said.includes(many[0]), "the first line said in the gap is past the history");
  assert.strictEqual(await countLines(sue, "* (missed messages; showing the latest)"), 1);
  await context.close();
}

// Pages on a server that refuses every upgrade fall back to SSE by
// themselves, and chat.
async function fallback(browser) {
  const context = await browser.newContext();
  const rita = await open(context, refusing, "/?room=fallback&name=rita");
  const rex = await open(context, refusing, "/?room=fallback&name=rex");
  await connectedBy(rita, "sse");
  await connectedBy(rex, "sse");
  assert.match(await rita.textContent("#status"), /^connected to fallback \(SSE\)$/);
  assert.ok(rita.sockets > 0 && rex.sockets > 0, "the pages tried a WebSocket first");
  await seeHere(rita, ["rex", "rita"]);
  await seeHere(rex, ["rex", "rita"]);

  await say(rita, "streaming by necessity");
  await seeLine(rex, "rita: streaming by necessity");
  await say(rex, "same here");
  await seeLine(rita, "rex: same here");
  await seeLine(rex, "rex: same here");
  assert.strictEqual(await countLines(rita, "rex: same here"), 1);
  await context.close();
}

// The HTTP side of /events, as the page relies on it. With the lifetime
// the server sets, a stream ends by itself, so its body can be read.
async function requests(browser) {
  const context = await browser.newContext();
  const http = context.request;
  const url = (path) => new URL(path, streaming).href;
  const room = "room=checks&name=probe&client=probe-token";

  const res = await http.get(url(`/events?${room}`), { headers: { accept: "text/event-stream" } });
  assert.strictEqual(res.status(), 200);
  assert.match(res.headers()["content-type"], /^text\/event-stream/);
  assert.strictEqual(res.headers()["cache-control"], "no-store");
  assert.strictEqual(res.headers()["x-accel-buffering"], "no");
  const body = await res.text();
  assert.ok(body.startsWith("retry: 1000\n\n"), JSON.stringify(body));
  // Who was here before it, then its own join, as on a WebSocket.
  const data = body.split("\n").filter((line) => line.startsWith("data: ")).map((line) => JSON.parse(line.slice(6)));
  assert.deepStrictEqual(data.slice(0, 2).map((msg) => msg.kind), ["here", "join"], JSON.stringify(body));
  assert.deepStrictEqual(data[0].names, [], JSON.stringify(body));
  assert.match(body, new RegExp(`\nid: ${data[1].id}\ndata: `), "the join's event id is its message id");

  const garbled = { headers: { "last-event-id": "zz" } };
  assert.strictEqual((await http.get(url(`/events?${room}`), garbled)).status(), 400, "garbled Last-Event-ID");
  assert.strictEqual((await http.get(url(`/events?${room}&after=zz`))).status(), 400, "garbled after");
  const foreign = { headers: { origin: "http://evil.example" } };
  assert.strictEqual((await http.get(url(`/events?${room}`), foreign)).status(), 403, "a stream for another site");
  assert.strictEqual((await http.post(url(`/events?${room}`))).status(), 405, "POST /events");
  await context.close();
}

run("browser SSE test", async (browser) => {
  await requests(browser);
  await fallback(browser);
  await reconnects(browser);
  await reset(browser);
});
