// Small inline SVG charts for the evaluation and fine-tuning pages: bars of a rate per item, and lines of
// values by step. Drawn in the container's own pixel width (one SVG unit is one CSS pixel when drawn), so
// labels stay legible on a phone and a laptop alike; text only ever goes in as text nodes.

import { append, replace } from "./dom.js";

/** The SVG namespace: an XML name for createElementNS, never a URL anything fetches. */
export const SVG_NS = "http://www.w3.org/2000/svg";

/** Build an SVG element: svg("line", {x1: 0, ...}, children...). Strings become text nodes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(name, String(value));
  }
  return append(el, children);
}

/** About `count` round tick values covering [min, max] (1, 2 or 5 times a power of ten apart). */
export function niceTicks(min, max, count = 4) {
  if (!(max > min)) return [min];
  const raw = (max - min) / Math.max(count, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

const painted = new WeakMap();
let observer = null;

/**
 * Draw `paint(box)` into `box` (in the document) now, and again whenever its width changes (a rotated
 * phone, a resized window), so the chart keeps one SVG unit to one pixel and its text stays legible.
 */
export function fitted(box, paint) {
  replace(box);
  paint(box);
  painted.set(box, { paint, width: box.clientWidth });
  observer ||= new ResizeObserver((entries) => {
    for (const entry of entries) {
      const box = entry.target;
      const state = painted.get(box);
      if (!box.isConnected || !state) {
        observer.unobserve(box); // the page moved on
        continue;
      }
      if (Math.abs(box.clientWidth - state.width) < 8) continue;
      state.width = box.clientWidth;
      replace(box);
      state.paint(box);
    }
  });
  observer.observe(box);
}

function widthOf(container, fallback) {
  return Math.max(Math.floor(container.clientWidth || fallback), 240);
}

function shorten(text, chars) {
  return text.length <= chars ? text : `${text.slice(0, Math.max(chars - 1, 1))}…`;
}

function plot(width, height, label) {
  return svg("svg", { class: "plot", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label });
}

/**
 * Vertical bars of values in [0, 1] (a pass rate), oldest first, into `container` (which must be in the
 * document, so its width is known). bars: [{label, value, title}]; value null draws no bar.
 */
export function rateBars(container, bars, { label, format = (v) => `${Math.round(v * 100)}%` }) {
  const width = Math.min(widthOf(container, 320), 48 + Math.max(bars.length, 4) * 96);
  const height = 190;
  const m = { top: 20, right: 8, bottom: 30, left: 40 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const chart = plot(width, height, label);
  for (const tick of [0, 0.5, 1]) {
    const y = m.top + plotH * (1 - tick);
    chart.append(svg("line", { class: tick ? "grid" : "axis", x1: m.left, x2: width - m.right, y1: y, y2: y }),
      svg("text", { x: m.left - 6, y: y + 4, "text-anchor": "end" }, format(tick)));
  }
  const slot = plotW / Math.max(bars.length, 1);
  const barW = Math.max(Math.min(48, slot * 0.7), 2);
  const chars = Math.floor(slot / 7);
  bars.forEach((bar, i) => {
    const cx = m.left + slot * i + slot / 2;
    const group = svg("g", {}, svg("title", {}, bar.title || `${bar.label}: ${bar.value === null ? "no rows" : format(bar.value)}`));
    if (bar.value !== null) {
      const barH = Math.max(plotH * bar.value, 1);
      group.append(svg("rect", { class: bar.value < 0.5 ? "rate low" : "rate", x: cx - barW / 2, y: m.top + plotH - barH, width: barW, height: barH }));
      if (slot >= 30) group.append(svg("text", { class: "val", x: cx, y: m.top + plotH - barH - 5, "text-anchor": "middle" }, format(bar.value)));
    }
    if (chars >= 3) group.append(svg("text", { x: cx, y: height - m.bottom + 16, "text-anchor": "middle" }, shorten(bar.label, chars)));
    chart.append(group);
  });
  container.append(chart);
  return chart;
}

/**
 * Lines of {x, y} points (x a step), into `container` (in the document). series: [{name, points, dashed}],
 * markers: [{x, label}] drawn as dotted verticals (checkpoints); xMax stretches the axis to the planned
 * end, so a live curve grows across the chart as the steps come in.
 */
export function lineChart(container, series, { label, markers = [], xMax = 0, xLabel = "step" }) {
  const width = widthOf(container, 480);
  const height = 240;
  const m = { top: 12, right: 12, bottom: 34, left: 52 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const all = series.flatMap((s) => s.points);
  let low = Math.min(...all.map((p) => p.y));
  let high = Math.max(...all.map((p) => p.y));
  if (!(high > low)) [low, high] = [low - 0.5, high + 0.5];
  const pad = (high - low) * 0.06;
  const yTicks = niceTicks(Math.max(low - pad, low >= 0 ? 0 : -Infinity), high + pad, 4);
  const yMin = Math.min(yTicks[0], low);
  const yMax = Math.max(yTicks[yTicks.length - 1], high);
  const xEnd = Math.max(xMax, ...all.map((p) => p.x), 1);
  const xTicks = niceTicks(0, xEnd, Math.max(Math.min(Math.floor(plotW / 70), 8), 2)).filter((t) => Number.isInteger(t));
  const X = (x) => m.left + (x / xEnd) * plotW;
  const Y = (y) => m.top + plotH * (1 - (y - yMin) / (yMax - yMin || 1));
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());
  const chart = plot(width, height, label);
  for (const tick of yTicks) {
    chart.append(svg("line", { class: "grid", x1: m.left, x2: width - m.right, y1: Y(tick), y2: Y(tick) }),
      svg("text", { x: m.left - 6, y: Y(tick) + 4, "text-anchor": "end" }, fmt(tick)));
  }
  chart.append(svg("line", { class: "axis", x1: m.left, x2: width - m.right, y1: m.top + plotH, y2: m.top + plotH }));
  for (const tick of xTicks) {
    chart.append(svg("text", { x: X(tick), y: m.top + plotH + 15, "text-anchor": "middle" }, String(tick)));
  }
  chart.append(svg("text", { x: width - m.right, y: height - 3, "text-anchor": "end" }, xLabel));
  for (const mark of markers) {
    chart.append(svg("line", { class: "marker", x1: X(mark.x), x2: X(mark.x), y1: m.top, y2: m.top + plotH },
      svg("title", {}, mark.label)));
  }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const points = s.points.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { class: `series s${i}`, points }, svg("title", {}, s.name)));
    if (s.points.length <= 60) {
      for (const p of s.points) {
        chart.append(svg("circle", { class: `dot s${i}`, cx: X(p.x), cy: Y(p.y), r: 2.5 }, svg("title", {}, `${s.name} at ${xLabel} ${p.x}: ${fmt(p.y)}`)));
      }
    }
  });
  container.append(chart);
  return chart;
}
