// The conversation over the app's websocket. Text is always set with textContent.
(function () {
  "use strict";
  const chat = document.getElementById("chat");
  const list = document.getElementById("messages");
  const memories = document.getElementById("memories");
  const form = document.getElementById("say");
  const input = document.getElementById("text");
  const error = document.getElementById("error");
  const live = document.getElementById("live");
  const streaming = new Map();  // reply_to -> the <li> being streamed
  let socket = null;

  function show(message) { error.textContent = message || ""; error.hidden = !message; }

  function bubble(role, text) {
    const li = document.createElement("li");
    li.className = role;
    li.textContent = text;
    list.append(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function showMemories(items) {
    memories.replaceChildren(...items.map((item) => {
      const li = document.createElement("li");
      li.dataset.id = item.id;
      const text = document.createElement("span");
      text.textContent = item.memory;
      const forget = document.createElement("button");
      forget.type = "button";
      forget.textContent = "forget";
      forget.addEventListener("click", () => send({ type: "forget", id: item.id }));
      li.append(text, forget);
      return li;
    }));
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    else show("not connected yet");
  }

  const handlers = {
    connected() { live.dataset.state = "on"; live.textContent = "live"; send({ type: "history" }); },
    history(m) {
      list.replaceChildren();
      m.messages.forEach((msg) => bubble(msg.role, msg.text));
      showMemories(m.memories);
    },
    message(m) {
      const pending = m.reply_to && streaming.get(m.reply_to);
      if (pending) { pending.textContent = m.message.text; streaming.delete(m.reply_to); }
      else bubble(m.message.role, m.message.text);
    },
    "reply.delta"(m) {
      let li = streaming.get(m.reply_to);
      if (!li) { li = bubble("assistant", ""); streaming.set(m.reply_to, li); }
      li.textContent += m.text;
    },
    memories(m) { showMemories(m.memories); },
    notice(m) { show(m.text); },
    error(m) { show(m.error.message); },
  };

  function connect(delay) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${chat.dataset.ws}`);
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      const handler = handlers[message.type];
      if (handler) handler(message);
    });
    socket.addEventListener("close", (event) => {
      live.dataset.state = "off";
      live.textContent = "offline";
      if (event.code === 1008) { show(event.reason || "please sign in again"); return; }
      setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    show("");
    send({ type: "chat", text: input.value });
    input.value = "";
  });

  connect(500);
})();
