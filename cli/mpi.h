/* The only door to MPI (cli/mpi.c, the one file that includes mpi.h): what `mpirun fedtune
 * sim` needs of it, a handful of calls on MPI_COMM_WORLD made from the main thread only
 * (MPI_THREAD_FUNNELED). Built without MPI (cmake -DFED_MPI=OFF, or libopenmpi-dev
 * missing), cli_mpi_built is false and cli_mpi_init fails with a line saying how to get
 * it; the rest of the tree compiles without mpi.h either way. The simulation's use of
 * these calls is cli/sim_mpi.c's business. */
#ifndef FED_CLI_MPI_H
#define FED_CLI_MPI_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

/* Was this fedtune built with MPI? */
bool cli_mpi_built(void);

/* Was this process started by an MPI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK in the environment)? Works with or without MPI built in. */
bool cli_mpi_launched(void);

/* MPI_Init_thread (funneled): *rank and *size of MPI_COMM_WORLD. FED_EUNSUPPORTED naming
 * the Debian package without MPI built in. */
fed_err cli_mpi_init(int *rank, int *size) FED_MUST_USE;

/* MPI_Finalize (after cli_mpi_init succeeded). */
void cli_mpi_finalize(void);

/* Ends every rank's process with exit status code (MPI_Abort): for a failure on one rank,
 * which the others would otherwise wait for for ever. Does not return. */
void cli_mpi_abort(int code);

/* len bytes of buf from rank 0 to every rank (MPI_Bcast; every rank calls it). */
fed_err cli_mpi_bcast(void *buf, size_t len) FED_MUST_USE;

/* Rank 0 sends len bytes to rank dest, which receives them with cli_mpi_recv: *buf
 * (fed_malloc'd, the caller frees it) and *len. Messages arrive in the order sent. */
fed_err cli_mpi_send(const void *buf, size_t len, int dest) FED_MUST_USE;
fed_err cli_mpi_recv(void **buf, size_t *len) FED_MUST_USE;

/* Every rank's len bytes at mine, gathered on rank 0 into all (size x len bytes, in rank
 * order; ignored elsewhere). */
fed_err cli_mpi_gather(const void *mine, size_t len, void *all) FED_MUST_USE;

/* The end of the run as a non-blocking barrier: each rank enters it once (cli_mpi_end_enter)
 * when it has nothing more to start; cli_mpi_end_test says whether every rank has entered
 * (and drives MPI's progress), cli_mpi_end_wait waits for that. */
fed_err cli_mpi_end_enter(void) FED_MUST_USE;
bool cli_mpi_end_test(void);
fed_err cli_mpi_end_wait(void) FED_MUST_USE;

#endif
