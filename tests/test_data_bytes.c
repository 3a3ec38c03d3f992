/* Byte sets (dataset.h): IDX images kept as bytes, their subsets as row lists on one
 * shared store, standardisation as a per-byte table. Every value a byte set yields must
 * be the float its float twin holds, bit for bit, through every path (rows, gather,
 * subsets, splits, one or two standardisations, moments, densify). */
#include "dataset/dataset.h"
#include "dataset/moments.h"
#include "test.h"
#include "tests/test_idx.h"

#include <stdint.h>
#include <stdlib.h>

/* 6 one-channel images of 3 x 4 pixels, labels 0..2. */
enum { N = 6, H = 3, W = 4, D = H * W };
static unsigned char pix[N * D];
static const unsigned char lab[N] = {2, 0, 1, 1, 0, 2};

static void fill_pixels(void) {
    for (size_t i = 0; i < N * D; i++) pix[i] = (unsigned char)((i * 37u + 11u) % 256u);
    pix[0] = 0;
    pix[1] = 255;
    pix[2] = 51;
}

/* The float set and the byte set of the same bytes (rank 3, or rank 2: a table). */
static void load_both(int rank, fed_dataset **f, fed_dataset **b) {
    const uint32_t d3[3] = {N, H, W}, d2[2] = {N, D}, dl[1] = {N};
    bytes im = rank == 3 ? idx_bytes(0x08, 3, d3, pix, N * D) : idx_bytes(0x08, 2, d2, pix, N * D);
    bytes lb = idx_bytes(0x08, 1, dl, lab, N);
    *f = *b = NULL;
    CHECK_OK(fed_data_parse_idx(f, im.b, im.n, lb.b, lb.n, "mem"));
    CHECK_OK(fed_data_parse_idx_bytes(b, im.b, im.n, lb.b, lb.n, "mem"));
}

/* Every row of b reads as the same bits as f's. */
static bool same_values(const fed_dataset *f, const fed_dataset *b) {
    if (f->n != b->n || f->dim != b->dim || !f->x || b->x) return false;
    float buf[D];
    for (size_t i = 0; i < f->n; i++) {
        if (memcmp(fed_data_row(b, i, buf), f->x + i * f->dim, f->dim * sizeof(float)) != 0)
            return false;
        if (f->y[i] != b->y[i]) return false;
    }
    return true;
}

TEST(parse_exact_values) {
    fed_dataset *f = NULL, *b = NULL;
    load_both(3, &f, &b);
    if (!f || !b) goto done;
    CHECK(b->x == NULL && b->bytes != NULL);
    CHECK_SIZE(b->n, N);
    CHECK_SIZE(b->dim, D);
    CHECK_INT(b->shape.ndim, 3);
    CHECK(b->shape.d[0] == 1 && b->shape.d[1] == H && b->shape.d[2] == W);
    CHECK_SIZE(b->num_classes, 3);
    CHECK_SIZE(b->lut_groups, 1);
    float buf[D];
    const float *r0 = fed_data_row(b, 0, buf);
    CHECK(r0 == buf);
    CHECK(r0[0] == 0.0f && r0[1] == 1.0f && r0[2] == 0.2f);
    CHECK(r0[2] == 51.0f / 255.0f);
    CHECK(fed_data_row(f, 1, buf) == f->x + D); /* a float set: its own row */
    CHECK(same_values(f, b));
done:
    fed_data_destroy(&f);
    fed_data_destroy(&b);
}

TEST(views_share_the_store) {
    fed_dataset *f = NULL, *b = NULL, *fs = NULL, *bs = NULL, *bc = NULL, *fc = NULL;
    load_both(3, &f, &b);
    if (!f || !b) goto done;
    const size_t idx[4] = {5, 0, 3, 3};
    CHECK_OK(fed_data_subset(&fs, f, idx, 4));
    CHECK_OK(fed_data_subset(&bs, b, idx, 4));
    if (!fs || !bs) goto done;
    CHECK(bs->x == NULL && bs->bytes == b->bytes); /* no copy of the pixels */
    CHECK(bs->rows[0] == 5 && bs->rows[1] == 0 && bs->rows[2] == 3 && bs->rows[3] == 3);
    CHECK(bs->y[0] == 2 && bs->y[1] == 2 && bs->y[2] == 1);
    CHECK(same_values(fs, bs));
    /* A subset of a subset maps through both row lists. */
    const size_t idx2[2] = {2, 0};
    fed_data_destroy(&fs);
    fed_dataset *t = NULL;
    CHECK_OK(fed_data_subset(&t, bs, idx2, 2));
    if (t) CHECK(t->rows[0] == 3 && t->rows[1] == 5);
    fed_data_destroy(&t);
    /* The store outlives the set it came from. */
    CHECK_OK(fed_data_clone(&bc, b));
    CHECK_OK(fed_data_clone(&fc, f));
    fed_data_destroy(&b);
    if (bc && fc) CHECK(same_values(fc, bc));
    /* Gather: the batch path, labels included. */
    float x[3 * D], xf[3 * D];
    int32_t y[3], yf[3];
    const size_t g[3] = {4, 1, 4};
    if (bc && fc) {
        fed_data_gather(bc, g, 3, x, y);
        fed_data_gather(fc, g, 3, xf, yf);
        CHECK_MEM(x, xf, sizeof x);
        CHECK(y[0] == 0 && y[1] == 0 && y[2] == 0 && memcmp(y, yf, sizeof y) == 0);
        CHECK(x[D + 1] == (float)pix[D + 1] / 255.0f);
    }
    /* Out of range is refused as for floats. */
    const size_t bad[1] = {N};
    CHECK_ERR(fed_data_subset(&t, bc, bad, 1), FED_EINVAL);
    CHECK(t == NULL);
done:
    fed_data_destroy(&f);
    fed_data_destroy(&b);
    fed_data_destroy(&fs);
    fed_data_destroy(&bs);
    fed_data_destroy(&bc);
    fed_data_destroy(&fc);
}

TEST(split_is_the_same_split) {
    fed_dataset *f = NULL, *b = NULL, *ft = NULL, *fv = NULL, *bt = NULL, *bv = NULL;
    load_both(3, &f, &b);
    if (!f || !b) goto done;
    CHECK_OK(fed_data_split(f, 0.0, 0.34, 7, &ft, NULL, &fv));
    CHECK_OK(fed_data_split(b, 0.0, 0.34, 7, &bt, NULL, &bv));
    if (!ft || !bt || !fv || !bv) goto done;
    CHECK(bt->bytes == b->bytes && bv->bytes == b->bytes);
    CHECK_SIZE(bt->n, ft->n);
    CHECK_SIZE(bv->n, fv->n);
    CHECK(same_values(ft, bt));
    CHECK(same_values(fv, bv));
done:
    fed_data_destroy(&f);
    fed_data_destroy(&b);
    fed_data_destroy(&ft);
    fed_data_destroy(&fv);
    fed_data_destroy(&bt);
    fed_data_destroy(&bv);
}

/* Standardised once (per channel: one group; per feature: a table), twice, and by
 * groups that do not nest: always the float path's bits. */
TEST(standardisation_tables) {
    for (int rank = 2; rank <= 3; rank++) {
        fed_dataset *f = NULL, *b = NULL;
        fed_standardizer *s = NULL, *s2 = NULL;
        load_both(rank, &f, &b);
        if (!f || !b) goto next;
        CHECK_OK(fed_std_fit(&s, f));
        fed_standardizer *sb = NULL;
        CHECK_OK(fed_std_fit(&sb, b)); /* fitted on bytes: the same moments */
        if (!s || !sb) goto next;
        CHECK_SIZE(sb->len, s->len);
        CHECK_MEM(sb->mean, s->mean, s->len * sizeof(float));
        CHECK_MEM(sb->std, s->std, s->len * sizeof(float));
        fed_std_destroy(&sb);
        CHECK_OK(fed_std_apply(s, f));
        CHECK_OK(fed_std_apply(s, b));
        CHECK(b->x == NULL);
        CHECK_SIZE(b->lut_groups, rank == 3 ? 1 : D);
        CHECK(same_values(f, b));
        float buf[D];
        CHECK(fed_data_row(b, 0, buf)[2] ==
              (51.0f / 255.0f - s->mean[rank == 3 ? 0 : 2]) / s->std[rank == 3 ? 0 : 2]);
        /* A second standardisation composes with the first. */
        CHECK_OK(fed_std_fit(&s2, f));
        if (s2) {
            s2->mean[0] = 0.25f;
            s2->std[0] = 3.0f;
            CHECK_OK(fed_std_apply(s2, f));
            CHECK_OK(fed_std_apply(s2, b));
            CHECK(b->x == NULL);
            CHECK(same_values(f, b));
        }
        /* The moments of the statistics round agree to the byte. */
        size_t groups = fed_std_groups(&f->shape, f->dim), len = fed_mom_len(groups);
        float *mf = calloc(len, sizeof(float)), *mb = calloc(len, sizeof(float));
        if (mf && mb) {
            CHECK_OK(fed_mom_encode(f, groups, mf));
            CHECK_OK(fed_mom_encode(b, groups, mb));
            CHECK_MEM(mf, mb, len * sizeof(float));
        }
        free(mf);
        free(mb);
        /* Densified: floats of the same bits, the store released. */
        CHECK_OK(fed_data_densify(b));
        CHECK(b->x != NULL && b->bytes == NULL && b->rows == NULL && b->lut == NULL);
        CHECK_MEM(b->x, f->x, (size_t)N * D * sizeof(float));
    next:
        fed_std_destroy(&s);
        fed_std_destroy(&s2);
        fed_data_destroy(&f);
        fed_data_destroy(&b);
    }
}

/* Per-feature groups on a per-channel table: not nested, so the set turns to floats. */
TEST(standardisation_groups_that_do_not_nest) {
    fed_dataset *f = NULL, *b = NULL;
    fed_standardizer *s = NULL;
    load_both(3, &f, &b);
    double mean[2] = {0.5, 0.25}, var[2] = {4.0, 0.25};
    CHECK_OK(fed_std_from_moments(&s, D, 2, mean, var)); /* two groups of 6 features */
    if (!f || !b || !s) goto done;
    fed_standardizer *one = NULL;
    double m1 = 0.1, v1 = 1.0;
    CHECK_OK(fed_std_from_moments(&one, D, 1, &m1, &v1));
    if (one) {
        CHECK_OK(fed_std_apply(one, f));
        CHECK_OK(fed_std_apply(one, b));
        fed_std_destroy(&one);
    }
    CHECK_OK(fed_std_apply(s, f));
    CHECK_OK(fed_std_apply(s, b)); /* 1 group then 2: composed */
    CHECK_SIZE(b->lut_groups, 2);
    CHECK(same_values(f, b));
    fed_standardizer *three = NULL;
    double m3[3] = {0, 1, 2}, v3[3] = {1, 1, 1};
    CHECK_OK(fed_std_from_moments(&three, D, 3, m3, v3));
    if (three) {
        CHECK_OK(fed_std_apply(three, f));
        CHECK_OK(fed_std_apply(three, b)); /* 2 groups then 3: floats */
        CHECK(b->x != NULL && b->bytes == NULL);
        CHECK_MEM(b->x, f->x, (size_t)N * D * sizeof(float));
        fed_std_destroy(&three);
    }
done:
    fed_std_destroy(&s);
    fed_data_destroy(&f);
    fed_data_destroy(&b);
}

TEST(floats_view_and_report) {
    fed_dataset *f = NULL, *b = NULL, *tmp = NULL;
    load_both(3, &f, &b);
    if (!f || !b) goto done;
    const fed_dataset *v = NULL;
    CHECK_OK(fed_data_floats(f, &v, &tmp));
    CHECK(v == f && tmp == NULL);
    CHECK_OK(fed_data_floats(b, &v, &tmp));
    CHECK(v == tmp && tmp && tmp->x);
    if (tmp) CHECK_MEM(tmp->x, f->x, (size_t)N * D * sizeof(float));
    fed_data_report rf, rb;
    CHECK_OK(fed_data_report_new(&rf, f));
    CHECK_OK(fed_data_report_new(&rb, b));
    CHECK_SIZE(rb.n, N);
    CHECK_SIZE(rb.duplicates, rf.duplicates);
    CHECK_SIZE(rb.constant_features, rf.constant_features);
    CHECK_SIZE(rb.class_counts[2], 2);
    fed_data_report_free(&rf);
    fed_data_report_free(&rb);
done:
    fed_data_destroy(&tmp);
    fed_data_destroy(&f);
    fed_data_destroy(&b);
}

#define CHECK_BYTES_FAIL(im, lb, code, sub)                                                        \
    do {                                                                                           \
        fed_dataset *d_ = NULL;                                                                    \
        CHECK_ERR(fed_data_parse_idx_bytes(&d_, (im).b, (im).n, (lb).b, (lb).n, "mem"), (code));   \
        CHECK(d_ == NULL);                                                                         \
        CHECK_CONTAINS(fed_errmsg(), (sub));                                                       \
    } while (0)

/* The byte reader is the float reader's parser: the same refusals, the same messages. */
TEST(bytes_malformed) {
    const uint32_t d3[3] = {N, H, W}, dl[1] = {N};
    bytes im = idx_bytes(0x08, 3, d3, pix, N * D), lb = idx_bytes(0x08, 1, dl, lab, N);
    bytes t = im;
    t.n--;
    CHECK_BYTES_FAIL(t, lb, FED_EFORMAT,
                     "mem: truncated: the IDX header promises 72 bytes of data, the file has 71");
    t = im;
    t.b[t.n++] = 9;
    CHECK_BYTES_FAIL(t, lb, FED_EFORMAT, "mem: 1 trailing bytes after the IDX data");
    t = lb;
    t.n--;
    CHECK_BYTES_FAIL(im, t, FED_EFORMAT, "mem (labels): truncated");
    t = im;
    t.b[2] = 0x0D;
    CHECK_BYTES_FAIL(t, lb, FED_EUNSUPPORTED,
                     "mem: IDX element type 0x0D (float) is not supported");
    t = im;
    t.b[0] = 0x1f;
    CHECK_BYTES_FAIL(t, lb, FED_EFORMAT, "mem: not an IDX file");
    t.n = 3;
    CHECK_BYTES_FAIL(t, lb, FED_EFORMAT, "mem: 3 bytes; too short for an IDX file");
    const uint32_t five[1] = {5};
    t = idx_bytes(0x08, 1, five, lab, 5);
    CHECK_BYTES_FAIL(im, t, FED_EFORMAT, "mem (labels): 5 labels for the 6 images of mem");
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_dataset *d = NULL;
        ALLOC_TRY(f, fed_data_parse_idx_bytes(&d, im.b, im.n, lb.b, lb.n, "mem"));
        if (f.failed)
            CHECK(d == NULL);
        else
            CHECK(d && d->rows && d->rows[5] == 5);
        fed_data_destroy(&d);
    }
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_parse_idx_bytes(&d, im.b, im.n, lb.b, lb.n, "mem"));
    const size_t idx[2] = {1, 4};
    if (d) {
        FOR_EACH_ALLOC_FAILURE(f) {
            fed_dataset *s = NULL;
            ALLOC_TRY(f, fed_data_subset(&s, d, idx, 2));
            if (f.failed)
                CHECK(s == NULL);
            else
                CHECK(s && s->bytes == d->bytes && s->rows[1] == 4 && s->y[1] == 0);
            fed_data_destroy(&s);
        }
    }
    fed_data_destroy(&d);
}

/* fed_data_load with keep_bytes: a byte set from the file, IDX only. */
TEST(load_keep_bytes) {
    char dir[] = "/tmp/fedtest-bytes-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(false);
        return;
    }
    char ip[64], lp[64], cp[64];
    snprintf(ip, sizeof ip, "%s/a-images-idx3-ubyte", dir);
    snprintf(lp, sizeof lp, "%s/a-labels-idx1-ubyte", dir);
    snprintf(cp, sizeof cp, "%s/t.csv", dir);
    const uint32_t d3[3] = {N, H, W}, dl[1] = {N};
    bytes im = idx_bytes(0x08, 3, d3, pix, N * D), lb = idx_bytes(0x08, 1, dl, lab, N);
    FILE *fi = fopen(ip, "wb"), *fl = fopen(lp, "wb"), *fc = fopen(cp, "w");
    CHECK(fi && fl && fc);
    if (fi) fwrite(im.b, 1, im.n, fi);
    if (fl) fwrite(lb.b, 1, lb.n, fl);
    if (fc) fputs("1,2,0\n3,4,1\n", fc);
    if (fi) fclose(fi);
    if (fl) fclose(fl);
    if (fc) fclose(fc);
    fed_csv_options o = {.keep_bytes = true};
    fed_dataset *b = NULL, *f = NULL, *c = NULL;
    CHECK_OK(fed_data_load(&b, ip, &o));
    CHECK_OK(fed_data_load(&f, ip, NULL));
    if (b && f) {
        CHECK(b->x == NULL && f->x != NULL);
        CHECK(same_values(f, b));
    }
    CHECK_OK(fed_data_load(&c, cp, &o)); /* not IDX: floats as ever */
    if (c) CHECK(c->x != NULL && c->bytes == NULL && c->x[2] == 3.0f);
    fed_data_destroy(&b);
    fed_data_destroy(&f);
    fed_data_destroy(&c);
    remove(ip);
    remove(lp);
    remove(cp);
    remove(dir);
}

int main(void) {
    fill_pixels();
    RUN(parse_exact_values);
    RUN(views_share_the_store);
    RUN(split_is_the_same_split);
    RUN(standardisation_tables);
    RUN(standardisation_groups_that_do_not_nest);
    RUN(floats_view_and_report);
    RUN(bytes_malformed);
    RUN(load_keep_bytes);
    return test_report();
}
