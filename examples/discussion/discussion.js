// The discussion page of seed 003 on the official browser client
// (@microsoft/signalr, loaded as the global `signalR`) and the sidecar's
// protocol/routes-discussion.toml. Query parameters:
//   sidecar     base URL of the sidecar's client port (default http://<host>:8080)
//   discussion  the discussion to join (default d-1)
//   user, name  who this page is (a demo token comes from /api/token)
// Everything the page shows comes from the sidecar, except posting (the
// backend publishes response_posted) and the refetch from the page's
// backend (/api/responses) when the sidecar cannot replay what the page
// missed (`recovered: false`).
"use strict";

const params = new URLSearchParams(location.search);
const sidecar = params.get("sidecar") ?? `${location.protocol}//${location.hostname}:8080`;
const discussion = params.get("discussion") ?? "d-1";
const me = { id: params.get("user") ?? "guest", name: params.get("name") ?? params.get("user") ?? "Guest" };
const $ = (id) => document.getElementById(id);

// Seed 003 FR-024 and FR-027: 1, 2, 4, 8 s then at most 30 s between
// attempts, ten attempts, then the page asks for a refresh.
const RETRY_DELAYS = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000];
// Client side of typing (FR-017): at most one start per second while keys
// come, a stop after 2 s without a key. The sidecar clears after 5 s anyway.
const TYPING_REPEAT_MS = 1000;
const TYPING_IDLE_MS = 2000;

const state = {
  responses: new Map(), // response_id -> <li>: no duplicates (FR-003)
  roster: [], // [{user_id, username}] from TypingRoster
  // Missed updates (FR-025): the greatest position seen, and what each
  // rejoin did: `replays` rejoins the sidecar replayed, `refetches` ones it
  // could not (the page refetched), `replayed` responses that came in
  // replays. The tests read these.
  lastPosition: null,
  sync: { replays: 0, refetches: 0, replayed: 0, last: null },
  replaying: false,
};
window.discussionPage = { state, me, discussion }; // for tests and the console

async function token() {
  const r = await fetch(`/api/token?user=${encodeURIComponent(me.id)}&name=${encodeURIComponent(me.name)}`);
  return r.ok ? (await r.json()).token : null;
}

function build(path) {
  return new signalR.HubConnectionBuilder()
    .withUrl(`${sidecar}${path}`, { accessTokenFactory: token })
    .withAutomaticReconnect(RETRY_DELAYS)
    .configureLogging(signalR.LogLevel.Warning)
    .build();
}

// --- responses ------------------------------------------------------------

function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 24;
}

/** Adds responses in order; keeps the reader's place unless they are at the end (FR-002). */
function showResponses(items, fresh) {
  const list = $("responses");
  const follow = atBottom(list);
  for (const r of items) {
    if (state.responses.has(r.response_id)) continue;
    const li = document.createElement("li");
    li.dataset.id = r.response_id;
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = r.author_name ?? r.author_id;
    const content = document.createElement("span");
    content.className = "content";
    content.textContent = r.content;
    li.append(author, content);
    if (fresh) li.classList.add("new"); // FR-004
    list.append(li);
    state.responses.set(r.response_id, li);
    if (state.replaying) state.sync.replayed += 1;
  }
  if (follow) list.scrollTop = list.scrollHeight;
  else if (fresh && items.length) $("more").classList.add("shown");
}

function editResponse(r) {
  const li = state.responses.get(r.response_id);
  if (li) li.querySelector(".content").textContent = r.content;
}

function deleteResponse(r) {
  const li = state.responses.get(r.response_id);
  if (li) {
    li.classList.add("deleted");
    li.querySelector(".content").textContent = "(deleted)";
  }
}

// --- typing roster --------------------------------------------------------

/** "Ann is typing…", "Ann and Bob are typing…", "3 people are typing…" (FR-019). */
function rosterText(users) {
  const others = users.filter((u) => u.user_id !== me.id);
  if (others.length === 0) return "";
  if (others.length === 1) return `${others[0].username} is typing…`;
  if (others.length === 2) return `${others[0].username} and ${others[1].username} are typing…`;
  return `${others.length} people are typing…`;
}

function showRoster() {
  $("typing").textContent = rosterText(state.roster);
}

function onRoster(roster) {
  if (roster.room_id !== discussion) return;
  // `users` lists at most 50; past that only `count` is complete.
  state.roster = roster.users.length < roster.count
    ? roster.users.concat(Array.from({ length: roster.count - roster.users.length }, (_, i) => ({ user_id: `+${i}` })))
    : roster.users;
  showRoster();
}

// --- participants ---------------------------------------------------------

/** "2 participants" and "1 online · 1 away" (FR-033, FR-034). */
function showParticipants({ count, online, away }) {
  $("participants").textContent = `${count} ${count === 1 ? "participant" : "participants"}`;
  $("presence-states").textContent = `${online} online · ${away} away`;
}

/** The count now (after a join): later changes come as ParticipantCount. */
async function fetchParticipants(conn) {
  try {
    const p = await conn.invoke("GetPresence", discussion);
    const away = p.users.filter((u) => u.state === "away").length;
    showParticipants({ count: p.count, online: p.count - away, away });
  } catch (e) {
    console.warn("presence", e);
  }
}

// --- missed updates -------------------------------------------------------

/** Stream positions "<ms>-<seq>": the millisecond part, then the sequence. */
function later(a, b) {
  if (b == null) return true;
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  return am > bm || (am === bm && as > bs);
}

/** Keeps the greatest position seen (every discussion event carries one). */
function saw(position) {
  if (typeof position === "string" && /^\d+-\d+$/.test(position) && later(position, state.lastPosition)) {
    state.lastPosition = position;
  }
}

/**
 * Joins the discussion, after a reconnect with the last position seen: the
 * sidecar replays what was published meanwhile (in order, once each, before
 * its answer), or answers `recovered: false` when it cannot (the position
 * is older than its 24 h history): then the page refetches from its backend.
 */
async function join(conn, rejoin) {
  const since = rejoin ? state.lastPosition : null;
  state.replaying = since != null;
  const before = state.sync.replayed;
  let answer;
  try {
    answer = since != null
      ? await conn.invoke("JoinDiscussion", discussion, since)
      : await conn.invoke("JoinDiscussion", discussion);
  } finally {
    state.replaying = false;
  }
  saw(answer?.position); // the bookmark, even when no event comes
  if (!rejoin) return;
  if (since != null && answer?.recovered) {
    state.sync.replays += 1;
    state.sync.last = "replayed";
    const n = state.sync.replayed - before;
    syncNote(`Back online: ${n} missed ${n === 1 ? "response" : "responses"} replayed`);
  } else {
    state.sync.refetches += 1;
    state.sync.last = "refetched";
    syncNote("Back online: missed updates could not be replayed, reloaded the discussion");
    await refetch();
  }
}

/** Seed 000's rule when the sidecar cannot replay: ask the backend. */
async function refetch() {
  const r = await fetch(`/api/responses?discussion=${encodeURIComponent(discussion)}`);
  if (r.ok) showResponses(await r.json(), true);
}

function syncNote(text) {
  $("sync").textContent = text;
  console.info(text);
}

// --- connection status ----------------------------------------------------

function status(text, connected) {
  $("status").textContent = text;
  $("status").classList.toggle("connected", connected);
}

function banner(text, withRefresh, reconnect) {
  const b = $("banner");
  b.textContent = text;
  const button = (label, onclick) => {
    const el = document.createElement("button");
    el.textContent = label;
    el.onclick = onclick;
    b.append(el);
  };
  if (reconnect) button("Reconnect", reconnect);
  if (withRefresh) button("Refresh", () => location.reload());
  b.classList.toggle("shown", !!text);
}

// --- wiring -----------------------------------------------------------------

async function main() {
  $("me").textContent = me.name;
  $("discussion-name").textContent = discussion;
  const conn = build("/hubs/discussion");
  conn.on("ResponsesPosted", (room, list, positions) => {
    if (room !== discussion) return;
    for (const p of positions ?? []) saw(p);
    showResponses(list, true);
    // A response ends its author's typing at once (FR-021); the next
    // roster says the same.
    const authors = new Set(list.map((r) => r.author_id));
    state.roster = state.roster.filter((u) => !authors.has(u.user_id));
    showRoster();
  });
  conn.on("ResponseEdited", (room, r, position) => {
    if (room !== discussion) return;
    saw(position);
    editResponse(r);
  });
  conn.on("ResponseDeleted", (room, r, position) => {
    if (room !== discussion) return;
    saw(position);
    deleteResponse(r);
  });
  conn.on("AnalysisUpdated", (room, a, position) => {
    if (room !== discussion) return;
    saw(position);
    const el = $("analysis");
    el.classList.add("refreshing"); // FR-013
    setTimeout(() => {
      el.textContent = a.summary ?? `analysis version ${a.version}`;
      el.classList.remove("refreshing");
    }, 400);
  });
  conn.on("TypingRoster", onRoster);
  conn.on("ParticipantCount", (room, c) => room === discussion && showParticipants(c));

  conn.onreconnecting(() => {
    // A new connection is sent the roster at its next change, not before:
    // better no indicator than a stale one.
    state.roster = [];
    showRoster();
    status("reconnecting…", false);
    banner("Connection lost, reconnecting…", false); // FR-023, US5 scenario 1
  });
  // Groups belong to a connection: a new one joins again, with the last
  // position seen, and gets what it missed.
  const rejoin = async () => {
    await join(conn, true);
    status("connected", true);
    banner("", false);
    await fetchParticipants(conn);
  };
  conn.onreconnected(() => rejoin().catch((e) => console.warn("rejoin", e)));
  // After a close (ten failed attempts, FR-027, or the inactivity timeout,
  // FR-035) a fresh start keeps the page and its position.
  const restart = async () => {
    banner("Reconnecting…", false);
    try {
      await conn.start();
      await rejoin();
    } catch (e) {
      status("disconnected", false);
      banner(`Could not reconnect: ${e?.message ?? e}`, true, restart);
    }
  };
  conn.onclose((e) => {
    status("disconnected", false);
    banner(e?.message ? `Disconnected: ${e.message}` : "Connection lost.", true, restart); // FR-027
  });

  $("more").onclick = () => {
    const list = $("responses");
    list.scrollTop = list.scrollHeight;
    $("more").classList.remove("shown");
  };
  $("responses").addEventListener("scroll", (e) => atBottom(e.target) && $("more").classList.remove("shown"));

  let lastStart = 0;
  let idle = null;
  $("compose").addEventListener("input", () => {
    const now = Date.now();
    if (now - lastStart > TYPING_REPEAT_MS && conn.state === signalR.HubConnectionState.Connected) {
      lastStart = now;
      conn.send("SendTyping", discussion, true).catch(() => {});
    }
    clearTimeout(idle);
    idle = setTimeout(() => {
      lastStart = 0;
      if (conn.state === signalR.HubConnectionState.Connected) conn.send("SendTyping", discussion, false).catch(() => {});
    }, TYPING_IDLE_MS);
  });
  $("post").onclick = async () => {
    const content = $("compose").value.trim();
    if (!content) return;
    clearTimeout(idle);
    lastStart = 0;
    $("compose").value = "";
    await fetch("/api/responses", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ discussion, author_id: me.id, author_name: me.name, content }),
    });
  };

  await conn.start();
  await join(conn, false);
  status("connected", true);
  await fetchParticipants(conn);
  await startNotifications();
  window.discussionPage.ready = true;
}

/** The notification hub: replies, mentions, followed activity, announcements. */
async function startNotifications() {
  const conn = build("/hubs/notification");
  const add = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    $("notifications").prepend(li);
  };
  // One tab shows it; the others could hear of it over a BroadcastChannel
  // (FR-011 is the client's: every tab of the user receives it).
  conn.on("ReceiveNotification", (kind, n) => add(`${kind.replace("_notification", "")}: ${n.from_username ?? n.from_user_id ?? ""} ${n.excerpt ?? n.activity ?? ""}`.trim()));
  conn.on("Announcement", (a) => add(`📣 ${a.title}: ${a.message}`));
  try {
    await conn.start();
  } catch (e) {
    console.warn("notification hub", e);
  }
}

main().catch((e) => {
  status("failed", false);
  banner(`Could not connect: ${e?.message ?? e}`, true);
});
