// The "Based on your recent views" module: a click records an event (POST /v1/events), then the
// recommendations are fetched again every POLL_MS until they change (the click travels through
// Kafka and the streaming job into the user's vector within seconds) or POLL_TRIES run out.
// "See similar items" pivots to an item's neighbours (GET /v1/items/{id}/similar).
// A click on a recommended item sends the request_id of the list it was shown in (the newest
// one fetched: #rec-list's data-request-id), which ties the click to its impression.
"use strict";

const POLL_MS = 500;
// 30 s: a click usually shows within 1-2 s, but a busy or restarting job may take longer.
const POLL_TRIES = 60;

const app = document.getElementById("app");
const user = app.dataset.user;
const k = app.dataset.k;
const recList = document.getElementById("rec-list");
const recentList = document.getElementById("recent-list");
const similarList = document.getElementById("similar-list");
const statusLine = document.getElementById("status");
let polling = null;

function label(item) {
  return item.title || "Item " + item.id;
}

function itemCard(item, withSimilar) {
  const li = document.createElement("li");
  li.className = "item";
  li.dataset.itemId = item.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.title = "View this item";
  open.textContent = label(item);
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = "#" + item.id;
  li.append(open, id);
  if (withSimilar) {
    const similar = document.createElement("button");
    similar.type = "button";
    similar.className = "similar";
    similar.textContent = "See similar items";
    li.append(similar);
  }
  return li;
}

function render(list, items, emptyText, withSimilar, previous) {
  list.replaceChildren();
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = emptyText;
    list.append(li);
    return;
  }
  for (const item of items) {
    const card = itemCard(item, withSimilar);
    if (previous && !previous.has(item.id)) card.classList.add("fresh");
    list.append(card);
  }
}

function ids(list) {
  return [...list.querySelectorAll(".item")].map((li) => li.dataset.itemId);
}

function showMeta(prefix, answer) {
  const meta = document.getElementById(prefix + "-meta");
  meta.replaceChildren();
  const source = document.createElement("span");
  source.className = "source source-" + answer.source;
  source.id = prefix + "-source";
  source.textContent = answer.source;
  meta.append(source);
  if (answer.model_version) {
    const version = document.createElement("span");
    version.className = "version";
    version.textContent = "model v" + answer.model_version;
    meta.append(version);
  }
  const degraded = document.getElementById(prefix + "-degraded");
  if (degraded) {
    degraded.hidden = !answer.degraded;
    degraded.textContent = answer.degraded
      ? "Some results may be missing: " + answer.reasons.join("; ")
      : "";
  }
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

async function refreshRecommendations() {
  const answer = await getJSON(
    `/v1/users/${encodeURIComponent(user)}/recommendations?k=${k}`
  );
  // The list now on screen is this answer's, whether or not its items changed.
  recList.dataset.requestId = answer.request_id || "";
  const before = ids(recList);
  const after = answer.items.map((item) => item.id);
  const changed = before.join("\n") !== after.join("\n");
  if (changed) {
    render(recList, answer.items, "Nothing to recommend yet.", true, new Set(before));
    app.dataset.recsUpdates = String(Number(app.dataset.recsUpdates) + 1);
  }
  showMeta("recs", answer);
  return changed;
}

async function refreshRecent() {
  const answer = await getJSON(`/v1/users/${encodeURIComponent(user)}/recent-views`);
  render(recentList, answer.items, "No recent views yet.", false);
}

function stopPolling() {
  if (polling) clearTimeout(polling);
  polling = null;
}

function pollAfterClick(tries) {
  polling = setTimeout(async () => {
    let changed = false;
    try {
      changed = await refreshRecommendations();
    } catch (error) {
      statusLine.textContent = "Could not refresh: " + error.message;
    }
    if (changed) {
      statusLine.textContent = "Recommendations updated from your click.";
      refreshRecent().catch(() => {});
      polling = null;
    } else if (tries > 1) {
      pollAfterClick(tries - 1);
    } else {
      statusLine.textContent = "Your click is recorded; recommendations will follow.";
      polling = null;
    }
  }, POLL_MS);
}

async function recordClick(item, requestId) {
  stopPolling();
  statusLine.textContent = `Recorded a view of “${item.title}”; updating…`;
  // Shown at once; the server's list replaces it once the click has reached the store.
  const first = recentList.querySelector(".empty");
  if (first) first.remove();
  recentList.prepend(itemCard(item, false));
  const click = { user_id: user, item_id: item.id, action: "click" };
  if (requestId) click.request_id = requestId;
  try {
    await getJSON("/v1/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(click),
    });
  } catch (error) {
    statusLine.textContent = "The click was not recorded: " + error.message;
    return;
  }
  pollAfterClick(POLL_TRIES);
}

async function showSimilar(item) {
  const section = document.getElementById("similar");
  document.getElementById("similar-heading").textContent = `Similar to “${item.title}”`;
  section.hidden = false;
  try {
    const answer = await getJSON(
      `/v1/items/${encodeURIComponent(item.id)}/similar?k=${k}`
    );
    render(similarList, answer.items, "No similar items found.", true);
    showMeta("similar", answer);
    section.dataset.itemId = item.id;
  } catch (error) {
    statusLine.textContent = "Could not load similar items: " + error.message;
  }
  section.scrollIntoView({ behavior: "smooth", block: "start" });
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.open, button.similar");
  if (!button || !app.contains(button)) return;
  const card = button.closest(".item");
  const item = { id: card.dataset.itemId, title: card.querySelector(".open").textContent };
  // Only the recommendations are logged lists; other lists' clicks carry no request_id.
  const requestId = recList.contains(card) ? recList.dataset.requestId : "";
  if (button.classList.contains("open")) recordClick(item, requestId);
  else showSimilar(item);
});
