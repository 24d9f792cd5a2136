#!/bin/sh
# The gateway's build steps, one place for both users of them: the image (docker/Dockerfile) and the
# deployment test (tests/deploy/conftest.py builds and installs with this script, then runs the services
# of docker/compose.yaml from what it installed). docker/README.md says more.
#
#   build.sh wheel SOURCE OUT              the gateway's wheel (no dependencies) from the source tree SOURCE
#   build.sh wheelhouse WHEEL OUT          that wheel and all its dependencies as wheels, into OUT
#   build.sh install WHEELHOUSE PYTHON     the gateway and its dependencies from WHEELHOUSE alone (no index)
#                                          into the environment of the interpreter PYTHON (a virtualenv's)
#
# BUILD_PYTHON names the interpreter whose pip does the work (default: python3); pip's cache serves what
# it has, and the package index the rest.
set -eu

pip() {
    "${BUILD_PYTHON:-python3}" -m pip --disable-pip-version-check "$@"
}

usage() {
    sed -n '6,10p' "$0" >&2
    exit 2
}

[ $# -eq 3 ] || usage
case "$1" in
    wheel) pip wheel --no-deps --quiet --wheel-dir "$3" "$2" ;;
    wheelhouse) pip wheel --quiet --wheel-dir "$3" "$2" ;;
    install) pip --python "$3" install --quiet --no-index --find-links "$2" fhir-home-device-gateway ;;
    *) usage ;;
esac
