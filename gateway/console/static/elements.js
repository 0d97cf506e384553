/* Building the page: elements from text (never from HTML), tables, buttons, formats.
 * Every text that comes from the server (tenant and key names are chosen by whoever
 * holds an admin key) goes in through textContent or an SVG text node. */

import { state } from "./session.js";

const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function svg(tag, attributes) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  return node;
}

export function say(text, isError) {
  const node = $("message");
  node.textContent = text;
  node.classList.toggle("error-text", Boolean(isError));
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function when(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return `${new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function compact(value) {
  const n = Number(value);
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(Math.abs(n) >= 10 ? 1 : 4).replace(/\.?0+$/, "");
}

export function money(value) {
  return `${compact(value)} ${state.currency}`;
}

export function splitList(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

export function budgetFrom(prefix) {
  const period = $(`${prefix}-budget-period`).value;
  if (!period) return null;
  const budget = { period };
  const tokens = $(`${prefix}-budget-tokens`).value.trim();
  const cost = $(`${prefix}-budget-cost`).value.trim();
  if (tokens) budget.max_tokens = Number(tokens);
  if (cost) budget.max_cost = Number(cost);
  return budget;
}

export function budgetText(budget) {
  if (!budget) return "–";
  const caps = [];
  if (budget.max_tokens !== null && budget.max_tokens !== undefined) caps.push(`${compact(budget.max_tokens)} tokens`);
  if (budget.max_cost !== null && budget.max_cost !== undefined) caps.push(money(budget.max_cost));
  return `${caps.join(" · ") || "no cap"} / ${budget.period}`;
}

/** A table; on narrow screens each row becomes a card whose cells carry their title. */
export function table(columns, rows, className) {
  const out = el("table", `grid ${className || ""}`.trim());
  const head = el("thead");
  const headRow = el("tr");
  for (const column of columns) headRow.append(el("th", null, column));
  head.append(headRow);
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    row.forEach((cell, i) => {
      const td = el("td");
      td.dataset.label = columns[i];
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell === null || cell === undefined ? "–" : String(cell);
      tr.append(td);
    });
    body.append(tr);
  }
  out.append(head, body);
  return out;
}

export function button(label, className, run) {
  const node = el("button", `btn btn-small ${className || ""}`.trim(), label);
  node.type = "button";
  node.addEventListener("click", run);
  return node;
}

/** A button that asks for a second click (no dialog) before it runs. */
export function confirmButton(label, run) {
  const node = button(label, "btn-danger", () => {
    if (!node.classList.contains("confirm")) {
      node.classList.add("confirm");
      node.textContent = `Confirm ${label.toLowerCase()}`;
      setTimeout(() => {
        node.classList.remove("confirm");
        node.textContent = label;
      }, 4000);
      return;
    }
    node.disabled = true;
    run();
  });
  return node;
}

export function failed(where, error) {
  say(`${where}: ${error.message}`, true);
}

