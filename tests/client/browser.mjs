// Runs the official client's browser build in headless Chromium (Debian's
// package, driven by puppeteer-core; no browser download), the way a
// support agent's browser does: a page from its own origin connects to the
// sidecar, joins a room and receives an event POSTed to the admin port.
//
//   node browser.mjs <hub url> <admin base url> <transport> [access token]
// Prints one JSON line: {"ok":true,"received":{...},"websockets":[urls],"eventStreams":[urls]}
// or {"ok":false,"error":"..."}.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const [hubUrl, adminUrl, transport, token] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const clientJs = fs.readFileSync(path.join(here, "node_modules/@microsoft/signalr/dist/browser/signalr.min.js"));

const page = `<!doctype html><html><head><script src="/signalr.min.js"></script></head><body><script>
window.runTest = async (hubUrl, transport, token) => {
  const options = { transport: signalR.HttpTransportType[transport] };
  if (token) options.accessTokenFactory = () => token;
  const conn = new signalR.HubConnectionBuilder().withUrl(hubUrl, options).configureLogging(signalR.LogLevel.Warning).build();
  const received = new Promise((resolve) => conn.on("ReceiveMessage", (m) => resolve(m)));
  await conn.start();
  await conn.invoke("JoinRoom", "browser-room");
  window.__ready = true;
  const message = await received;
  await conn.stop();
  return { message };
};
</script></body></html>`;

const server = http.createServer((req, res) => {
  if (req.url === "/signalr.min.js") {
    res.writeHead(200, { "content-type": "text/javascript" }).end(clientJs);
  } else {
    res.writeHead(200, { "content-type": "text/html" }).end(page);
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

let browser;
const finish = async (result, code) => {
  process.stdout.write(JSON.stringify(result) + "\n");
  if (browser) await browser.close().catch(() => {});
  server.close();
  process.exit(code);
};
setTimeout(() => finish({ ok: false, error: "timed out" }, 1), 30000).unref();

try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  const tab = await browser.newPage();
  const logs = [];
  tab.on("console", (m) => logs.push(m.text()));
  // What actually went over the wire: WebSocket URLs from the DevTools
  // protocol, event-stream requests from the page's network log.
  const websockets = [];
  const eventStreams = [];
  const cdp = await tab.createCDPSession();
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketCreated", (e) => websockets.push(e.url));
  tab.on("request", (r) => {
    if ((r.headers().accept ?? "").includes("text/event-stream")) eventStreams.push(r.url());
  });
  await tab.goto(origin);
  const run = tab.evaluate((u, t, k) => window.runTest(u, t, k), hubUrl, transport, token ?? null);
  await tab.waitForFunction("window.__ready === true", { timeout: 15000 });
  const event = {
    event_id: crypto.randomUUID(), event_type: "chat_message", timestamp: new Date().toISOString(),
    room_id: "browser-room",
    payload: { id: "m1", request_id: "browser-room", sender_id: "agent", content: "hello from the browser test",
      sequence_number: 1, is_screenshot: false, created_at: new Date().toISOString() },
  };
  const posted = await fetch(`${adminUrl}/internal/events`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event),
  });
  if (posted.status !== 202) throw new Error(`POST /internal/events answered ${posted.status}`);
  const { message } = await run;
  await finish({ ok: true, origin, received: message, websockets, eventStreams, logs }, 0);
} catch (e) {
  await finish({ ok: false, error: String(e?.message ?? e) }, 1);
}
