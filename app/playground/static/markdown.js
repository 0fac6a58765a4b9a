// A small, safe markdown renderer: it builds DOM nodes and sets only text, never HTML.
// Supported: paragraphs, **bold**, *italic*, `code`, ``` code blocks, - / 1. lists,
// [links](https://...) and bare http(s) URLs. Anything else shows as the text it is.

const FENCE = /^\s*(`{3,}|~{3,})/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;

// Inline patterns, tried at the position of their first character (sticky regexes).
const CODE_SPAN = /(`+)([\s\S]+?)\1(?!`)/y;
const STRONG = /(\*\*|__)(?=\S)([\s\S]*?\S)\1/y;
const EMPHASIS_STAR = /\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/y;
const EMPHASIS_UNDERSCORE = /_(?=[^\s_])([\s\S]*?[^\s_])_(?![\p{L}\p{N}_])/uy;
const LINK = /\[([^\]\n]+)\]\(\s*([^\s()]+)\s*\)/y;
const BARE_URL = /https?:\/\/[^\s<>()"']*[^\s<>()"'.,;:!?*_]/y;
const WORD_CHAR = /[\p{L}\p{N}_]/u;

/** The href for `url` when it is an absolute http(s) URL, else null. */
export function safeHref(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** Render `text` as a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (absent while an answer is still streaming)
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = body.join("\n");
      pre.append(code);
      fragment.append(pre);
    } else if (!line.trim()) {
      i += 1;
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      i = renderList(lines, i, fragment);
    } else if (HEADING.test(line)) {
      const paragraph = document.createElement("p");
      const strong = document.createElement("strong");
      appendInline(strong, HEADING.exec(line)[1]);
      paragraph.append(strong);
      fragment.append(paragraph);
      i += 1;
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
        body.push(lines[i].trim());
        i += 1;
      }
      const paragraph = document.createElement("p");
      appendInline(paragraph, body.join("\n"));
      fragment.append(paragraph);
    }
  }
  return fragment;
}

function startsBlock(line) {
  return FENCE.test(line) || BULLET.test(line) || NUMBERED.test(line) || HEADING.test(line);
}

function renderList(lines, start, parent) {
  const ordered = !BULLET.test(lines[start]);
  const pattern = ordered ? NUMBERED : BULLET;
  const list = document.createElement(ordered ? "ol" : "ul");
  if (ordered) {
    const first = Number(NUMBERED.exec(lines[start])[1]);
    if (first !== 1) list.start = first;
  }
  let i = start;
  let current = null;
  while (i < lines.length) {
    const line = lines[i];
    const match = pattern.exec(line);
    if (match) {
      current = [ordered ? match[2] : match[1]];
      const item = document.createElement("li");
      list.append(item);
      i += 1;
      // Indented lines that follow belong to the same item.
      while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !startsBlock(lines[i])) {
        current.push(lines[i].trim());
        i += 1;
      }
      appendInline(item, current.join("\n"));
    } else {
      break;
    }
  }
  parent.append(list);
  return i;
}

/** Append the inline content of `text` to `parent` (no links inside a link). */
export function appendInline(parent, text, links = true) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = "";
  };
  const at = (pattern, index) => {
    pattern.lastIndex = index;
    return pattern.exec(text);
  };
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    const before = i > 0 ? text[i - 1] : "";
    let match = null;
    if (char === "\n") {
      flush();
      parent.append(document.createElement("br"));
      i += 1;
      continue;
    }
    if (char === "`" && (match = at(CODE_SPAN, i))) {
      flush();
      const code = document.createElement("code");
      code.textContent = match[2];
      parent.append(code);
    } else if ((char === "*" || char === "_") && (match = at(STRONG, i))) {
      flush();
      const strong = document.createElement("strong");
      appendInline(strong, match[2], links);
      parent.append(strong);
    } else if (
      (char === "*" && (match = at(EMPHASIS_STAR, i))) ||
      (char === "_" && !WORD_CHAR.test(before) && (match = at(EMPHASIS_UNDERSCORE, i)))
    ) {
      flush();
      const em = document.createElement("em");
      appendInline(em, match[1], links);
      parent.append(em);
    } else if (links && char === "[" && (match = at(LINK, i))) {
      const href = safeHref(match[2]);
      if (href) {
        flush();
        parent.append(link(href, match[1]));
      } else {
        plain += match[1]; // an unsafe target: keep the words, drop the link
      }
    } else if (links && char === "h" && !WORD_CHAR.test(before) && (match = at(BARE_URL, i))) {
      const href = safeHref(match[0]);
      if (href) {
        flush();
        parent.append(link(href, match[0]));
      } else {
        plain += match[0];
      }
    } else {
      plain += char;
      i += 1;
      continue;
    }
    i += match[0].length;
  }
  flush();
}

function link(href, label) {
  const anchor = document.createElement("a");
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer nofollow";
  appendInline(anchor, label, false);
  return anchor;
}
