/* The console's session: the admin key (sessionStorage, this tab only) and the admin
 * API calls made with it. Same-origin only. */

export const STORE = { admin: "loragate.adminKey", tenant: "loragate.console.tenant" };

/** What the page knows now; one object shared by the console's modules. */
export const state = {
  key: "",
  tenants: [],
  tenant: "",
  editing: "",
  keyNames: new Map(),
  currency: "USD",
  usage: null,
  auditBefore: null,
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function remember(name, value) {
  try {
    if (value) sessionStorage.setItem(name, value);
    else sessionStorage.removeItem(name);
  } catch (_) {
    /* storage disabled: the page still works for this visit */
  }
}

export function recall(name) {
  try {
    return sessionStorage.getItem(name) || "";
  } catch (_) {
    return "";
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.error && data.error.message;
    throw new ApiError(response.status, message || `${response.status} ${response.statusText || "error"}`);
  }
  return data;
}
