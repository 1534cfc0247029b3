// Two pages on two chat servers that share a Redis: a room spans both.
//
//   node tests/browser/cluster.test.cjs http://127.0.0.1:PORT_A/ http://127.0.0.1:PORT_B/
//
// Needs playwright-core (scripts/browser-test.sh installs it under
// target/browser) and Debian's chromium at /usr/bin/chromium.
"use strict";
const { run, seeLine, connectedBy } = require("./lib.cjs");

const [a, b] = process.argv.slice(2);
if (!a || !b) {
  console.error("usage: node cluster.test.cjs http://HOST:PORT_A/ http://HOST:PORT_B/");
  process.exit(2);
}

run("browser cluster test", async (browser) => {
  const context = await browser.newContext();
  const alice = await context.newPage();
  await alice.goto(new URL("/?room=lobby&name=alice", a).href);
  await connectedBy(alice, "ws");
  const bob = await context.newPage();
  await bob.goto(new URL("/?room=lobby&name=bob", b).href);
  await connectedBy(bob, "ws");

  // Bob's server announces his arrival through Redis. Alice's server
  // subscribed to the room when she joined, so she sees it.
  await seeLine(alice, "* bob joined");

  await alice.fill("#message", "hello from server A");
  await alice.press("#message", "Enter");
  await seeLine(bob, "alice: hello from server A");
  await seeLine(alice, "alice: hello from server A");

  await bob.fill("#message", "and back from server B");
  await bob.press("#message", "Enter");
  await seeLine(alice, "bob: and back from server B");

  await bob.close();
  await seeLine(alice, "* bob left");
});
