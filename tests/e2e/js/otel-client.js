// The env file's consumer as the agent is one: a Node.js program with the OpenTelemetry
// JS SDK (@opentelemetry/sdk-node), configured ONLY by its environment, the way
// examples/launch-agent.sh hands it over (plus NODE_EXTRA_CA_CERTS: trust, not config).
// It exports one span, one metric point and one log record, then shuts the SDK down
// (which flushes every exporter). One JSON line on stdout: the GRAFANA_* variables it
// could see (there must be none) and the export errors. Exit 0 when no export failed (the receiver checks that each arrived).
'use strict';
const api = require('@opentelemetry/api');
const { setGlobalErrorHandler } = require('@opentelemetry/core');
const { NodeSDK } = require('@opentelemetry/sdk-node');

const errors = [];
// Every failed export reaches the global error handler (batch processors, metric reader).
setGlobalErrorHandler((err) => errors.push(String(err && err.message || err)));

async function main() {
  api.diag.setLogger(new api.DiagConsoleLogger(), api.DiagLogLevel.WARN);
  const sdk = new NodeSDK({ instrumentations: [] });
  sdk.start();

  const span = api.trace.getTracer('statekit.e2e.js').startSpan('statekit.e2e.js.span');
  span.setAttribute('statekit.e2e', true);
  span.end();
  api.metrics.getMeter('statekit.e2e.js').createCounter('statekit.e2e.js.counter')
    .add(1, { e2e: 'yes' });
  api.logs.getLogger('statekit.e2e.js').emit({
    body: 'statekit e2e js log record', severityNumber: api.SeverityNumber.INFO,
    severityText: 'INFO',
  });
  await sdk.shutdown();

  const ok = errors.length === 0;
  process.stdout.write(JSON.stringify({
    ok, errors,
    grafana: Object.keys(process.env).filter((k) => k.startsWith('GRAFANA_')),
  }) + '\n');
  return ok ? 0 : 1;
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`${err && err.stack || err}\n`);
  process.exit(1);
});
