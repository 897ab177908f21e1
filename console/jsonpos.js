// Where each value sits in a JSON text, so that an error the API reports at a location such as
// `pre[2].params.fields[0]` is shown at that place in the editor. A small parser over the
// text as typed (JSON.parse gives no positions); it reads only valid JSON — the editor checks
// validity with JSON.parse first.

/**
 * Map of location → {start, end} (character offsets of the member, key included, in `text`).
 * Locations: `name`, `a.b`, `a[0]`, `a[0].b`: the API's own notation.
 */
export function locate(text) {
  const spans = new Map();
  let i = 0;
  const ws = () => {
    while (i < text.length && " \t\r\n".includes(text[i])) i++;
  };
  const string = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const value = (path, memberStart) => {
    ws();
    const start = memberStart ?? i;
    const c = text[i];
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") i++;
      else
        for (;;) {
          ws();
          const keyStart = i;
          const key = string();
          ws();
          i++; // ':'
          value(path ? `${path}.${key}` : key, keyStart);
          ws();
          if (text[i++] === "}") break;
        }
    } else if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") i++;
      else
        for (let n = 0; ; n++) {
          value(`${path}[${n}]`);
          ws();
          if (text[i++] === "]") break;
        }
    } else if (c === '"') {
      string();
    } else {
      while (i < text.length && !",}] \t\r\n".includes(text[i])) i++;
    }
    if (path) spans.set(path, { start, end: i });
  };
  value("");
  return spans;
}

/**
 * The span of `location` in the located text, or of its nearest located ancestor (a missing
 * parameter is reported at its name, which is not in the text: its operation's `params` is).
 * null when nothing of it is there (`(config)`: the whole document).
 */
export function spanOf(spans, location) {
  let loc = location;
  while (loc) {
    if (spans.has(loc)) return { ...spans.get(loc), exact: loc === location, at: loc };
    const cut = Math.max(loc.lastIndexOf("."), loc.lastIndexOf("["));
    if (cut <= 0) break;
    loc = loc.slice(0, cut);
  }
  return null;
}

/** 1-based line number of a character offset. */
export function lineOf(text, offset) {
  let line = 1;
  for (let k = 0; k < offset && k < text.length; k++) if (text[k] === "\n") line++;
  return line;
}
