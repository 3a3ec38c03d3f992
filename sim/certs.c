/* The simulator's certificates (sim/certs.h): certs/fedtune-certs run with posix_spawn
 * and an argument vector (no shell), its output thrown away; the folder removed with
 * nftw. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* nftw */
#endif
#include "sim/certs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Runs script with argv (argv[0] is script), its output thrown away, and waits for it.
 * The detail of a failure quotes the command and its wait status, as system()'s was. */
static fed_err run_script(const char *script, char *const argv[]) {
    char shown[8192] = "";
    size_t used = 0;
    for (size_t i = 0; argv[i] && used < sizeof shown; i++)
        used +=
            (size_t)snprintf(shown + used, sizeof shown - used, "%s'%s'", i ? " " : "", argv[i]);
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return FED_ENOMEM;
    pid_t pid = -1;
    int rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    if (rc == 0) rc = posix_spawn(&pid, script, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return fed_errorf(FED_EIO, "certificates: \"%s\" failed (%s)", shown, strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return fed_errorf(FED_EIO, "certificates: \"%s\" failed (%s)", shown, strerror(errno));
    if (status != 0) return fed_errorf(FED_EIO, "certificates: \"%s\" failed (%d)", shown, status);
    return FED_OK;
}

fed_err fed_sim_make_certs(const fed_sim_config *cfg, size_t n, const char *dir) {
    const char *script = cfg->certs_script;
    if (!script || access(script, X_OK) != 0)
        return fed_errorf(FED_EINVAL, "tls: the certificate script %s is not executable",
                          script ? script : "(none)");
    char ca[4096];
    snprintf(ca, sizeof ca, "%s/ca", dir);
    char *argv[4] = {(char *)script, "init-ca", ca, NULL};
    fed_err err = run_script(script, argv);
    if (!err) {
        char *cargv[5] = {(char *)script, "coordinator", ca, FED_SIM_SERVER_NAME, NULL};
        err = run_script(script, cargv);
    }
    for (size_t i = 0; !err && i < n; i++) {
        char name[64];
        fed_sim_site_name(name, cfg, n, i);
        char *sargv[5] = {(char *)script, "site", ca, name, NULL};
        err = run_script(script, sargv);
    }
    return err;
}

/* nftw callback: removes what it is given (a folder after its contents, FTW_DEPTH). */
static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 ? -1 : 0;
}

int fed_sim_remove_tree(const char *dir) {
    return nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}
