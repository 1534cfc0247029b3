// The chat example over TLS in headless Chromium: the page comes over
// https:// and its WebSocket over wss://, and two pages chat.
//
//   node tests/browser/tls.test.cjs https://localhost:PORT/ CERT_FILE
//
// The chat runs with --tls-cert CERT_FILE (the test certificate of
// tests/tls/ and its key). Chromium does not know the test CA; instead of
// ignoring every certificate error, it is told to accept the key of
// CERT_FILE's first certificate (--ignore-certificate-errors-spki-list),
// and the test checks that the page came with that certificate. So no
// handshake should fail: Playwright's ignoreHTTPSErrors would have
// Chromium reject the certificate first and retry, and each rejection
// counts in wsloop_tls_failures_total, which must stay 0 (the chat is
// fresh). tests/deflate/interop.py checks the chain against the CA itself.
//
// Needs playwright-core (scripts/tls-test.sh installs it under
// target/browser) and Debian's chromium at /usr/bin/chromium.
"use strict";
const assert = require("assert");
const crypto = require("crypto");
const fs = require("fs");
const { run, seeLine, seeHere, connectedBy } = require("./lib.cjs");

const [base, certFile] = process.argv.slice(2);
if (!base || !base.startsWith("https://") || !certFile) {
  console.error("usage: node tls.test.cjs https://localhost:PORT/ CERT_FILE");
  process.exit(2);
}

// The base64 SHA-256 of the server certificate's SubjectPublicKeyInfo, as
// Chromium's --ignore-certificate-errors-spki-list takes it. The first
// certificate of a PEM chain is the server's.
function spkiHash(pemFile) {
  const cert = new crypto.X509Certificate(fs.readFileSync(pemFile));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return crypto.createHash("sha256").update(spki).digest("base64");
}

// Lines each page says, as fast as it can, while the other does the same.
const LINES = 20;

// Opens the chat in a new page of `context` as `name`, keeping the URL of
// every WebSocket the page opens.
async function join(context, room, name) {
  const page = await context.newPage();
  page.sockets = [];
  page.on("websocket", (ws) => page.sockets.push(ws.url()));
  const url = new URL(`/?room=${room}&name=${name}`, base).href;
  const response = await page.goto(url);
  assert.strictEqual(response.status(), 200, `GET ${url}`);
  const tls = await response.securityDetails();
  assert.ok(tls, `${name}: no TLS details for the page`);
  assert.strictEqual(tls.subjectName, "localhost", `${name}: certificate ${JSON.stringify(tls)}`);
  assert.strictEqual(tls.issuer, "wsloop test CA", `${name}: certificate ${JSON.stringify(tls)}`);
  assert.match(tls.protocol, /^TLS 1\.[23]$/, `${name}: ${tls.protocol}`);
  assert.strictEqual(await page.evaluate(() => location.protocol), "https:");
  await connectedBy(page, "ws");
  const badge = await page.locator("#status").textContent();
  assert.match(badge, /\(WebSocket\)$/, `${name}: transport badge says ${JSON.stringify(badge)}`);
  const socketUrl = await page.evaluate(() => socket && socket.url);
  assert.ok(socketUrl && socketUrl.startsWith("wss://"), `${name}: the page's socket is ${socketUrl}`);
  return page;
}

async function say(page, text) {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

// The chat lines of #log of `page` (not the "* ..." notices), in order.
const chatLines = (page) => page.locator("#log div:not(.notice)").allTextContents();

run("tls browser test", async (browser) => {
  const context = await browser.newContext();
  const room = "tls" + Date.now().toString(36);

  const alice = await join(context, room, "alice");
  await seeLine(alice, "* alice joined");
  const bob = await join(context, room, "bob");
  await seeLine(alice, "* bob joined");
  await seeHere(alice, ["alice", "bob"]);
  await seeHere(bob, ["alice", "bob"]);

  // Both talk at once. Each page sends its lines in order, and the room
  // has one order: both pages must show the same lines, each once, with
  // each speaker's in the order said.
  const said = (name) => Array.from({ length: LINES }, (_, i) => `${name} says ${i + 1} of ${LINES}`);
  await Promise.all([
    (async () => { for (const line of said("alice")) await say(alice, line); })(),
    (async () => { for (const line of said("bob")) await say(bob, line); })(),
  ]);
  // A last line after all the others: once it shows, nothing said before
  // is still on its way.
  await say(alice, "over");
  await seeLine(alice, "alice: over");
  await seeLine(bob, "alice: over");

  const seenByAlice = await chatLines(alice);
  const seenByBob = await chatLines(bob);
  assert.deepStrictEqual(seenByBob, seenByAlice, "the two pages show the room in different orders");
  assert.strictEqual(seenByAlice.length, 2 * LINES + 1, `lines: ${JSON.stringify(seenByAlice)}`);
  assert.strictEqual(seenByAlice.at(-1), "alice: over");
  for (const name of ["alice", "bob"]) {
    const fromName = seenByAlice.filter((line) => line.startsWith(name + ": "));
    const want = [...said(name), ...(name === "alice" ? ["over"] : [])].map((t) => `${name}: ${t}`);
    assert.deepStrictEqual(fromName, want, `${name}'s lines`);
  }

  // Each page opened one WebSocket, on wss://, and kept it.
  for (const [name, page] of [["alice", alice], ["bob", bob]]) {
    assert.strictEqual(page.sockets.length, 1, `${name} opened ${JSON.stringify(page.sockets)}`);
    assert.ok(page.sockets[0].startsWith("wss://localhost:"), `${name}: ${page.sockets[0]}`);
  }

  // Leaving is seen over TLS too.
  await bob.close();
  await seeLine(alice, "* bob left");
  await seeHere(alice, ["alice"]);

  // No handshake failed: the page's own GET /metrics, over https from
  // loopback, which the chat answers.
  const metrics = await alice.evaluate(async () => {
    const res = await fetch("/metrics");
    return `${res.status}\n${await res.text()}`;
  });
  const failures = /^wsloop_tls_failures_total (\d+)$/m.exec(metrics);
  assert.ok(failures, `GET /metrics: ${metrics.slice(0, 200)}`);
  assert.strictEqual(Number(failures[1]), 0, "TLS failures while Chromium chatted");
}, [`--ignore-certificate-errors-spki-list=${spkiHash(certFile)}`]);
