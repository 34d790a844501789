// What the OpenTelemetry JS SDK makes of OTEL_EXPORTER_OTLP_HEADERS values, for real.
// stdin: a JSON list of values; stdout: a JSON list of the header records that
// @opentelemetry/core's parseKeyPairsIntoRecord (what the OTLP exporters call) returns.
'use strict';
const { parseKeyPairsIntoRecord } = require('@opentelemetry/core');

const values = JSON.parse(require('fs').readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(values.map((v) => parseKeyPairsIntoRecord(v))) + '\n');
