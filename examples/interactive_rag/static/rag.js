// Documents in, questions answered: the JSON API for changes, the websocket for progress.
// Text is always set with textContent (never HTML): document names and passages are data.
(function () {
  "use strict";
  const root = document.getElementById("rag");
  const live = document.getElementById("live");
  const uploadForm = document.getElementById("upload-form");
  const files = document.getElementById("files");
  const pasteName = document.getElementById("paste-name");
  const pasteText = document.getElementById("paste-text");
  const uploadError = document.getElementById("upload-error");
  const progress = document.getElementById("progress");
  const sourceList = document.getElementById("sources");
  const sourceCount = document.getElementById("source-count");
  const noSources = document.getElementById("no-sources");
  const askForm = document.getElementById("ask-form");
  const question = document.getElementById("question");
  const askError = document.getElementById("ask-error");
  const answer = document.getElementById("answer");
  const answerText = document.getElementById("answer-text");
  const answerNote = document.getElementById("answer-note");
  const passages = document.getElementById("passages");
  const STAGES = { queued: 0, embedding: 1, stored: 2, failed: 2 };
  const LABELS = { queued: "queued", embedding: "embedding…", stored: "stored", failed: "failed" };

  async function call(method, url, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.error && data.error.message) || response.statusText);
    }
    return data;
  }

  function show(element, message) {
    element.textContent = message || "";
    element.hidden = !message;
  }

  // --- ingestion progress ------------------------------------------------------------------

  function track(update) {
    let item = progress.querySelector(`li[data-job="${CSS.escape(update.job)}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.job = update.job;
      item.dataset.stage = "queued";
      const name = document.createElement("span");
      name.className = "source";
      name.textContent = update.source;
      const stage = document.createElement("span");
      stage.className = "stage";
      const bar = document.createElement("progress");
      bar.max = 2;
      item.append(name, " ", stage, bar);
      progress.prepend(item);
    }
    if (STAGES[update.stage] < STAGES[item.dataset.stage]) return; // arrived out of order
    item.dataset.stage = update.stage;
    item.querySelector("progress").value = STAGES[update.stage];
    let text = LABELS[update.stage] || update.stage;
    if (update.stage === "stored") {
      text = `stored: ${update.chunks} chunk(s)` + (update.replaced ? `, replaced ${update.replaced}` : "");
    } else if (update.stage === "failed") {
      text = `failed: ${update.error}`;
    }
    item.querySelector(".stage").textContent = text;
  }

  function showSources(items) {
    sourceList.replaceChildren(...items.map((s) => {
      const li = document.createElement("li");
      li.dataset.source = s.source_id;
      const name = document.createElement("span");
      name.className = "source";
      name.textContent = s.source_id;
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = s.title;
      const chunks = document.createElement("span");
      chunks.className = "chunks";
      chunks.textContent = `${s.chunks} chunk(s)`;
      const forget = document.createElement("button");
      forget.type = "button";
      forget.className = "forget";
      forget.setAttribute("aria-label", `Remove ${s.source_id}`);
      forget.textContent = "×";
      li.append(name, " ", title, " ", chunks, " ", forget);
      return li;
    }));
    sourceCount.textContent = String(items.length);
    noSources.hidden = items.length > 0;
  }

  sourceList.addEventListener("click", async (event) => {
    const button = event.target.closest("button.forget");
    if (!button) return;
    const source = button.closest("li").dataset.source;
    try {
      const data = await call("DELETE", `/api/sources/${encodeURIComponent(source)}`);
      showSources(data.sources);
    } catch (err) {
      show(uploadError, err.message);
    }
  });

  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(uploadError, "");
    const documents = [];
    for (const file of files.files) documents.push({ name: file.name, text: await file.text() });
    if (pasteName.value.trim() || pasteText.value.trim()) {
      documents.push({ name: pasteName.value, text: pasteText.value });
    }
    if (!documents.length) { show(uploadError, "choose files or paste a text"); return; }
    try {
      const data = await call("POST", "/api/documents", { documents });
      data.jobs.forEach((job) => track({ ...job, stage: "queued" }));
      uploadForm.reset();
    } catch (err) {
      show(uploadError, err.message);
    }
  });

  // --- questions -----------------------------------------------------------------------------

  askForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(askError, "");
    answer.setAttribute("aria-busy", "true");
    try {
      const data = await call("POST", "/api/ask", { question: question.value });
      answerText.textContent = data.answer !== null
        ? data.answer
        : (data.passages.length ? "The most relevant passages:" : "The knowledge base is empty: add documents first.");
      show(answerNote, data.error ? `No answer from a chat model (${data.error}).` : "");
      passages.replaceChildren(...data.passages.map((p) => {
        const li = document.createElement("li");
        li.value = p.n;
        const where = document.createElement("span");
        where.className = "where";
        where.textContent = `${p.source_id} (chunk ${p.chunk_index}, score ${p.score.toFixed(3)})`;
        const text = document.createElement("blockquote");
        text.textContent = p.text;
        li.append(where, text);
        return li;
      }));
      answer.hidden = false;
    } catch (err) {
      show(askError, err.message);
    } finally {
      answer.removeAttribute("aria-busy");
    }
  });

  // --- the websocket -------------------------------------------------------------------------

  const handlers = {
    async connected() {
      live.dataset.state = "on";
      live.textContent = "live";
      try { showSources((await call("GET", "/api/sources")).sources); } catch (err) { /* next push */ }
    },
    ingest: track,
    sources(m) { showSources(m.sources); },
  };

  function connect(delay) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${root.dataset.live}`);
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      const handler = handlers[message.type];
      if (handler) handler(message);
    });
    socket.addEventListener("close", () => {
      live.dataset.state = "off";
      live.textContent = "offline";
      setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
    });
  }

  if (root.dataset.live) connect(500);
  document.body.dataset.ready = "true";
})();
