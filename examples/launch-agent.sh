#!/bin/sh
# The launcher side: read the root-only env file statekit wrote, keep only an allowlist
# of keys, forward them to the agent. No file, no telemetry: the agent starts as before.
#   - the file is read only if it is what statekit writes: a regular file (not a
#     symlink), owned by root, mode 0600, one link, in a directory (not a symlink) owned
#     by root and not writable by group or others. Anything else is refused with the
#     reason on stderr, nothing from it is exported, and the agent starts without
#     telemetry. The checks look at the path without following a symlink (stat, not
#     stat -L); the file is then opened once, on fd 3, and that fd is checked to be the
#     very file checked (device, inode, mode, owner, links), so a swap between the check
#     and the open is refused too;
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
why=""      # why the file is not read
checked=""  # what the checks saw of the file: mode, owner, links, device, inode

stat_of() {  # PATH: "MODE(hex) UID LINKS DEVICE INODE" of PATH itself (a symlink is not followed)
    /usr/bin/stat -c '%f %u %h %d %i' -- "$1" 2>/dev/null
}

trusted() {  # whether the env file may be read; else why it may not (in $why)
    dir=${OTEL_ENV_FILE%/*}
    [ "$dir" != "$OTEL_ENV_FILE" ] || dir=.
    dir=${dir:-/}
    set -- $(stat_of "$dir")
    [ $# = 5 ] || { why="cannot stat its directory $dir"; return 1; }
    mode=$((0x$1))
    case $((mode & 0xF000)) in
        $((0x4000))) ;;
        $((0xA000))) why="its directory $dir is a symlink"; return 1 ;;
        *) why="its directory $dir is not a directory"; return 1 ;;
    esac
    [ "$2" = 0 ] || { why="its directory $dir is owned by uid $2, not root"; return 1; }
    if [ $((mode & 0x12)) != 0 ]; then
        why=$(printf 'its directory %s is writable by group or others (mode %04o)' \
            "$dir" $((mode & 0xFFF)))
        return 1
    fi
    checked=$(stat_of "$OTEL_ENV_FILE") || { why="cannot stat it"; return 1; }
    set -- $checked
    mode=$((0x$1))
    case $((mode & 0xF000)) in
        $((0x8000))) ;;
        $((0xA000))) why="it is a symlink"; return 1 ;;
        *) why="it is not a regular file"; return 1 ;;
    esac
    [ "$2" = 0 ] || { why="it is owned by uid $2, not root"; return 1; }
    if [ $((mode & 0xFFF)) != $((0x180)) ]; then
        why=$(printf 'its mode is %04o, not 0600' $((mode & 0xFFF)))
        return 1
    fi
    [ "$3" = 1 ] || { why="it has $3 hard links, not 1"; return 1; }
}

load() {  # export the allowed keys from fd 3, once it is checked to be the file checked
    opened=$(/usr/bin/stat -L -c '%f %u %h %d %i' /dev/fd/3 2>/dev/null) || opened=""
    if [ "$opened" != "$checked" ]; then
        why="it changed between the check and the open"
        return 1
    fi
    while IFS= read -r line || [ -n "$line" ]; do
        key=${line%%=*}
        [ "$key" != "$line" ] || continue   # no '=' on this line
        value=${line#*=}
        for allowed in $OTEL_ALLOWED_KEYS; do
            if [ "$key" = "$allowed" ]; then
                export "$key=$value"
            fi
        done
    done <&3
}

if [ -e "$OTEL_ENV_FILE" ] || [ -L "$OTEL_ENV_FILE" ]; then
    why="it could not be opened"
    if ! { trusted && load 3< "$OTEL_ENV_FILE"; }; then
        echo "launch-agent: $OTEL_ENV_FILE: not read: $why; the agent starts without" \
            "telemetry" >&2
    fi
fi
exec /usr/bin/env -u GRAFANA_INSTANCE_ID -u GRAFANA_API_TOKEN -u GRAFANA_OTLP_ENDPOINT \
    -- "$@"
