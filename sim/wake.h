/* Internal to sim/: which virtual sites to step next (sim/wake.c).
 *
 * At 10 000 sites, stepping every site on every sweep costs a few system calls each,
 * about 0.1 s a sweep, and a round needs many sweeps (one per protocol step: RoundStart,
 * the model's chunks and credits, the Update, its upload). Instead one epoll set watches
 * every site's ZeroMQ descriptors (fed_site_wake_fds) and an eventfd the workers write
 * when a job ends; a sweep steps the sites it names, those that said they have more to
 * do (fed_site_busy), and, every FED__SIM_SWEEP_MS, all of them, as a net under the
 * channel's timers. So a round costs O(sampled) steps, not O(sites). */
#ifndef FED_SIM_WAKE_H
#define FED_SIM_WAKE_H

#include "client/client.h"
#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

/* How often every site is stepped whatever its descriptors say. */
#define FED__SIM_SWEEP_MS 2000

typedef struct fed__sim_wake fed__sim_wake;

/* A set for n sites, all of them due in the first sweep. */
fed_err fed__sim_wake_new(fed__sim_wake **out, size_t n) FED_MUST_USE;
void fed__sim_wake_destroy(fed__sim_wake **w);

/* Site thread, after stepping site i (s): watches its current connection's descriptors,
 * and keeps it due next sweep when busy. */
void fed__sim_wake_after(fed__sim_wake *w, size_t i, fed_site *s, bool busy);

/* Any thread (a worker): site i's job ended; it is due next sweep. */
void fed__sim_wake_job_done(fed__sim_wake *w, size_t i);

/* Site thread: the sites due in the next sweep, into *list (valid until the next call),
 * waiting up to wait_ms for one when none is due yet (0: do not wait). Every site is due
 * when FED__SIM_SWEEP_MS passed since the last whole sweep. Returns their number. */
size_t fed__sim_wake_next(fed__sim_wake *w, int wait_ms, const size_t **list);

#endif
