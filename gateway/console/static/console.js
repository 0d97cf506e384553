/* loragate console: plain JavaScript modules, no dependencies, same-origin admin API
 * calls only. The admin key lives in sessionStorage (this tab only); a new key's secret
 * lives in the page only until the operator dismisses it or leaves. */

import {
  $,
  budgetFrom,
  budgetText,
  button,
  compact,
  confirmButton,
  el,
  failed,
  money,
  plural,
  say,
  splitList,
  table,
  when,
} from "./elements.js";
import { STORE, api, recall, remember, state } from "./session.js";
import { loadAudit } from "./audit.js";
import { loadAdapters, loadCollections } from "./inventory.js";
import { loadSpend, renderSpend } from "./spend.js";

// --- connection ------------------------------------------------------------------

function setStatus(text, kind) {
  const pill = $("connection-status");
  pill.textContent = text;
  pill.className = `pill pill-${kind}`;
}

async function connect() {
  state.key = $("admin-key").value.trim();
  remember(STORE.admin, state.key);
  if (!state.key) {
    setStatus("not connected", "idle");
    say("Enter the admin key.");
    return;
  }
  setStatus("connecting…", "idle");
  try {
    await loadTenants();
  } catch (error) {
    const refused = error.status === 401 || error.status === 403;
    setStatus(refused ? "key refused" : "cannot connect", "err");
    say(error.message, true);
    return;
  }
  setStatus("connected", "ok");
  say("");
  await Promise.all([loadKeys(), loadSpend(), loadAdapters(), loadCollections(), loadAudit(true)]);
}

function forget() {
  state.key = "";
  $("admin-key").value = "";
  remember(STORE.admin, "");
  hideSecret();
  setStatus("not connected", "idle");
  say("The admin key is forgotten in this tab.");
}

// --- tenants ---------------------------------------------------------------------

async function loadTenants() {
  const list = await api("/admin/tenants");
  state.tenants = list.data;
  $("tenant-count").textContent = plural(state.tenants.length, "tenant");
  const names = state.tenants.map((t) => t.name);
  if (!names.includes(state.tenant)) state.tenant = names.includes(recall(STORE.tenant)) ? recall(STORE.tenant) : "";
  renderTenants();
  const pick = $("spend-tenant");
  const chosen = pick.value;
  pick.replaceChildren(el("option", null, "all tenants"));
  pick.firstChild.value = "";
  for (const name of names) {
    const option = el("option", null, name);
    option.value = name;
    pick.append(option);
  }
  pick.value = names.includes(chosen) ? chosen : "";
}

function renderTenants() {
  const box = $("tenants");
  if (!state.tenants.length) {
    box.replaceChildren(el("p", "empty", "No tenants: the gateway is in open mode or has none yet."));
    return;
  }
  const rows = state.tenants.map((t) => {
    const name = el("span", "name", t.name);
    const source = el("span", `badge badge-${t.source === "api" ? "api" : "config"}`, t.source);
    const who = el("span", "cell-stack");
    who.append(name, source);
    const actions = el("span", "buttons");
    const keys = button(t.name === state.tenant ? "Keys ✓" : "Keys", "", () => selectTenant(t.name));
    keys.dataset.tenant = t.name;
    keys.classList.add("tenant-keys");
    actions.append(keys);
    if (t.source === "api") {
      const edit = button("Budget", "tenant-budget", () => editBudget(t));
      actions.append(edit, confirmButton("Delete", () => deleteTenant(t.name)));
    }
    return [
      who,
      (t.models || []).join(", ") || "–",
      (t.collections || []).join(", ") || "–",
      budgetText(t.budget),
      t.max_in_flight === null ? "no cap" : t.max_in_flight,
      t.weight,
      actions,
    ];
  });
  box.replaceChildren(
    table(["tenant", "models", "collections", "budget", "in flight", "weight", ""], rows, "tenants"),
  );
  for (const row of box.querySelectorAll("tbody tr")) {
    const name = row.querySelector(".tenant-keys").dataset.tenant;
    row.classList.toggle("selected", name === state.tenant);
  }
}

async function createTenant() {
  const name = $("tenant-name").value.trim();
  const body = { name, models: splitList($("tenant-models").value) };
  const collections = splitList($("tenant-collections").value);
  if (collections.length) body.collections = collections;
  const budget = budgetFrom("tenant");
  if (budget) body.budget = budget;
  try {
    await api("/admin/tenants", { method: "POST", body });
  } catch (error) {
    failed("Tenant not created", error);
    return;
  }
  $("tenant-form").reset();
  say(`Tenant ${name} created.`);
  state.tenant = name;
  remember(STORE.tenant, name);
  await Promise.all([loadTenants(), loadAudit(true)]);
  await Promise.all([loadKeys(), loadSpend()]);
}

/** The budget form, filled with ``tenant``'s budget (API-made tenants: the config
 * file's are edited in the file). */
function editBudget(tenant) {
  state.editing = tenant.name;
  const budget = tenant.budget || {};
  $("budget-tenant").textContent = tenant.name;
  $("edit-budget-period").value = budget.period || "";
  $("edit-budget-tokens").value = budget.max_tokens ?? "";
  $("edit-budget-cost").value = budget.max_cost ?? "";
  $("budget-form").hidden = false;
  $("edit-budget-period").focus();
}

async function saveBudget() {
  const name = state.editing;
  const path = `/admin/tenants/${encodeURIComponent(name)}`;
  try {
    await api(path, { method: "PATCH", body: { budget: budgetFrom("edit") } });
  } catch (error) {
    failed("Budget not saved", error);
    return;
  }
  $("budget-form").hidden = true;
  say(`Budget of ${name} saved.`);
  await Promise.all([loadTenants(), loadSpend(), loadAudit(true)]);
}

async function deleteTenant(name) {
  try {
    const answer = await api(`/admin/tenants/${encodeURIComponent(name)}`, { method: "DELETE" });
    say(`Tenant ${name} deleted; ${plural(answer.revoked_keys.length, "key")} revoked.`);
  } catch (error) {
    failed("Tenant not deleted", error);
  }
  if (state.tenant === name) state.tenant = "";
  await Promise.all([loadTenants(), loadAudit(true)]);
  await Promise.all([loadKeys(), loadSpend()]);
}

async function selectTenant(name) {
  state.tenant = name;
  remember(STORE.tenant, name);
  hideSecret();
  renderTenants();
  await loadKeys();
  $("keys-panel").scrollIntoView({ block: "start", behavior: "smooth" });
}

// --- keys ------------------------------------------------------------------------

async function loadKeys() {
  const panel = $("keys-panel");
  if (!state.tenant) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  $("keys-tenant").textContent = state.tenant;
  const box = $("keys");
  let list;
  try {
    list = await api(`/admin/tenants/${encodeURIComponent(state.tenant)}/keys`);
  } catch (error) {
    box.replaceChildren(el("p", "empty error-text", error.message));
    return;
  }
  $("key-count").textContent = plural(list.data.length, "key");
  for (const key of list.data) state.keyNames.set(key.id, key.name);
  if (!list.data.length) {
    box.replaceChildren(el("p", "empty", "No keys made over the API yet."));
    return;
  }
  const rows = list.data.map((key) => {
    const who = el("span", "cell-stack");
    who.append(el("span", "name", key.name), el("code", "key-id", key.id));
    const spent = `${compact(key.spent.tokens)} tokens · ${money(key.spent.cost)} (${key.spent.period})`;
    const revoke = confirmButton("Revoke", () => revokeKey(key));
    revoke.dataset.key = key.id;
    return [who, when(key.created_at), when(key.expires_at), when(key.last_used_at), budgetText(key.budget), spent, revoke];
  });
  box.replaceChildren(
    table(["key", "created", "expires", "last used", "budget", "spent", ""], rows, "keys"),
  );
  if (state.usage) renderSpend();
}

async function createKey() {
  const name = $("key-name").value.trim();
  const body = { name };
  const days = parseInt($("key-days").value, 10);
  if (days > 0) body.expires_at = Math.floor(Date.now() / 1000) + days * 86400;
  const budget = budgetFrom("key");
  if (budget) body.budget = budget;
  let created;
  try {
    created = await api(`/admin/tenants/${encodeURIComponent(state.tenant)}/keys`, { method: "POST", body });
  } catch (error) {
    failed("Key not created", error);
    return;
  }
  $("key-form").reset();
  showSecret(created);
  say(`Key ${created.name} (${created.id}) created for ${state.tenant}.`);
  await Promise.all([loadKeys(), loadAudit(true)]);
}

function showSecret(created) {
  $("secret-name").textContent = `${created.name} (${created.id})`;
  $("secret-value").textContent = created.key;
  $("secret-box").hidden = false;
}

function hideSecret() {
  $("secret-value").textContent = "";
  $("secret-name").textContent = "";
  $("secret-box").hidden = true;
}

async function copySecret() {
  try {
    await navigator.clipboard.writeText($("secret-value").textContent);
    say("Copied.");
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents($("secret-value"));
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    say("Selected: copy it with Ctrl+C.");
  }
}

async function revokeKey(key) {
  const path = `/admin/tenants/${encodeURIComponent(state.tenant)}/keys/${encodeURIComponent(key.id)}`;
  try {
    await api(path, { method: "DELETE" });
    say(`Key ${key.name} (${key.id}) revoked.`);
  } catch (error) {
    failed("Key not revoked", error);
  }
  await Promise.all([loadKeys(), loadAudit(true)]);
}

async function refreshSpend() {
  await Promise.all([loadSpend(), loadKeys()]); // a key's "spent" column too
}

// --- wiring ----------------------------------------------------------------------

function onSubmit(id, run) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
}

function init() {
  $("admin-key").value = recall(STORE.admin);
  state.tenant = recall(STORE.tenant);
  onSubmit("connect-form", connect);
  onSubmit("tenant-form", createTenant);
  onSubmit("key-form", createKey);
  onSubmit("budget-form", saveBudget);
  $("budget-cancel").addEventListener("click", () => {
    $("budget-form").hidden = true;
  });
  onSubmit("spend-form", refreshSpend);
  $("forget").addEventListener("click", forget);
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", hideSecret);
  $("spend-range").addEventListener("change", refreshSpend);
  $("spend-tenant").addEventListener("change", loadSpend);
  $("spend-group").addEventListener("change", () => state.usage && renderSpend());
  $("spend-measure").addEventListener("change", () => state.usage && renderSpend());
  $("audit-refresh").addEventListener("click", () => loadAudit(true));
  $("audit-more").addEventListener("click", () => loadAudit(false));
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => state.usage && renderSpend(), 150);
  });
  if (state.key || recall(STORE.admin)) connect();
}

init(); // a module runs once the document is parsed
