/* The only door to MPI (cli/mpi.h). With FED_HAVE_MPI (cmake found MPI) the calls go to
 * MPI_COMM_WORLD; without it every entry point reports how to get MPI. Nothing here
 * knows of the simulation. */
#include "cli/mpi.h"

#include "core/alloc.h"

#include <limits.h>
#include <stdlib.h>

#define NO_MPI                                                                                     \
    "this fedtune was built without MPI: install libopenmpi-dev and rebuild (scripts/setup)"

bool cli_mpi_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return true;
    return false;
}

#ifdef FED_HAVE_MPI
#include <mpi.h>

static MPI_Request end_req = MPI_REQUEST_NULL;
static bool end_entered, end_done;

bool cli_mpi_built(void) {
    return true;
}

/* FED_EIO naming the call and MPI's own words for rc. */
static fed_err mpi_fail(const char *call, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = '\0';
    return fed_errorf(FED_EIO, "MPI: %s failed: %s", call, len ? msg : "(no description)");
}

fed_err cli_mpi_init(int *rank, int *size) {
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail("MPI_Init_thread", rc);
    /* Errors come back as codes (reported with the rank) rather than ending the job. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, rank)) != MPI_SUCCESS)
        return mpi_fail("MPI_Comm_rank", rc);
    if ((rc = MPI_Comm_size(MPI_COMM_WORLD, size)) != MPI_SUCCESS)
        return mpi_fail("MPI_Comm_size", rc);
    return FED_OK;
}

void cli_mpi_finalize(void) {
    MPI_Finalize();
}

void cli_mpi_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; this is for the compiler */
}

fed_err cli_mpi_bcast(void *buf, size_t len) {
    if (len > INT_MAX) return fed_errorf(FED_EINVAL, "MPI: broadcast of %zu bytes", len);
    int rc = MPI_Bcast(buf, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? FED_OK : mpi_fail("MPI_Bcast", rc);
}

fed_err cli_mpi_send(const void *buf, size_t len, int dest) {
    if (len > INT_MAX) return fed_errorf(FED_EINVAL, "MPI: message of %zu bytes", len);
    int rc = MPI_Send(buf, (int)len, MPI_BYTE, dest, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? FED_OK : mpi_fail("MPI_Send", rc);
}

fed_err cli_mpi_recv(void **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    MPI_Status st;
    int rc = MPI_Probe(0, 0, MPI_COMM_WORLD, &st), n = 0;
    if (rc != MPI_SUCCESS) return mpi_fail("MPI_Probe", rc);
    if ((rc = MPI_Get_count(&st, MPI_BYTE, &n)) != MPI_SUCCESS || n < 0)
        return mpi_fail("MPI_Get_count", rc);
    if (!(*buf = fed_malloc(n ? (size_t)n : 1))) return FED_ENOMEM;
    if ((rc = MPI_Recv(*buf, n, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE)) !=
        MPI_SUCCESS) {
        fed_free(*buf);
        *buf = NULL;
        return mpi_fail("MPI_Recv", rc);
    }
    *len = (size_t)n;
    return FED_OK;
}

fed_err cli_mpi_gather(const void *mine, size_t len, void *all) {
    if (len > INT_MAX) return fed_errorf(FED_EINVAL, "MPI: gather of %zu bytes", len);
    int rc = MPI_Gather(mine, (int)len, MPI_BYTE, all, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? FED_OK : mpi_fail("MPI_Gather", rc);
}

fed_err cli_mpi_end_enter(void) {
    if (end_entered) return FED_OK;
    int rc = MPI_Ibarrier(MPI_COMM_WORLD, &end_req);
    if (rc != MPI_SUCCESS) return mpi_fail("MPI_Ibarrier", rc);
    end_entered = true;
    return FED_OK;
}

bool cli_mpi_end_test(void) {
    if (!end_entered || end_done) return end_done;
    int flag = 0;
    if (MPI_Test(&end_req, &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) end_done = true;
    return end_done;
}

fed_err cli_mpi_end_wait(void) {
    if (!end_entered) return fed_errorf(FED_EINTERNAL, "MPI: the end waited for, not entered");
    if (end_done) return FED_OK;
    int rc = MPI_Wait(&end_req, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_fail("MPI_Wait", rc);
    end_done = true;
    return FED_OK;
}

#else /* built without MPI: every call says how to get it */

bool cli_mpi_built(void) {
    return false;
}

fed_err cli_mpi_init(int *rank, int *size) {
    *rank = 0;
    *size = 1;
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

void cli_mpi_finalize(void) {}

void cli_mpi_abort(int code) {
    exit(code);
}

fed_err cli_mpi_bcast(void *buf, size_t len) {
    (void)buf;
    (void)len;
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

fed_err cli_mpi_send(const void *buf, size_t len, int dest) {
    (void)buf;
    (void)len;
    (void)dest;
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

fed_err cli_mpi_recv(void **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

fed_err cli_mpi_gather(const void *mine, size_t len, void *all) {
    (void)mine;
    (void)len;
    (void)all;
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

fed_err cli_mpi_end_enter(void) {
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

bool cli_mpi_end_test(void) {
    return true;
}

fed_err cli_mpi_end_wait(void) {
    return fed_errorf(FED_EUNSUPPORTED, NO_MPI);
}

#endif
