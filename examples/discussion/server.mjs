// The discussion page's own server (the sidecar's client port never serves
// pages): the static page, the official client's browser build, and a
// stand-in for the platform's backend, which is what publishes events in
// a real deployment:
//   POST /api/responses  {discussion, author_id, author_name, content}
//                        -> a response_posted event to the sidecar's admin
//                           port (POST /internal/events), kept in memory;
//   GET  /api/responses?discussion=d-1
//                        -> the responses kept: what a page refetches after
//                           a reconnect (seed 000's rule: missed messages
//                           come from the store);
//   GET  /api/token?user=ann&name=Ann
//                        -> a demo HS256 token for SIDECAR_AUTH=jwt, signed
//                           with DEMO_JWT_SECRET (404 without it). A real
//                           platform's login issues these, not a page server.
//
//   DEMO_JWT_SECRET=... SIDECAR_ADMIN_URL=http://127.0.0.1:9090 node examples/discussion/server.mjs
// listens on DISCUSSION_PORT (3000). Imported by the browser test as well.
import http from "node:http";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const defaultClient = path.join(here, "../../tests/client/node_modules/@microsoft/signalr/dist/browser/signalr.min.js");

function base64url(data) {
  return Buffer.from(data).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

/** An HS256 JWT for `user`, valid for an hour. */
export function demoToken(secret, user, name) {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const body = base64url(JSON.stringify({ sub: user, name, exp }));
  const signature = base64url(crypto.createHmac("sha256", secret).update(`${header}.${body}`).digest());
  return `${header}.${body}.${signature}`;
}

const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css" };

/** Starts the server; resolves to {server, url}. */
export async function start({ port = 0, adminUrl, secret = null, signalrJs = defaultClient } = {}) {
  const responses = new Map(); // discussion -> [response payload]
  const readBody = (req) =>
    new Promise((resolve, reject) => {
      let data = "";
      req.on("data", (c) => (data += c));
      req.on("end", () => resolve(data));
      req.on("error", reject);
    });
  const json = (res, status, value) =>
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value));

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://page");
    try {
      if (req.method === "POST" && url.pathname === "/api/responses") {
        const { discussion, author_id, author_name, content } = JSON.parse(await readBody(req));
        const payload = {
          response_id: crypto.randomUUID(), author_id, author_name, content, created_at: new Date().toISOString(),
        };
        const event = {
          event_id: crypto.randomUUID(), event_type: "response_posted", timestamp: new Date().toISOString(),
          room_id: discussion, payload,
        };
        if (!responses.has(discussion)) responses.set(discussion, []);
        responses.get(discussion).push(payload);
        const posted = await fetch(`${adminUrl}/internal/events`, {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event),
        });
        return json(res, posted.status === 202 ? 201 : 502, { response: payload, sidecar: posted.status });
      }
      if (req.method === "GET" && url.pathname === "/api/responses") {
        return json(res, 200, responses.get(url.searchParams.get("discussion")) ?? []);
      }
      if (req.method === "GET" && url.pathname === "/api/token") {
        if (!secret) return json(res, 404, { error: "no DEMO_JWT_SECRET: the sidecar runs without auth" });
        const user = url.searchParams.get("user") ?? "guest";
        return json(res, 200, { token: demoToken(secret, user, url.searchParams.get("name") ?? user) });
      }
      if (req.method === "GET" && url.pathname === "/signalr.min.js") {
        return res.writeHead(200, { "content-type": types[".js"] }).end(fs.readFileSync(signalrJs));
      }
      const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
      if (req.method === "GET" && ["index.html", "discussion.js"].includes(file)) {
        return res.writeHead(200, { "content-type": types[path.extname(file)] }).end(fs.readFileSync(path.join(here, file)));
      }
      json(res, 404, { error: "not found" });
    } catch (e) {
      json(res, 500, { error: String(e?.message ?? e) });
    }
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { url } = await start({
    port: Number(process.env.DISCUSSION_PORT ?? 3000),
    adminUrl: process.env.SIDECAR_ADMIN_URL ?? "http://127.0.0.1:9090",
    secret: process.env.DEMO_JWT_SECRET ?? null,
    signalrJs: process.env.SIGNALR_JS ?? defaultClient,
  });
  console.log(`discussion page on ${url}/?user=ann&name=Ann&sidecar=http://127.0.0.1:8080&discussion=d-1`);
}
