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
//          {"event":"close","name":"a","error":...,"at":<ms>} / "reconnecting" / "reconnected"
// With "rooms":["r1",...] in connect, the driver invokes JoinRoom for each room after start
// and again after every full reconnect, then prints {"event":"joined","name":"a","at":<ms>}
// (or {"event":"rejoin_failed",...}): the continuity tests need the moment a join completed
// on the client's clock, without a round trip through the test process.
// A stateful-reconnect connection also prints {"event":"resuming"} when its socket drops
// and {"event":"resumed"} when the resume's replay went out; a refused resume is followed
// by "reconnecting" or "close" instead.
// SIGNALR_PACKAGE / SIGNALR_MSGPACK_PACKAGE pick another installed version
// (the npm aliases of package.json, e.g. "signalr-8"); the newest otherwise.
const signalR = await import(process.env.SIGNALR_PACKAGE || "@microsoft/signalr");
const { MessagePackHubProtocol } = await import(
  process.env.SIGNALR_MSGPACK_PACKAGE || "@microsoft/signalr-protocol-msgpack"
);
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
  const error = (err) => (err ? String(err.message ?? err) : null);
  conn.onclose((err) => out({ event: "close", name: cmd.name, error: error(err), at: Date.now() }));
  conn.onreconnecting((err) => out({ event: "reconnecting", name: cmd.name, error: error(err), at: Date.now() }));
  conn.onreconnected(async (id) => {
    out({ event: "reconnected", name: cmd.name, connectionId: id ?? null, at: Date.now() });
    watchResumes(conn, cmd.name);
    if (cmd.rooms) {
      try {
        await join(conn, cmd.rooms);
        out({ event: "joined", name: cmd.name, connectionId: conn.connectionId, at: Date.now() });
      } catch (err) {
        out({ event: "rejoin_failed", name: cmd.name, error: error(err), at: Date.now() });
      }
    }
  });
  conns.set(cmd.name, conn);
  await conn.start();
  watchResumes(conn, cmd.name);
  if (cmd.rooms) {
    await join(conn, cmd.rooms);
    out({ event: "joined", name: cmd.name, connectionId: conn.connectionId, at: Date.now() });
  }
  return { connectionId: conn.connectionId, version: signalR.VERSION };
}

async function join(conn, rooms) {
  for (const room of rooms) await conn.invoke("JoinRoom", room);
}

// The client resumes a stateful session without telling the application:
// wrap the two hooks HttpConnection calls (features.disconnected when the
// socket drops, features.resend once the new socket is open) to see it.
// HubConnection sets them afresh on every start, hence the call after each.
function watchResumes(conn, name) {
  const features = conn.connection?.features;
  if (!features?.reconnect || features.disconnected?.watched) return;
  const { disconnected, resend } = features;
  features.disconnected = (...a) => {
    out({ event: "resuming", name, at: Date.now() });
    return disconnected(...a);
  };
  features.disconnected.watched = true;
  features.resend = async (...a) => {
    const r = await resend(...a);
    out({ event: "resumed", name, at: Date.now() });
    return r;
  };
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
