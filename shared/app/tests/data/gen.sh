#!/usr/bin/env bash
# Regenerates the test-only certificate authority and the `localhost` certificate it signs
# (used by shared/app/tests/tls.rs; valid for a century, not secret).
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=mpesa-express test CA" -keyout test-ca.key -out test-ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout localhost.key -out localhost.csr
openssl x509 -req -in localhost.csr -CA test-ca.pem -CAkey test-ca.key -CAcreateserial \
  -days 36500 -out localhost.pem -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth")
rm -f localhost.csr test-ca.srl test-ca.key
