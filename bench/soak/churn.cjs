// Churn driver for the soak test (bench/soak.sh): keeps CLIENTS clients
// connecting, joining rooms, invoking and leaving in varied ways for
// DURATION seconds, while publishing events to their rooms and users.
// Run with NODE_PATH=tests/client/node_modules (the official client).
// Settings (environment): SIDECAR (client base URL), ADMIN (admin base
// URL), SECRET (HS256 JWT secret), CLIENTS, DURATION (seconds).
// Several instances without session affinity: SIDECARS and ADMINS (comma-
// separated, same order) replace SIDECAR and ADMIN. Each client then picks
// a live instance (DOWN_FILE, when it exists, holds the index of one that
// is restarting) for its negotiate and connect, and every stateful resume
// goes to a random live instance (about half land on the other one);
// stateful clients also kill their own socket RESUMES_PER_CLIENT times
// (default 2 with several instances, else 0) to force resumes.
"use strict";
const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");
const WebSocket = require("ws");
const crypto = require("node:crypto");

const SIDECAR = process.env.SIDECAR ?? "http://127.0.0.1:47080";
const ADMIN = process.env.ADMIN ?? "http://127.0.0.1:47090";
const SECRET = process.env.SECRET ?? "soak-secret-soak-secret-soak-secret";
const CLIENTS = Number(process.env.CLIENTS ?? 200);
const DURATION = Number(process.env.DURATION ?? 300) * 1000;
const end = Date.now() + DURATION;
const ROUND = process.env.ROUND ?? "1";
const SIDECARS = (process.env.SIDECARS ?? SIDECAR).split(",");
const ADMINS = (process.env.ADMINS ?? ADMIN).split(",");
const DOWN_FILE = process.env.DOWN_FILE;
const RESUMES = Number(process.env.RESUMES_PER_CLIENT ?? (SIDECARS.length > 1 ? 2 : 0));
const fs = require("node:fs");
// HUB=discussion (SIDECAR_ROUTES=protocol/routes-discussion.toml): the
// discussion hub's join and leave; events come from the clients' typing only.
const HUB = process.env.HUB ?? "chat";
const [JOIN, LEAVE] = HUB === "discussion" ? ["JoinDiscussion", "LeaveDiscussion"] : ["JoinRoom", "LeaveRoom"];

const stats = {};
const count = (k) => (stats[k] = (stats[k] ?? 0) + 1);
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");

let users = 0;
let rooms = 0;
const live = { rooms: new Set(), users: new Set() };

// The index of a live instance, at random (DOWN_FILE names one restarting).
function liveIndex() {
  let down = -1;
  try {
    if (DOWN_FILE) down = Number(fs.readFileSync(DOWN_FILE, "utf8").trim());
  } catch {}
  const up = SIDECARS.map((_, i) => i).filter((i) => i !== down);
  return pick(up.length ? up : [0]);
}

// The official client's WebSocket, rerouted: a connection's first socket
// goes where its negotiate went; a resume (a socket for a token seen
// before) goes to a random live instance, as a Service without affinity.
const seenTokens = new Map();
class RoamingWebSocket extends WebSocket {
  constructor(url, protocols, options) {
    const u = new URL(url);
    const id = u.searchParams.get("id");
    if (id && seenTokens.has(id)) {
      const base = new URL(SIDECARS[liveIndex()].replace("http", "ws"));
      const moved = u.host !== base.host;
      u.host = base.host;
      count(moved ? "resume_to_other_instance" : "resume_to_same_instance");
      seenTokens.set(id, moved);
    } else if (id) seenTokens.set(id, null);
    super(u.toString(), protocols, options);
  }
}

function token(sub, ttlSeconds) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, name: `User ${sub}`, exp: Math.floor(Date.now() / 1000) + ttlSeconds });
  const sig = crypto.createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// Rooms come from a growing set: half the joins make a new room, the rest
// pick one of the last 300 made (so rooms are shared for a while, then abandoned).
function room() {
  if (rooms === 0 || Math.random() < 0.5) return `soak${ROUND}-${++rooms}`;
  return `soak${ROUND}-${Math.max(1, rooms - Math.floor(Math.random() * 300))}`;
}

async function negotiate(hub, jwt, stateful, base) {
  const res = await fetch(`${base}/hubs/${hub}/negotiate?negotiateVersion=1&useStatefulReconnect=${stateful}`, {
    method: "POST",
    headers: { authorization: `Bearer ${jwt}` },
  });
  if (!res.ok) throw new Error(`negotiate ${res.status}`);
  return res.json();
}

const RS = "\x1e";
const frame = (o) => JSON.stringify(o) + RS;

// A raw stateful WebSocket that joins rooms and then vanishes without a
// Close: the session parks and must expire (its client never resumes).
async function vanishingStatefulWs(user, jwt, joins) {
  const SIDECAR = SIDECARS[liveIndex()];
  const n = await negotiate(HUB, jwt, true, SIDECAR);
  const url = `${SIDECAR.replace("http", "ws")}/hubs/${HUB}?id=${n.connectionToken}&access_token=${jwt}`;
  const ws = new WebSocket(url);
  await new Promise((ok, fail) => {
    ws.once("open", ok);
    ws.once("error", fail);
  });
  ws.send(frame({ protocol: "json", version: 2 }));
  joins.forEach((r, i) => ws.send(frame({ type: 1, invocationId: String(i), target: JOIN, arguments: [r] })));
  ws.send(frame({ type: 1, target: "SendTyping", arguments: [joins[0], true] }));
  await sleep(1000 + Math.random() * 4000);
  ws._socket.destroy();
  count("vanished_stateful_ws");
}

// A raw Long Polling connection that joins rooms and never polls again.
async function vanishingLongPoll(user, jwt, joins) {
  const SIDECAR = SIDECARS[liveIndex()];
  const n = await negotiate(HUB, jwt, false, SIDECAR);
  const url = `${SIDECAR}/hubs/${HUB}?id=${n.connectionToken}`;
  const headers = { authorization: `Bearer ${jwt}` };
  await fetch(url, { headers });
  const body = frame({ protocol: "json", version: 1 }) +
    joins.map((r, i) => frame({ type: 1, invocationId: String(i), target: JOIN, arguments: [r] })).join("");
  await fetch(url, { method: "POST", headers, body });
  await (await fetch(url, { headers })).arrayBuffer();
  count("vanished_longpolling");
}

async function officialClient(user, jwt, joins, expiring) {
  const transport = pick(["WebSockets", "WebSockets", "ServerSentEvents", "LongPolling"]);
  const stateful = transport === "WebSockets" && Math.random() < 0.4;
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(`${SIDECARS[liveIndex()]}/hubs/${HUB}`, {
      transport: signalR.HttpTransportType[transport], accessTokenFactory: () => jwt, WebSocket: RoamingWebSocket,
    })
    .configureLogging(signalR.LogLevel.None);
  if (transport !== "ServerSentEvents" && Math.random() < 0.3) builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (stateful) builder = builder.withStatefulReconnect();
  const conn = builder.build();
  for (const m of ["ReceiveMessage", "UserTyping", "UserJoined", "UserLeft", "ReceiveNotification", "ReadReceipt"]) {
    conn.on(m, () => count(`got_${m}`));
  }
  await conn.start();
  count(`connected_${transport}${stateful ? "_stateful" : ""}`);
  for (const r of joins) await conn.invoke(JOIN, r);
  live.users.add(user);
  joins.forEach((r) => live.rooms.add(r));
  const stay = Date.now() + 2000 + Math.random() * 13000;
  // Forced resumes: the socket dies under a stateful client, which resumes
  // (on a random instance); the connection id must survive it.
  const kills = stateful ? Array.from({ length: RESUMES }, () => Date.now() + Math.random() * (stay - Date.now())).sort((a, b) => a - b) : [];
  const id = conn.connectionId;
  while (Date.now() < stay) {
    if (kills.length && Date.now() >= kills[0]) {
      kills.shift();
      const ws = conn.connection?.transport?._webSocket;
      ws?._socket?.destroy();
      count("resume_forced");
      await sleep(1500);
      const now = conn.connection?.transport?._webSocket;
      if (conn.state !== signalR.HubConnectionState.Connected) {
        // A token that expired is refused on the resume (or closed the connection).
        count(expiring ? "resume_lost_expired_token" : "resume_lost");
        return;
      }
      count(now && now !== ws && conn.connectionId === id ? "resume_ok" : "resume_pending");
    }
    const r = pick(joins);
    switch (Math.floor(Math.random() * 5)) {
      case 0: await conn.send("SendTyping", r, Math.random() < 0.7); break;
      case 1: await conn.invoke("GetPresence", r); break;
      case 2: await conn.invoke("SetPresence", pick(["online", "away"])); break;
      case 3: if (joins.length > 1) await conn.invoke(LEAVE, r); break;
      default: break;
    }
    await sleep(300 + Math.random() * 1500);
  }
  live.users.delete(user);
  if (Math.random() < 0.5) {
    await conn.stop();
    count("left_stop");
  } else {
    // Abrupt: the socket (or the stream, or the polls) just goes.
    const t = conn.connection?.transport;
    if (t?._webSocket) t._webSocket._socket?.destroy?.() ?? t._webSocket.terminate?.();
    else if (t?._eventSource) t._eventSource.close();
    else if (t) t._running = false, t._pollAbort?.abort();
    count(`left_abrupt_${transport}`);
    // The client may try to resume (stateful): let it end without a Close.
    await sleep(200);
    conn.stop().catch(() => {});
  }
}

async function worker() {
  while (Date.now() < end) {
    const user = `soak${ROUND}-u${++users}`;
    // A few tokens expire while connected (the 30 s leeway comes on top).
    const expiring = Math.random() < 0.1;
    const jwt = token(user, expiring ? 5 : 3600);
    const joins = Array.from({ length: 1 + Math.floor(Math.random() * 3) }, room);
    const mode = Math.random();
    try {
      if (mode < 0.1) {
        await negotiate(HUB, jwt, Math.random() < 0.5, SIDECARS[liveIndex()]);
        count("negotiate_only");
      } else if (mode < 0.2) await vanishingStatefulWs(user, jwt, joins);
      else if (mode < 0.27) await vanishingLongPoll(user, jwt, joins);
      else await officialClient(user, jwt, joins, expiring);
    } catch (e) {
      count(`error_${String(e.message ?? e).slice(0, 40)}`);
    }
  }
}

function envelope(type, roomId, payload) {
  return {
    event_id: crypto.randomUUID(),
    event_type: type,
    timestamp: new Date().toISOString(),
    room_id: roomId,
    payload,
  };
}

// Events: chat messages to live rooms, notifications to live users, typing
// from publishers, ~50 a second, through the admin port (XADD with Redis).
async function publisher() {
  if (HUB !== "chat") return;
  let n = 0;
  while (Date.now() < end) {
    const rs = [...live.rooms].slice(-500);
    const us = [...live.users];
    const batch = [];
    for (let i = 0; i < 5 && rs.length; i++) {
      const r = pick(rs);
      const sender = `pub-${Math.floor(Math.random() * 1e6)}`;
      batch.push(envelope("chat_message", r, {
        id: `m${++n}`, request_id: r, sender_id: sender, content: "soak", sequence_number: n,
        is_screenshot: false, created_at: new Date().toISOString(),
      }));
      batch.push(envelope("typing_start", r, { user_id: sender, username: sender, is_typing: true }));
    }
    if (us.length) {
      const u = pick(us);
      batch.push(envelope("notification", `user:${u}`, {
        id: `n${n}`, user_id: u, title: "t", message: "m", created_at: new Date().toISOString(),
      }));
    }
    const ADMIN = ADMINS[liveIndex()];
    await Promise.all(batch.map((e) => fetch(`${ADMIN}/internal/events`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(e),
    }).then((r) => count(`publish_${r.status}`), () => count("publish_error"))));
    await sleep(200);
  }
}

(async () => {
  // Each room shrinks live.rooms only by age: keep it to the recent ones.
  const trim = setInterval(() => {
    const rs = [...live.rooms];
    if (rs.length > 2000) live.rooms = new Set(rs.slice(-1000));
  }, 5000);
  await Promise.all([publisher(), ...Array.from({ length: CLIENTS }, worker)]);
  clearInterval(trim);
  console.log(JSON.stringify({ users, rooms, ...stats }));
  process.exit(0);
})();
