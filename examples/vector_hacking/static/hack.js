// The attack over the app's websocket: start, stop, and a row per guess as it comes.
// Text is always set with textContent (targets and guesses are data, never markup).
(function () {
  "use strict";
  const root = document.getElementById("hack");
  const live = document.getElementById("live");
  const form = document.getElementById("start-form");
  const target = document.getElementById("target");
  const maxSteps = document.getElementById("max-steps");
  const threshold = document.getElementById("threshold");
  const startButton = document.getElementById("start");
  const stopButton = document.getElementById("stop");
  const error = document.getElementById("error");
  const run = document.getElementById("run");
  const rows = document.querySelector("#guesses tbody");
  const status = document.getElementById("status");
  const runs = document.getElementById("runs");
  let socket = null;

  function show(message) { error.textContent = message || ""; error.hidden = !message; }
  function text(id, value) { document.getElementById(id).textContent = value; }
  function running(on) { startButton.disabled = on; stopButton.disabled = !on; }
  function setStatus(value) { status.textContent = value; status.dataset.status = value; }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    else show("not connected yet");
  }

  function similarityCell(value) {
    const td = document.createElement("td");
    td.className = "similarity";
    if (value === null) { td.textContent = "–"; return td; }
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(0, value) * 10}rem`;
    td.append(bar, value.toFixed(3));
    return td;
  }

  function showRuns(items) {
    runs.replaceChildren(...items.map((r) => {
      const li = document.createElement("li");
      const best = r.best ? `${r.best.similarity.toFixed(3)} “${r.best.text}”` : "no guess";
      li.textContent = `${r.target} — ${r.status} after ${r.steps} step(s), best ${best}`;
      return li;
    }));
  }

  const handlers = {
    connected() { live.dataset.state = "on"; live.textContent = "live"; send({ type: "history" }); },
    history(m) { showRuns(m.runs); },
    accepted(m) { running(true); rows.replaceChildren(); text("steps", String(m.max_steps)); },
    "run.started"(m) {
      run.hidden = false;
      text("run-target", m.target);
      text("target-source", m.target_source === "model" ? "proposed by the model" : "yours");
      text("step", "0");
      text("best-similarity", "–");
      text("best-text", "");
      setStatus("running");
    },
    step(m) {
      const tr = document.createElement("tr");
      tr.className = m.improved ? "improved" : (m.repeated ? "repeated" : "");
      const n = document.createElement("td");
      n.textContent = String(m.step);
      const guess = document.createElement("td");
      guess.className = "guess";
      guess.textContent = m.guess;
      tr.append(n, guess, similarityCell(m.similarity));
      rows.append(tr);
      text("step", String(m.step));
      if (m.best) {
        text("best-similarity", m.best.similarity.toFixed(3));
        text("best-text", m.best.text);
      }
    },
    "run.finished"(m) {
      running(false);
      run.hidden = false;
      setStatus(m.status);
      if (m.error) show(m.error);
      send({ type: "history" });
    },
    stopping() { stopButton.disabled = true; },
    error(m) { show(m.error.message); },
  };

  function connect(delay) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${root.dataset.live}`);
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      const handler = handlers[message.type];
      if (handler) handler(message);
    });
    socket.addEventListener("close", () => {
      live.dataset.state = "off";
      live.textContent = "offline";
      running(false);
      setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    show("");
    send({
      type: "start",
      target: target.value,
      max_steps: Number(maxSteps.value),
      threshold: Number(threshold.value),
    });
  });
  stopButton.addEventListener("click", () => send({ type: "stop" }));

  connect(500);
  document.body.dataset.ready = "true";
})();
