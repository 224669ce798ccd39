// Progressive enhancement of the server-rendered list: add, toggle and delete through the
// JSON API without reloading the page. Text is always set with textContent (never HTML).
(function () {
  "use strict";
  const root = document.getElementById("todo");
  const api = root.dataset.api;
  const list = document.getElementById("tasks");
  const form = document.getElementById("new-task");
  const input = document.getElementById("new-title");
  const error = document.getElementById("error");
  const count = document.getElementById("count");
  // Cookie-authenticated changes carry the page's CSRF token (the server refuses them without).
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  async function call(method, url, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (method !== "GET") options.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    if (response.status === 204) return null;
    const data = await response.json();
    if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
    return data;
  }

  function item(task) {
    const li = document.createElement("li");
    li.dataset.id = task._id;
    li.className = task.done ? "done" : "";
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.className = "toggle";
    toggle.checked = task.done;
    toggle.setAttribute("aria-label", "Done");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = task.title;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.setAttribute("aria-label", "Delete");
    remove.textContent = "×";
    li.append(toggle, title, remove);
    return li;
  }

  function show(message) {
    error.textContent = message || "";
    error.hidden = !message;
  }

  async function refresh() {
    const data = await call("GET", api);
    list.replaceChildren(...data.tasks.map(item));
    count.textContent = String(data.tasks.length);
  }

  async function run(action) {
    try {
      show("");
      await action();
      await refresh();
    } catch (err) {
      show(err.message);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      await call("POST", api, { title: input.value });
      input.value = "";
    });
  });

  list.addEventListener("change", (event) => {
    const li = event.target.closest("li");
    if (event.target.classList.contains("toggle") && li) {
      run(() => call("PATCH", `${api}/${li.dataset.id}`, { done: event.target.checked }));
    }
  });

  list.addEventListener("click", (event) => {
    const li = event.target.closest("li");
    if (event.target.classList.contains("delete") && li) {
      run(() => call("DELETE", `${api}/${li.dataset.id}`));
    }
  });

  // Live updates: the space's websocket says when its tasks changed (in this browser or
  // any other, or in a Celery worker); reconnect with backoff and catch up after a break.
  const livePath = root.dataset.live;
  const liveStatus = document.getElementById("live");

  function setLive(state) {
    liveStatus.dataset.state = state;
    liveStatus.textContent = state === "on" ? "live" : "offline";
  }

  function connectLive(delay) {
    if (!livePath || !("WebSocket" in window)) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${livePath}`);
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connected") {
        setLive("on");
        delay = 500;
        refresh().catch((err) => show(err.message));  // what changed while offline
      } else if (message.type === "tasks.changed") {
        refresh().catch((err) => show(err.message));
      }
    });
    socket.addEventListener("close", () => {
      setLive("off");
      setTimeout(() => connectLive(Math.min(delay * 2, 10000)), delay);
    });
  }

  refresh().then(
    () => { document.body.dataset.ready = "true"; connectLive(500); },
    (err) => { show(err.message); document.body.dataset.ready = "error"; },
  );
})();
