// Drives the official @microsoft/signalr client for the Rust integration
// tests. One JSON command per line on stdin; one JSON line per reply or
// event on stdout:
//   {"id":1,"cmd":"connect","name":"a","url":"http://127.0.0.1:8080/hubs/chat",
//    "methods":["ReceiveMessage"],"transport":"WebSockets","skipNegotiation":false,
//    "protocol":"json","reconnect":false,"accessToken":null}
//   {"id":2,"cmd":"invoke","name":"a","method":"JoinRoom","args":["room-1"]}
//   {"id":3,"cmd":"send","name":"a","method":"SendTyping","args":["room-1",true]}
//   {"id":4,"cmd":"stop","name":"a"}
// Replies: {"id":1,"ok":true,"result":...} or {"id":1,"ok":false,"error":"..."}.
// Events:  {"event":"message","name":"a","method":"ReceiveMessage","args":[...],"at":<ms>}
//          {"event":"close","name":"a","error":...} / "reconnecting" / "reconnected"
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import readline from "node:readline";

const conns = new Map();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const logLevel = process.env.SIGNALR_LOG === "debug" ? signalR.LogLevel.Debug : signalR.LogLevel.Error;

async function connect(cmd) {
  const options = {
    transport: signalR.HttpTransportType[cmd.transport ?? "WebSockets"],
    skipNegotiation: !!cmd.skipNegotiation,
  };
  if (cmd.accessToken) options.accessTokenFactory = () => cmd.accessToken;
  let builder = new signalR.HubConnectionBuilder().withUrl(cmd.url, options).configureLogging(logLevel);
  if (cmd.protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (cmd.reconnect) builder = builder.withAutomaticReconnect([0, 300, 600, 1000, 1000, 1000, 2000, 2000, 2000, 2000]);
  if (cmd.statefulReconnect) builder = builder.withStatefulReconnect();
  const conn = builder.build();
  for (const method of cmd.methods ?? []) {
    // The handler must return nothing: a returned value would be a client result.
    conn.on(method, (...args) => {
      out({ event: "message", name: cmd.name, method, args, at: Date.now() });
    });
  }
  conn.onclose((err) => out({ event: "close", name: cmd.name, error: err ? String(err.message ?? err) : null }));
  conn.onreconnecting((err) => out({ event: "reconnecting", name: cmd.name, error: err ? String(err.message ?? err) : null }));
  conn.onreconnected((id) => out({ event: "reconnected", name: cmd.name, connectionId: id ?? null }));
  conns.set(cmd.name, conn);
  await conn.start();
  return { connectionId: conn.connectionId };
}

function get(name) {
  const conn = conns.get(name);
  if (!conn) throw new Error(`no connection named ${name}`);
  return conn;
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case "connect":
      return connect(cmd);
    case "invoke":
      return get(cmd.name).invoke(cmd.method, ...(cmd.args ?? []));
    case "send":
      return get(cmd.name).send(cmd.method, ...(cmd.args ?? []));
    case "stop":
      await get(cmd.name).stop();
      return null;
    case "state":
      return get(cmd.name).state;
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    out({ id: null, ok: false, error: `bad command: ${e}` });
    return;
  }
  handle(cmd).then(
    (result) => out({ id: cmd.id, ok: true, result: result ?? null }),
    (err) => out({ id: cmd.id, ok: false, error: String(err?.message ?? err) }),
  );
});
rl.on("close", async () => {
  await Promise.allSettled([...conns.values()].map((c) => c.stop()));
  process.exit(0);
});
