// Renders /openapi.json as plain DOM (text only, never HTML from the spec).

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
};

const refName = (ref) => ref.split("/").pop();
const schemaLink = (ref) => el("a", { href: `#schema-${refName(ref)}` }, el("code", {}, refName(ref)));

function typeOf(schema) {
  if (!schema || typeof schema !== "object") return "any";
  if (schema.$ref) return schemaLink(schema.$ref);
  for (const key of ["oneOf", "anyOf", "allOf"]) {
    if (schema[key]) {
      const span = el("span");
      schema[key].forEach((part, i) => {
        if (i) span.append(key === "allOf" ? " & " : " | ");
        span.append(typeOf(part));
      });
      return span;
    }
  }
  if (schema.const !== undefined) return el("code", {}, JSON.stringify(schema.const));
  if (schema.enum) return el("code", {}, schema.enum.map((v) => JSON.stringify(v)).join(" | "));
  if (schema.type === "array") {
    const span = el("span", {}, "array of ");
    span.append(typeOf(schema.items));
    return span;
  }
  return el("code", {}, schema.type || "object");
}

function renderSchema(name, schema) {
  const body = el("div");
  if (schema.description) body.append(el("p", { class: "muted" }, schema.description));
  if (schema.properties) {
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties).map(([prop, sub]) =>
      el("tr", {}, el("td", {}, el("code", {}, prop), required.has(prop) ? " *" : ""),
        el("td", {}, typeOf(sub)), el("td", { class: "muted" }, sub.description || "")));
    body.append(el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"),
      el("th", {}, "")), ...rows));
  } else {
    body.append(el("p", {}, typeOf(schema)));
  }
  const mapping = schema.discriminator && schema.discriminator.mapping;
  if (mapping) {
    const rows = Object.entries(mapping).map(([value, ref]) =>
      el("tr", {}, el("td", {}, el("code", {}, value)), el("td", {}, schemaLink(ref))));
    body.append(el("p", {}, `By "${schema.discriminator.propertyName}":`), el("table", {}, ...rows));
  }
  return el("details", { id: `schema-${name}` }, el("summary", {}, name), body);
}

function renderOperation(path, method, op) {
  const box = el("article", { class: "op" });
  box.append(el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), path));
  if (op.summary) box.append(el("p", {}, op.summary));
  if (op.description) box.append(el("p", { class: "muted" }, op.description));
  if (op.security) box.append(el("p", {}, "Auth: ", el("code", {}, "Authorization: Bearer <JWT>")));
  const body = op.requestBody && op.requestBody.content;
  if (body) {
    for (const [type, media] of Object.entries(body)) {
      box.append(el("p", {}, "Body (", el("code", {}, type), "): ", typeOf(media.schema)));
    }
  }
  const rows = Object.entries(op.responses || {}).map(([status, response]) => {
    const types = el("td");
    for (const [type, media] of Object.entries(response.content || {})) {
      types.append(el("div", {}, el("code", {}, type), " ", typeOf(media.schema)));
    }
    return el("tr", {}, el("td", {}, el("code", {}, status)),
      el("td", {}, response.description || ""), types);
  });
  box.append(el("table", {}, ...rows));
  return box;
}

async function main() {
  const response = await fetch("/openapi.json");
  const spec = await response.json();
  document.title = `${spec.info.title}: API docs`;
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("description").textContent = spec.info.description || "";
  const operations = document.getElementById("operations");
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(item)) operations.append(renderOperation(path, method, op));
  }
  const schemas = document.getElementById("schemas");
  const entries = Object.entries((spec.components && spec.components.schemas) || {});
  entries.sort(([a], [b]) => a.localeCompare(b));
  for (const [name, schema] of entries) schemas.append(renderSchema(name, schema));
  if (location.hash) document.querySelector(location.hash)?.setAttribute("open", "");
}

main().catch((error) => {
  document.getElementById("operations").append(el("p", {}, `Could not load /openapi.json: ${error}`));
});
