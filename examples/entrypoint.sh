#!/bin/sh
# The container's entrypoint, as SPEC.md orders it, with statekit doing the state work.
#   phase network before network setup, phase auth after auth setup, then the refresh loop.
# Hooks (defaults are the container's; the demo points them at its sandbox):
#   STATEKIT       how to run statekit          (default: statekit)
#   STATES         the state directory          (default: /opt/statekit/states)
#   STATEKIT_ROOT  --root for every path        (default: /)
#   START_DNS      starts CoreDNS on the Corefile statekit wrote (network setup)
#   AUTH_SETUP     git, gh, npm credentials
#   REFRESH        seconds between refreshes    (default: 300; 0: no refresh loop)
# A converge that exits non-zero (a name that did not resolve: 1; an invalid telemetry
# input: 3) is logged and the boot goes on: statekit has still written the lockdown
# (docs/failure-model.md), and the refresh loop retries.
set -eu
STATEKIT=${STATEKIT:-statekit}  # the installed command runs its Python isolated (-I)
STATES=${STATES:-/opt/statekit/states}
ROOT=${STATEKIT_ROOT:-/}
here=$(dirname "$0")

converge() {  # phase
    rc=0
    $STATEKIT converge --root "$ROOT" --phase "$1" "$STATES" || rc=$?
    [ "$rc" = 0 ] || echo "entrypoint: statekit converge --phase $1 exited $rc;" \
        "booting on (locked down; the refresh retries)" >&2
}

converge network                                               # before network setup
${START_DNS:-true}                                             # network setup
${AUTH_SETUP:-true}                                            # auth setup
converge auth                                                  # after auth setup

if [ "${REFRESH:-300}" != 0 ]; then
    ( while sleep "${REFRESH:-300}"; do converge network; done ) &
fi
OTEL_ENV_FILE="$ROOT/tmp/otel/otel-env" exec "$here/launch-agent.sh" "$@"
