// Runs the discussion page (examples/discussion/) in headless Chromium: two
// pages, Ann and Bob, talk to each other through the sidecar; the page
// server is the example's own, and the pages reach the sidecar through a
// TCP proxy this script can cut (a network drop, twice: missed updates
// replayed by the sidecar, then refetched when it cannot replay).
//
//   node discussion_page.mjs <sidecar client url> <admin url> <jwt secret> <screenshot dir>
// Prints one JSON line: {"ok":true,"steps":{...DOM texts per step...},"screenshots":[paths]}
// or {"ok":false,"error":"...","steps":{...}}.
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { start as startPageServer } from "../../examples/discussion/server.mjs";

const [sidecarUrl, adminUrl, secret, shots] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const steps = {};
const screenshots = [];

// --- a proxy to the sidecar's client port that can drop every connection ---
const target = new URL(sidecarUrl);
const sockets = new Set();
let refusing = false;
const proxy = net.createServer((client) => {
  if (refusing) return client.destroy();
  const upstream = net.connect(Number(target.port), target.hostname);
  sockets.add(client).add(upstream);
  const drop = () => {
    client.destroy();
    upstream.destroy();
    sockets.delete(client);
    sockets.delete(upstream);
  };
  client.on("error", drop).on("close", drop);
  upstream.on("error", drop).on("close", drop);
  client.pipe(upstream).pipe(client);
});
await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
const proxied = `http://127.0.0.1:${proxy.address().port}`;
/** Drops every connection and refuses new ones until `reopen()`. */
function cut() {
  refusing = true;
  for (const s of sockets) s.destroy();
  sockets.clear();
}
/** Takes connections again, `after` ms from now at the earliest. */
const reopen = (after = 0) => new Promise((r) => setTimeout(() => r((refusing = false)), after));

const { server, url: pageUrl } = await startPageServer({
  adminUrl,
  secret,
  signalrJs: path.join(here, "node_modules/@microsoft/signalr/dist/browser/signalr.min.js"),
});

let browser;
const finish = async (result, code) => {
  process.stdout.write(JSON.stringify({ ...result, steps, screenshots }) + "\n");
  if (browser) await browser.close().catch(() => {});
  server.close();
  proxy.close();
  process.exit(code);
};
setTimeout(() => finish({ ok: false, error: "timed out" }, 1), 150000).unref();

async function post(event_type, payload, room_id = "d-1") {
  const event = {
    event_id: crypto.randomUUID(), event_type, timestamp: new Date().toISOString(), room_id, payload,
  };
  const r = await fetch(`${adminUrl}/internal/events`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event),
  });
  if (r.status !== 202) throw new Error(`POST ${event_type}: ${r.status} ${await r.text()}`);
}

/** The texts a reader sees. */
const view = (tab) =>
  tab.evaluate(() => ({
    status: document.getElementById("status").textContent,
    banner: document.getElementById("banner").classList.contains("shown")
      ? document.getElementById("banner").textContent : "",
    typing: document.getElementById("typing").textContent,
    participants: document.getElementById("participants").textContent,
    presenceStates: document.getElementById("presence-states").textContent,
    sync: document.getElementById("sync").textContent,
    syncState: { ...window.discussionPage.state.sync },
    lastPosition: window.discussionPage.state.lastPosition,
    responses: [...document.querySelectorAll("#responses li")].map(
      (li) => `${li.querySelector(".author").textContent}: ${li.querySelector(".content").textContent}`),
    notifications: [...document.querySelectorAll("#notifications li")].map((li) => li.textContent),
  }));

async function until(tab, what, predicate, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await view(tab);
    if (predicate(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not seen within ${timeout} ms; the page shows ${JSON.stringify(last)}`);
}

async function shot(tab, name) {
  const file = path.join(shots, `${name}.png`);
  await tab.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
}

try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  const open = async (user, name) => {
    const tab = await browser.newPage();
    await tab.setViewport({ width: 1000, height: 700 });
    tab.on("pageerror", (e) => (steps.pageErrors ??= []).push(`${user}: ${e.message}`));
    const q = new URLSearchParams({ user, name, sidecar: proxied, discussion: "d-1" });
    await tab.goto(`${pageUrl}/?${q}`);
    await tab.waitForFunction("window.discussionPage && window.discussionPage.ready === true", { timeout: 15000 });
    return tab;
  };
  const ann = await open("ann", "Ann");
  const bob = await open("bob", "Bob");
  steps.joined = await until(ann, "two participants", (v) => v.participants === "2 participants" && v.status === "connected");
  // The sidecar's own count (ParticipantCount, FR-033) with the states
  // (FR-034): both online. Bob's join pushed it to Ann.
  steps.states = await until(ann, "online and away counts", (v) => v.presenceStates === "2 online · 0 away");

  // Bob types: Ann sees him (FR-018); two more typists from the backend make three (FR-019).
  await bob.type("#compose", "Hello from Bob", { delay: 40 });
  steps.oneTyping = await until(ann, "Bob typing", (v) => v.typing === "Bob is typing…");
  await post("typing_started", { user_id: "cid", username: "Cid", is_typing: true });
  await post("typing_started", { user_id: "dan", username: "Dan", is_typing: true });
  steps.threeTyping = await until(ann, "three typing", (v) => v.typing === "3 people are typing…");
  steps.bobSeesOthers = await until(bob, "Bob sees the others, not himself", (v) => v.typing === "Cid and Dan are typing…");
  await shot(ann, "1-ann-three-typing");

  // Bob posts: both pages show the response; Bob leaves the roster at once
  // (FR-021). Cid and Dan type on (so they do not time out meanwhile).
  await post("typing_started", { user_id: "cid", username: "Cid", is_typing: true });
  await post("typing_started", { user_id: "dan", username: "Dan", is_typing: true });
  await bob.click("#post");
  steps.posted = await until(ann, "the response at Ann's", (v) => v.responses.includes("Bob: Hello from Bob") && v.typing === "Cid and Dan are typing…");
  steps.postedAtBob = await until(bob, "the response at Bob's", (v) => v.responses.includes("Bob: Hello from Bob"));
  await shot(ann, "2-ann-response-posted");
  await shot(bob, "2-bob-response-posted");

  // A burst from the backend: one batch, in order, no duplicates (FR-003, FR-005).
  for (let n = 1; n <= 5; n++) {
    await post("response_posted", {
      response_id: `burst-${n}`, author_id: "cid", author_name: "Cid", content: `burst ${n}`, created_at: new Date().toISOString(),
    });
  }
  steps.burst = await until(ann, "the burst", (v) => v.responses.filter((r) => r.startsWith("Cid: burst")).length === 5);

  // The network drops: the banner (FR-023). While the pages are away, the
  // backend posts a response (kept in its store too) and three more go
  // straight to the sidecar (no store has them: only the sidecar's replay
  // can bring them). Back, each page joins with the last position it saw and
  // the sidecar replays what it missed, in order, once each (FR-025).
  const before = await view(ann);
  steps.beforeCut = { lastPosition: before.lastPosition, syncState: before.syncState };
  const cutAt = Date.now();
  cut();
  steps.reconnecting = await until(ann, "the reconnecting banner", (v) => v.banner === "Connection lost, reconnecting…");
  await shot(ann, "3-ann-reconnecting");
  const missed = await fetch(`${pageUrl}/api/responses`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ discussion: "d-1", author_id: "dan", author_name: "Dan", content: "posted while Ann was away" }),
  });
  if (missed.status !== 201) throw new Error(`the backend's post answered ${missed.status}`);
  for (let n = 1; n <= 3; n++) {
    await post("response_posted", {
      response_id: `missed-${n}`, author_id: "eve", author_name: "Eve", content: `missed ${n}`, created_at: new Date().toISOString(),
    });
  }
  await reopen(2500 - (Date.now() - cutAt)); // a 2.5 s outage, and everything published before it ends
  steps.reconnected = await until(ann, "reconnected with the missed responses replayed",
    (v) => v.banner === "" && v.status === "connected" && v.syncState.replays === 1 && v.responses.includes("Eve: missed 3"), 30000);
  steps.bobReplayed = await until(bob, "Bob's replay", (v) => v.syncState.replays === 1 && v.responses.includes("Eve: missed 3"), 30000);
  await shot(ann, "4-ann-replayed");

  // A position older than the sidecar's 24 h history: it cannot replay, the
  // answer says `recovered: false`, the page refetches from its backend and
  // says so. (The test ages Ann's bookmark; a week-long sleep would too.)
  await ann.evaluate(() => { window.discussionPage.state.lastPosition = "1-0"; });
  const secondAt = Date.now();
  cut();
  await until(ann, "the second reconnecting banner", (v) => v.banner === "Connection lost, reconnecting…");
  const second = await fetch(`${pageUrl}/api/responses`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ discussion: "d-1", author_id: "dan", author_name: "Dan", content: "posted during the second drop" }),
  });
  if (second.status !== 201) throw new Error(`the backend's post answered ${second.status}`);
  await reopen(2500 - (Date.now() - secondAt));
  steps.refetched = await until(ann, "refetched after recovered:false",
    (v) => v.status === "connected" && v.syncState.refetches === 1 && v.responses.includes("Dan: posted during the second drop"), 30000);
  steps.bobSecond = await until(bob, "Bob's second replay", (v) => v.syncState.replays === 2 && v.responses.includes("Dan: posted during the second drop"), 30000);
  await shot(ann, "5-ann-refetched");
  // A platform-wide announcement reaches the notification hub (FR-032).
  await post("announcement", {
    announcement_id: "a-1", title: "Maintenance", message: "tonight at 22:00", severity: "info",
    created_at: new Date().toISOString(),
  }, "*");
  steps.announced = await until(ann, "the announcement", (v) => v.notifications.includes("📣 Maintenance: tonight at 22:00"));
  await shot(ann, "6-ann-announcement");
  steps.final = { ann: await view(ann), bob: await view(bob) };
  await finish({ ok: true }, 0);
} catch (e) {
  await finish({ ok: false, error: String(e?.message ?? e) }, 1);
}
