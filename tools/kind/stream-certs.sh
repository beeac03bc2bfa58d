#!/usr/bin/env bash
# Issues the controller stream's TLS material with openssl into DIR:
#   ca.crt ca.key          a private CA (the daemons' trust bundle)
#   server.crt server.key  the controller's certificate for
#                          vpblu-controller.vpblu-system.svc (+ .cluster.local)
# Usage: tools/kind/stream-certs.sh DIR
set -euo pipefail
dir=${1:?usage: stream-certs.sh DIR}
mkdir -p "$dir"
umask 077
name=vpblu-controller.vpblu-system.svc
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=vpblu stream CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$name" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local,DNS:vpblu-controller\nextendedKeyUsage=serverAuth\n' \
  "$name" "$name" >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 90 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
echo "$dir"
