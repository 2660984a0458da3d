// jstext: an MPREG plugin in JavaScript, built with componentize-js.
//
// Build: npx componentize-js app.js --wit wit --world-name jstext -d http -d fetch-event -o jstext.wasm

import { log } from "mpreg:plugin/log@0.1.0";

export function slugify(s) {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

export function wordCount(s) {
  const words = s.trim().split(/\s+/).filter((w) => w.length > 0);
  return words.length;
}

export function wrap(s, width) {
  if (width === 0) {
    return [s];
  }
  const lines = [];
  let line = "";
  for (const word of s.split(/\s+/).filter((w) => w.length > 0)) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line.length > 0 ? `${line} ${word}` : word;
    }
  }
  if (line.length > 0) {
    lines.push(line);
  }
  return lines;
}

export function jsonKeys(doc) {
  let value;
  try {
    value = JSON.parse(doc);
  } catch (e) {
    throw `not JSON: ${e.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw "not a JSON object";
  }
  log("debug", `json-keys: ${Object.keys(value).length} keys`);
  return Object.keys(value);
}

function command(name, exportName, description) {
  return {
    name,
    exportName,
    functionId: `jstext.${name}`,
    resources: [],
    description,
  };
}

export const metadata = {
  describe() {
    return {
      name: "jstext",
      version: "1.0.0",
      resources: ["javascript"],
      commands: [
        command("js_slugify", "slugify", "URL slug of a string (JavaScript)"),
        command("js_word_count", "word-count", "number of words (JavaScript)"),
        command("js_wrap", "wrap", "greedy word wrap (JavaScript)"),
        command("js_json_keys", "json-keys", "keys of a JSON object (JavaScript)"),
      ],
    };
  },
};
