// End-to-end test of the chat example in headless Chromium.
//
//   node tests/browser/chat.test.cjs http://127.0.0.1:PORT/
//
// With EXPECT_DEFLATE=1 (the chat run with --deflate) it also checks that
// Chromium negotiated permessage-deflate; without, that it did not.
//
// Needs playwright-core (scripts/browser-test.sh installs it under
// target/browser) and Debian's chromium at /usr/bin/chromium.
"use strict";
const assert = require("assert");
const { run, seeLine, seeHere, connectedBy } = require("./lib.cjs");

const base = process.argv[2];
if (!base) {
  console.error("usage: node chat.test.cjs http://HOST:PORT/");
  process.exit(2);
}

run("browser test", async (browser) => {
  const context = await browser.newContext();

  // Alice joins straight from the URL.
  const alice = await context.newPage();
  await alice.goto(new URL("/?room=lobby&name=alice", base).href);
  await connectedBy(alice, "ws");
  await seeLine(alice, "* alice joined");

  // Bob joins through the form.
  const bob = await context.newPage();
  await bob.goto(base);
  await bob.fill("#room", "lobby");
  await bob.fill("#name", "bob");
  await bob.click("#join");
  await connectedBy(bob, "ws");
  await seeLine(alice, "* bob joined");
  await seeHere(alice, ["alice", "bob"]);
  await seeHere(bob, ["alice", "bob"]);

  // The extension the 101 response agreed, as the page's WebSocket saw it.
  const extensions = await bob.evaluate(() => socket.extensions);
  if (process.env.EXPECT_DEFLATE === "1") {
    assert.match(extensions, /^permessage-deflate(;|$)/, `extensions: ${extensions}`);
  } else {
    assert.strictEqual(extensions, "", "no extension without --deflate");
  }

  // A long line (compressed when deflate is on) arrives as text.
  const long = "the quick brown fox jumps over the lazy dog ".repeat(8).trim();
  await bob.fill("#message", long);
  await bob.press("#message", "Enter");
  await seeLine(alice, "bob: " + long);

  // Enter sends; both see it, the sender included.
  await bob.fill("#message", "hello from bob");
  await bob.press("#message", "Enter");
  await seeLine(alice, "bob: hello from bob");
  await seeLine(bob, "bob: hello from bob");

  // Markup is shown as text, never rendered.
  await bob.fill("#message", "<b>x</b>");
  await bob.click("#send");
  await seeLine(alice, "bob: <b>x</b>");
  assert.strictEqual(await alice.locator("#log b").count(), 0, "markup was rendered");

  // Another room hears nothing of this one.
  const carol = await context.newPage();
  await carol.goto(new URL("/?room=other&name=carol", base).href);
  await seeLine(carol, "* carol joined");
  await alice.fill("#message", "only lobby");
  await alice.press("#message", "Enter");
  await seeLine(bob, "alice: only lobby");
  const carolLines = await carol.locator("#log div").allTextContents();
  assert.deepStrictEqual(carolLines, ["* carol joined"]);

  // Leaving is announced.
  await bob.close();
  await seeLine(alice, "* bob left");
  await seeHere(alice, ["alice"]);

  // Other paths are 404.
  const res = await alice.request.get(new URL("/nope", base).href);
  assert.strictEqual(res.status(), 404);
});
