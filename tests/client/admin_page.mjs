// Opens the sidecar's admin page in headless Chromium (Debian's package,
// driven by puppeteer-core) as an operator does: /admin/ answers 401 with
// the token form, the token goes in, the page polls the API. Reads what the
// page shows from its DOM, takes screenshots and reads them back (size and
// pixels), so the Rust test can compare the page's numbers with the API's.
//
//   node admin_page.mjs <admin base url> <token> <fragment> <png dir>
// Then one command per line on stdin, one JSON line per answer on stdout:
//   {"cmd":"snapshot","name":"first","after":<polls>}  -> waits until the page has polled more than
//        `after` times, screenshots to <png dir>/admin-<name>.png, answers {"ok":true,"dom":{...},"png":{...}}
//   {"cmd":"wait","selector":"...","text":"..."}       -> waits until the element's text is `text`
//   {"cmd":"quit"}
// On failure: {"ok":false,"error":"..."}.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const [adminUrl, token, fragment, pngDir] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
fs.mkdirSync(pngDir, { recursive: true });

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  defaultViewport: { width: 1400, height: 1000 },
});
const tab = await browser.newPage();
const logs = [];
tab.on("console", (m) => logs.push(m.text()));
tab.on("pageerror", (e) => logs.push("pageerror: " + e.message));

// Everything the page shows, read from the DOM.
function readDom() {
  const rows = (sel) => [...document.querySelectorAll(sel + " tbody tr")].filter((tr) => !tr.querySelector(".empty"));
  const cell = (tr, k) => tr.querySelector(`td[data-k="${k}"]`)?.textContent ?? null;
  const lags = (tr) => Object.fromEntries([...tr.querySelectorAll("[data-stream]")].map((s) => [s.dataset.stream,
    { lag: s.dataset.lag === "" ? null : Number(s.dataset.lag), pending: s.dataset.pending === "" ? null : Number(s.dataset.pending) }]));
  return {
    loadedAt: window.__adminPageLoadedAt ?? null,
    polls: Number(document.getElementById("updated")?.dataset.polls ?? 0),
    status: document.getElementById("status")?.textContent ?? "",
    asked: document.getElementById("asked")?.textContent ?? "",
    answered: Number(document.getElementById("cluster")?.dataset.answered ?? 0),
    instances: rows("#instances-table").map((tr) => ({
      instance: tr.dataset.instance, state: tr.dataset.state, connections: Number(cell(tr, "connections")), streams: lags(tr),
    })),
    hubs: rows("#hubs-table").map((tr) => ({ name: tr.dataset.hub, connections: Number(cell(tr, "connections")) })),
    rooms: rows("#rooms-table").map((tr) => ({ name: tr.dataset.room, connections: Number(cell(tr, "connections")) })),
    room: document.getElementById("room-title")?.textContent ?? "",
    roomConnections: Number(document.getElementById("members-count")?.textContent ?? -1),
    members: rows("#members-table").map((tr) => ({ connection_id: tr.dataset.connection, user: tr.dataset.user || null,
      instance: cell(tr, "instance"), transport: cell(tr, "transport") })),
    userConnections: rows("#user-table").map((tr) => ({ connection_id: tr.dataset.connection, instance: tr.dataset.instance,
      hub: cell(tr, "hub"), rooms: (cell(tr, "rooms") || "").split(", ").filter(Boolean) })),
    userInstances: rows("#user-instances").map((tr) => ({ instance: tr.dataset.instance, state: tr.dataset.state, streams: lags(tr) })),
  };
}

// Reads a PNG back through the browser's own decoder: its size, how many
// pixels are dark (text) or coloured, and how many distinct colours.
async function readPng(file) {
  const data = fs.readFileSync(file).toString("base64");
  const probe = await browser.newPage();
  try {
    return await probe.evaluate(async (b64) => {
      const img = new Image();
      img.src = "data:image/png;base64," + b64;
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, c.width, c.height).data;
      let dark = 0, coloured = 0;
      const colours = new Set();
      for (let i = 0; i < px.length; i += 4 * 7) {
        const [r, gr, b] = [px[i], px[i + 1], px[i + 2]];
        if (r + gr + b < 200) dark++;
        if (Math.max(r, gr, b) - Math.min(r, gr, b) > 60) coloured++;
        colours.add((r >> 4) << 8 | (gr >> 4) << 4 | (b >> 4));
      }
      const sampled = Math.ceil(px.length / (4 * 7));
      return { width: c.width, height: c.height, darkShare: dark / sampled, colouredShare: coloured / sampled, colours: colours.size };
    }, data);
  } finally {
    await probe.close();
  }
}

async function snapshot(cmd) {
  await tab.waitForFunction((after) => Number(document.getElementById("updated")?.dataset.polls ?? 0) > after,
    { timeout: 15000 }, cmd.after ?? 0);
  const dom = await tab.evaluate(readDom);
  const file = path.join(pngDir, `admin-${cmd.name}.png`);
  await tab.screenshot({ path: file, fullPage: true });
  return { ok: true, dom, png: { file, ...(await readPng(file)) } };
}

try {
  const first = await tab.goto(`${adminUrl}/admin/#${fragment}`);
  const loginStatus = first.status();
  const hasForm = !!(await tab.$("#login"));
  await tab.type("#token", token);
  await Promise.all([
    tab.waitForFunction(() => !!document.getElementById("instances-table"), { timeout: 15000 }),
    tab.click("button[type=submit]"),
  ]);
  out({ ok: true, loginStatus, hasForm });
} catch (e) {
  out({ ok: false, error: String(e?.message ?? e), logs });
  await browser.close();
  process.exit(1);
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    continue;
  }
  if (cmd.cmd === "quit") break;
  try {
    if (cmd.cmd === "snapshot") out(await snapshot(cmd));
    else if (cmd.cmd === "wait") {
      await tab.waitForFunction((s, t) => document.querySelector(s)?.textContent === t, { timeout: 15000 }, cmd.selector, cmd.text);
      out({ ok: true });
    } else out({ ok: false, error: "unknown command" });
  } catch (e) {
    out({ ok: false, error: String(e?.message ?? e), logs });
  }
}
await browser.close();
