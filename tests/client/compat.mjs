// One official SignalR JavaScript client version against the sidecar, over
// every transport x protocol it supports (or the ones named): connect,
// invoke JoinRoom(room) and wait for its Completion, then receive the
// ReceiveMessage event the caller publishes into that room. Every
// combination runs concurrently. Used by tests/compatibility.rs.
//
//   node compat.mjs <client> <hub url> <room prefix> [transport,...] [protocol,...]
//     client     1 | 3 | 5 | 6 | 7 | 8 | 9 | 10 (major version, keys of CLIENTS)
//     transport  WebSockets, ServerSentEvents, LongPolling (default: all)
//     protocol   json, msgpack (default: both)
//
// One JSON line on stdout per step:
//   {"kind":"joined","room":"<prefix>-6-WebSockets-json",...}   publish into `room` now
//   {"kind":"result","package":"@microsoft/signalr","version":"6.0.25","transport":"WebSockets",
//    "protocol":"json","room":"...","ok":true,"error":null,"received":[...]}
//   (MessagePack results also name "msgpackPackage" and "msgpackVersion")
// The process exits 0 once every combination has its result line.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// Client major -> [hub client package, MessagePack package] as installed in
// node_modules (package.json: aliases for every major but 1.x and 10).
const CLIENTS = {
  1: ["@aspnet/signalr", "@aspnet/signalr-protocol-msgpack"],
  3: ["signalr-3", "signalr-protocol-msgpack-3"],
  5: ["signalr-5", "signalr-protocol-msgpack-5"],
  6: ["signalr-6", "signalr-protocol-msgpack-6"],
  7: ["signalr-7", "signalr-protocol-msgpack-7"],
  8: ["signalr-8", "signalr-protocol-msgpack-8"],
  9: ["signalr-9", "signalr-protocol-msgpack-9"],
  10: ["@microsoft/signalr", "@microsoft/signalr-protocol-msgpack"],
};
const TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"];
const PROTOCOLS = ["json", "msgpack"];
// From connect to the event, per combination: generous for 2 busy cores,
// small next to the test's own limit.
const TIMEOUT_MS = 20000;

const [major, url, prefix, transportArg, protocolArg] = process.argv.slice(2);
if (!CLIENTS[major] || !url || !prefix) {
  process.stderr.write(`usage: node compat.mjs <${Object.keys(CLIENTS).join("|")}> <hub url> <room prefix> [transports] [protocols]\n`);
  process.exit(64);
}
const transports = transportArg ? transportArg.split(",") : TRANSPORTS;
const protocols = protocolArg ? protocolArg.split(",") : PROTOCOLS;

const [hubPackage, msgpackPackage] = CLIENTS[major];
const here = dirname(fileURLToPath(import.meta.url));
const manifest = (name) => JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));
const real = manifest(hubPackage);
const msgpackReal = manifest(msgpackPackage);

if (major === "5") {
  // 5.0.x takes a global fetch to mean "browser" and then reads `self`,
  // which Node lacks (fixed in 6.0). On the Node it was released for there
  // was no global fetch, so it used its own node-fetch path: hide ours.
  delete globalThis.fetch;
}

// Old packages are CommonJS; Node's named-export detection may miss some.
const load = async (name) => {
  const mod = await import(name);
  return mod.HubConnectionBuilder || mod.MessagePackHubProtocol ? mod : mod.default;
};
const signalR = await load(hubPackage);
const { MessagePackHubProtocol } = await load(msgpackPackage);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Keeps what the client logs at Warning and above, so a failure carries
// the client's own account of it (e.g. which request got which status).
class Collector {
  constructor() {
    this.lines = [];
  }
  log(level, message) {
    if (level >= signalR.LogLevel.Warning && level !== signalR.LogLevel.None) this.lines.push(String(message));
  }
}

const withTimeout = (promise, ms, what) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms).unref())]);

async function run(transport, protocol) {
  const room = `${prefix}-${major}-${transport}-${protocol}`;
  const base = { package: real.name, version: real.version, transport, protocol, room };
  if (protocol === "msgpack") Object.assign(base, { msgpackPackage: msgpackReal.name, msgpackVersion: msgpackReal.version });
  const logger = new Collector();
  let conn = null;
  let step = "build";
  try {
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(url, { transport: signalR.HttpTransportType[transport] })
      .configureLogging(logger);
    if (protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
    conn = builder.build();
    const received = new Promise((resolve) => conn.on("ReceiveMessage", (...args) => resolve(args)));
    const closed = new Promise((_, reject) =>
      conn.onclose((err) => reject(new Error(`connection closed${err ? `: ${err.message ?? err}` : ""}`))),
    );
    const deadline = Date.now() + TIMEOUT_MS;
    const left = () => Math.max(deadline - Date.now(), 1);
    step = "connect";
    await withTimeout(conn.start(), left(), "connect");
    step = "JoinRoom";
    const result = await withTimeout(Promise.race([conn.invoke("JoinRoom", room), closed]), left(), "JoinRoom");
    if (result !== null && result !== undefined) throw new Error(`JoinRoom returned ${JSON.stringify(result)}`);
    out({ kind: "joined", ...base });
    step = "ReceiveMessage";
    const args = await withTimeout(Promise.race([received, closed]), left(), "ReceiveMessage");
    out({ kind: "result", ...base, ok: true, error: null, received: args });
  } catch (e) {
    const logged = logger.lines.length ? ` (client log: ${logger.lines.slice(-3).join(" | ")})` : "";
    out({ kind: "result", ...base, ok: false, error: `${step}: ${e?.message ?? e}${logged}`, received: null });
  } finally {
    // A client that hangs in stop() must not hold back the other results.
    if (conn) await withTimeout(conn.stop(), 5000, "stop").catch(() => {});
  }
}

const combos = transports.flatMap((t) =>
  // Server-Sent Events carry text only: no client sends MessagePack over them.
  protocols.filter((p) => !(t === "ServerSentEvents" && p === "msgpack")).map((p) => [t, p]),
);
await Promise.all(combos.map(([t, p]) => run(t, p)));
process.exit(0);
