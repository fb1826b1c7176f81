#!/usr/bin/env node
// forge talks to a native solc binary; this shim makes solc-js (npm `solc`) look like one.
// `--version` prints the line forge parses; anything else is a standard-json compile on stdin.
'use strict';
const path = require('path');
const fs = require('fs');
const solc = require(path.join(__dirname, '..', 'node_modules', 'solc'));

if (process.argv.includes('--version')) {
  // forge reads "Version: X.Y.Z" and ignores the commit suffix.
  process.stdout.write('solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n');
  process.exit(0);
}

function findImports(p) {
  // forge inlines every source it resolved, so this is only a fallback for paths relative to cwd.
  for (const base of [process.cwd(), path.join(__dirname, '..', 'node_modules')]) {
    const f = path.join(base, p);
    if (fs.existsSync(f)) return { contents: fs.readFileSync(f, 'utf8') };
  }
  return { error: 'File not found: ' + p };
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const input = Buffer.concat(chunks).toString('utf8');
  process.stdout.write(solc.compile(input, { import: findImports }));
});
