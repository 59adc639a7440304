// Parses an AsyncAPI document with the official parser (@asyncapi/parser, its default Spectral
// ruleset) and prints every diagnostic; exits 1 when any has error severity or no document came
// out. Usage: node asyncapi-parse.mjs NODE_MODULES_DIR FILE
import { createRequire } from "node:module";
import { resolve } from "node:path";

const [modules, file] = process.argv.slice(2);
if (!modules || !file) {
  console.error("usage: node asyncapi-parse.mjs NODE_MODULES_DIR FILE");
  process.exit(2);
}
// The parser lives in the tool cache, not next to this script.
const require = createRequire(resolve(modules) + "/");
const { Parser, fromFile, DiagnosticSeverity } = require("@asyncapi/parser");

const names = Object.fromEntries(Object.entries(DiagnosticSeverity).map(([k, v]) => [v, k]));
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, resolve(file)).parse();
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors++;
  const where = d.path && d.path.length ? ` at ${d.path.join("/")}` : "";
  const src = d.source && resolve(d.source) !== resolve(file) ? ` (${d.source})` : "";
  console.log(`${names[d.severity] ?? d.severity} ${d.code}: ${d.message}${where}${src}`);
}
if (!document) {
  console.log(`${file}: the parser produced no document`);
  process.exit(1);
}
const channels = document.channels().length;
const messages = document.allMessages().length;
const version = require("@asyncapi/parser/package.json").version;
console.log(
  `${file}: AsyncAPI ${document.version()}, ${channels} channels, ${messages} messages; ` +
    `${diagnostics.length} diagnostics, ${errors} errors (@asyncapi/parser ${version})`,
);
process.exit(errors ? 1 : 0);
