/* The simulator's certificates (sim/certs.c): a CA, the coordinator's certificate and one
 * per virtual site, made under a folder by running certs/fedtune-certs, and that folder's
 * removal. fed_sim_run makes them itself for `tls` in one process; `mpirun fedtune sim`
 * makes them once on rank 0 and hands each rank the files its sites need (cli/sim_mpi.c).
 * Nothing here knows of MPI or of the rounds. */
#ifndef FED_SIM_CERTS_H
#define FED_SIM_CERTS_H

#include "core/err.h"
#include "sim/sim.h"

#include <stddef.h>

/* The coordinator's certificate name: the sites check the coordinator's certificate
 * against it (not against the host they connect to). */
#define FED_SIM_SERVER_NAME "fedsim-coordinator"

/* Makes under dir (which exists): dir/ca/ca.crt, the coordinator's
 * dir/ca/coordinator/fedsim-coordinator.{crt,key} and, for each of cfg's n sites (named
 * by fed_sim_site_name), dir/ca/sites/NAME/NAME.{crt,key}, with cfg->certs_script.
 * FED_EINVAL when the script is not executable, FED_EIO quoting the command that failed. */
fed_err fed_sim_make_certs(const fed_sim_config *cfg, size_t n, const char *dir) FED_MUST_USE;

/* Removes the folder dir and everything below it, links not followed (rm -rf): 0, or -1
 * when something could not be removed. */
int fed_sim_remove_tree(const char *dir);

#endif
