#!/usr/bin/env bash
# Makes a test certificate authority and a server certificate it signed,
# for localhost and 127.0.0.1, with openssl:
#
#   bash scripts/tls-cert.sh DIR [NAME]
#
# writes DIR/ca.pem (trust this one in a client), DIR/NAME.pem (the
# server's chain: its certificate, then the CA's) and DIR/NAME.key.
# NAME defaults to "server"; a second run with another NAME signs another
# server certificate with the same CA (a reload test's "renewed" one).
# For tests and local use only: the keys are not protected.
set -euo pipefail
dir=${1:?usage: tls-cert.sh DIR [NAME]}
name=${2:-server}
mkdir -p "$dir"
cd "$dir"
if [[ ! -f ca.pem ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout ca.key -out ca.pem -days 36500 -subj "/CN=wsloop test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=localhost" 2>/dev/null
cat > "$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.crt" -days 36500 -extfile "$name.ext" 2>/dev/null
cat "$name.crt" ca.pem > "$name.pem"
rm -f "$name.csr" "$name.ext" "$name.crt" ca.srl
echo "$dir/ca.pem: the CA; $dir/$name.pem and $dir/$name.key: the server's chain and key"
