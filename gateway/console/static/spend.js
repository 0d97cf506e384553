/* Spend over time: /admin/usage?bucket=hour|day drawn as stacked bars (inline SVG,
 * drawn here: no chart library), totals per tenant, key, adapter or model, and each
 * budget's spend in its period. */

import { $, compact, el, money, plural, svg, table, when } from "./elements.js";
import { api, state } from "./session.js";

const MAX_SERIES = 6; // groups drawn in their own colour; the rest are summed as "other"
export const COLORS = ["#4338ca", "#0e7490", "#c2410c", "#15803d", "#a21caf", "#b45309", "#64748b"];
const MEASURES = {
  tokens: { label: "tokens", of: (r) => r.prompt_tokens + r.completion_tokens },
  cost: { label: "cost", of: (r) => r.cost },
  requests: { label: "requests", of: (r) => r.requests },
  engine_seconds: { label: "engine seconds", of: (r) => r.engine_seconds },
};

export async function loadSpend() {
  const [bucket, count] = $("spend-range").value.split(":");
  const width = bucket === "hour" ? 3600 : 86400;
  const now = Math.floor(Date.now() / 1000);
  const first = (Math.floor(now / width) - (Number(count) - 1)) * width;
  const params = new URLSearchParams({ bucket, since: String(first) });
  const tenant = $("spend-tenant").value;
  if (tenant) params.set("tenant", tenant);
  try {
    const usage = await api(`/admin/usage?${params}`);
    state.currency = usage.currency;
    state.usage = { ...usage, first, width, count: Number(count) };
  } catch (error) {
    state.usage = null;
    $("spend-chart").replaceChildren(el("p", "empty error-text", error.message));
    return;
  }
  renderSpend();
}

function groupLabel(group, value) {
  if (group === "adapter") return value || "(base model)";
  if (group === "key_id") {
    if (!value) return "(config file key)";
    const name = state.keyNames.get(value);
    return name ? `${name} (${value})` : value;
  }
  return value || "–";
}

export function renderSpend() {
  const usage = state.usage;
  const group = $("spend-group").value;
  const measure = MEASURES[$("spend-measure").value];
  const totals = new Map();
  for (const row of usage.data) {
    const id = row[group];
    const sum = totals.get(id) || { requests: 0, tokens: 0, cost: 0, seconds: 0, value: 0 };
    sum.requests += row.requests;
    sum.tokens += row.prompt_tokens + row.completion_tokens;
    sum.cost += row.cost;
    sum.seconds += row.engine_seconds;
    sum.value += measure.of(row);
    totals.set(id, sum);
  }
  const ranked = [...totals.entries()].sort((a, b) => b[1].value - a[1].value || String(a[0]).localeCompare(String(b[0])));
  const shown = ranked.slice(0, ranked.length > MAX_SERIES + 1 ? MAX_SERIES : MAX_SERIES + 1).map(([id]) => id);
  const seriesOf = (id) => (shown.includes(id) ? shown.indexOf(id) : shown.length);
  const names = shown.map((id) => groupLabel(group, id));
  if (ranked.length > shown.length) names.push("other");
  const buckets = Array.from({ length: usage.count }, () => new Array(names.length).fill(0));
  for (const row of usage.data) {
    const index = Math.floor((row.start - usage.first) / usage.width);
    if (index >= 0 && index < usage.count) buckets[index][seriesOf(row[group])] += measure.of(row);
  }
  drawChart(buckets, names, measure.label);
  const legend = $("spend-legend");
  legend.replaceChildren(
    ...names.map((name, i) => {
      const item = el("span", "legend-item");
      const swatch = el("span", "swatch");
      swatch.style.background = COLORS[i % COLORS.length];
      item.append(swatch, el("span", null, name));
      return item;
    }),
  );
  $("spend-note").textContent = `${plural(usage.data.length, "row")} · ${usage.bucket} buckets, UTC`;
  const rows = ranked.map(([id, sum]) => [groupLabel(group, id), sum.requests, compact(sum.tokens), money(sum.cost), compact(sum.seconds)]);
  $("spend-totals").replaceChildren(
    rows.length
      ? table([$("spend-group").selectedOptions[0].textContent, "requests", "tokens", "cost", "engine s"], rows, "totals")
      : el("p", "empty", "No usage in this range."),
  );
  renderBudgets(usage.budgets);
}

function drawChart(buckets, names, unit) {
  const box = $("spend-chart");
  const width = Math.max(260, Math.floor(box.clientWidth || 600));
  const height = width < 500 ? 180 : 240;
  const pad = { left: 48, right: 8, top: 12, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = buckets.map((values) => values.reduce((a, b) => a + b, 0));
  const top = Math.max(...totals, 0);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "spend-svg" });
  const title = svg("title");
  title.textContent = `${unit} per ${state.usage.bucket}`;
  chart.append(title);
  const scale = top > 0 ? plotH / top : 0;
  for (const fraction of [0, 0.5, 1]) {
    const y = pad.top + plotH - fraction * plotH;
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "gridline" }));
    const label = svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "axis" });
    label.textContent = compact(top * fraction);
    chart.append(label);
  }
  const step = plotW / buckets.length;
  const barW = Math.max(1, step * 0.8);
  buckets.forEach((values, i) => {
    let y = pad.top + plotH;
    values.forEach((value, series) => {
      if (value <= 0) return;
      const h = value * scale;
      y -= h;
      const bar = svg("rect", {
        x: (pad.left + i * step + (step - barW) / 2).toFixed(2),
        y: y.toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(h, 0.5).toFixed(2),
        fill: COLORS[series % COLORS.length],
        class: "bar",
      });
      const tip = svg("title");
      const start = state.usage.first + i * state.usage.width;
      tip.textContent = `${names[series]}: ${compact(value)} ${unit} · ${when(start)}`;
      bar.append(tip);
      chart.append(bar);
    });
  });
  const ticks = Math.min(buckets.length, width < 500 ? 3 : 6);
  for (let t = 0; t < ticks; t += 1) {
    const i = Math.round((t * (buckets.length - 1)) / Math.max(1, ticks - 1));
    const start = new Date((state.usage.first + i * state.usage.width) * 1000).toISOString();
    const label = svg("text", {
      x: (pad.left + i * step + step / 2).toFixed(2),
      y: height - 6,
      "text-anchor": t === 0 ? "start" : t === ticks - 1 ? "end" : "middle",
      class: "axis",
    });
    label.textContent = state.usage.bucket === "hour" ? start.slice(5, 13).replace("T", " ") + "h" : start.slice(5, 10);
    chart.append(label);
  }
  box.replaceChildren(chart);
  box.dataset.total = String(totals.reduce((a, b) => a + b, 0));
}

function meter(spent, max, text) {
  const wrap = el("div", "meter");
  const bar = el("div", "meter-bar");
  const fill = el("div", "meter-fill");
  const share = max > 0 ? Math.min(1, spent / max) : spent > 0 ? 1 : 0;
  // Any spend shows as at least a sliver: "used a little" differs from "unused".
  fill.style.width = `${spent > 0 ? Math.max(share * 100, 1).toFixed(1) : "0"}%`;
  fill.classList.toggle("meter-high", share >= 0.9);
  bar.append(fill);
  wrap.append(bar, el("span", "meter-text", text));
  return wrap;
}

function renderBudgets(budgets) {
  const box = $("budgets");
  if (!budgets || !budgets.length) {
    box.replaceChildren(el("p", "empty", "No budgets configured."));
    return;
  }
  box.replaceChildren(
    ...budgets.map((b) => {
      const item = el("div", "budget");
      const who = b.key_id ? `key ${groupLabel("key_id", b.key_id)} of ${b.tenant}` : `tenant ${b.tenant}`;
      item.append(el("div", "budget-head", `${who} · ${b.period} from ${when(b.period_start)}`));
      if (b.max_tokens !== null && b.max_tokens !== undefined) {
        item.append(meter(b.spent_tokens, b.max_tokens, `${compact(b.spent_tokens)} of ${compact(b.max_tokens)} tokens`));
      }
      if (b.max_cost !== null && b.max_cost !== undefined) {
        item.append(meter(b.spent_cost, b.max_cost, `${money(b.spent_cost)} of ${money(b.max_cost)}`));
      }
      return item;
    }),
  );
}

