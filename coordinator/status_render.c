/* The status record rendered for people and scrapers: the Prometheus text exposition
 * format (version 0.0.4) of /metrics and the self-contained HTML page of / (inline CSS
 * and SVG charts, no script, no external resource; it reloads itself). Both work on a
 * copy of the record (status.c), so the engine waits only for the copy. Also the bounded
 * text builder status.c shares. */
#include "coordinator/internal.h"
#include "coordinator/status.h"

/* ---- the text builder ------------------------------------------------------------------ */

static bool sb_room(fed_sbuf *b, size_t more) {
    if (b->failed) return false;
    if (b->len + more + 1 <= b->cap) return true;
    if (b->len + more + 1 > b->limit) {
        b->failed = b->over = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    if (cap > b->limit) cap = b->limit;
    char *p = fed_realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void fed__coord_sb_printf(fed_sbuf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0 || !sb_room(b, (size_t)n)) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        memcpy(b->p + b->len, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static void sb_putc(fed_sbuf *b, char ch) {
    if (!sb_room(b, 1)) return;
    b->p[b->len++] = ch;
    b->p[b->len] = '\0';
}

void fed__coord_sb_json_str(fed_sbuf *b, const char *s) {
    sb_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            sb_putc(b, '\\');
            sb_putc(b, (char)*p);
        } else if (*p < 0x20) {
            fed__coord_sb_printf(b, "\\u%04x", *p);
        } else {
            sb_putc(b, (char)*p);
        }
    }
    sb_putc(b, '"');
}

void fed__coord_sb_json_num(fed_sbuf *b, double v) {
    if (isfinite(v))
        fed__coord_sb_printf(b, "%.9g", v);
    else
        fed__coord_sb_printf(b, "null");
}

void fed__coord_sb_html(fed_sbuf *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '<':
            fed__coord_sb_printf(b, "&lt;");
            break;
        case '>':
            fed__coord_sb_printf(b, "&gt;");
            break;
        case '&':
            fed__coord_sb_printf(b, "&amp;");
            break;
        case '"':
            fed__coord_sb_printf(b, "&quot;");
            break;
        case '\'':
            fed__coord_sb_printf(b, "&#39;");
            break;
        default:
            if (*p >= 0x20 || *p == '\t') sb_putc(b, (char)*p);
        }
    }
}

fed_err fed__coord_sb_done(fed_sbuf *b, char **out) {
    *out = NULL;
    if (!b->failed && !b->p && sb_room(b, 0)) b->p[0] = '\0'; /* nothing appended */
    if (b->failed) {
        bool too_big = b->over;
        fed_free(b->p);
        *b = (fed_sbuf){0};
        return too_big ? fed_errorf(FED_ERANGE, "status text longer than its limit") : FED_ENOMEM;
    }
    *out = b->p;
    b->p = NULL;
    return FED_OK;
}

/* ---- Prometheus ------------------------------------------------------------------------ */

static void family(fed_sbuf *b, const char *name, const char *type, const char *help) {
    fed__coord_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_num(fed_sbuf *b, double v) {
    if (isnan(v))
        fed__coord_sb_printf(b, "NaN\n");
    else
        fed__coord_sb_printf(b, "%.17g\n", v);
}

static void gauge(fed_sbuf *b, const char *name, const char *help, double v) {
    family(b, name, "gauge", help);
    fed__coord_sb_printf(b, "%s ", name);
    prom_num(b, v);
}

static void counter(fed_sbuf *b, const char *name, const char *help, uint64_t v) {
    family(b, name, "counter", help);
    fed__coord_sb_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void metrics_text(fed_sbuf *b, const fed_status_data *d) {
    int64_t now = (int64_t)time(NULL);
    family(b, "fedtune_coordinator_state", "gauge",
           "1 for the state the coordinator's round engine is in, 0 for the others");
    for (int s = FED_COORD_WAITING; s <= FED_COORD_DONE; s++)
        fed__coord_sb_printf(b, "fedtune_coordinator_state{state=\"%s\"} %d\n",
                             fed_coord_state_name((fed_coord_state)s), (int)d->state == s);
    gauge(b, "fedtune_paused", "1 while an administrator has paused the rounds", d->paused);
    gauge(b, "fedtune_start_time_seconds", "Unix time the coordinator started", (double)d->started);
    counter(b, "fedtune_rounds_total", "Rounds closed by this process", d->rounds_total);
    gauge(b, "fedtune_rounds_done", "Rounds closed, including those restored from a checkpoint",
          (double)d->rounds_done);
    gauge(b, "fedtune_rounds_target", "Rounds the federation runs in all",
          (double)d->rounds_target);
    gauge(b, "fedtune_model_version", "Version of the global model", (double)d->model_version);
    counter(b, "fedtune_attempts_total", "Samples drawn (a round's first attempt and its retries)",
            d->attempts_total);
    family(b, "fedtune_attempt_failures_total", "counter", "Attempts that failed, by reason");
    for (size_t r = 0; r < FAIL_N; r++)
        fed__coord_sb_printf(b, "fedtune_attempt_failures_total{reason=\"%s\"} %" PRIu64 "\n",
                             fed__coord_fail_names[r], d->attempt_failures[r]);
    size_t by_state[FED_SITE_EVICTED + 1] = {0};
    for (size_t i = 0; i < d->nsites; i++) by_state[d->sites[i].state]++;
    gauge(b, "fedtune_sites_connected", "Sites with an admitted session",
          (double)(d->nsites - by_state[FED_SITE_LEFT] - by_state[FED_SITE_EVICTED]));
    family(b, "fedtune_sites", "gauge", "Sites known to the coordinator, by state");
    for (int s = FED_SITE_CONNECTED; s <= FED_SITE_EVICTED; s++)
        fed__coord_sb_printf(b, "fedtune_sites{state=\"%s\"} %zu\n",
                             fed__coord_site_state_name((fed_site_state)s), by_state[s]);
    counter(b, "fedtune_site_joins_total", "Site sessions admitted", d->joins_total);
    counter(b, "fedtune_sites_sampled_total", "Sites sampled, over every attempt",
            d->sampled_total);
    counter(b, "fedtune_updates_accepted_total", "Updates accepted", d->accepted_total);
    family(b, "fedtune_updates_rejected_total", "counter", "Updates rejected, by reason");
    for (size_t r = 0; r < REJ_N; r++)
        fed__coord_sb_printf(b, "fedtune_updates_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
                             fed__coord_reject_names[r], d->rejections[r]);
    counter(b, "fedtune_site_failures_total", "Sampled sites whose round failed at the site",
            d->site_failures_total);
    family(b, "fedtune_last_round_sites", "gauge", "Sites of the last closed round, by outcome");
    fed__coord_sb_printf(b,
                         "fedtune_last_round_sites{outcome=\"sampled\"} %zu\n"
                         "fedtune_last_round_sites{outcome=\"returned\"} %zu\n"
                         "fedtune_last_round_sites{outcome=\"rejected\"} %zu\n",
                         d->last_sampled, d->last_returned, d->last_rejected);
    counter(b, "fedtune_received_bytes_total", "Bytes received from sites", d->bytes_in);
    counter(b, "fedtune_sent_bytes_total", "Bytes sent to sites", d->bytes_out);
    family(b, "fedtune_round_duration_seconds", "histogram", "Wall time of closed rounds");
    for (size_t i = 0; i < FED_STATUS_BUCKETS; i++)
        fed__coord_sb_printf(b, "fedtune_round_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                             fed__coord_duration_bounds[i], d->duration_buckets[i]);
    fed__coord_sb_printf(b,
                         "fedtune_round_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                         "fedtune_round_duration_seconds_sum %.17g\n"
                         "fedtune_round_duration_seconds_count %" PRIu64 "\n",
                         d->duration_buckets[FED_STATUS_BUCKETS], d->duration_sum,
                         d->duration_buckets[FED_STATUS_BUCKETS]);
    gauge(b, "fedtune_federated_loss",
          "Last round's example-weighted loss the sites measured (NaN: none)", d->fed_loss);
    gauge(b, "fedtune_federated_accuracy", "Last round's example-weighted accuracy at the sites",
          d->fed_acc);
    gauge(b, "fedtune_central_loss", "Last round's loss on the central evaluation set",
          d->central_loss);
    gauge(b, "fedtune_central_accuracy", "Last round's accuracy on the central evaluation set",
          d->central_acc);
    gauge(b, "fedtune_dp_epsilon", "Differential privacy spent so far (NaN: no DP)", d->epsilon);
    gauge(b, "fedtune_checkpoint_age_seconds", "Seconds since the last checkpoint (NaN: none)",
          d->checkpoint_time ? (double)(now - d->checkpoint_time) : (double)NAN);
    counter(b, "fedtune_warnings_total", "Warning and error log lines", d->warnings_total);
}

fed_err fed_coord_metrics_text(fed_coord *c, char **out) {
    *out = NULL;
    fed_status_data *d = NULL;
    fed_err err = fed__coord_status_copy(c, &d);
    if (err) return err;
    fed_sbuf b = {.limit = (size_t)1 << 20};
    metrics_text(&b, d);
    fed__coord_status_free(&d);
    return fed__coord_sb_done(&b, out);
}

/* ---- the page ---------------------------------------------------------------------------- */

#define PAGE_ROUNDS 200 /* rounds the charts and the table show */
#define PAGE_SITES  500 /* sites the table lists */
#define CW          640 /* chart size */
#define CH          200
#define PAD         36

static const fed_status_round *hist_at(const fed_status_data *d, size_t j) {
    size_t first = (d->history_next + FED_STATUS_HISTORY - d->nhistory) % FED_STATUS_HISTORY;
    return &d->history[(first + j) % FED_STATUS_HISTORY];
}

/* One series of a chart: a polyline and a point (circle with a title) per finite value. */
static void series(fed_sbuf *b, const fed_status_data *d, size_t j0, int which, double ymax,
                   const char *cls, const char *color) {
    size_t n = d->nhistory - j0;
    fed__coord_sb_printf(b, "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" points=\"", cls,
                         color);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j = j0; j < d->nhistory; j++) {
            const fed_status_round *h = hist_at(d, j);
            double v = which == 0   ? h->fed_acc
                       : which == 1 ? h->central_acc
                       : which == 2 ? h->fed_loss
                                    : h->central_loss;
            if (!isfinite(v)) continue;
            double x = PAD + (n > 1 ? (double)(j - j0) * (CW - 2 * PAD) / (double)(n - 1) : 0);
            double y = CH - PAD - (v > ymax ? 1 : v / ymax) * (CH - 2 * PAD);
            if (pass == 0)
                fed__coord_sb_printf(b, "%.1f,%.1f ", x, y);
            else
                fed__coord_sb_printf(b,
                                     "<circle class=\"pt %s\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\" "
                                     "fill=\"%s\" data-round=\"%" PRIu64 "\"><title>round %" PRIu64
                                     ": %.4f</title></circle>",
                                     cls, x, y, color, h->round, h->round, v);
        }
        if (pass == 0) fed__coord_sb_printf(b, "\"/>");
    }
}

static void chart(fed_sbuf *b, const fed_status_data *d, size_t j0, bool loss) {
    double ymax = 1;
    for (size_t j = j0; loss && j < d->nhistory; j++) {
        const fed_status_round *h = hist_at(d, j);
        if (isfinite(h->fed_loss) && h->fed_loss > ymax) ymax = h->fed_loss;
        if (isfinite(h->central_loss) && h->central_loss > ymax) ymax = h->central_loss;
    }
    fed__coord_sb_printf(b,
                         "<figure><figcaption>%s per round</figcaption><svg id=\"%s\" "
                         "xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                         "viewBox=\"0 0 %d %d\"><rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" "
                         "fill=\"#fff\" stroke=\"#ccc\"/>"
                         "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>"
                         "<text x=\"4\" y=\"%d\" font-size=\"11\">%.3g</text>"
                         "<text x=\"4\" y=\"%d\" font-size=\"11\">0</text>",
                         loss ? "Loss" : "Accuracy", loss ? "loss-chart" : "accuracy-chart", CW, CH,
                         CW, CH, CW, CH, PAD, CH - PAD, CW - PAD, CH - PAD, PAD + 4, ymax,
                         CH - PAD);
    /* The window's first and last rounds under the axis, a dashed line at half height. */
    fed__coord_sb_printf(b,
                         "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\" "
                         "stroke-dasharray=\"4 4\"/><text x=\"4\" y=\"%d\" font-size=\"11\">"
                         "%.3g</text>",
                         PAD, CH / 2, CW - PAD, CH / 2, CH / 2 + 4, ymax / 2);
    if (d->nhistory > j0)
        fed__coord_sb_printf(b,
                             "<text class=\"xlabel\" x=\"%d\" y=\"%d\" font-size=\"11\">round "
                             "%" PRIu64 "</text><text class=\"xlabel\" x=\"%d\" y=\"%d\" "
                             "font-size=\"11\" text-anchor=\"end\">round %" PRIu64 "</text>",
                             PAD, CH - PAD + 16, hist_at(d, j0)->round, CW - PAD, CH - PAD + 16,
                             hist_at(d, d->nhistory - 1)->round);
    series(b, d, j0, loss ? 2 : 0, ymax, "federated", "#1f77b4");
    series(b, d, j0, loss ? 3 : 1, ymax, "central", "#d62728");
    fed__coord_sb_printf(b, "</svg><div class=\"legend\"><span style=\"color:#1f77b4\">&#9632; "
                            "federated</span> <span style=\"color:#d62728\">&#9632; "
                            "central</span></div></figure>");
}

static void cell_num(fed_sbuf *b, double v) {
    if (isfinite(v))
        fed__coord_sb_printf(b, "<td>%.4f</td>", v);
    else
        fed__coord_sb_printf(b, "<td>-</td>");
}

static void page_tables(fed_sbuf *b, const fed_status_data *d, size_t j0) {
    fed__coord_sb_printf(b, "<h2>Rounds</h2><table id=\"rounds\"><tr><th>round</th><th>fed "
                            "loss</th><th>fed acc</th><th>central loss</th><th>central "
                            "acc</th><th>seconds</th><th>sampled</th><th>returned</th>"
                            "<th>rejected</th></tr>");
    for (size_t j = d->nhistory; j > j0; j--) {
        const fed_status_round *h = hist_at(d, j - 1);
        fed__coord_sb_printf(b,
                             "<tr class=\"round\" data-round=\"%" PRIu64 "\"><td>%" PRIu64 "</td>",
                             h->round, h->round);
        cell_num(b, h->fed_loss);
        cell_num(b, h->fed_acc);
        cell_num(b, h->central_loss);
        cell_num(b, h->central_acc);
        fed__coord_sb_printf(b, "<td>%.2f</td><td>%zu</td><td>%zu</td><td>%zu</td></tr>",
                             h->seconds, h->sampled, h->returned, h->rejected);
    }
    fed__coord_sb_printf(b,
                         "</table><h2>Sites (%zu)</h2><table id=\"sites\"><tr><th>site</th>"
                         "<th>state</th><th>last seen (UTC)</th><th>rounds</th>"
                         "<th>rejections</th></tr>",
                         d->nsites);
    for (size_t i = 0; i < d->nsites && i < PAGE_SITES; i++) {
        const fed_status_site *e = &d->sites[i];
        char seen[32] = "-";
        time_t t = (time_t)e->last_seen;
        struct tm tm;
        if (e->last_seen && gmtime_r(&t, &tm))
            strftime(seen, sizeof seen, "%Y-%m-%d %H:%M:%S", &tm);
        fed__coord_sb_printf(b, "<tr class=\"site %s\"><td class=\"name\">",
                             fed__coord_site_state_name(e->state));
        fed__coord_sb_html(b, e->name);
        fed__coord_sb_printf(
            b, "</td><td>%s</td><td>%s</td><td>%" PRIu64 "</td><td>%" PRIu64 "</td></tr>",
            fed__coord_site_state_name(e->state), seen, e->rounds, e->rejections);
    }
    if (d->nsites > PAGE_SITES)
        fed__coord_sb_printf(b, "<tr><td colspan=\"5\">... and %zu more (see /status)</td></tr>",
                             d->nsites - PAGE_SITES);
    fed__coord_sb_printf(b, "</table><h2>Last warnings</h2><ul id=\"warnings\">");
    size_t w0 = (d->warnings_next + FED_STATUS_WARNINGS - d->nwarnings) % FED_STATUS_WARNINGS;
    for (size_t j = d->nwarnings; j > 0; j--) {
        const fed_status_warning *w = &d->warnings[(w0 + j - 1) % FED_STATUS_WARNINGS];
        char at[32] = "";
        time_t t = (time_t)w->time;
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(at, sizeof at, "%H:%M:%S", &tm);
        fed__coord_sb_printf(b, "<li class=\"%s\">%s %s: ", w->level, at, w->level);
        fed__coord_sb_html(b, w->text);
        fed__coord_sb_printf(b, "</li>");
    }
    if (!d->nwarnings) fed__coord_sb_printf(b, "<li>none</li>");
    fed__coord_sb_printf(b, "</ul>");
}

static void page(fed_sbuf *b, const fed_status_data *d) {
    size_t connected = 0;
    for (size_t i = 0; i < d->nsites; i++)
        connected += d->sites[i].state != FED_SITE_LEFT && d->sites[i].state != FED_SITE_EVICTED;
    size_t j0 = d->nhistory > PAGE_ROUNDS ? d->nhistory - PAGE_ROUNDS : 0;
    fed__coord_sb_printf(
        b,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"refresh\" content=\"10\"><title>fedtune coordinator</title>"
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222;background:#fafafa}"
        "table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}td.name{text-align:left}th{background:#eee}"
        "figure{display:inline-block;margin:0 1em 1em 0}.legend{font-size:12px}"
        "li.warn{color:#a60}li.error{color:#c00}.state{font-weight:bold}</style></head><body>"
        "<h1>fedtune coordinator</h1><p id=\"summary\">state <span class=\"state\">%s</span>%s"
        " &middot; round %" PRIu64 " of %" PRIu64 " done &middot; model version %" PRIu64
        " &middot; %zu sites connected &middot; endpoint ",
        fed_coord_state_name(d->state), d->paused ? " (paused)" : "", d->rounds_done,
        d->rounds_target, d->model_version, connected);
    fed__coord_sb_html(b, d->endpoint);
    fed__coord_sb_printf(b, "</p>");
    chart(b, d, j0, false);
    chart(b, d, j0, true);
    page_tables(b, d, j0);
    fed__coord_sb_printf(b, "<p><a href=\"/status\">/status</a> &middot; <a "
                            "href=\"/metrics\">/metrics</a></p></body></html>\n");
}

fed_err fed_coord_status_page(fed_coord *c, char **out) {
    *out = NULL;
    fed_status_data *d = NULL;
    fed_err err = fed__coord_status_copy(c, &d);
    if (err) return err;
    fed_sbuf b = {.limit = (size_t)8 << 20};
    page(&b, d);
    fed__coord_status_free(&d);
    return fed__coord_sb_done(&b, out);
}
