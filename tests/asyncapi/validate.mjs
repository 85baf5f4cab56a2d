// Parse AsyncAPI documents with the AsyncAPI project's own parser (@asyncapi/parser), offline.
//
//   node validate.mjs DOCUMENT...   (files, JSON or YAML)
//
// Prints one JSON line per document: {"document", "valid", "version", "errors", "others"}
// (each diagnostic as "path: message"); exits 1 when any document was refused (an error, or
// not parsed at all), 0 when every one is valid. Warnings and hints never refuse a document.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const ERROR = 0;
const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node validate.mjs DOCUMENT...");
  process.exit(2);
}
const parser = new Parser();
let refused = 0;
for (const path of paths) {
  const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"));
  const line = (d) => `${d.path.length ? d.path.join(".") : "(document)"}: ${d.message}`;
  const errors = diagnostics.filter((d) => d.severity === ERROR).map(line);
  const others = diagnostics.filter((d) => d.severity !== ERROR).map(line);
  const valid = document !== undefined && errors.length === 0;
  if (!valid) refused += 1;
  const version = document === undefined ? null : document.version();
  console.log(JSON.stringify({ document: path, valid, version, errors, others }));
}
process.exit(refused > 0 ? 1 : 0);
