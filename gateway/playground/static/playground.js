/* loragate playground: plain JavaScript, no dependencies, same-origin API calls only.
 *
 * Keys live in sessionStorage (this tab only). Every text that comes from the server
 * is inserted with textContent, never as HTML.
 */
"use strict";

(() => {
  const MAX_MODELS = 3;
  const STORE = {
    key: "loragate.apiKey",
    admin: "loragate.adminKey",
    models: "loragate.models",
    collection: "loragate.collection",
  };
  const $ = (id) => document.getElementById(id);
  const state = { key: "", models: [], selected: [], controller: null, searches: new Map() };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // --- small helpers ---------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function remember(name, value) {
    try {
      if (value) sessionStorage.setItem(name, value);
      else sessionStorage.removeItem(name);
    } catch (_) {
      /* storage disabled: the page still works for this visit */
    }
  }

  function recall(name) {
    try {
      return sessionStorage.getItem(name) || "";
    } catch (_) {
      return "";
    }
  }

  function headers(key, json) {
    const out = {};
    if (key) out.Authorization = `Bearer ${key}`;
    if (json) out["Content-Type"] = "application/json";
    return out;
  }

  function errorText(data, response) {
    if (data && data.error && data.error.message) return data.error.message;
    return `${response.status} ${response.statusText || "error"}`;
  }

  async function api(path, { key, method = "GET", body } = {}) {
    const response = await fetch(path, {
      method,
      headers: headers(key, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, errorText(data, response));
    return data;
  }

  function modelKind(card) {
    if (!card.parent) return "base";
    // Aliases are listed with root = their own id; adapters with root = name@version.
    return card.root === card.id ? "alias" : "adapter";
  }

  const KIND_LABEL = { base: "base", adapter: "adapter", alias: "alias" };
  const SVG_NS = "http://www.w3.org/2000/svg";

  /** A small padlock (an inline SVG: emoji fonts are not everywhere). */
  function lockIcon() {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("class", "icon-lock");
    svg.setAttribute("aria-hidden", "true");
    const shackle = document.createElementNS(SVG_NS, "path");
    shackle.setAttribute("d", "M5 7.5V5a3 3 0 0 1 6 0v2.5");
    const body = document.createElementNS(SVG_NS, "rect");
    for (const [name, value] of Object.entries({ x: 3, y: 7, width: 10, height: 7.5, rx: 1.6 })) {
      body.setAttribute(name, String(value));
    }
    svg.append(shackle, body);
    return svg;
  }

  function formatMs(ms) {
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  // --- connection and model picker -------------------------------------------------

  function setStatus(text, kind) {
    const pill = $("connection-status");
    pill.textContent = text;
    pill.className = `pill pill-${kind}`;
  }

  async function connect() {
    const key = $("api-key").value.trim();
    remember(STORE.key, key);
    state.key = key;
    setStatus("connecting…", "idle");
    try {
      const list = await api("/v1/models", { key });
      const order = { base: 0, adapter: 1, alias: 2 };
      state.models = list.data
        // Embedding models (no context length, no parent) cannot chat: not offered here.
        .filter((card) => card.parent || card.max_model_len)
        .map((card) => ({ ...card, kind: modelKind(card) }))
        .sort((a, b) => order[a.kind] - order[b.kind] || a.id.localeCompare(b.id));
      const known = new Set(state.models.map((m) => m.id));
      const saved = recall(STORE.models).split(",").filter((id) => known.has(id));
      state.selected = (saved.length ? saved : state.models.map((m) => m.id)).slice(0, MAX_MODELS);
      const n = state.models.length;
      setStatus(`connected · ${n} model${n === 1 ? "" : "s"}`, "ok");
    } catch (error) {
      state.models = [];
      state.selected = [];
      setStatus(error.status === 401 ? "key refused" : "cannot connect", "err");
      renderModels(error.message);
      return;
    }
    renderModels();
  }

  function renderModels(message) {
    const box = $("models");
    box.replaceChildren();
    if (!state.models.length) {
      box.append(el("p", "empty", message || "No models are available for this key."));
    }
    for (const model of state.models) {
      const chosen = state.selected.includes(model.id);
      const chip = el("button", "chip");
      chip.type = "button";
      chip.dataset.model = model.id;
      chip.setAttribute("aria-pressed", String(chosen));
      chip.disabled = !chosen && state.selected.length >= MAX_MODELS;
      chip.append(el("span", "chip-check", "✓"), el("span", null, model.id));
      chip.append(el("span", `badge badge-${model.kind}`, KIND_LABEL[model.kind]));
      if (model.kind === "alias") {
        chip.append(lockIcon());
        chip.title = "Alias: policy locked by your tenant";
      } else if (model.kind === "adapter") {
        chip.title = `LoRA adapter ${model.root} on ${model.parent}`;
      } else {
        chip.title = "The base model";
      }
      chip.addEventListener("click", () => toggleModel(model.id));
      box.append(chip);
    }
    $("model-count").textContent = `${state.selected.length} of ${MAX_MODELS} selected`;
    $("send").disabled = state.selected.length === 0 || state.controller !== null;
  }

  function toggleModel(id) {
    if (state.selected.includes(id)) state.selected = state.selected.filter((m) => m !== id);
    else if (state.selected.length < MAX_MODELS) state.selected = [...state.selected, id];
    remember(STORE.models, state.selected.join(","));
    renderModels();
  }

  // --- streaming -------------------------------------------------------------------

  /** The `data:` payloads of a server-sent event stream, one string per event. */
  async function* sseData(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n");
          if (data) yield data;
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  function makeCard(model) {
    const node = $("card-template").content.firstElementChild.cloneNode(true);
    node.dataset.model = model.id;
    node.querySelector(".model-name").textContent = model.id;
    const badge = node.querySelector(".badge");
    badge.textContent = KIND_LABEL[model.kind];
    badge.classList.add(`badge-${model.kind}`);
    node.querySelector(".policy-note").hidden = model.kind !== "alias";
    const answer = node.querySelector(".answer");
    answer.append(el("span", "placeholder", "Waiting for the first token…"));
    const card = {
      node,
      setState(text, cls) {
        node.classList.remove("streaming", "done", "failed");
        if (cls) node.classList.add(cls);
        node.querySelector(".state").textContent = text;
      },
      setText(text) {
        renderAnswer(answer, text, (n) => flashCitation(node, n));
      },
      setError(message) {
        answer.classList.add("error");
        answer.replaceChildren(document.createTextNode(message));
      },
      stat(name, value) {
        node.querySelector(`.${name}`).textContent = value;
      },
    };
    card.setState("queued", null);
    return card;
  }

  /** Text with each [n] marker turned into a clickable citation reference. */
  function renderAnswer(target, text, onCite) {
    const parts = text.split(/(\[\d{1,2}\])/);
    const nodes = parts.map((part) => {
      const match = /^\[(\d{1,2})\]$/.exec(part);
      if (!match) return document.createTextNode(part);
      const ref = el("span", "cite-ref", match[1]);
      ref.title = `Source ${match[1]}`;
      ref.addEventListener("click", () => onCite(match[1]));
      return ref;
    });
    target.replaceChildren(...nodes);
  }

  function flashCitation(cardNode, number) {
    const item = cardNode.querySelector(`.citation[data-number="${number}"]`);
    if (!item) return;
    item.scrollIntoView({ block: "nearest", behavior: "smooth" });
    item.classList.add("flash");
    setTimeout(() => item.classList.remove("flash"), 1200);
  }

  function requestBody(model, prompt) {
    const body = {
      model: model.id,
      messages: [{ role: "user", content: prompt }],
      stream: true,
      stream_options: { include_usage: true },
    };
    const maxTokens = parseInt($("max-tokens").value, 10);
    if (maxTokens > 0) body.max_tokens = maxTokens;
    const temperature = parseFloat($("temperature").value);
    if (!Number.isNaN(temperature)) body.temperature = temperature;
    if ($("rag-on").checked) {
      const topK = parseInt($("rag-top-k").value, 10);
      body.rag = { collection: $("rag-collection").value.trim() };
      if (topK > 0) body.rag.top_k = topK;
    }
    return body;
  }

  async function streamInto(card, model, prompt, key, signal) {
    const started = performance.now();
    let first = null;
    let text = "";
    let usage = null;
    let citations = null;
    let finish = null;
    let deltas = 0;
    card.setState("waiting", "streaming");
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(key, true),
      body: JSON.stringify(requestBody(model, prompt)),
      signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new ApiError(response.status, errorText(data, response));
    }
    card.setState("streaming", "streaming");
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(0, chunk.error.message || "stream failed");
      for (const choice of chunk.choices || []) {
        const delta = choice.delta && choice.delta.content;
        if (delta) {
          if (first === null) {
            first = performance.now();
            card.stat("ttft", formatMs(first - started));
          }
          deltas += 1;
          text += delta;
          card.setText(text);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      if (chunk.citations) citations = chunk.citations;
      if (chunk.usage) usage = chunk.usage;
    }
    const ended = performance.now();
    if (!text) card.setText("(empty answer)");
    const completion = usage ? usage.completion_tokens : deltas;
    if (first !== null && completion > 1 && ended > first) {
      card.stat("tps", ((completion - 1) / ((ended - first) / 1000)).toFixed(1));
    } else if (completion > 0 && ended > started) {
      card.stat("tps", (completion / ((ended - started) / 1000)).toFixed(1));
    }
    card.stat("tokens", usage ? `${usage.prompt_tokens} → ${usage.completion_tokens}` : `${deltas}`);
    card.stat("finish", finish ? `finish: ${finish}` : "");
    card.setState(`done in ${formatMs(ended - started)}`, "done");
    if (citations && citations.length) await showCitations(card.node, citations, prompt, key);
  }

  // --- citations -------------------------------------------------------------------

  async function snippets(collections, query, key, count) {
    const cacheKey = JSON.stringify([collections, query, key]);
    if (!state.searches.has(cacheKey)) {
      const body = { collection: collections, query, top_k: Math.min(20, Math.max(10, count * 3)) };
      state.searches.set(
        cacheKey,
        api("/v1/retrieval/search", { key, method: "POST", body })
          .then((result) => new Map(result.data.map((hit) => [hit.chunk_id, hit.text])))
          .catch(() => new Map()),
      );
    }
    return state.searches.get(cacheKey);
  }

  async function showCitations(cardNode, citations, prompt, key) {
    const section = cardNode.querySelector(".citations");
    const list = cardNode.querySelector(".citation-list");
    const render = (texts) => {
      list.replaceChildren(
        ...citations.map((c) => {
          const item = el("li", "citation");
          item.dataset.number = String(c.number);
          item.append(el("span", "citation-number", `[${c.number}]`));
          item.append(el("span", "citation-title", c.title));
          const meta = el("span", "citation-meta");
          const headings = (c.heading_path || []).filter((h, i) => i > 0 || h !== c.title);
          const where = headings.join(" › ");
          meta.append(el("code", null, c.source));
          meta.append(document.createTextNode(
            `${where ? ` · ${where}` : ""} · ${c.collection} · score ${Number(c.score).toFixed(3)}`,
          ));
          item.append(meta);
          const snippet = texts.get(c.chunk_id);
          if (snippet) {
            // Plain text for a preview: drop Markdown emphasis, code ticks and heading marks.
            const flat = snippet.replace(/\*\*|__|`|^#+ /gm, "").replace(/\s+/g, " ").trim();
            item.append(el("p", "citation-snippet", flat.length > 260 ? `${flat.slice(0, 259)}…` : flat));
          }
          return item;
        }),
      );
    };
    render(new Map());
    section.hidden = false;
    const collections = [...new Set(citations.map((c) => c.collection))];
    render(await snippets(collections, prompt, key, citations.length));
  }

  // --- sending ---------------------------------------------------------------------

  async function send() {
    const prompt = $("prompt").value.trim();
    if (!prompt) {
      $("prompt").focus();
      return;
    }
    if ($("rag-on").checked && !$("rag-collection").value.trim()) {
      $("rag-collection").focus();
      return;
    }
    remember(STORE.collection, $("rag-collection").value.trim());
    const key = state.key;
    const models = state.selected.map((id) => state.models.find((m) => m.id === id)).filter(Boolean);
    const controller = new AbortController();
    state.controller = controller;
    $("send").disabled = true;
    $("stop").disabled = false;
    const results = $("results");
    const cards = models.map((model) => [model, makeCard(model)]);
    results.replaceChildren(...cards.map(([, card]) => card.node));
    await Promise.all(
      cards.map(([model, card]) =>
        streamInto(card, model, prompt, key, controller.signal).catch((error) => {
          if (error.name === "AbortError") {
            card.setState("stopped", "failed");
          } else {
            card.setState(error.status ? `error ${error.status}` : "error", "failed");
            card.setError(error.message);
          }
        }),
      ),
    );
    state.controller = null;
    $("stop").disabled = true;
    renderModels();
  }

  // --- admin: adapters ---------------------------------------------------------------

  function adminMessage(text, isError) {
    const node = $("admin-message");
    node.textContent = text;
    node.classList.toggle("error-text", Boolean(isError));
  }

  async function loadAdapters() {
    const key = $("admin-key").value.trim();
    remember(STORE.admin, key);
    if (!key) {
      adminMessage("Enter the admin key to see the adapters.");
      $("adapters").replaceChildren();
      return;
    }
    try {
      const list = await api("/admin/adapters", { key });
      renderAdapters(list, key);
      const n = list.data.length;
      adminMessage(
        `${n} adapter${n === 1 ? "" : "s"}` +
          (list.slots_known ? "" : " · the engine does not report slots: nothing shows as gpu_slot"),
      );
    } catch (error) {
      $("adapters").replaceChildren();
      adminMessage(error.message, true);
    }
  }

  function actionButton(label, className, run) {
    const button = el("button", `btn btn-small ${className}`, label);
    button.type = "button";
    button.addEventListener("click", run);
    return button;
  }

  async function adminAction(key, path, method, body, done) {
    let outcome = [done, false];
    try {
      await api(path, { key, method, body });
    } catch (error) {
      outcome = [error.message, true];
    }
    await loadAdapters();
    if (state.models.length) await connect(); // what the tenant key may use has changed
    adminMessage(...outcome);
  }

  function retireButton(key, adapter, version) {
    const button = actionButton("Retire", "btn-danger", () => {
      if (!button.classList.contains("confirm")) {
        button.classList.add("confirm");
        button.textContent = "Confirm retire";
        setTimeout(() => {
          button.classList.remove("confirm");
          button.textContent = "Retire";
        }, 4000);
        return;
      }
      button.disabled = true;
      const path = `/admin/adapters/${encodeURIComponent(adapter.name)}?version=${encodeURIComponent(version.version)}`;
      adminAction(key, path, "DELETE", undefined, `Retired ${version.ref}.`);
    });
    return button;
  }

  function renderAdapters(list, key) {
    const box = $("adapters");
    box.replaceChildren();
    for (const adapter of list.data) {
      const wrap = el("div", "adapter");
      const head = el("div", "adapter-head");
      head.append(el("span", "model-name", adapter.name), el("span", "badge badge-adapter", "adapter"));
      head.append(
        el("span", "hint", `active: ${adapter.active_version || "none"} · ${adapter.requests_total} requests`),
      );
      const table = el("table", "versions");
      const header = el("tr");
      for (const title of ["version", "status", "residency", "rank", "requests", ""]) {
        header.append(el("th", null, title));
      }
      table.append(header);
      for (const version of adapter.versions) {
        const row = el("tr");
        row.append(el("td", null, version.ref));
        row.append(el("td", `status-${version.status}`, version.status + (version.pinned ? " · pinned" : "")));
        const residency = el("td");
        residency.append(el("span", `res res-${version.residency}`, version.residency.replace("_", " ")));
        row.append(residency);
        row.append(el("td", "num", version.rank));
        row.append(el("td", "num", `${version.requests_total} (${version.in_flight} now)`));
        const buttons = el("td", "buttons");
        if (version.status === "inactive") {
          const path = `/admin/adapters/${encodeURIComponent(adapter.name)}/activate`;
          buttons.append(
            actionButton("Activate", "", () =>
              adminAction(key, path, "POST", { version: version.version }, `Activated ${version.ref}.`),
            ),
          );
        }
        if (version.status !== "retiring") buttons.append(retireButton(key, adapter, version));
        row.append(buttons);
        table.append(row);
      }
      wrap.append(head, table);
      box.append(wrap);
    }
  }

  // --- wiring ------------------------------------------------------------------------

  function syncRag() {
    const on = $("rag-on").checked;
    $("rag-collection").disabled = !on;
    $("rag-top-k").disabled = !on;
  }

  function init() {
    $("api-base").textContent = `${location.origin}/v1`;
    $("api-key").value = recall(STORE.key);
    $("admin-key").value = recall(STORE.admin);
    $("rag-collection").value = recall(STORE.collection);
    $("connect-form").addEventListener("submit", (event) => {
      event.preventDefault();
      connect();
    });
    $("prompt-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (!$("send").disabled) send();
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !$("send").disabled) {
        event.preventDefault();
        send();
      }
    });
    $("stop").addEventListener("click", () => state.controller && state.controller.abort());
    $("rag-on").addEventListener("change", syncRag);
    $("admin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadAdapters();
    });
    $("admin-panel").addEventListener("toggle", () => {
      if ($("admin-panel").open && $("admin-key").value.trim()) loadAdapters();
    });
    syncRag();
    // Without a stored key, wait for the user: an unauthenticated call would only
    // produce a 401 on a gateway with tenants.
    if (recall(STORE.key)) connect();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
