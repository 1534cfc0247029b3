#!/usr/bin/env bash
# Builds the uWebSockets bench servers (echo.cpp, pubsub.cpp) against a
# checkout of uNetworking/uWebSockets with uNetworking/uSockets in its
# uSockets/ folder (a git submodule upstream):
#
#   bash bench/uws/build.sh UWS_DIR OUT_DIR
#
# No TLS (LIBUS_NO_SSL), no zlib (UWS_NO_ZLIB: the servers never
# compress), -O3 with link-time optimisation as uSockets' own Makefile
# builds, in one LTO partition (one job, and no warning about it). One
# compiler at a time. Rebuilds only what is older than its sources or
# this script.
set -euo pipefail
uws=$(cd "$1" && pwd)
out=$2
here=$(cd "$(dirname "$0")" && pwd)
for f in "$uws/src/App.h" "$uws/uSockets/src/libusockets.h"; do
    if [ ! -f "$f" ]; then
        echo "build.sh: $f is missing: is $uws a uWebSockets checkout with uSockets in uSockets/?" >&2
        exit 1
    fi
done
CC=${CC:-gcc}
CXX=${CXX:-g++}
mkdir -p "$out/obj"

# uSockets, once: its C files with epoll, no TLS. Without TLS the C++ in
# src/crypto (the SNI tree) is not needed.
lib="$out/obj/uSockets.a"
if [ ! -f "$lib" ] || [ "$here/build.sh" -nt "$lib" ] \
    || [ -n "$(find "$uws/uSockets/src" -newer "$lib" -name '*.[ch]' | head -1)" ]; then
    rm -f "$out"/obj/*.o
    for c in "$uws"/uSockets/src/*.c "$uws"/uSockets/src/eventing/*.c "$uws"/uSockets/src/crypto/*.c; do
        "$CC" -O3 -flto -flto-partition=one -DLIBUS_NO_SSL -std=c11 -I"$uws/uSockets/src" \
            -c "$c" -o "$out/obj/$(basename "${c%.c}").o"
    done
    ar rcs "$lib" "$out"/obj/*.o
fi

for name in echo pubsub; do
    bin="$out/uws_$name"
    if [ ! -f "$bin" ] || [ "$here/$name.cpp" -nt "$bin" ] || [ "$here/common.h" -nt "$bin" ] \
        || [ "$lib" -nt "$bin" ]; then
        "$CXX" -O3 -flto -flto-partition=one -std=c++20 -DLIBUS_NO_SSL -DUWS_NO_ZLIB \
            -I"$uws/src" -I"$uws/uSockets/src" \
            "$here/$name.cpp" "$lib" -o "$bin"
    fi
done
