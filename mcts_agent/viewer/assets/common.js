/* mcts-agent viewer: shared helpers. Every text from the data goes in through textContent,
   never as HTML. */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const FLAG = { TERMINAL: 1, GRAFTED: 2, DEAD_END: 4, ON_PV: 8, CHOSEN: 16 };
const timings = (window.viewerTimings = window.viewerTimings || {});

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children) append(node, child);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  for (const child of children) append(node, child);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
}

function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  node.appendChild(typeof child === "string" || typeof child === "number"
    ? document.createTextNode(String(child)) : child);
}

/* a number for reading: integers as they are unless digits are asked for */
function fmt(value, digits) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (digits === undefined && Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toFixed(digits === undefined ? 3 : digits);
}

function pct(value) {
  return value === null || value === undefined ? "—" : (100 * value).toFixed(1) + " %";
}

/* red (0) → amber (0.5) → green (1); grey when unknown */
function valueColor(value) {
  if (value === null || value === undefined) return "#c8c8c2";
  const v = Math.max(0, Math.min(1, value));
  return `hsl(${Math.round(120 * v)}, 62%, ${Math.round(48 - 6 * Math.abs(v - 0.5))}%)`;
}

function oneLine(text, limit) {
  const flat = (text || "").replace(/\n/g, " ⏎ ").replace(/\s+/g, " ").trim();
  return flat.length > limit ? flat.slice(0, limit - 1) + "…" : flat;
}

let tooltipNode = null;
function tooltip(text, event) {
  if (!tooltipNode) {
    tooltipNode = el("div", { class: "tooltip" });
    document.body.appendChild(tooltipNode);
  }
  if (text === null) { tooltipNode.style.display = "none"; return; }
  tooltipNode.textContent = text;
  tooltipNode.style.display = "block";
  tooltipNode.style.left = event.clientX + 12 + "px";
  tooltipNode.style.top = event.clientY + 12 + "px";
}

/* after the browser has painted what was just put in the DOM */
function afterPaint(fn) {
  requestAnimationFrame(() => requestAnimationFrame(fn));
}

/* a tiny Python highlighter: keywords, builtins, strings, numbers, comments */
const PY_KEYWORDS = new Set(("False None True and as assert async await break class continue " +
  "def del elif else except finally for from global if import in is lambda nonlocal not or " +
  "pass raise return try while with yield").split(" "));
const PY_BUILTINS = new Set(("abs all any bool dict enumerate filter float int len list map " +
  "max min print range reversed round set sorted str sum tuple zip").split(" "));
const PY_TOKEN = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|(\b\d+(?:\.\d+)?\b)|([A-Za-z_]\w*)/g;

function highlightPython(code, into) {
  let last = 0;
  for (const m of code.matchAll(PY_TOKEN)) {
    if (m.index > last) into.appendChild(document.createTextNode(code.slice(last, m.index)));
    let cls = null;
    if (m[1]) cls = "tok-com";
    else if (m[2]) cls = "tok-str";
    else if (m[3]) cls = "tok-num";
    else if (PY_KEYWORDS.has(m[4])) cls = "tok-kw";
    else if (PY_BUILTINS.has(m[4])) cls = "tok-builtin";
    into.appendChild(cls ? el("span", { class: cls, text: m[0] })
      : document.createTextNode(m[0]));
    last = m.index + m[0].length;
  }
  if (last < code.length) into.appendChild(document.createTextNode(code.slice(last)));
  return into;
}
