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
# Phase network runs with --require-lockdown: whatever happened, statekit then reads the
# firewall afresh and exits 4 unless the lockdown is in place. The agent starts only when
# it is: a converge that exits 1 (a name that did not resolve) or 3 (an invalid telemetry
# input) is logged and the boot goes on, locked down (docs/failure-model.md), and the
# refresh loop retries; any other exit (4: not locked down; 127: no statekit; 120: a
# crash) stops the boot, non-zero, so that the orchestrator restarts the machine.
set -eu
STATEKIT=${STATEKIT:-statekit}  # the installed command runs its Python isolated (-I)
STATES=${STATES:-/opt/statekit/states}
ROOT=${STATEKIT_ROOT:-/}
here=$(dirname "$0")

converge() {  # phase [option...]: rc is statekit's exit code; a failure is logged
    rc=0
    $STATEKIT converge --root "$ROOT" --phase "$@" "$STATES" || rc=$?
    [ "$rc" = 0 ] || echo "entrypoint: statekit converge --phase $1 exited $rc" >&2
}

converge network --require-lockdown                            # before network setup
case $rc in
    0) ;;
    1|2|3) echo "entrypoint: booting on (locked down; the refresh retries)" >&2 ;;
    *) echo "entrypoint: the lockdown is not in place: not starting the agent" >&2
       exit 1 ;;
esac
${START_DNS:-true}                                             # network setup
${AUTH_SETUP:-true}                                            # auth setup
converge auth                                                  # after auth setup

if [ "${REFRESH:-300}" != 0 ]; then
    ( while sleep "${REFRESH:-300}"; do converge network; done ) &
fi
OTEL_ENV_FILE="$ROOT/tmp/otel/otel-env" exec "$here/launch-agent.sh" "$@"
