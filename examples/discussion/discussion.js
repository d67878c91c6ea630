// The discussion page of seed 003 on the official browser client
// (@microsoft/signalr, loaded as the global `signalR`) and the sidecar's
// protocol/routes-discussion.toml. Query parameters:
//   sidecar     base URL of the sidecar's client port (default http://<host>:8080)
//   discussion  the discussion to join (default d-1)
//   user, name  who this page is (a demo token comes from /api/token)
// Everything the page shows comes from the sidecar, except the refetch after
// a reconnect (from the page's backend, /api/responses) and posting (the
// backend publishes response_posted).
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

function showParticipantCount(count) {
  $("participants").textContent = `${count} ${count === 1 ? "participant" : "participants"}`;
}

let presencePending = null;
/** GetPresence after a join or leave (coalesced to one call per 300 ms). */
function refreshPresence(conn) {
  clearTimeout(presencePending);
  presencePending = setTimeout(async () => {
    try {
      const p = await conn.invoke("GetPresence", discussion);
      showParticipantCount(p.count);
    } catch (e) {
      console.warn("presence", e);
    }
  }, 300);
}
// HOOK (presence states, branch wip-history): when the sidecar pushes the
// participant count itself (at most once a second, CONTRACT section 15),
// register its client method here and call showParticipantCount(count);
// the GetPresence calls above can then go.

// --- missed updates -------------------------------------------------------

/**
 * After a reconnect: what was published while the page was away. Today the
 * page refetches from its backend (seed 000's rule for plain reconnects).
 * HOOK (missed updates, branch wip-history): join with the last position
 * seen and let the sidecar replay; fall back to this refetch when it
 * answers `recovered: false`.
 */
async function recoverMissed() {
  const r = await fetch(`/api/responses?discussion=${encodeURIComponent(discussion)}`);
  if (r.ok) showResponses(await r.json(), true);
}

// --- connection status ----------------------------------------------------

function status(text, connected) {
  $("status").textContent = text;
  $("status").classList.toggle("connected", connected);
}

function banner(text, withRefresh) {
  const b = $("banner");
  b.textContent = text;
  if (withRefresh) {
    const button = document.createElement("button");
    button.textContent = "Refresh";
    button.onclick = () => location.reload();
    b.append(button);
  }
  b.classList.toggle("shown", !!text);
}

// --- wiring -----------------------------------------------------------------

async function main() {
  $("me").textContent = me.name;
  $("discussion-name").textContent = discussion;
  const conn = build("/hubs/discussion");
  conn.on("ResponsesPosted", (room, list) => {
    if (room !== discussion) return;
    showResponses(list, true);
    // A response ends its author's typing at once (FR-021); the next
    // roster says the same.
    const authors = new Set(list.map((r) => r.author_id));
    state.roster = state.roster.filter((u) => !authors.has(u.user_id));
    showRoster();
  });
  conn.on("ResponseEdited", (room, r) => room === discussion && editResponse(r));
  conn.on("ResponseDeleted", (room, r) => room === discussion && deleteResponse(r));
  conn.on("AnalysisUpdated", (room, a) => {
    if (room !== discussion) return;
    const el = $("analysis");
    el.classList.add("refreshing"); // FR-013
    setTimeout(() => {
      el.textContent = a.summary ?? `analysis version ${a.version}`;
      el.classList.remove("refreshing");
    }, 400);
  });
  conn.on("TypingRoster", onRoster);
  conn.on("UserJoined", (room) => room === discussion && refreshPresence(conn));
  conn.on("UserLeft", (room) => room === discussion && refreshPresence(conn));

  conn.onreconnecting(() => {
    // A new connection is sent the roster at its next change, not before:
    // better no indicator than a stale one.
    state.roster = [];
    showRoster();
    status("reconnecting…", false);
    banner("Connection lost, reconnecting…", false); // FR-023, US5 scenario 1
  });
  conn.onreconnected(async () => {
    await conn.invoke("JoinDiscussion", discussion); // groups belong to a connection
    status("connected", true);
    banner("", false);
    refreshPresence(conn);
    await recoverMissed();
  });
  conn.onclose(() => {
    status("disconnected", false);
    banner("Connection lost. Please refresh the page.", true); // FR-027
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
  await conn.invoke("JoinDiscussion", discussion);
  status("connected", true);
  refreshPresence(conn);
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
