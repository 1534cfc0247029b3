#!/usr/bin/env bash
# Builds tls_echo.cpp, the uWebSockets echo server over TLS, against the
# same checkout build.sh takes, with uSockets' OpenSSL layer (WITH_OPENSSL=1
# in uSockets' Makefile: LIBUS_USE_OPENSSL, src/crypto/*, -lssl -lcrypto).
# Needs libssl-dev (Debian: apt-get install libssl-dev).
#
#   bash bench/uws/build-tls.sh UWS_DIR OUT_DIR    # makes OUT_DIR/uws_tls_echo
#
# -O3 with link-time optimisation as build.sh; objects in OUT_DIR/obj-tls,
# apart from the plain build's. Rebuilds only what is out of date.
set -euo pipefail
uws=$(cd "$1" && pwd)
out=$2
here=$(cd "$(dirname "$0")" && pwd)
for f in "$uws/src/App.h" "$uws/uSockets/src/libusockets.h" "$uws/uSockets/src/crypto/openssl.c"; do
    if [ ! -f "$f" ]; then
        echo "build-tls.sh: $f is missing: is $uws a uWebSockets checkout with uSockets in uSockets/?" >&2
        exit 1
    fi
done
if [ ! -f /usr/include/openssl/ssl.h ]; then
    echo "build-tls.sh: no OpenSSL headers: apt-get install libssl-dev" >&2
    exit 1
fi
CC=${CC:-gcc}
CXX=${CXX:-g++}
obj="$out/obj-tls"
mkdir -p "$obj"
flags=(-O3 -flto -flto-partition=one -DLIBUS_USE_OPENSSL -I"$uws/uSockets/src")

lib="$obj/uSockets-tls.a"
if [ ! -f "$lib" ] || [ "$here/build-tls.sh" -nt "$lib" ] \
    || [ -n "$(find "$uws/uSockets/src" -newer "$lib" -name '*.[ch]*' | head -1)" ]; then
    rm -f "$obj"/*.o
    for c in "$uws"/uSockets/src/*.c "$uws"/uSockets/src/eventing/*.c "$uws"/uSockets/src/crypto/*.c; do
        # uSockets calls OpenSSL 1.1 functions that 3.0 deprecates (DH params).
        "$CC" "${flags[@]}" -std=c11 -Wno-deprecated-declarations -c "$c" -o "$obj/$(basename "${c%.c}").o"
    done
    # The SNI tree is C++.
    "$CXX" "${flags[@]}" -std=c++17 -c "$uws/uSockets/src/crypto/sni_tree.cpp" -o "$obj/sni_tree.o"
    ar rcs "$lib" "$obj"/*.o
fi

bin="$out/uws_tls_echo"
if [ ! -f "$bin" ] || [ "$here/tls_echo.cpp" -nt "$bin" ] || [ "$here/common.h" -nt "$bin" ] \
    || [ "$lib" -nt "$bin" ]; then
    "$CXX" "${flags[@]}" -std=c++20 -DUWS_NO_ZLIB -I"$uws/src" \
        "$here/tls_echo.cpp" "$lib" -lssl -lcrypto -o "$bin"
fi
