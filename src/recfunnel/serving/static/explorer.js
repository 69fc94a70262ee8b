// recfunnel explorer: a few calls to the JSON API, rendered with textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "recfunnel.token";

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (response.status === 401) {
    $("token-bar").hidden = false;
    $("token").focus();
    throw new Error("the service needs its bearer token (enter it above)");
  }
  if (!response.ok) {
    // every error answer is {"error": {"code", "message"}} (docs/serving.md)
    const message = body && body.error && body.error.message;
    throw new Error(message || response.status + " " + response.statusText);
  }
  return body;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setHeading(panel, text, note) {
  const h2 = document.querySelector("#" + panel + " h2");
  h2.textContent = text;
  if (note) h2.appendChild(el("small", "", " " + note));
  const hint = document.querySelector("#" + panel + " .hint");
  if (hint) hint.hidden = true;
}

// One list row: an item's title (a button: click for similar items), its id, a score bar.
function itemRow(entry, rank, maxScore, extra) {
  const li = el("li", "item");
  li.dataset.item = entry.item;
  li.appendChild(el("span", "rank", String(rank)));
  const body = el("div", "body");
  const title = el("button", "title", entry.title || entry.item);
  title.type = "button";
  title.title = (entry.title || entry.item) + " (click: similar items)";
  title.addEventListener("click", () => showSimilar(entry));
  body.appendChild(title);
  const meta = el("div", "meta");
  if (entry.title && entry.title !== entry.item) meta.appendChild(el("span", "id", "id " + entry.item));
  if (extra) meta.appendChild(el("span", "", extra));
  body.appendChild(meta);
  if (entry.score !== undefined) {
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    const share = maxScore > 0 ? Math.max(0.02, Math.min(1, entry.score / maxScore)) : 0.02;
    fill.style.width = (100 * share).toFixed(1) + "%";
    bar.appendChild(fill);
    body.appendChild(bar);
  }
  li.appendChild(body);
  if (entry.score !== undefined) li.appendChild(el("span", "score", entry.score.toFixed(3)));
  const add = el("button", "add", "+");
  add.type = "button";
  add.title = "add to the anonymous history";
  add.addEventListener("click", () => addToHistory(entry.item));
  li.appendChild(add);
  return li;
}

function fill(listId, entries, scored) {
  const list = $(listId);
  list.replaceChildren();
  const max = scored && entries.length ? Math.max(...entries.map((e) => e.score)) : 0;
  entries.forEach((entry, i) => {
    const extra = entry.popularity !== undefined ? entry.popularity + " training interactions" : "";
    list.appendChild(itemRow(entry, i + 1, max, extra));
  });
  if (!entries.length) list.appendChild(el("li", "muted empty", "nothing to show"));
}

function k() {
  return Number($("k").value);
}

async function showUser(user) {
  showError(null);
  user = user.trim();
  if (!user) return;
  $("user").value = user;
  try {
    const [hist, recs] = await Promise.all([
      api("/v1/users/" + encodeURIComponent(user) + "/history?limit=50"),
      api("/v1/recommendations/" + encodeURIComponent(user) + "?k=" + k()),
    ]);
    const shown = hist.items.length < hist.count ? ", the " + hist.items.length + " most popular" : ", most popular first";
    setHeading("history-panel", "History of user " + user, "(" + hist.count + " items" + shown + ")");
    fill("history-items", hist.items, false);
    const cold = recs.cold_start ? "(unknown user: most popular items)" : "";
    setHeading("recs-panel", "Top " + recs.items.length + " for user " + user, cold);
    fill("recs", recs.items, true);
    history.replaceState(null, "", "#user=" + encodeURIComponent(user));
  } catch (err) {
    showError(err);
  }
}

async function showSimilar(entry) {
  showError(null);
  try {
    const answer = await api("/v1/items/" + encodeURIComponent(entry.item) + "/similar?k=" + k());
    setHeading("similar-panel", "Similar to " + (entry.title || entry.item));
    fill("similar", answer.items, true);
    document.querySelectorAll("li.item.selected").forEach((li) => li.classList.remove("selected"));
    document.querySelectorAll("li.item").forEach((li) => {
      if (li.dataset.item === entry.item && !li.closest("#similar")) li.classList.add("selected");
    });
  } catch (err) {
    showError(err);
  }
}

function historyLines() {
  return $("history").value.split("\n").map((s) => s.trim()).filter((s) => s);
}

function addToHistory(item) {
  const lines = historyLines();
  if (!lines.includes(item)) lines.push(item);
  $("history").value = lines.join("\n");
}

async function showAnonymous() {
  showError(null);
  const items = historyLines();
  if (!items.length) {
    showError("type at least one item id, one per line");
    return;
  }
  try {
    const answer = await api("/v1/recommendations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ history: items, k: k() }),
    });
    setHeading("history-panel", "Anonymous history", "(" + items.length + " items)");
    fill("history-items", items.map((item) => ({ item, title: item })), false);
    setHeading("recs-panel", "Top " + answer.results[0].items.length + " for this history");
    fill("recs", answer.results[0].items, true);
  } catch (err) {
    showError(err);
  }
}

let searchTimer = null;
function suggest(input, listId, path, key) {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    try {
      const answer = await api(path + "?limit=20&q=" + encodeURIComponent(input.value));
      const list = $(listId);
      list.replaceChildren();
      for (const entry of answer[key]) {
        const option = el("option");
        option.value = typeof entry === "string" ? entry : entry.item;
        if (typeof entry !== "string" && entry.title !== entry.item) option.label = entry.title;
        list.appendChild(option);
      }
    } catch (err) {
      /* suggestions are a convenience; errors show on the next real request */
    }
  }, 150);
}

async function start() {
  showError(null);
  try {
    const info = await api("/v1/model");
    const metrics = info.metrics || {};
    const parts = [info.model, info.num_users + " users", info.num_items + " items"];
    for (const name of ["recall@10", "ndcg@10", "rmse"]) {
      if (typeof metrics[name] === "number") parts.push(name + " " + metrics[name].toFixed(3));
    }
    $("model-info").textContent = parts.join(" · ");
    $("token-bar").hidden = true;
    suggest($("user"), "user-list", "/v1/users", "users");
    const wanted = new URLSearchParams(location.hash.slice(1)).get("user");
    if (wanted) showUser(wanted);
  } catch (err) {
    $("model-info").textContent = "model not loaded";
    showError(err);
  }
}

$("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  showUser($("user").value);
});
$("history-form").addEventListener("submit", (e) => {
  e.preventDefault();
  showAnonymous();
});
$("random-user").addEventListener("click", async () => {
  try {
    const some = await api("/v1/users?limit=1000");
    showUser(some.users[Math.floor(Math.random() * some.users.length)]);
  } catch (err) {
    showError(err);
  }
});
$("item-add").addEventListener("click", () => {
  const value = $("item-search").value.trim();
  if (value) addToHistory(value);
  $("item-search").value = "";
});
$("user").addEventListener("input", () => suggest($("user"), "user-list", "/v1/users", "users"));
$("item-search").addEventListener("input", () => suggest($("item-search"), "item-list", "/v1/items", "items"));
$("k").addEventListener("change", () => {
  if ($("user").value.trim()) showUser($("user").value);
});
$("token-save").addEventListener("click", () => {
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  start();
});
$("token").addEventListener("keydown", (e) => {
  if (e.key === "Enter") $("token-save").click();
});
start();
