// ChatKit widgets (the JSON of a `widget` item) as DOM nodes, built with text APIs only.
//
// Covers the components the server's task widget uses (Card, Row, Col, Box, ListView,
// ListViewItem, Title, Text, Caption, Label, Badge, Icon, Spacer, Divider, Button, Markdown)
// and falls back to a plain box for anything else, so a newer widget still shows its text.
// Buttons with a server `onClickAction` call `onAction(action)`; client actions do nothing here.

import { renderMarkdown } from "./markdown.js";

const CONTAINERS = {
  Card: "div",
  Box: "div",
  Row: "div",
  Col: "div",
  Form: "div",
  ListView: "ul",
  ListViewItem: "li",
  Transition: "div",
};
const TEXTS = { Title: "strong", Text: "span", Caption: "small", Label: "span", Badge: "span" };
const ICONS = {
  "check-circle-filled": "✓",
  "check-circle": "✓",
  check: "✓",
  "empty-circle": "○",
  circle: "○",
};
const SAFE_CLASS = /^[a-z0-9-]{1,32}$/;

function node(tag, classes, text) {
  const el = document.createElement(tag);
  el.className = classes.filter(Boolean).join(" ");
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A class from a server value only when it is a plain word (colors, variants, sizes). */
function modifier(prefix, value) {
  return typeof value === "string" && SAFE_CLASS.test(value) ? `${prefix}-${value}` : "";
}

function childrenOf(component) {
  const children = component.children;
  if (Array.isArray(children)) return children.filter((c) => c && typeof c === "object");
  if (children && typeof children === "object") return [children];
  return [];
}

function textOf(value) {
  return typeof value === "string" || typeof value === "number" ? String(value) : "";
}

/**
 * Render `component` (a widget root or any of its children).
 * @param {object} component
 * @param {{onAction: (action: {type: string, payload: object}) => void}} handlers
 */
export function renderWidget(component, handlers) {
  const type = typeof component.type === "string" ? component.type : "";
  let el;
  if (type in CONTAINERS) {
    el = node(CONTAINERS[type], ["w", `w-${type.toLowerCase()}`]);
    for (const child of childrenOf(component)) {
      const rendered = renderWidget(child, handlers);
      if (type === "ListView" && child.type !== "ListViewItem") {
        const item = node("li", ["w", "w-listviewitem"]);
        item.append(rendered);
        el.append(item);
      } else {
        el.append(rendered);
      }
    }
  } else if (type in TEXTS) {
    el = node(TEXTS[type], ["w", `w-${type.toLowerCase()}`], textOf(component.value ?? component.label));
    if (component.lineThrough) el.classList.add("w-line-through");
  } else if (type === "Markdown") {
    el = node("div", ["w", "w-markdown", "markdown"]);
    el.append(renderMarkdown(textOf(component.value)));
  } else if (type === "Icon") {
    el = node("span", ["w", "w-icon"], ICONS[component.name] ?? "•");
    el.setAttribute("aria-hidden", "true");
  } else if (type === "Spacer") {
    el = node("span", ["w", "w-spacer"]);
  } else if (type === "Divider") {
    el = node("hr", ["w", "w-divider"]);
  } else if (type === "Button") {
    el = renderButton(component, handlers);
  } else {
    el = node("div", ["w", "w-unknown"]);
    const text = textOf(component.value ?? component.label);
    if (text) el.textContent = text;
    for (const child of childrenOf(component)) el.append(renderWidget(child, handlers));
  }
  for (const [prefix, key] of [
    ["w-color", "color"],
    ["w-size", "size"],
    ["w-variant", "variant"],
    ["w-align", "align"],
  ]) {
    const name = modifier(prefix, component[key]);
    if (name) el.classList.add(name);
  }
  if (typeof component.id === "string") el.dataset.widgetId = component.id;
  return el;
}

function renderButton(component, handlers) {
  const button = node("button", ["w", "w-button", "action"], textOf(component.label));
  button.type = "button";
  const action = component.onClickAction;
  if (!action || typeof action.type !== "string" || action.handler === "client") {
    button.disabled = true;
    return button;
  }
  // data-action: disabled with the other item actions while an answer streams.
  button.dataset.action = "widget";
  button.dataset.actionType = action.type;
  button.addEventListener("click", () =>
    handlers.onAction({ type: action.type, payload: action.payload ?? {} }),
  );
  return button;
}
