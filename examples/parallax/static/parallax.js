// Infer, edit, dry-run and apply a collection's schema through the JSON API. Field names,
// values and messages are always set with textContent (documents are data, never markup).
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const workspace = $("workspace");
  const schemaBox = $("schema");
  const fieldRows = document.querySelector("#fields tbody");
  let current = null;

  async function call(method, url, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (method !== "GET") options.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const err = new Error((data && data.error && data.error.message) || response.statusText);
      err.data = data;
      throw err;
    }
    return data;
  }

  function show(message) { $("error").textContent = message || ""; $("error").hidden = !message; }
  const api = (suffix) => `/api/collections/${encodeURIComponent(current)}/${suffix}`;

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  async function refreshCollections() {
    const data = await call("GET", "/api/collections");
    $("collections").replaceChildren(...data.collections.map((c) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "collection";
      button.dataset.name = c.name;
      button.textContent = c.name;
      if (c.name === current) button.setAttribute("aria-current", "true");
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = ` ${c.documents}`;
      li.append(button, count);
      if (c.validator) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "validated";
        li.append(" ", badge);
      }
      return li;
    }));
  }

  function showValidator(data) {
    $("current").textContent = data.validator ? JSON.stringify(data.validator, null, 2) : "none";
    if ($("remove")) $("remove").hidden = !data.validator;
    $("keep").hidden = !data.manifest;
    $("manifest-block").textContent = data.manifest ? JSON.stringify(data.manifest, null, 2) : "";
  }

  function showReport(report, note) {
    $("report").hidden = false;
    $("report-summary").textContent = note ||
      (report.failed ? `${report.checked} document(s) checked: ${report.failed} would fail`
                     : `${report.checked} document(s) checked: none would fail`);
    $("failures").replaceChildren(...report.documents.map((d) => {
      const li = document.createElement("li");
      li.dataset.id = String(d._id);
      const id = document.createElement("code");
      id.textContent = String(d._id);
      li.append(id, `: ${d.problems.join("; ")}`);
      return li;
    }));
  }

  async function select(name) {
    current = name;
    show("");
    workspace.hidden = false;
    $("collection-name").textContent = name;
    $("fields").hidden = true;
    $("report").hidden = true;
    $("sampled").textContent = "";
    schemaBox.value = "";
    document.querySelectorAll(".collection").forEach((b) =>
      b.setAttribute("aria-current", String(b.dataset.name === name)));
    showValidator(await call("GET", api("validator")));
  }

  $("collections").addEventListener("click", (event) => {
    const button = event.target.closest("button.collection");
    if (button) select(button.dataset.name).catch((err) => show(err.message));
  });

  $("infer-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    show("");
    try {
      const data = await call("POST", api("infer"), {
        sample_size: Number($("sample-size").value),
        enum_max: Number($("enum-max").value),
        closed: $("closed").checked,
      });
      $("sampled").textContent = `${data.sampled} document(s) sampled`;
      fieldRows.replaceChildren(...data.fields.map((f) => {
        const tr = document.createElement("tr");
        tr.append(cell(f.path, "path"), cell(`${f.present}/${f.of}`), cell(f.types.join(" | ")),
          cell(f.required ? "yes" : ""), cell(f.enum ? f.enum.map((v) => JSON.stringify(v)).join(", ") : ""));
        return tr;
      }));
      $("fields").hidden = false;
      schemaBox.value = JSON.stringify(data.schema, null, 2);
    } catch (err) { show(err.message); }
  });

  function editedSchema() {
    try { return JSON.parse(schemaBox.value); } catch (err) { throw new Error(`the schema is not JSON: ${err.message}`); }
  }

  $("dry-run").addEventListener("click", async () => {
    show("");
    try { showReport(await call("POST", api("dry-run"), { schema: editedSchema() })); }
    catch (err) { show(err.message); }
  });

  if ($("apply")) {
    $("apply").addEventListener("click", async () => {
      show("");
      try {
        const data = await call("PUT", api("validator"), {
          schema: editedSchema(), level: $("level").value, action: $("action").value,
          force: $("force").checked,
        });
        showReport(data.report, `applied (${data.status}): ${data.report.checked} document(s) checked, ${data.report.failed} fail`);
        showValidator(data);
        await refreshCollections();
      } catch (err) {
        if (err.data && err.data.report) showReport(err.data.report);
        show(err.message);
      }
    });
    $("remove").addEventListener("click", async () => {
      show("");
      try { showValidator(await call("DELETE", api("validator"))); await refreshCollections(); }
      catch (err) { show(err.message); }
    });
    $("insert-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = $("insert-result");
      result.textContent = "";
      result.className = "";
      try {
        const data = await call("POST", api("documents"), { document: JSON.parse($("document").value) });
        result.textContent = `inserted ${data._id}`;
        await refreshCollections();
      } catch (err) {
        result.textContent = `refused: ${err.message}`;
        result.className = "error";
      }
    });
  }

  document.body.dataset.ready = "true";
})();
