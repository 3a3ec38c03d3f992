/* `mpirun -n N fedtune sim` (cli/sim_mpi.c): rank 0 runs the coordinator on TCP, ranks
 * 1..N-1 host the virtual sites (site i on rank 1 + i mod (N-1)) and connect them to it
 * with TLS. Every rank loads the same data and makes the same partition from the seed;
 * only the certificates (made once on rank 0), the endpoint and each rank's closing
 * numbers travel over MPI. The MPI calls themselves are cli/mpi.c's. */
#ifndef FED_CLI_SIM_MPI_H
#define FED_CLI_SIM_MPI_H

#include "core/err.h"
#include "core/model.h"
#include "sim/sim.h"

#include <stdbool.h>

/* This process's place in the launch. */
typedef struct sim_mpi {
    int rank;                 /* 0: the coordinator */
    int size;                 /* ranks, >= 2 */
    bool up;                  /* MPI started */
    const char *host;         /* --mpi-host: what the sites connect to (NULL: rank 0's host name,
                                 127.0.0.1 on its own host) */
    double connect_timeout_s; /* --mpi-connect-timeout: a site not connected by then fails */
} sim_mpi;

/* Starts MPI (FED_EUNSUPPORTED without it built in) and checks there are at least 2
 * ranks; on ranks other than 0 stdout goes to /dev/null (rank 0 prints for all). Sets
 * rank, size and up (host is the caller's). */
fed_err sim_mpi_start(sim_mpi *m) FED_MUST_USE;

/* fed_sim_run across the ranks (every rank calls it with the same configuration): rank 0
 * the coordinator, the others their sites; sc's role, endpoint, cert_dir, host and tls
 * are set here. On rank 0 *final and *res are the run's, and one line per rank (its time
 * and peak RSS) is printed; elsewhere *res is that rank's sites' part. */
fed_err sim_mpi_run(const sim_mpi *m, fed_sim_config *sc, fed_model **final,
                    fed_sim_result *res) FED_MUST_USE;

/* The end of an MPI run: with err, prints it as "fedtune sim: rank R: ..." and ends every
 * rank's process (a rank alone cannot fail: the others would wait for it); else
 * MPI_Finalize. Returns err when MPI did not start or there is only one rank. */
fed_err sim_mpi_finish(const sim_mpi *m, fed_err err);

#endif
