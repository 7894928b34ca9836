/* Per-image kernels of ingestion, in C: what every image costs in the decode workers
 * (contamination features, perceptual hash, pixel moments) and the k-nearest-neighbour
 * selection of the outlier scores.
 *
 * The Python side (pipelines/native.py) checks dtypes, shapes and contiguity and owns
 * the output arrays; these functions take raw buffers, never allocate Python objects
 * per image, and run without the GIL. Every result is a function of one image (or one
 * row of distances) alone, in a fixed order of operations: the values do not depend on
 * the batch an image arrives in. The definitions are in pipelines/contamination.py's
 * docstrings; tests/test_native.py checks them against a plain NumPy reading of those
 * definitions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define N_QUANTILES 7
static const double QUANTILES[N_QUANTILES] = {0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98};
static const double EPS = 1e-3;
static const double LUMA_R = 0.299, LUMA_G = 0.587, LUMA_B = 0.114;
/* Column layout (contamination.FEATURE_NAMES_*): 7 quantiles, 4 log energies, 5 bands
 * (written by the caller from the FFT), 4 orientations, 10 LBP bins, 10 colour values. */
#define COL_ENERGY 7
#define COL_BANDS 11
#define COL_ORIENT 16
#define COL_LBP 20
#define COL_COLOUR 30
#define N_GREY 30
#define N_RGB 40

static int LBP_BIN[256];

/* The luma (ITU-R 601, 0..255) of pixel i of an image of c = 1 or 3 channels: one
 * expression for every kernel, so they all see the same grey levels, bit for bit. */
static inline double luma_at(const uint8_t *px, Py_ssize_t i, Py_ssize_t c) {
    if (c == 1)
        return (double)px[i];
    const uint8_t *p = px + 3 * i;
    return LUMA_R * p[0] + LUMA_G * p[1] + LUMA_B * p[2];
}

static void init_lbp_table(void) {
    for (int code = 0; code < 256; code++) {
        int ones = 0, changes = 0;
        for (int i = 0; i < 8; i++) {
            int bit = (code >> i) & 1, prev = (code >> ((i + 7) & 7)) & 1;
            ones += bit;
            changes += bit != prev;
        }
        LBP_BIN[code] = changes <= 2 ? ones : 9;
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd", what, view->len, need);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- features */

/* One image: grey levels g in [0, 1] (written to grey, H*W doubles) and every feature
 * column but the five bands (out: N_GREY or N_RGB doubles). */
static void image_features_one(const uint8_t *px, int h, int w, int c, double *grey, uint8_t *levels, double *out) {
    const int n = h * w;
    int64_t hist[256];
    memset(hist, 0, sizeof hist);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        double luma = luma_at(px, i, c);
        double lv = rint(luma);
        uint8_t level = (uint8_t)(lv < 0 ? 0 : lv > 255 ? 255 : lv);
        levels[i] = level;
        hist[level]++;
        grey[i] = luma / 255.0;
        sum += grey[i];
    }
    /* Quantiles: the smallest level whose cumulative share reaches q. */
    double cdf[256];
    int64_t running = 0;
    for (int l = 0; l < 256; l++) {
        running += hist[l];
        cdf[l] = (double)running;
    }
    for (int q = 0; q < N_QUANTILES; q++) {
        const double bound = QUANTILES[q] * n;
        int below = 0;
        for (int l = 0; l < 256; l++)
            below += cdf[l] < bound;
        out[q] = below / 255.0;
    }
    /* One pass for the spread, the gradient and Laplacian energies and the orientation
     * mix: independent sums side by side (each in pixel order), so no one sum's
     * addition latency sets the pace. */
    const double mean = sum / n;
    double ss = 0.0, gxs = 0.0, gys = 0.0, laps = 0.0;
    double o0 = 0.0, o1 = 0.0, o2 = 0.0, o3 = 0.0;
    for (int y = 0; y < h; y++) {
        const double *g = grey + y * w;
        for (int x = 0; x < w; x++) {
            double d = g[x] - mean;
            ss += d * d;
        }
        for (int x = 0; x + 1 < w; x++)
            gxs += fabs(g[x + 1] - g[x]);
        if (y + 1 == h)
            break;
        for (int x = 0; x < w; x++)
            gys += fabs(g[w + x] - g[x]);
        /* Gradient orientation: magnitude per 45-degree sector of [0, 180); a pixel adds
         * 0.0 to the sectors it is not in, which leaves their sums as they are. */
        for (int x = 0; x + 1 < w; x++) {
            double gx = g[x + 1] - g[x], gy = g[w + x] - g[x];
            double ax2 = gx * gx, ay2 = gy * gy;
            double mag = sqrt(ax2 + ay2);
            int same = (gx * gy > 0) | ((gy == 0) & (gx != 0));
            int ge = ay2 >= ax2, gt = ay2 > ax2;
            o0 += mag * (double)(same & (!ge));
            o1 += mag * (double)(same & ge);
            o2 += mag * (double)((!same) & gt);
            o3 += mag * (double)((!same) & (!gt));
        }
        if (y == 0)
            continue;
        for (int x = 1; x + 1 < w; x++)
            laps += fabs(4.0 * g[x] - g[x - w] - g[x + w] - g[x - 1] - g[x + 1]);
    }
    out[COL_ENERGY + 0] = log(sqrt(ss / n) + EPS);
    out[COL_ENERGY + 1] = log(gxs / ((double)h * (w - 1)) + EPS);
    out[COL_ENERGY + 2] = log(gys / ((double)(h - 1) * w) + EPS);
    out[COL_ENERGY + 3] = log(laps / ((double)(h - 2) * (w - 2)) + EPS);
    double orient[4] = {o0, o1, o2, o3};
    double total = o0 + o1 + o2 + o3 + 1e-12;
    for (int k = 0; k < 4; k++)
        out[COL_ORIENT + k] = orient[k] / total;

    /* Local binary patterns (8 neighbours, radius 1, a neighbour at least one level brighter). */
    int64_t lbp[10];
    memset(lbp, 0, sizeof lbp);
    for (int y = 1; y + 1 < h; y++)
        for (int x = 1; x + 1 < w; x++) {
            const uint8_t *v = levels + y * w + x;
            int centre = v[0] + 1;
            int code = (v[-w - 1] >= centre) | (v[-w] >= centre) << 1 | (v[-w + 1] >= centre) << 2 | (v[1] >= centre) << 3 |
                       (v[w + 1] >= centre) << 4 | (v[w] >= centre) << 5 | (v[w - 1] >= centre) << 6 | (v[-1] >= centre) << 7;
            lbp[LBP_BIN[code]]++;
        }
    double interior = (double)(h - 2) * (w - 2);
    for (int k = 0; k < 10; k++)
        out[COL_LBP + k] = lbp[k] / interior;

    if (c == 3) {
        /* Channel and opponent-colour moments from exact integer sums. */
        int64_t s[3] = {0, 0, 0}, sq[3] = {0, 0, 0}, s_rg = 0, s_rb = 0, s_gb = 0;
        for (int i = 0; i < n; i++) {
            const uint8_t *p = px + 3 * i;
            int64_t r = p[0], g = p[1], b = p[2];
            s[0] += r, s[1] += g, s[2] += b;
            sq[0] += r * r, sq[1] += g * g, sq[2] += b * b;
            s_rg += r * g, s_rb += r * b, s_gb += g * b;
        }
        int64_t s_opp[2] = {s[0] - s[1], 2 * s[2] - s[0] - s[1]};
        int64_t sq_opp[2] = {sq[0] + sq[1] - 2 * s_rg, 4 * sq[2] + sq[0] + sq[1] + 2 * s_rg - 4 * s_rb - 4 * s_gb};
        double unit = 255.0 * n;
        for (int k = 0; k < 3; k++) {
            out[COL_COLOUR + k] = s[k] / unit;
            out[COL_COLOUR + 3 + k] = log(sqrt((double)(n * sq[k] - s[k] * s[k])) / unit + EPS);
        }
        for (int k = 0; k < 2; k++) {
            double u = unit * (k == 0 ? 1.0 : 2.0);
            out[COL_COLOUR + 6 + k] = s_opp[k] / u;
            out[COL_COLOUR + 8 + k] = log(sqrt((double)(n * sq_opp[k] - s_opp[k] * s_opp[k])) / u + EPS);
        }
    }
}

static PyObject *py_features(PyObject *self, PyObject *args) {
    PyObject *pixels_obj, *grey_obj, *out_obj;
    Py_ssize_t b, h, w, c;
    if (!PyArg_ParseTuple(args, "OnnnnOO", &pixels_obj, &b, &h, &w, &c, &grey_obj, &out_obj))
        return NULL;
    if ((c != 1 && c != 3) || h < 3 || w < 3 || b < 0) {
        PyErr_SetString(PyExc_ValueError, "features: need (B, H, W, 1 or 3) images of at least 3 x 3 pixels");
        return NULL;
    }
    const Py_ssize_t dim = c == 3 ? N_RGB : N_GREY;
    Py_buffer px, grey, out;
    if (get_buffer(pixels_obj, &px, 0, b * h * w * c, "pixels") < 0)
        return NULL;
    if (get_buffer(grey_obj, &grey, 1, b * h * w * (Py_ssize_t)sizeof(double), "grey") < 0) {
        PyBuffer_Release(&px);
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, b * dim * (Py_ssize_t)sizeof(double), "out") < 0) {
        PyBuffer_Release(&px);
        PyBuffer_Release(&grey);
        return NULL;
    }
    uint8_t *levels = malloc((size_t)(h * w));
    if (levels == NULL) {
        PyBuffer_Release(&px);
        PyBuffer_Release(&grey);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++)
        image_features_one((const uint8_t *)px.buf + i * h * w * c, (int)h, (int)w, (int)c, (double *)grey.buf + i * h * w, levels,
                           (double *)out.buf + i * dim);
    Py_END_ALLOW_THREADS
    free(levels);
    PyBuffer_Release(&px);
    PyBuffer_Release(&grey);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* The k-th smallest of v[0..n) (0-based rank k), v reordered: quickselect with the
 * median of three as pivot. */
static double select_kth(double *v, int n, int k) {
    int lo = 0, hi = n - 1;
    while (hi > lo) {
        int mid = lo + (hi - lo) / 2;
        double a = v[lo], b = v[mid], c = v[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                double t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    return v[k];
}

/* bands(spectrum (B, F) complex doubles, B, F, band (F,) int32, weight (F,) doubles, out (B, D), D):
 * per image, the spectral power (weight * |z|^2) summed per band 0..4 (band 5: none),
 * written as log shares (+1e-8 each) to columns COL_BANDS.. of out. */
static PyObject *py_bands(PyObject *self, PyObject *args) {
    PyObject *spec_obj, *band_obj, *weight_obj, *out_obj;
    Py_ssize_t b, f, dim;
    if (!PyArg_ParseTuple(args, "OnnOOOn", &spec_obj, &b, &f, &band_obj, &weight_obj, &out_obj, &dim))
        return NULL;
    if (dim < COL_BANDS + 5) {
        PyErr_SetString(PyExc_ValueError, "bands: out has too few columns");
        return NULL;
    }
    Py_buffer spec, band, weight, out;
    if (get_buffer(spec_obj, &spec, 0, b * f * 2 * (Py_ssize_t)sizeof(double), "spectrum") < 0)
        return NULL;
    if (get_buffer(band_obj, &band, 0, f * (Py_ssize_t)sizeof(int32_t), "band") < 0) {
        PyBuffer_Release(&spec);
        return NULL;
    }
    if (get_buffer(weight_obj, &weight, 0, f * (Py_ssize_t)sizeof(double), "weight") < 0) {
        PyBuffer_Release(&spec);
        PyBuffer_Release(&band);
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, b * dim * (Py_ssize_t)sizeof(double), "out") < 0) {
        PyBuffer_Release(&spec);
        PyBuffer_Release(&band);
        PyBuffer_Release(&weight);
        return NULL;
    }
    const int32_t *bd = band.buf;
    for (Py_ssize_t j = 0; j < f; j++)
        if (bd[j] < 0 || bd[j] > 5) {
            PyBuffer_Release(&spec);
            PyBuffer_Release(&band);
            PyBuffer_Release(&weight);
            PyBuffer_Release(&out);
            PyErr_SetString(PyExc_ValueError, "bands: band numbers must be 0..5");
            return NULL;
        }
    Py_BEGIN_ALLOW_THREADS
    const double *wt = weight.buf;
    for (Py_ssize_t i = 0; i < b; i++) {
        const double *z = (const double *)spec.buf + i * f * 2;
        double sums[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (Py_ssize_t j = 0; j < f; j++)
            sums[bd[j]] += wt[j] * (z[2 * j] * z[2 * j] + z[2 * j + 1] * z[2 * j + 1]);
        double total = 0.0;
        for (int k = 0; k < 5; k++)
            total += sums[k] + 1e-8;
        double *o = (double *)out.buf + i * dim + COL_BANDS;
        for (int k = 0; k < 5; k++)
            o[k] = log((sums[k] + 1e-8) / total);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&spec);
    PyBuffer_Release(&band);
    PyBuffer_Release(&weight);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* grey(pixels uint8 (B, N, C), B, N, C, out (B, N)): each pixel's luma / 255, as features'
 * grey_out holds it. */
static PyObject *py_grey(PyObject *self, PyObject *args) {
    PyObject *pixels_obj, *out_obj;
    Py_ssize_t b, n, c;
    if (!PyArg_ParseTuple(args, "OnnnO", &pixels_obj, &b, &n, &c, &out_obj))
        return NULL;
    if ((c != 1 && c != 3) || b < 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "grey: need (B, N, 1 or 3) images");
        return NULL;
    }
    Py_buffer px, out;
    if (get_buffer(pixels_obj, &px, 0, b * n * c, "pixels") < 0)
        return NULL;
    if (get_buffer(out_obj, &out, 1, b * n * (Py_ssize_t)sizeof(double), "out") < 0) {
        PyBuffer_Release(&px);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *p = px.buf;
    double *g = out.buf;
    for (Py_ssize_t i = 0; i < b * n; i++)
        g[i] = luma_at(p, i, c) / 255.0;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&px);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- perceptual hash */

/* hash(grey (B, H, W) doubles, B, H, W, dh (8, H), dw (8, W), out uint64 (B,)) */
static PyObject *py_phash(PyObject *self, PyObject *args) {
    PyObject *grey_obj, *dh_obj, *dw_obj, *out_obj;
    Py_ssize_t b, h, w;
    if (!PyArg_ParseTuple(args, "OnnnOOO", &grey_obj, &b, &h, &w, &dh_obj, &dw_obj, &out_obj))
        return NULL;
    Py_buffer grey, dh, dw, out;
    if (get_buffer(grey_obj, &grey, 0, b * h * w * (Py_ssize_t)sizeof(double), "grey") < 0)
        return NULL;
    if (get_buffer(dh_obj, &dh, 0, 8 * h * (Py_ssize_t)sizeof(double), "dh") < 0)
        goto fail_grey;
    if (get_buffer(dw_obj, &dw, 0, 8 * w * (Py_ssize_t)sizeof(double), "dw") < 0)
        goto fail_dh;
    if (get_buffer(out_obj, &out, 1, b * (Py_ssize_t)sizeof(uint64_t), "out") < 0)
        goto fail_dw;
    double *rows = malloc(sizeof(double) * 8 * (size_t)w);
    if (rows == NULL) {
        PyErr_NoMemory();
        goto fail_out;
    }
    Py_BEGIN_ALLOW_THREADS
    const double *DH = dh.buf, *DW = dw.buf;
    for (Py_ssize_t i = 0; i < b; i++) {
        const double *g = (const double *)grey.buf + i * h * w;
        double low[64], sorted[64];
        for (int a = 0; a < 8; a++) {
            double *row = rows + a * w;
            for (Py_ssize_t x = 0; x < w; x++)
                row[x] = 0.0;
            for (Py_ssize_t y = 0; y < h; y++) {
                double k = DH[a * h + y];
                const double *gy = g + y * w;
                for (Py_ssize_t x = 0; x < w; x++)
                    row[x] += k * gy[x];
            }
            for (int cc = 0; cc < 8; cc++) {
                double acc = 0.0;
                for (Py_ssize_t x = 0; x < w; x++)
                    acc += row[x] * DW[cc * w + x];
                low[a * 8 + cc] = acc;
            }
        }
        memcpy(sorted, low, sizeof low);
        double upper = select_kth(sorted, 64, 32), lower = sorted[0];
        for (int k = 1; k < 32; k++) /* after the selection, the lower half is sorted[0..32) */
            lower = sorted[k] > lower ? sorted[k] : lower;
        double median = 0.5 * (lower + upper);
        uint64_t hash = 0;
        for (int k = 0; k < 64; k++)
            hash |= (uint64_t)(low[k] > median) << (63 - k);
        ((uint64_t *)out.buf)[i] = hash;
    }
    Py_END_ALLOW_THREADS
    free(rows);
    PyBuffer_Release(&out);
    PyBuffer_Release(&dw);
    PyBuffer_Release(&dh);
    PyBuffer_Release(&grey);
    Py_RETURN_NONE;
fail_out:
    PyBuffer_Release(&out);
fail_dw:
    PyBuffer_Release(&dw);
fail_dh:
    PyBuffer_Release(&dh);
fail_grey:
    PyBuffer_Release(&grey);
    return NULL;
}

/* ---------------------------------------------------------------- moments */

/* moments(pixels uint8 (B, H, W, C), B, H, W, C, out int64 (B, 5)): per image the sum of
 * the values, of their squares, of their products with the left-right mirror image,
 * the minimum and the maximum. Exact integers. */
static PyObject *py_moments(PyObject *self, PyObject *args) {
    PyObject *pixels_obj, *out_obj;
    Py_ssize_t b, h, w, c;
    if (!PyArg_ParseTuple(args, "OnnnnO", &pixels_obj, &b, &h, &w, &c, &out_obj))
        return NULL;
    Py_buffer px, out;
    if (get_buffer(pixels_obj, &px, 0, b * h * w * c, "pixels") < 0)
        return NULL;
    if (get_buffer(out_obj, &out, 1, b * 5 * (Py_ssize_t)sizeof(int64_t), "out") < 0) {
        PyBuffer_Release(&px);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const Py_ssize_t row = w * c;
    for (Py_ssize_t i = 0; i < b; i++) {
        const uint8_t *p = (const uint8_t *)px.buf + i * h * row;
        int64_t s1 = 0, s2 = 0, s12 = 0;
        int lo = 255, hi = 0;
        for (Py_ssize_t y = 0; y < h; y++) {
            const uint8_t *r = p + y * row;
            uint64_t r1 = 0, r2 = 0, r12 = 0;
            for (Py_ssize_t j = 0; j < row; j++) {
                uint64_t v = r[j];
                r1 += v;
                r2 += v * v;
                lo = (int)v < lo ? (int)v : lo;
                hi = (int)v > hi ? (int)v : hi;
            }
            /* The mirror of value (x, k) is (w-1-x, k): pair the pixels from both ends. */
            for (Py_ssize_t x = 0; x < w; x++) {
                const uint8_t *a = r + x * c, *m = r + (w - 1 - x) * c;
                for (Py_ssize_t k = 0; k < c; k++)
                    r12 += (uint64_t)a[k] * m[k];
            }
            s1 += (int64_t)r1, s2 += (int64_t)r2, s12 += (int64_t)r12;
        }
        int64_t *o = (int64_t *)out.buf + i * 5;
        o[0] = s1, o[1] = s2, o[2] = s12, o[3] = lo, o[4] = hi;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&px);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- k nearest */

#define KNN_SAMPLE 256

/* The columns of the k smallest entries of row[0..m) (ties: the lower column first),
 * written to picked in column order. A bound from an evenly spaced sample of the row
 * keeps the candidates few (about 2.5 times k); where fewer than k entries fall under
 * it, the bound is raised until they do. scratch: 2 * m doubles and m ints. */
static void k_smallest(const double *row, int m, int k, int *picked, double *scratch, int *cand) {
    double *sample = scratch, *vals = scratch + m;
    int step = m > KNN_SAMPLE ? m / KNN_SAMPLE : 1, ns = 0;
    for (int j = 0; j < m && ns < KNN_SAMPLE; j += step)
        ns++;
    /* The rank in the sample where about 2.5 k of the m entries are expected below. */
    int rank = (int)((2.5 * k * ns) / m) + 2;
    int nc = 0, exact = -1; /* exact: the rank whose value sample[rank] holds */
    if (rank < ns && rank < 32) { /* the rank + 1 smallest of the sample, kept sorted: most values are above them all */
        int kept = 0;
        exact = rank;
        for (int j = 0, s = 0; s < ns; j += step, s++) {
            double v = row[j];
            if (kept == rank + 1 && !(v < sample[rank]))
                continue;
            int at = kept < rank + 1 ? kept++ : rank;
            while (at > 0 && v < sample[at - 1]) {
                sample[at] = sample[at - 1];
                at--;
            }
            sample[at] = v;
        }
    }
    for (;;) {
        double bound;
        if (rank >= ns) {
            bound = INFINITY;
        } else if (rank == exact) {
            bound = sample[rank];
        } else { /* a raised rank: select it from the whole sample */
            for (int j = 0, s = 0; s < ns; j += step, s++)
                sample[s] = row[j];
            bound = select_kth(sample, ns, rank);
        }
        nc = 0;
        for (int j = 0; j < m; j++) {
            cand[nc] = j;
            nc += row[j] <= bound;
        }
        if (nc >= k || rank >= ns)
            break;
        rank *= 2;
    }
    if (nc < k) { /* only NaN can be under no bound: take the columns in order */
        for (int j = 0; j < k; j++)
            picked[j] = j;
        return;
    }
    for (int i = 0; i < nc; i++)
        vals[i] = row[cand[i]];
    double kth = select_kth(vals, nc, k - 1);
    int taken = 0;
    for (int i = 0; i < nc && taken < k; i++) /* below the k-th value: all of them */
        if (row[cand[i]] < kth)
            picked[taken++] = cand[i];
    int below = taken;
    for (int i = 0; i < nc && taken < k; i++) /* equal to it: the lowest columns */
        if (row[cand[i]] == kth)
            picked[taken++] = cand[i];
    if (below != taken) { /* merge back into column order */
        int tmp[taken];
        int a = 0, b = below, t = 0;
        while (a < below || b < taken)
            tmp[t++] = (b >= taken || (a < below && picked[a] < picked[b])) ? picked[a++] : picked[b++];
        memcpy(picked, tmp, sizeof(int) * taken);
    }
}

/* knn(d2 (R, M) doubles, R, M, k, ref_values (M,) or None, dk out (R,), local out (R,) or None
 *     [, q2 (R,), r2 (M,), own (R,) int64]):
 * per row, the k smallest squared distances (ties: the lower column first), the mean of
 * their square roots (summed in column order), and the median of ref_values over them.
 * Given q2, r2 and own, the first argument is the Gram matrix g of the rows and the
 * reference (R, M), and the squared distances are max(q2[r] + r2[j] - 2 g[r, j], 0), with
 * column own[r] (when >= 0: the row itself in the reference) at infinity. */
static PyObject *py_knn(PyObject *self, PyObject *args) {
    PyObject *d2_obj, *values_obj, *dk_obj, *local_obj, *q2_obj = Py_None, *r2_obj = Py_None, *own_obj = Py_None;
    Py_ssize_t rows, m, k;
    if (!PyArg_ParseTuple(args, "OnnnOOO|OOO", &d2_obj, &rows, &m, &k, &values_obj, &dk_obj, &local_obj, &q2_obj, &r2_obj, &own_obj))
        return NULL;
    if (k < 1 || k > m || m > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "knn: k = %zd must be in 1..%zd", k, m);
        return NULL;
    }
    int with_values = values_obj != Py_None, gram = q2_obj != Py_None;
    if (gram && (r2_obj == Py_None || own_obj == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "knn: q2, r2 and own come together");
        return NULL;
    }
    Py_buffer bufs[7];
    int held = 0;
    PyObject *objs[7] = {d2_obj, dk_obj, values_obj, local_obj, q2_obj, r2_obj, own_obj};
    const Py_ssize_t need[7] = {rows * m * 8, rows * 8, m * 8, rows * 8, rows * 8, m * 8, rows * 8};
    const int writable[7] = {0, 1, 0, 1, 0, 0, 0};
    const char *names[7] = {"d2", "dk", "ref_values", "local", "q2", "r2", "own"};
    for (int a = 0; a < 7; a++) {
        if ((a == 2 || a == 3) && !with_values)
            continue;
        if (a >= 4 && !gram)
            continue;
        if (get_buffer(objs[a], &bufs[a], writable[a], need[a], names[a]) < 0)
            goto fail;
        held |= 1 << a;
    }
    double *scratch = malloc(sizeof(double) * (3 * (size_t)m + (size_t)k));
    int *ints = malloc(sizeof(int) * ((size_t)m + (size_t)k));
    if (scratch == NULL || ints == NULL) {
        free(scratch);
        free(ints);
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    const int kk = (int)k, mm = (int)m;
    int *cand = ints, *picked = ints + m;
    double *picked_values = scratch + 2 * m, *dist = scratch + 2 * m + k;
    const double *values = with_values ? bufs[2].buf : NULL;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const double *row = (const double *)bufs[0].buf + r * m;
        if (gram) {
            const double q2 = ((const double *)bufs[4].buf)[r], *r2 = bufs[5].buf;
            for (int j = 0; j < mm; j++) {
                double d = (q2 + r2[j]) - 2.0 * row[j];
                dist[j] = d > 0.0 ? d : 0.0;
            }
            int64_t own = ((const int64_t *)bufs[6].buf)[r];
            if (own >= 0 && own < m)
                dist[own] = INFINITY;
            row = dist;
        }
        k_smallest(row, mm, kk, picked, scratch, cand);
        double acc = 0.0;
        for (int j = 0; j < kk; j++)
            acc += sqrt(row[picked[j]]);
        ((double *)bufs[1].buf)[r] = acc / kk;
        if (with_values) {
            for (int j = 0; j < kk; j++)
                picked_values[j] = values[picked[j]];
            double hi = select_kth(picked_values, kk, kk / 2);
            double median = hi;
            if (kk % 2 == 0) { /* the mean of the two middle values: the largest below the upper one */
                double lo = picked_values[0];
                for (int j = 1; j < kk / 2; j++)
                    lo = picked_values[j] > lo ? picked_values[j] : lo;
                median = 0.5 * (lo + hi);
            }
            ((double *)bufs[3].buf)[r] = median;
        }
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    free(ints);
    for (int a = 0; a < 7; a++)
        if (held & (1 << a))
            PyBuffer_Release(&bufs[a]);
    Py_RETURN_NONE;
fail:
    for (int a = 0; a < 7; a++)
        if (held & (1 << a))
            PyBuffer_Release(&bufs[a]);
    return NULL;
}

/* ---------------------------------------------------------------- near-duplicate residuals */

static inline double one_way_residual(double cross, double ssu, double ssv, double n) {
    /* RMS residual of the best linear map u ~ s v + t: (sum uc^2 - cross^2 / sum vc^2) / n. */
    double left = ssu - (ssv > 1e-12 ? cross * cross / ssv : 0.0);
    return sqrt((left > 0.0 ? left : 0.0) / n);
}

/* pair_residuals(pixels uint8 (K, N, C), K, N, C, a int64 (P,), b int64 (P,), P, out (P,)):
 * for each pair (a[p], b[p]) of the K images, the worse direction's RMS residual of the
 * best linear map between their grey levels in [0, 1] (luma as in features), each image
 * centred on its own mean. Each image's grey levels are formed once however many pairs
 * it is in. */
static PyObject *py_pair_residuals(PyObject *self, PyObject *args) {
    PyObject *pixels_obj, *a_obj, *b_obj, *out_obj;
    Py_ssize_t k, n, c, pairs;
    if (!PyArg_ParseTuple(args, "OnnnOOnO", &pixels_obj, &k, &n, &c, &a_obj, &b_obj, &pairs, &out_obj))
        return NULL;
    if ((c != 1 && c != 3) || n < 1 || k < 0 || pairs < 0) {
        PyErr_SetString(PyExc_ValueError, "pair_residuals: need (K, N, 1 or 3) images of at least one pixel");
        return NULL;
    }
    Py_buffer px, ab, bb, out;
    if (get_buffer(pixels_obj, &px, 0, k * n * c, "pixels") < 0)
        return NULL;
    if (get_buffer(a_obj, &ab, 0, pairs * 8, "a") < 0) {
        PyBuffer_Release(&px);
        return NULL;
    }
    if (get_buffer(b_obj, &bb, 0, pairs * 8, "b") < 0) {
        PyBuffer_Release(&px);
        PyBuffer_Release(&ab);
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, pairs * 8, "out") < 0) {
        PyBuffer_Release(&px);
        PyBuffer_Release(&ab);
        PyBuffer_Release(&bb);
        return NULL;
    }
    const int64_t *ia = ab.buf, *ib = bb.buf;
    for (Py_ssize_t p = 0; p < pairs; p++)
        if (ia[p] < 0 || ia[p] >= k || ib[p] < 0 || ib[p] >= k) {
            PyBuffer_Release(&px);
            PyBuffer_Release(&ab);
            PyBuffer_Release(&bb);
            PyBuffer_Release(&out);
            PyErr_Format(PyExc_IndexError, "pair_residuals: pair %zd names an image outside 0..%zd", p, k - 1);
            return NULL;
        }
    double *grey = malloc(sizeof(double) * ((size_t)(k * n) + (size_t)k + 1));
    if (grey == NULL) {
        PyBuffer_Release(&px);
        PyBuffer_Release(&ab);
        PyBuffer_Release(&bb);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    double *ss = grey + k * n;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        const uint8_t *p = (const uint8_t *)px.buf + i * n * c;
        double *g = grey + i * n, sum = 0.0, sq = 0.0;
        for (Py_ssize_t j = 0; j < n; j++) {
            g[j] = luma_at(p, j, c) / 255.0;
            sum += g[j];
        }
        const double mean = sum / n;
        for (Py_ssize_t j = 0; j < n; j++) {
            g[j] -= mean;
            sq += g[j] * g[j];
        }
        ss[i] = sq;
    }
    for (Py_ssize_t q = 0; q < pairs; q++) {
        const double *u = grey + ia[q] * n, *v = grey + ib[q] * n;
        double cross = 0.0;
        for (Py_ssize_t j = 0; j < n; j++)
            cross += u[j] * v[j];
        double r1 = one_way_residual(cross, ss[ia[q]], ss[ib[q]], (double)n), r2 = one_way_residual(cross, ss[ib[q]], ss[ia[q]], (double)n);
        ((double *)out.buf)[q] = r1 > r2 ? r1 : r2;
    }
    Py_END_ALLOW_THREADS
    free(grey);
    PyBuffer_Release(&px);
    PyBuffer_Release(&ab);
    PyBuffer_Release(&bb);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- plain PNG */

static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* The Paeth predictor, without branches: a when |p-a| is smallest, then b, then c. */
static inline int paeth(int a, int b, int c) {
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    int least = pa <= pb ? pa : pb, pick = pa <= pb ? a : b;
    return pc < least ? c : pick;
}

/* The IDAT chunks in data[start..stop) (back to back, each checksum right) inflated to
 * exactly h rows of 1 + w*c bytes, the zlib stream ending with the last chunk, then
 * unfiltered into out (h*w*c bytes). 0 for anything else: the caller's other decoders
 * take such a file and word what is wrong with it. */
static int png_plain_decode(const uint8_t *data, size_t start, size_t stop, size_t h, size_t w, size_t c, uint8_t *raw, uint8_t *out) {
    const size_t stride = w * c, raw_size = h * (stride + 1);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK)
        return 0;
    zs.next_out = raw;
    int ended = 0, ok = 1;
    size_t pos = start;
    while (ok && pos < stop) {
        if (pos + 12 > stop) {
            ok = 0;
            break;
        }
        uint32_t len = be32(data + pos);
        if (memcmp(data + pos + 4, "IDAT", 4) != 0 || pos + 12 + (size_t)len > stop || ended) {
            ok = 0;
            break;
        }
        const uint8_t *body = data + pos + 8;
        if ((uint32_t)crc32(crc32(0L, data + pos + 4, 4), body, len) != be32(body + len)) {
            ok = 0;
            break;
        }
        zs.next_in = (Bytef *)body;
        zs.avail_in = len;
        while (zs.avail_in > 0) {
            size_t produced = (size_t)(zs.next_out - raw);
            zs.avail_out = (uInt)(raw_size - produced);
            int rc = inflate(&zs, Z_NO_FLUSH);
            if (rc == Z_STREAM_END) {
                ended = 1;
                break;
            }
            if (rc != Z_OK) { /* damaged, or more data than the rows hold (no progress: Z_BUF_ERROR) */
                ok = 0;
                break;
            }
        }
        if (ended && zs.avail_in != 0) /* data after the end of the stream */
            ok = 0;
        pos += 12 + (size_t)len;
    }
    size_t produced = (size_t)(zs.next_out - raw);
    inflateEnd(&zs);
    if (!ok || !ended || pos != stop || produced != raw_size)
        return 0;
    const uint8_t *up = raw + raw_size; /* the row above the first: zeros (the caller's) */
    for (size_t y = 0; y < h; y++) {
        const uint8_t *src = raw + y * (stride + 1) + 1;
        uint8_t *dst = out + y * stride;
        size_t i;
        switch (src[-1]) {
        case 0:
            memcpy(dst, src, stride);
            break;
        case 1:
            memcpy(dst, src, c);
            for (i = c; i < stride; i++)
                dst[i] = (uint8_t)(src[i] + dst[i - c]);
            break;
        case 2:
            for (i = 0; i < stride; i++)
                dst[i] = (uint8_t)(src[i] + up[i]);
            break;
        case 3:
            for (i = 0; i < c; i++)
                dst[i] = (uint8_t)(src[i] + (up[i] >> 1));
            for (; i < stride; i++)
                dst[i] = (uint8_t)(src[i] + ((dst[i - c] + up[i]) >> 1));
            break;
        case 4:
            for (i = 0; i < c; i++)
                dst[i] = (uint8_t)(src[i] + up[i]); /* paeth(0, b, 0) = b */
            for (; i < stride; i++)
                dst[i] = (uint8_t)(src[i] + paeth(dst[i - c], up[i], up[i - c]));
            break;
        default:
            return 0;
        }
        up = dst;
    }
    return 1;
}

/* png_plain(data, start, stop, h, w, c, out) -> bool */
static PyObject *py_png_plain(PyObject *self, PyObject *args) {
    PyObject *data_obj, *out_obj;
    Py_ssize_t start, stop, h, w, c;
    if (!PyArg_ParseTuple(args, "OnnnnnO", &data_obj, &start, &stop, &h, &w, &c, &out_obj))
        return NULL;
    Py_buffer data, out;
    if (get_buffer(data_obj, &data, 0, 0, "data") < 0)
        return NULL;
    if (start < 0 || stop < start || stop > data.len || h < 1 || w < 1 || (c != 1 && c != 3)) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "png_plain: span outside the data, or not 1 or 3 channels of at least 1 x 1 pixels");
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, h * w * c, "out") < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    uint8_t *raw = malloc((size_t)(h * (w * c + 1) + w * c)); /* the rows, then one row of zeros */
    if (raw == NULL) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS
    memset(raw + h * (w * c + 1), 0, (size_t)(w * c));
    ok = png_plain_decode(data.buf, (size_t)start, (size_t)stop, (size_t)h, (size_t)w, (size_t)c, raw, out.buf);
    Py_END_ALLOW_THREADS
    free(raw);
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"features", py_features, METH_VARARGS, "features(pixels, B, H, W, C, grey_out, out): the contamination features but the bands"},
    {"bands", py_bands, METH_VARARGS, "bands(spectrum, B, F, band, weight, out, D): log shares of spectral power per band"},
    {"grey", py_grey, METH_VARARGS, "grey(pixels, B, N, C, out): grey levels in [0, 1], as features computes them"},
    {"phash", py_phash, METH_VARARGS, "phash(grey, B, H, W, dh, dw, out): 64-bit DCT hashes"},
    {"moments", py_moments, METH_VARARGS, "moments(pixels, B, H, W, C, out): sum, sum of squares, mirror products, min, max"},
    {"pair_residuals", py_pair_residuals, METH_VARARGS, "pair_residuals(pixels, K, N, C, a, b, P, out): near-duplicate residuals of image pairs"},
    {"png_plain", py_png_plain, METH_VARARGS, "png_plain(data, start, stop, H, W, C, out): inflate and unfilter a plain PNG's IDAT run"},
    {"knn", py_knn, METH_VARARGS, "knn(d2, R, M, k, ref_values, dk_out, local_out): k-nearest distances and neighbour medians"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Per-image kernels of ingestion (see pipelines/native.py).", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    init_lbp_table();
    return PyModule_Create(&module);
}
