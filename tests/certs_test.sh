#!/usr/bin/env bash
# Checks for certs/fedtune-certs: the CA, coordinator and site certificates it makes
# (extensions, key modes), what `openssl verify` accepts and refuses (other CA,
# expired, not yet valid, revoked, wrong purpose), CRLs, kits and its errors.
# Usage: certs_test.sh <path to fedtune-certs>
set -u
export LC_ALL=C
CERTS=$(realpath "$1")
# shellcheck source=tests/lib.sh
. "$(dirname "$(realpath "$0")")/lib.sh"
cd "$tmp" || exit 1

# refuse <substring of stderr+stdout> -- command...: the command fails (any non-zero
# exit, e.g. openssl verify) and says so.
refuse() {
  local want=$1
  shift 2
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "FAIL: $* -> exit 0, expected a failure; output: $out" >&2
    fail=$((fail + 1))
  elif [[ "$out" != *"$want"* ]]; then
    echo "FAIL: $* -> output lacks \"$want\": $out" >&2
    fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
}

# same <what> <got> <want>
same() {
  if [ "$2" = "$3" ]; then pass=$((pass + 1)); else
    echo "FAIL: $1: got \"$2\", expected \"$3\"" >&2
    fail=$((fail + 1))
  fi
}

# ext <cert> <extension>: the extension's value lines, trimmed, joined by "|".
ext() {
  openssl x509 -in "$1" -noout -ext "$2" 2>/dev/null | tail -n +2 | sed 's/^ *//; s/ *$//' | paste -sd'|'
}
mode() { stat -c %a "$1"; }
serial() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }
pubkey() { openssl pkey -in "$1" -pubout 2>/dev/null || openssl x509 -in "$1" -noout -pubkey; }
later() { date -u -d "$1" +%Y%m%d%H%M%SZ; }

# Usage and help.
expect 0 "usage: fedtune-certs <command>" -- "$CERTS" --help
for c in init-ca coordinator site admin csr sign kit revoke crl list; do
  expect 0 "usage: fedtune-certs $c" -- "$CERTS" "$c" --help
done
expect 0 "--not-before YYYYMMDDHHMMSSZ" -- "$CERTS" site --help
expect 2 "usage: fedtune-certs <command>" -- "$CERTS"
expect 2 'fedtune-certs: unknown command "frobnicate"' -- "$CERTS" frobnicate
expect 2 "fedtune-certs: site: unknown option --day (see fedtune-certs site --help)" -- "$CERTS" site ca x --day 3
expect 2 "fedtune-certs: site: --days: 0 is outside [1, 36500]" -- "$CERTS" site ca x --days 0
expect 1 "fedtune-certs: ca: no such CA folder" -- "$CERTS" site ca alice

# The CA.
expect 0 'created the CA "fedtune federation CA"' -- "$CERTS" init-ca ca
same "ca.key mode" "$(mode ca/ca.key)" 600
same "CA folder mode" "$(mode ca)" 700
same "CA basicConstraints" "$(ext ca/ca.crt basicConstraints)" "CA:TRUE, pathlen:0"
expect 0 "X509v3 Basic Constraints: critical" -- openssl x509 -in ca/ca.crt -noout -ext basicConstraints
expect 0 "X509v3 Key Usage: critical" -- openssl x509 -in ca/ca.crt -noout -ext keyUsage
same "CA keyUsage" "$(ext ca/ca.crt keyUsage)" "Certificate Sign, CRL Sign"
expect 0 "Subject Key Identifier" -- openssl x509 -in ca/ca.crt -noout -ext subjectKeyIdentifier
expect 0 "fedtune federation CA" -- openssl x509 -in ca/ca.crt -noout -subject
expect 0 "ASN1 OID: prime256v1" -- openssl pkey -in ca/ca.key -noout -text
expect 0 "verify OK" -- openssl crl -in ca/crl.pem -CAfile ca/ca.crt -noout
fp=$(openssl x509 -in ca/ca.crt -noout -fingerprint -sha256)
expect 1 "fedtune-certs: ca already holds a CA (ca.key exists); refusing to overwrite it" -- "$CERTS" init-ca ca
same "CA after a refused init-ca" "$(openssl x509 -in ca/ca.crt -noout -fingerprint -sha256)" "$fp"

# The coordinator: serverAuth only, names in subjectAltName.
expect 0 "DNS:localhost, IP:127.0.0.1" -- "$CERTS" coordinator ca localhost --ip 127.0.0.1
crt=ca/coordinator/localhost.crt
same "coordinator key mode" "$(mode ca/coordinator/localhost.key)" 600
same "coordinator extendedKeyUsage" "$(ext $crt extendedKeyUsage)" "TLS Web Server Authentication"
same "coordinator subjectAltName" "$(ext $crt subjectAltName)" "DNS:localhost, IP Address:127.0.0.1"
same "coordinator basicConstraints" "$(ext $crt basicConstraints)" "CA:FALSE"
same "coordinator keyUsage" "$(ext $crt keyUsage)" "Digital Signature"
same "coordinator authorityKeyIdentifier" "$(ext $crt authorityKeyIdentifier)" "$(ext ca/ca.crt subjectKeyIdentifier)"
expect 0 "$crt: OK" -- openssl verify -CAfile ca/ca.crt -purpose sslserver $crt
expect 0 "$crt: OK" -- openssl verify -CAfile ca/ca.crt -verify_hostname localhost $crt
expect 0 "$crt: OK" -- openssl verify -CAfile ca/ca.crt -verify_ip 127.0.0.1 $crt
refuse "hostname mismatch" -- openssl verify -CAfile ca/ca.crt -verify_hostname other.example $crt
refuse "unsuitable certificate purpose" -- openssl verify -CAfile ca/ca.crt -purpose sslclient $crt
same "coordinator public key" "$(pubkey ca/coordinator/localhost.key)" "$(pubkey $crt)"
expect 1 "localhost.crt exists (use --force" -- "$CERTS" coordinator ca localhost
expect 2 '"bad_host" is not a DNS host name' -- "$CERTS" coordinator ca bad_host
expect 2 '--ip: "300.1.2.3" is not an IPv4 or IPv6 address' -- "$CERTS" coordinator ca h.example --ip 300.1.2.3

# Sites: clientAuth only, CN=NAME.
expect 0 "CN=alice" -- "$CERTS" site ca alice
expect 0 "CN=bob" -- "$CERTS" site ca bob
for s in alice bob; do
  crt=ca/sites/$s/$s.crt
  same "$s key mode" "$(mode ca/sites/$s/$s.key)" 600
  same "$s extendedKeyUsage" "$(ext "$crt" extendedKeyUsage)" "TLS Web Client Authentication"
  same "$s basicConstraints" "$(ext "$crt" basicConstraints)" "CA:FALSE"
  same "$s subject" "$(openssl x509 -in "$crt" -noout -subject)" "subject=CN = $s"
  expect 0 "$crt: OK" -- openssl verify -CAfile ca/ca.crt -purpose sslclient "$crt"
  refuse "unsuitable certificate purpose" -- openssl verify -CAfile ca/ca.crt -purpose sslserver "$crt"
done
expect 1 'site "alice" already has a certificate' -- "$CERTS" site ca alice
old=$(serial ca/sites/alice/alice.crt)
expect 0 "the previous certificate (serial $old) stays valid" -- "$CERTS" site ca alice --force
new=$(serial ca/sites/alice/alice.crt)
if [ "$new" != "$old" ]; then pass=$((pass + 1)); else
  echo "FAIL: site --force kept serial $old" >&2
  fail=$((fail + 1))
fi
expect 0 "ca/sites/alice/alice.crt: OK" -- openssl verify -CAfile ca/ca.crt ca/sites/alice/alice.crt
for bad in "bad name" "a/b" "" ".." "semi;colon" "$(printf 'x%.0s' {1..65})" "$(printf 'caf\xc3\xa9')"; do
  expect 2 "is not a valid site name" -- "$CERTS" site ca "$bad"
done
expect 0 "CN=$(printf 'x%.0s' {1..64})" -- "$CERTS" site ca "$(printf 'x%.0s' {1..64})"
expect 0 "CN=Site-2.eu_west" -- "$CERTS" site ca Site-2.eu_west
expect 1 '"localhost" is already the coordinator' -- "$CERTS" site ca localhost

# Another CA's site is a stranger to ours.
expect 0 "created the CA" -- "$CERTS" init-ca other --name "some other CA" --days 30
expect 0 "CN=eve" -- "$CERTS" site other eve
expect 0 "other/sites/eve/eve.crt: OK" -- openssl verify -CAfile other/ca.crt other/sites/eve/eve.crt
refuse "unable to get local issuer certificate" -- openssl verify -CAfile ca/ca.crt other/sites/eve/eve.crt
expect 0 "the CA certificate ends" -- "$CERTS" site other mallory --days 100

# Expired and not-yet-valid certificates.
expect 0 "until Jan  1 00:00:00 2021 GMT" -- "$CERTS" site ca old --not-before 20200101000000Z --not-after 20210101000000Z
refuse "certificate has expired" -- openssl verify -CAfile ca/ca.crt ca/sites/old/old.crt
expect 0 "CN=early" -- "$CERTS" site ca early --not-before "$(later '+30 days')" --days 60
refuse "certificate is not yet valid" -- openssl verify -CAfile ca/ca.crt ca/sites/early/early.crt
expect 0 "DNS:early-coord" -- "$CERTS" coordinator ca early-coord --not-before "$(later '+1 day')"
refuse "certificate is not yet valid" -- openssl verify -CAfile ca/ca.crt ca/coordinator/early-coord.crt
expect 2 '--not-after: "2021-01-01" is not YYYYMMDDHHMMSSZ' -- "$CERTS" site ca x --not-after 2021-01-01
expect 2 "--not-after must be later than --not-before" -- "$CERTS" site ca x --not-before 20210101000000Z --not-after 20200101000000Z
expect 1 "is after the CA certificate's end" -- "$CERTS" site ca x --not-after 29990101000000Z

# Revocation and CRLs.
expect 0 "0 revoked" -- "$CERTS" crl ca
expect 0 "verify OK" -- openssl crl -in ca/crl.pem -CAfile ca/ca.crt -noout
expect 0 "ca/sites/bob/bob.crt: OK" -- openssl verify -CAfile ca/ca.crt -CRLfile ca/crl.pem -crl_check ca/sites/bob/bob.crt
expect 0 'revoked "bob" serial' -- "$CERTS" revoke ca bob
expect 0 "verify OK" -- openssl crl -in ca/crl.pem -CAfile ca/ca.crt -noout
refuse "certificate revoked" -- openssl verify -CAfile ca/ca.crt -CRLfile ca/crl.pem -crl_check ca/sites/bob/bob.crt
expect 0 "ca/sites/alice/alice.crt: OK" -- openssl verify -CAfile ca/ca.crt -CRLfile ca/crl.pem -crl_check ca/sites/alice/alice.crt
expect 0 "ca/coordinator/localhost.crt: OK" -- openssl verify -CAfile ca/ca.crt -CRLfile ca/crl.pem -crl_check -purpose sslserver ca/coordinator/localhost.crt
expect 0 'nothing to revoke: "bob" is already revoked' -- "$CERTS" revoke ca bob
expect 1 'has issued no certificate to "nobody"' -- "$CERTS" revoke ca nobody
expect 0 "superseded" -- "$CERTS" revoke ca alice --serial "$old" --reason superseded
expect 0 "ca/sites/alice/alice.crt: OK" -- openssl verify -CAfile ca/ca.crt -CRLfile ca/crl.pem -crl_check ca/sites/alice/alice.crt
expect 0 "Serial Number: $old" -- openssl crl -in ca/crl.pem -noout -text
expect 0 "2 revoked" -- "$CERTS" crl ca --days 7
next=$(date -u -d "$(openssl crl -in ca/crl.pem -noout -nextupdate | sed 's/^nextUpdate=//')" +%s)
same "CRL valid for 7 days" "$(((next - $(date -u +%s) + 60) / 3600))" $((7 * 24))
expect 0 "revoked " -- "$CERTS" list ca
expect 0 "expired " -- "$CERTS" list ca
expect 0 "not yet valid" -- "$CERTS" list ca

# Admins: clientAuth and the admin role OID, a name of their own.
OID=2.25.119735425215181750697262863098642166956
expect 0 "issued $tmp/ca/admins/ops/ops.crt (CN=ops, admin, serial" -- "$CERTS" admin ca ops
crt=ca/admins/ops/ops.crt
same "admin key mode" "$(mode ca/admins/ops/ops.key)" 600
same "admin extendedKeyUsage" "$(ext $crt extendedKeyUsage)" "TLS Web Client Authentication, $OID"
same "admin basicConstraints" "$(ext $crt basicConstraints)" "CA:FALSE"
same "admin subject" "$(openssl x509 -in $crt -noout -subject)" "subject=CN = ops"
same "admin public key" "$(pubkey ca/admins/ops/ops.key)" "$(pubkey $crt)"
expect 0 "$crt: OK" -- openssl verify -CAfile ca/ca.crt -purpose sslclient $crt
refuse "unsuitable certificate purpose" -- openssl verify -CAfile ca/ca.crt -purpose sslserver $crt
expect 1 'admin "ops" already has a certificate' -- "$CERTS" admin ca ops
expect 1 '"alice" is already a site'"'"'s name; an admin must not share it' -- "$CERTS" admin ca alice
expect 1 '"ops" is already an admin'"'"'s name; a site must not share it' -- "$CERTS" site ca ops
expect 1 '"ops" is already an admin'"'"'s name; a coordinator must not share it' -- "$CERTS" coordinator ca ops
expect 1 '"localhost" is already the coordinator'"'"'s name; a admin must not share it' -- "$CERTS" admin ca localhost
expect 2 '"bad name" is not a valid site name' -- "$CERTS" admin ca "bad name"
expect 2 "fedtune-certs: admin: missing NAME" -- "$CERTS" admin ca
expect 1 '"ops" is an admin, not a site: a kit is for a site' -- "$CERTS" kit ca ops --coordinator localhost:5555
expect 0 "admin        /CN=ops" -- "$CERTS" list ca
expect 0 "site         /CN=bob" -- "$CERTS" list ca
expect 0 "coordinator  /CN=localhost" -- "$CERTS" list ca

# Keys that never leave a site: csr at the site, sign at the CA.
mkdir -p at-site
expect 0 "wrote at-site/frank.key (private, 0600: it stays here) and at-site/frank.csr (site request, CN=frank)" -- "$CERTS" csr frank --out at-site
same "csr key mode" "$(mode at-site/frank.key)" 600
expect 0 "verify OK" -- openssl req -in at-site/frank.csr -noout -verify
expect 0 "ASN1 OID: prime256v1" -- openssl pkey -in at-site/frank.key -noout -text
expect 1 "at-site/frank.key exists; refusing to overwrite a key" -- "$CERTS" csr frank --out at-site
same "the refused csr left the key" "$(pubkey at-site/frank.key)" "$(openssl req -in at-site/frank.csr -noout -pubkey)"
expect 2 'csr: --role: "coordinator" is not site or admin' -- "$CERTS" csr dave --role coordinator
expect 2 '"a/b" is not a valid site name' -- "$CERTS" csr a/b
expect 1 "nowhere: no such folder" -- "$CERTS" csr dave --out nowhere
expect 0 "(admin request, CN=dana)" -- "$CERTS" csr dana --role admin --out at-site
# sign: name, role, key policy, signature, reuse.
expect 2 "sign: --name NAME is required" -- "$CERTS" sign ca at-site/frank.csr --role site
expect 2 "sign: --role site|admin is required" -- "$CERTS" sign ca at-site/frank.csr --name frank
expect 2 'sign: --role: "server" is not site or admin' -- "$CERTS" sign ca at-site/frank.csr --name frank --role server
expect 1 'at-site/frank.csr: its subject is "CN=frank", not CN=mallory' -- "$CERTS" sign ca at-site/frank.csr --name mallory --role site
expect 1 "at-site/frank.csr: the request asks to be a site, --role says admin" -- "$CERTS" sign ca at-site/frank.csr --name frank --role admin
expect 1 "at-site/dana.csr: the request asks to be an admin, --role says site" -- "$CERTS" sign ca at-site/dana.csr --name dana --role site
echo "not a request" >junk.csr
expect 1 "junk.csr: not a PEM certificate request" -- "$CERTS" sign ca junk.csr --name junk --role site
expect 1 "missing.csr: no such file" -- "$CERTS" sign ca missing.csr --name frank --role site
# A request whose signature does not match its key: frank's subject and key, eve's signature.
"$PY" - at-site/frank.csr tampered.csr <<'PYEOF2'
import base64, sys
pem = open(sys.argv[1]).read().split("\n")
der = bytearray(base64.b64decode("".join(l for l in pem if l and not l.startswith("-----"))))
der[-3] ^= 0x01  # a byte of the signature
b64 = base64.b64encode(bytes(der)).decode()
lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
open(sys.argv[2], "w").write("-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE REQUEST-----\n")
PYEOF2
expect 1 "tampered.csr: its signature does not verify" -- "$CERTS" sign ca tampered.csr --name frank --role site
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null
openssl req -new -key rsa.key -subj /CN=rsa-site -out rsa.csr 2>/dev/null
expect 1 "rsa.csr: its key is rsaEncryption (2048 bit), not ECDSA P-256" -- "$CERTS" sign ca rsa.csr --name rsa-site --role site
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out two.key 2>/dev/null
openssl req -new -key two.key -subj "/O=evil/CN=two" -out two.csr 2>/dev/null
expect 1 'two.csr: its subject is "CN=two,O=evil", not CN=two' -- "$CERTS" sign ca two.csr --name two --role site
# Extensions a request asks for are ignored: serverAuth requested, clientAuth issued.
openssl req -new -key two.key -subj "/CN=greedy" -addext "extendedKeyUsage=serverAuth,clientAuth" \
  -addext "basicConstraints=critical,CA:TRUE" -out greedy.csr 2>/dev/null
expect 0 "(CN=greedy, site, serial" -- "$CERTS" sign ca greedy.csr --name greedy --role site
same "requested extensions ignored (EKU)" "$(ext ca/sites/greedy/greedy.crt extendedKeyUsage)" "TLS Web Client Authentication"
same "requested extensions ignored (CA)" "$(ext ca/sites/greedy/greedy.crt basicConstraints)" "CA:FALSE"
expect 0 "issued $tmp/ca/sites/frank/frank.crt (CN=frank, site, serial" -- "$CERTS" sign ca at-site/frank.csr --name frank --role site
same "signed: no key at the CA" "$(ls ca/sites/frank)" "frank.crt"
same "signed for the site's own key" "$(pubkey at-site/frank.key)" "$(pubkey ca/sites/frank/frank.crt)"
same "signed site extendedKeyUsage" "$(ext ca/sites/frank/frank.crt extendedKeyUsage)" "TLS Web Client Authentication"
expect 0 "ca/sites/frank/frank.crt: OK" -- openssl verify -CAfile ca/ca.crt -purpose sslclient ca/sites/frank/frank.crt
expect 1 'site "frank" already has a certificate' -- "$CERTS" sign ca at-site/frank.csr --name frank --role site
expect 1 '"frank" is already a site'"'"'s name; an admin must not share it' -- "$CERTS" admin ca frank
mkdir -p at-ops
"$CERTS" csr ops --out at-ops >/dev/null
expect 1 '"ops" is already an admin'"'"'s name; a site must not share it' -- "$CERTS" sign ca at-ops/ops.csr --name ops --role site
expect 0 "(CN=dana, admin, serial" -- "$CERTS" sign ca at-site/dana.csr --name dana --role admin
same "signed admin extendedKeyUsage" "$(ext ca/admins/dana/dana.crt extendedKeyUsage)" "TLS Web Client Authentication, $OID"
# A kit for a site that holds its own key carries none.
expect 0 "(no key: the site keeps the one it made with fedtune-certs csr)" -- "$CERTS" kit ca frank --coordinator localhost:5555 --tar
same "keyless kit files" "$(cd ca/kits/frank && echo *)" "README.txt ca.crt client.ini frank.crt"
expect 0 "NOT in this kit" -- cat ca/kits/frank/README.txt
expect 0 "key = frank.key" -- cat ca/kits/frank/client.ini
same "no key in the keyless kit's tarball" "$(tar tzf ca/kits/frank.tar.gz | grep -c frank.key)" 0
expect 0 'revoked "dana" serial' -- "$CERTS" revoke ca dana

# A site kit.
expect 0 'wrote the kit for "alice"' -- "$CERTS" kit ca alice --coordinator localhost:5555 --tar
k=ca/kits/alice
same "kit files" "$(cd $k && echo *)" "README.txt alice.crt alice.key ca.crt client.ini"
same "kit key mode" "$(mode $k/alice.key)" 600
same "kit tarball mode" "$(mode ca/kits/alice.tar.gz)" 600
expect 0 "alice/alice.key" -- tar tzf ca/kits/alice.tar.gz
same "kit ca.crt" "$(cmp ca/ca.crt $k/ca.crt && echo same)" same
same "kit key matches its certificate" "$(pubkey $k/alice.key)" "$(pubkey $k/alice.crt)"
expect 0 "$k/alice.crt: OK" -- openssl verify -CAfile $k/ca.crt -CRLfile ca/crl.pem -crl_check -purpose sslclient $k/alice.crt
for line in "[client]" "coordinator = tcp://localhost:5555" "server-name = localhost" "ca = ca.crt" \
  "cert = alice.crt" "key = alice.key" "data = /path/to/your/labeled.csv"; do
  if grep -qxF "$line" $k/client.ini; then pass=$((pass + 1)); else
    echo "FAIL: $k/client.ini lacks the line \"$line\"" >&2
    fail=$((fail + 1))
  fi
done
expect 0 "keep it on this site only" -- cat $k/README.txt
expect 0 'wrote the kit for "alice" in' -- "$CERTS" kit ca alice --coordinator=127.0.0.1:7000 --out "$tmp/alice-kit"
expect 0 "coordinator = tcp://127.0.0.1:7000" -- cat "$tmp/alice-kit/client.ini"
expect 0 'no coordinator certificate in' -- "$CERTS" kit ca alice --coordinator fed.example.org:5555 --out "$tmp/k3"
expect 1 '"bob" (serial' -- "$CERTS" kit ca bob --coordinator localhost:5555
expect 1 'site "carol" has no certificate' -- "$CERTS" kit ca carol --coordinator localhost:5555
expect 2 "fedtune-certs: kit: --coordinator HOST:PORT is required" -- "$CERTS" kit ca alice
expect 2 'is not HOST:PORT' -- "$CERTS" kit ca alice --coordinator localhost
expect 2 "port 70000 is outside [1, 65535]" -- "$CERTS" kit ca alice --coordinator localhost:70000

report
