/* The audit log: admin changes, newest first, 50 at a time. */

import { $, el, table, when } from "./elements.js";
import { api, state } from "./session.js";

export async function loadAudit(fresh) {
  const box = $("audit");
  const params = new URLSearchParams({ limit: "50" });
  if (!fresh && state.auditBefore) params.set("before", String(state.auditBefore));
  let list;
  try {
    list = await api(`/admin/audit?${params}`);
  } catch (error) {
    box.replaceChildren(el("p", "empty error-text", error.message));
    return;
  }
  const rows = list.data.map((e) => {
    const detail = el("code", "detail", Object.keys(e.detail || {}).length ? JSON.stringify(e.detail) : "");
    return [e.seq, when(e.at), e.actor, e.action, e.tenant, e.target, detail];
  });
  if (list.data.length) state.auditBefore = list.data[list.data.length - 1].seq;
  $("audit-more").hidden = !list.has_more;
  const existing = box.querySelector("tbody");
  if (!fresh && existing) {
    const more = table(["seq", "when", "actor", "action", "tenant", "target", "detail"], rows, "audit");
    existing.append(...more.querySelector("tbody").children);
    return;
  }
  box.replaceChildren(
    rows.length
      ? table(["seq", "when", "actor", "action", "tenant", "target", "detail"], rows, "audit")
      : el("p", "empty", "No admin changes yet."),
  );
}
