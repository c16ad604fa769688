#!/usr/bin/env bash
# make-certs.sh: the certificates of an ol-shim cluster, made with openssl:
#
#   make-certs.sh DIR HOST...
#
# In DIR (made 0700; existing files are kept, so a host can be added later):
#   ca.pem, ca-key.pem          the cluster's CA (keep ca-key.pem offline)
#   HOST.pem, HOST-key.pem      each ol-shim host's server certificate
#                               (subject CN=HOST; names HOST, localhost,
#                               127.0.0.1, and $EXTRA_SANS, e.g.
#                               "IP:192.0.2.7,DNS:worker-7.example")
#   haproxy.pem                 HAProxy's front certificate and key, one file
#   haproxy-client.pem          HAProxy's client certificate and key, for
#                               the hosts (CN=haproxy)
#   client.pem, client-key.pem  a client's certificate (CN=client); more with
#                               CLIENTS="alice bob"
#
# Every certificate is ECDSA P-256, valid for $DAYS days (default 825).
# Each host runs ol-shim with
#   --tls-listen ADDR --tls-cert HOST.pem --tls-key HOST-key.pem --tls-ca ca.pem
#   --tls-proxy CN=haproxy
# and clients use
#   ol-shim --host tcp://PROXY:PORT --tlscacert ca.pem --tlscert client.pem --tlskey client-key.pem ...
set -euo pipefail
if [ $# -lt 1 ]; then
	sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
fi
dir=$1
shift
days=${DAYS:-825}
command -v openssl >/dev/null || { echo "make-certs: openssl not found (apt install openssl)" >&2; exit 1; }
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"

key() { [ -e "$1" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 0600 "$1"; }

# issue NAME CN USAGE SANS: NAME.pem and NAME-key.pem signed by the CA.
issue() {
	local name=$1 cn=$2 usage=$3 sans=$4
	[ -e "$name.pem" ] && return
	key "$name-key.pem"
	local ext
	ext=$(mktemp)
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$usage"
		[ -z "$sans" ] || echo "subjectAltName=$sans"
	} >"$ext"
	openssl req -new -key "$name-key.pem" -subj "/CN=$cn" 2>/dev/null |
		openssl x509 -req -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" -extfile "$ext" -out "$name.pem" 2>/dev/null
	rm -f "$ext"
	echo "make-certs: $dir/$name.pem (CN=$cn, $usage${sans:+, $sans})"
}

if [ ! -e ca.pem ]; then
	key ca-key.pem
	openssl req -x509 -new -key ca-key.pem -subj "/CN=ol-shim cluster CA" -days "$days" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
	echo "make-certs: $dir/ca.pem (the cluster's CA)"
fi
for host in "$@"; do
	issue "$host" "$host" serverAuth "DNS:$host,DNS:localhost,IP:127.0.0.1${EXTRA_SANS:+,$EXTRA_SANS}"
done
issue haproxy-front "ol-shim proxy" serverAuth "DNS:localhost,IP:127.0.0.1${EXTRA_SANS:+,$EXTRA_SANS}"
issue haproxy-to-hosts haproxy clientAuth ""
# HAProxy takes a certificate and its key in one file.
[ -e haproxy.pem ] || { cat haproxy-front.pem haproxy-front-key.pem >haproxy.pem && chmod 0600 haproxy.pem; }
[ -e haproxy-client.pem ] || { cat haproxy-to-hosts.pem haproxy-to-hosts-key.pem >haproxy-client.pem && chmod 0600 haproxy-client.pem; }
for c in ${CLIENTS:-client}; do
	issue "$c" "$c" clientAuth ""
done
