#!/bin/sh
# The launcher side: read the root-only env file statekit wrote, keep only an allowlist
# of keys, forward them to the agent. No file, no telemetry: the agent starts as before.
set -eu
OTEL_ENV_FILE=${OTEL_ENV_FILE:-/tmp/otel/otel-env}
ALLOWED="CLAUDE_CODE_ENABLE_TELEMETRY CLAUDE_CODE_ENHANCED_TELEMETRY_BETA
OTEL_METRICS_EXPORTER OTEL_LOGS_EXPORTER OTEL_TRACES_EXPORTER
OTEL_EXPORTER_OTLP_PROTOCOL OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_HEADERS
OTEL_LOG_USER_PROMPTS OTEL_LOG_TOOL_DETAILS OTEL_LOG_TOOL_CONTENT OTEL_RESOURCE_ATTRIBUTES"

if [ -f "$OTEL_ENV_FILE" ]; then
    while IFS='=' read -r key value; do
        for allowed in $ALLOWED; do
            if [ "$key" = "$allowed" ]; then
                export "$key=$value"
            fi
        done
    done < "$OTEL_ENV_FILE"
fi
exec "$@"
