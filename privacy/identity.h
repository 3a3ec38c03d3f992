/* A party's TLS identity used outside TLS: signing bytes with the private key behind its
 * certificate, and checking a peer's signed bytes against the peer's certificate, which
 * must chain to the federation CA. Secure aggregation uses it so the coordinator cannot
 * substitute the public keys it relays (a client signs fed_sa_signed_block, every
 * receiver checks it). Deliberately nothing about sessions, sockets or which CN may
 * speak for which client id: the caller compares the CN it gets back with the one it
 * expects.
 *
 * A signed blob carries the signer's certificate, so a verifier needs only the CA:
 *     u16 cert_len (little-endian), cert_len bytes of X.509 DER, signature (the rest)
 * The signature is ECDSA with SHA-256 (DER-encoded) for EC keys, RSA-PSS with SHA-256 and
 * a 32-byte salt for RSA keys, and pure Ed25519/Ed448 for those. A P-256 site certificate
 * from certs/fedtune-certs makes a blob of about 490 bytes.
 *
 * The certificate is checked as OpenSSL's X509_verify_cert checks a TLS peer: the chain
 * to a certificate of the CA file, validity dates, the CRL when one was given (a missing
 * or expired CRL refuses everyone), and with want_client the "sslclient" purpose (the
 * clientAuth extended key usage of site certificates). The signature is checked with
 * the certificate's public key, whose key usage must allow digitalSignature.
 *
 * Threads: different objects are independent and may be used from different threads at
 * once; one object wants one thread at a time. */
#ifndef FED_PRIVACY_IDENTITY_H
#define FED_PRIVACY_IDENTITY_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FED_ID_BLOB_MAX 4096 /* largest signed blob: u16 cert_len, cert DER, signature */
#define FED_ID_CN_MAX   64   /* longest certificate CN, as for TLS peers */

typedef struct fed_id fed_id;

/* Loads this side's certificate and private key (PEM files; key_file NULL = no signing:
 * verify only) and the CA certificate(s) (one or more PEM certificates) and optional CRL
 * file (one or more PEM CRLs; NULL = no revocation check) that peers' certificates must
 * chain to. FED_EIO naming the file for a missing, unreadable or non-PEM file (also an
 * encrypted key: there is no passphrase prompt); FED_EINVAL when the key does not match
 * the certificate, the certificate has no CN of 1..FED_ID_CN_MAX printable characters,
 * the key type cannot sign here, or a blob could exceed FED_ID_BLOB_MAX; FED_ENOMEM;
 * FED_EINTERNAL if OpenSSL fails otherwise. *out is NULL on error. */
fed_err fed_id_new(fed_id **out, const char *cert_file, const char *key_file, const char *ca_file,
                   const char *crl_file) FED_MUST_USE;

/* Frees. NULL-safe; sets *id = NULL. */
void fed_id_destroy(fed_id **id);

/* The CN of this side's certificate; valid while id lives. */
const char *fed_id_cn(const fed_id *id);

/* The largest blob fed_id_sign makes: 2 + certificate DER + the key's largest signature
 * (0 without a key). At most FED_ID_BLOB_MAX. */
size_t fed_id_blob_max(const fed_id *id);

/* Signs data[0..len) with this side's key into out[0..*out_len): the blob above.
 * FED_ERANGE when cap < fed_id_blob_max(id) (the detail names both sizes; ECDSA
 * signatures vary in length, so the worst case is what must fit); FED_EINVAL without a
 * key; FED_EINTERNAL if OpenSSL fails. */
fed_err fed_id_sign(const fed_id *id, const uint8_t *data, size_t len, uint8_t *out, size_t cap,
                    size_t *out_len) FED_MUST_USE;

/* Checks a blob from a peer over data[0..len). FED_EFORMAT naming what is wrong for a
 * blob that does not parse strictly: longer than FED_ID_BLOB_MAX, truncated, cert_len 0
 * or beyond the blob, a certificate that is not DER X.509 or does not end at cert_len,
 * an empty signature. FED_EAUTH with a one-line reason when the certificate is refused
 * ("certificate: unable to get local issuer certificate", "certificate: certificate
 * revoked", "certificate: unsuitable certificate purpose", ...; the CN shown when it is
 * printable), has no usable CN or key, or the signature does not verify ("signature does
 * not verify"). On success cn (FED_ID_CN_MAX + 1 bytes; may be NULL) receives the
 * certificate's subject CN; on error it is "". FED_ENOMEM; FED_EINTERNAL. */
fed_err fed_id_verify(const fed_id *id, const uint8_t *data, size_t len, const uint8_t *blob,
                      size_t blob_len, bool want_client, char *cn) FED_MUST_USE;

#endif
