# Sourced by the test-deps scripts that install a Debian package (not run by
# scripts/test.sh, which runs only *.sh). The script defines `have` (is the
# dependency there?) and `where` (print what it found), then calls
# `apt_ensure NAME PACKAGE...`: done at once when `have` says so; otherwise,
# as root, apt-get installs PACKAGE... and checks again. Fails loudly when it
# cannot install (not root, or still missing afterwards).

apt_ensure() {
    local name=$1
    shift
    if have; then
        where
        exit 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test-deps/$name.sh: $name missing and not root; run" \
            "'apt-get install $*' as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
    if ! have; then
        echo "scripts/test-deps/$name.sh: $name still missing after apt-get install $*" >&2
        exit 1
    fi
    where
}
