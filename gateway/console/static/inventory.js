/* Read-only panels: adapters (versions, residency, a traffic split where the API reports
 * one) and retrieval collections. */

import { $, el, plural, table } from "./elements.js";
import { api } from "./session.js";
import { COLORS } from "./spend.js";

export async function loadAdapters() {
  const box = $("adapters");
  let list;
  try {
    list = await api("/admin/adapters");
  } catch (error) {
    box.replaceChildren(el("p", "empty error-text", error.message));
    return;
  }
  $("adapter-count").textContent =
    plural(list.data.length, "adapter") + (list.slots_known ? "" : " · the engine does not report slots");
  if (!list.data.length) {
    box.replaceChildren(el("p", "empty", "No adapters registered."));
    return;
  }
  box.replaceChildren(...list.data.map(renderAdapter));
}

/** The traffic split of an adapter, where the API reports one (``split``: version or
 * ref -> weight, or a list of {version|ref, weight}); nothing where it does not. */
function renderSplit(split) {
  const pairs = Array.isArray(split)
    ? split.map((s) => [s.ref || s.version, Number(s.weight ?? s.percent ?? 0)])
    : Object.entries(split).map(([ref, weight]) => [ref, Number(weight)]);
  const total = pairs.reduce((a, [, w]) => a + w, 0) || 1;
  const wrap = el("div", "split");
  wrap.append(el("span", "field-label", "traffic split"));
  const bar = el("div", "split-bar");
  pairs.forEach(([ref, weight], i) => {
    const part = el("span", "split-part", `${ref} ${Math.round((weight / total) * 100)}%`);
    part.style.flexGrow = String(weight);
    part.style.background = COLORS[i % COLORS.length];
    bar.append(part);
  });
  wrap.append(bar);
  return wrap;
}

function renderAdapter(adapter) {
  const wrap = el("div", "adapter");
  wrap.dataset.adapter = adapter.name;
  const head = el("div", "adapter-head");
  head.append(el("span", "name", adapter.name));
  head.append(el("span", "hint", `active: ${adapter.active_version || "none"} · ${adapter.requests_total} requests`));
  wrap.append(head);
  if (adapter.split !== undefined && adapter.split !== null) wrap.append(renderSplit(adapter.split));
  const rows = adapter.versions.map((v) => {
    const residency = el("span", `res res-${v.residency}`, String(v.residency).replace("_", " "));
    return [
      v.ref,
      v.status + (v.pinned ? " · pinned" : ""),
      residency,
      v.rank,
      `${v.requests_total} (${v.in_flight} now)`,
      v.replicas ? v.replicas.join(", ") || "none" : "–",
      v.created_at ? String(v.created_at).slice(0, 16).replace("T", " ") : "–",
    ];
  });
  wrap.append(table(["version", "status", "residency", "rank", "requests", "replicas", "registered"], rows, "versions"));
  return wrap;
}

export async function loadCollections() {
  const box = $("collections");
  let list;
  try {
    list = await api("/admin/collections");
  } catch (error) {
    box.replaceChildren(el("p", "empty error-text", error.message));
    return;
  }
  $("collection-count").textContent = plural(list.data.length, "collection");
  if (!list.data.length) {
    box.replaceChildren(el("p", "empty", "No collections."));
    return;
  }
  const rows = list.data.map((c) => [c.name, c.document_count, c.chunk_count, c.embedder, c.index_kind, c.version]);
  box.replaceChildren(table(["collection", "documents", "chunks", "embedder", "index", "version"], rows, "collections"));
}
