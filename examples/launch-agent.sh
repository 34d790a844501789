#!/bin/sh
# The launcher side: read the root-only env file statekit wrote, keep only an allowlist
# of keys, forward them to the agent. No file, no telemetry: the agent starts as before.
#   - each line is split at its FIRST '=': the value is the rest of the line, byte for
#     byte ('=' anywhere in it, a trailing '=' or '==' of base64 padding included);
#   - only the keys in OTEL_ALLOWED_KEYS pass (the reference launcher's list);
#   - the agent never receives the GRAFANA_* inputs, whatever the entrypoint exported.
set -eu
OTEL_ENV_FILE=${OTEL_ENV_FILE:-/tmp/otel/otel-env}
OTEL_ALLOWED_KEYS="CLAUDE_CODE_ENABLE_TELEMETRY CLAUDE_CODE_ENHANCED_TELEMETRY_BETA
OTEL_METRICS_EXPORTER OTEL_LOGS_EXPORTER OTEL_TRACES_EXPORTER
OTEL_EXPORTER_OTLP_PROTOCOL OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_HEADERS
OTEL_LOG_USER_PROMPTS OTEL_LOG_TOOL_DETAILS OTEL_LOG_TOOL_CONTENT OTEL_RESOURCE_ATTRIBUTES"

if [ -f "$OTEL_ENV_FILE" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        key=${line%%=*}
        [ "$key" != "$line" ] || continue   # no '=' on this line
        value=${line#*=}
        for allowed in $OTEL_ALLOWED_KEYS; do
            if [ "$key" = "$allowed" ]; then
                export "$key=$value"
            fi
        done
    done < "$OTEL_ENV_FILE"
fi
exec /usr/bin/env -u GRAFANA_INSTANCE_ID -u GRAFANA_API_TOKEN -u GRAFANA_OTLP_ENDPOINT \
    -- "$@"
