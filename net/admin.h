/* The administrator role (docs/MONITORING.md, certs/README.md): an admin certificate is a
 * client certificate (extended key usage clientAuth) of the federation's CA that also
 * carries the extended key usage FED_ADMIN_EKU_OID. A certificate with that OID is an
 * admin and nothing else; one without it is never an admin. This file checks a peer's
 * certificate chain for that role (OpenSSL, net/admin.c); what asks for it (the HTTPS
 * monitoring server, the admin channel) does the transport. */
#ifndef FED_NET_ADMIN_H
#define FED_NET_ADMIN_H

#include "core/err.h"
#include "net/channel.h" /* FED_ADMIN_EKU_OID */

#include <stddef.h>
#include <stdint.h>

/* Verifies the peer chain der[0..n) (DER; der[0] the peer's own certificate, the rest
 * untrusted intermediates) against the CA certificate(s) of ca_file (PEM) and, when
 * crl_file is not NULL, its CRL (PEM; re-read every call, so a new CRL applies at once):
 * a valid chain, not revoked, extended key usage clientAuth and FED_ADMIN_EKU_OID.
 * On success cn (cn_size bytes) holds the certificate's CN. FED_EAUTH with the reason
 * ("no client certificate", "certificate refused: certificate revoked", "not an admin
 * certificate: ...") as detail; FED_EIO / FED_ETLS when the CA or CRL file cannot be
 * read. */
fed_err fed_net_verify_admin_der(const uint8_t *const *der, const size_t *len, size_t n,
                                 const char *ca_file, const char *crl_file, char *cn,
                                 size_t cn_size) FED_MUST_USE;

#endif
