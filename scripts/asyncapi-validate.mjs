// Validate an AsyncAPI document with the official parser (npm @asyncapi/parser), as the test does:
//   node scripts/asyncapi-validate.mjs FILE
// Prints every diagnostic (severity, path, message) and a summary line; exit 1 on any error.
// The parser is found through NODE_PATH (scripts/ensure-asyncapi-parser installs it).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const parserDir = process.env.ASYNCAPI_PARSER_DIR;
const resolveFrom = parserDir ? [parserDir + "/node_modules"] : undefined;
const entry = require.resolve("@asyncapi/parser", resolveFrom ? { paths: resolveFrom } : undefined);
const { Parser } = require(entry);
const version = JSON.parse(
  readFileSync(entry.replace(/cjs\/index\.js$|esm\/index\.js$/, "") + "package.json", "utf8")
).version;

const file = process.argv[2];
const text = readFileSync(file, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text, { source: file });
const names = ["error", "warning", "information", "hint"];
for (const d of diagnostics) {
  console.log(`${names[d.severity] ?? d.severity}  ${d.path.join(".") || "(root)"}  ${d.code}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
const warnings = diagnostics.filter((d) => d.severity === 1).length;
console.log(
  `@asyncapi/parser ${version}: ${file}: ${errors} error(s), ${warnings} warning(s), ` +
    `${diagnostics.length - errors - warnings} other; document ${document ? "parsed" : "NOT parsed"}`
);
process.exit(errors === 0 && document ? 0 : 1);
