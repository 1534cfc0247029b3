# Helpers shared by the scripts: install Debian packages on demand, and run
# an example in the background until it prints its address.

# Where cargo puts the examples: target/, or CARGO_TARGET_DIR when set (as
# cargo itself reads it). Logs stay in target/.
EXAMPLES="${CARGO_TARGET_DIR:-target}/release/examples"
mkdir -p target

# need_apt COMMAND PACKAGE...: installs the packages if COMMAND is missing.
need_apt() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# need_venv_module MODULE PACKAGE: makes target/venv, and installs PACKAGE
# there if its Python cannot import MODULE.
need_venv_module() {
    [ -x target/venv/bin/python ] || python3 -m venv target/venv
    target/venv/bin/python -c "import $1" 2>/dev/null ||
        target/venv/bin/pip install --quiet --disable-pip-version-check "$2"
}

# need_playwright: Debian's chromium, and playwright-core under
# target/browser, where tests/browser/lib.cjs looks for it.
need_playwright() {
    need_apt chromium chromium
    if [ ! -d target/browser/node_modules/playwright-core ]; then
        mkdir -p target/browser
        npm install --prefix target/browser --no-audit --no-fund --silent playwright-core@1
    fi
}

# start_example NAME MARKER ARGS...: starts $EXAMPLES/NAME and
# waits for the line "NAME: MARKER..." that carries its address; sets ADDR
# (host:port) and EXAMPLE_PID. The log is target/NAME.log.
start_example() {
    local name=$1 marker=$2
    shift 2
    local log="target/$name.log"
    "$EXAMPLES/$name" "$@" >"$log" 2>&1 &
    EXAMPLE_PID=$!
    trap stop_example EXIT
    ADDR=""
    for _ in $(seq 100); do
        ADDR=$(sed -n "s|^$name: $marker\([^/ ]*\).*|\1|p" "$log" | head -n 1)
        [ -n "$ADDR" ] && return 0
        kill -0 "$EXAMPLE_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log"
    echo "$name did not start" >&2
    exit 1
}

# stop_example: SIGTERM the example and require a clean exit.
stop_example() {
    [ -n "${EXAMPLE_PID:-}" ] || return 0
    local pid=$EXAMPLE_PID
    EXAMPLE_PID=""
    trap - EXIT
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid"
}

# free_port: prints a TCP port that was free on 127.0.0.1 a moment ago.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
