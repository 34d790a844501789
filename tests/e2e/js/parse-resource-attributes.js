// What the OpenTelemetry JS SDK makes of OTEL_RESOURCE_ATTRIBUTES values, for real.
// stdin: a JSON list of values; stdout: a JSON list with, for each value,
//   {"current": {...}, "legacy": {...}}: the attributes that @opentelemetry/resources
// (this package's pinned 3.x, and 2.0.x, the parser before the rewrite, in ./legacy)
// detects from the environment. Both swallow a parse error and detect nothing at all.
'use strict';
const current = require('@opentelemetry/resources');
const legacy = require('./legacy/node_modules/@opentelemetry/resources');

function detect(detector, value) {
  process.env.OTEL_RESOURCE_ATTRIBUTES = value;
  delete process.env.OTEL_SERVICE_NAME;
  const attributes = detector.detect().attributes || {};
  return Object.fromEntries(Object.entries(attributes));
}

const values = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = values.map((value) => ({
  current: detect(current.envDetector, value),
  legacy: detect(legacy.envDetector, value),
}));
process.stdout.write(JSON.stringify(out) + '\n');
