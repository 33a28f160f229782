/* One text's TF-IDF row in one call: the compiled twin of Featurizer._transform_single_numpy.

   Character n-grams (n <= 3) are keyed by their code points, 21 bits each, exactly as
   triage.features.gram_key does; words and word bigrams by a 64-bit hash of their code
   points with the top bit set (word_keys gives the vocabulary's). The keys are sorted and
   counted, each distinct key is looked up in an open-addressing table of the vocabulary's
   keys (index_table; one cache miss a key where binary search took several), and the
   row is weighted (1 + ln tf) * idf and L2-normalised in the same order of floating-point
   operations as the numpy path, so both give the same bits (tested). Optional: without a
   compiler the numpy path runs instead. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CODE_BITS 21
#define TF_BITS 20
#define WORD_BIT ((uint64_t)1 << 63) /* character n-gram keys use 63 bits at most */
#define GOLDEN 0x9E3779B97F4A7C15ULL

static void insertion_sort(uint64_t *a, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1] > v) { a[j] = a[j - 1]; j--; }
        a[j] = v;
    }
}

static void sift_down(uint64_t *a, Py_ssize_t root, Py_ssize_t n) {
    for (;;) {
        Py_ssize_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && a[child + 1] > a[child]) child++;
        if (a[root] >= a[child]) return;
        uint64_t t = a[root]; a[root] = a[child]; a[child] = t;
        root = child;
    }
}

static void heap_sort(uint64_t *a, Py_ssize_t n) {
    for (Py_ssize_t i = n / 2 - 1; i >= 0; i--) sift_down(a, i, n);
    for (Py_ssize_t end = n - 1; end > 0; end--) {
        uint64_t t = a[0]; a[0] = a[end]; a[end] = t;
        sift_down(a, 0, end);
    }
}

/* Introsort: Hoare-partition quicksort (fine with many equal keys), heapsort past a depth limit. */
static void sort_u64(uint64_t *a, Py_ssize_t n, int depth) {
    while (n > 16) {
        if (depth-- == 0) { heap_sort(a, n); return; }
        uint64_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint64_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        Py_ssize_t i = -1, j = n;
        for (;;) {
            do { i++; } while (a[i] < pivot);
            do { j--; } while (a[j] > pivot);
            if (i >= j) break;
            uint64_t t = a[i]; a[i] = a[j]; a[j] = t;
        }
        sort_u64(a, j + 1, depth);
        a += j + 1;
        n -= j + 1;
    }
    insertion_sort(a, n);
}

static Py_ssize_t home_slot(uint64_t key, int bits) { return (Py_ssize_t)((key * GOLDEN) >> (64 - bits)); }

/* The number of slots of a table buffer of len bytes (pairs of uint64), as a power of two; 0 if it is not one. */
static int table_bits(Py_ssize_t len) {
    uint64_t slots = (uint64_t)len / 16;
    if (slots < 2 || (slots & (slots - 1)) || (uint64_t)len != slots * 16) return 0;
    return __builtin_ctzll(slots);
}

/* The value stored for key, -1 if absent: linear probing over (key, value) pairs, key 0 empty. */
static int64_t probe(const uint64_t *table, int bits, uint64_t key) {
    Py_ssize_t mask = ((Py_ssize_t)1 << bits) - 1, slot = home_slot(key, bits);
    for (;;) {
        uint64_t k = table[2 * slot];
        if (k == key) return (int64_t)table[2 * slot + 1];
        if (k == 0) return -1;
        slot = (slot + 1) & mask;
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must have %zd-byte items", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static uint64_t mix64(uint64_t h) {
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* FNV-1a over the code points of text[start:end], finished with the splitmix64 mixer. */
static uint64_t hash_span(int kind, const void *data, Py_ssize_t start, Py_ssize_t end) {
    uint64_t h = 14695981039346656037ULL;
    for (Py_ssize_t i = start; i < end; i++) {
        h ^= (uint64_t)PyUnicode_READ(kind, data, i);
        h *= 1099511628211ULL;
    }
    return mix64(h);
}

static uint64_t pair_key(uint64_t first, uint64_t second) {
    return mix64(first * GOLDEN + second) | WORD_BIT;
}

static int is_space_token(PyObject *word) {
    return PyUnicode_GET_LENGTH(word) == 1 && PyUnicode_READ_CHAR(word, 0) == ' ';
}

/* word_keys(words, out): the key of every vocabulary word, or of a word bigram written "a b". */
static PyObject *word_keys(PyObject *self, PyObject *args) {
    PyObject *words, *o_out;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &words, &o_out)) return NULL;
    Py_buffer out;
    if (get_buffer(o_out, &out, 8, 1, "out") < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(words);
    if (out.len / 8 < n) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "output buffer is too small");
        return NULL;
    }
    uint64_t *o = out.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        if (!PyUnicode_Check(word)) {
            PyBuffer_Release(&out);
            PyErr_SetString(PyExc_TypeError, "words must be str");
            return NULL;
        }
        Py_ssize_t len = PyUnicode_GET_LENGTH(word), space = PyUnicode_FindChar(word, ' ', 0, len, 1);
        int kind = PyUnicode_KIND(word);
        const void *data = PyUnicode_DATA(word);
        if (space > 0 && space < len - 1)
            o[i] = pair_key(hash_span(kind, data, 0, space), hash_span(kind, data, space + 1, len));
        else
            o[i] = hash_span(kind, data, 0, len) | WORD_BIT;
    }
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* index_table(keys, values, table) -> duplicates: fill an open-addressing table (uint64 pairs, a power
   of two of them, at most half full) with keys and their values; return how many keys were already in. */
static PyObject *index_table(PyObject *self, PyObject *args) {
    PyObject *o_keys, *o_values, *o_table;
    if (!PyArg_ParseTuple(args, "OOO", &o_keys, &o_values, &o_table)) return NULL;
    Py_buffer keys, values, table;
    if (get_buffer(o_keys, &keys, 8, 0, "keys") < 0) return NULL;
    if (get_buffer(o_values, &values, 8, 0, "values") < 0) { PyBuffer_Release(&keys); return NULL; }
    if (get_buffer(o_table, &table, 8, 1, "table") < 0) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&keys);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = keys.len / 8, duplicates = 0;
    int bits = table_bits(table.len);
    const uint64_t *k = keys.buf;
    const int64_t *v = values.buf;
    uint64_t *t = table.buf;
    if (values.len != keys.len) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto done;
    }
    if (!bits || 2 * n > ((Py_ssize_t)1 << bits)) {
        PyErr_SetString(PyExc_ValueError, "the table must hold a power of two of slots, at least twice the keys");
        goto done;
    }
    memset(t, 0, table.len);
    Py_ssize_t mask = ((Py_ssize_t)1 << bits) - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (k[i] == 0 || v[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "keys must be non-zero and values non-negative");
            goto done;
        }
        Py_ssize_t slot = home_slot(k[i], bits);
        while (t[2 * slot] != 0 && t[2 * slot] != k[i]) slot = (slot + 1) & mask;
        if (t[2 * slot] == k[i]) {
            duplicates++;
            continue;
        }
        t[2 * slot] = k[i];
        t[2 * slot + 1] = (uint64_t)v[i];
    }
    result = PyLong_FromSsize_t(duplicates);
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&values);
    PyBuffer_Release(&keys);
    return result;
}

/* featurize_one(text, words, lo, hi, bigrams, table, log_tf, idf, out_index, out_weight) -> n */
static PyObject *featurize_one(PyObject *self, PyObject *args) {
    PyObject *text, *words, *o_table, *o_logtf, *o_idf, *o_out_idx, *o_out_w;
    int lo, hi, bigrams;
    if (!PyArg_ParseTuple(args, "UO!iipOOOOO", &text, &PyList_Type, &words, &lo, &hi, &bigrams, &o_table,
                          &o_logtf, &o_idf, &o_out_idx, &o_out_w))
        return NULL;
    if (lo < 1 || hi > 3 || lo > hi) {
        PyErr_SetString(PyExc_ValueError, "character n-gram sizes must satisfy 1 <= lo <= hi <= 3");
        return NULL;
    }
    Py_ssize_t n_words = PyList_GET_SIZE(words);
    for (Py_ssize_t i = 0; i < n_words; i++) {
        if (!PyUnicode_Check(PyList_GET_ITEM(words, i))) {
            PyErr_SetString(PyExc_TypeError, "words must be str");
            return NULL;
        }
    }
    Py_buffer table, logtf, idf, out_idx, out_w;
    Py_buffer *views[5] = {&table, &logtf, &idf, &out_idx, &out_w};
    int got = 0;
    PyObject *result = NULL;
    uint64_t *work = NULL;
    double *w = NULL;
    if (get_buffer(o_table, &table, 8, 0, "table") < 0) goto done;
    got++;
    if (get_buffer(o_logtf, &logtf, 8, 0, "log_tf") < 0) goto done;
    got++;
    if (get_buffer(o_idf, &idf, 8, 0, "idf") < 0) goto done;
    got++;
    if (get_buffer(o_out_idx, &out_idx, 8, 1, "out_index") < 0) goto done;
    got++;
    if (get_buffer(o_out_w, &out_w, 4, 1, "out_weight") < 0) goto done;
    got++;

    Py_ssize_t n_chars = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n_idf = idf.len / 8, n_logtf = logtf.len / 8;
    int bits = table_bits(table.len);
    Py_ssize_t cap = 3 * n_chars + 2 * n_words + 1;
    if (out_idx.len / 8 < cap || out_w.len / 4 < cap) {
        PyErr_SetString(PyExc_ValueError, "output buffers are too small");
        goto done;
    }
    if (!bits) {
        PyErr_SetString(PyExc_ValueError, "the table must hold a power of two of slots");
        goto done;
    }
    work = PyMem_Malloc(cap * sizeof(uint64_t));
    if (!work) { PyErr_NoMemory(); goto done; }

    Py_ssize_t m = 0;
    for (int size = lo; size <= hi; size++) {
        for (Py_ssize_t i = 0; i + size <= n_chars; i++) {
            uint64_t key = 0;
            for (int k = 0; k < size; k++) key = (key << CODE_BITS) | (uint64_t)PyUnicode_READ(kind, data, i + k);
            work[m++] = key;
        }
    }
    uint64_t previous = 0;
    int have_previous = 0;
    for (Py_ssize_t i = 0; i < n_words; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        if (is_space_token(word)) continue;
        uint64_t h = hash_span(PyUnicode_KIND(word), PyUnicode_DATA(word), 0, PyUnicode_GET_LENGTH(word));
        work[m++] = h | WORD_BIT;
        if (bigrams && have_previous) work[m++] = pair_key(previous, h);
        previous = h;
        have_previous = 1;
    }
    sort_u64(work, m, 64);

    /* distinct keys -> (feature index << TF_BITS) | tf */
    const uint64_t *slots = table.buf;
    Py_ssize_t n_out = 0;
    for (Py_ssize_t i = 0; i < m;) {
        Py_ssize_t j = i + 1;
        while (j < m && work[j] == work[i]) j++;
        int64_t index = probe(slots, bits, work[i]);
        if (index >= 0) {
            if ((uint64_t)(j - i) >= ((uint64_t)1 << TF_BITS)) {
                PyErr_SetString(PyExc_OverflowError, "an n-gram occurs too often for this path");
                goto done;
            }
            work[n_out++] = ((uint64_t)index << TF_BITS) | (uint64_t)(j - i);
        }
        i = j;
    }
    sort_u64(work, n_out, 64);

    int64_t *oi = out_idx.buf;
    float *ow = out_w.buf;
    const double *lt = logtf.buf, *id = idf.buf;
    w = PyMem_Malloc((n_out + 1) * sizeof(double));
    if (!w) { PyErr_NoMemory(); goto done; }
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < n_out; i++) {
        uint64_t index = work[i] >> TF_BITS, tf = work[i] & (((uint64_t)1 << TF_BITS) - 1);
        if ((Py_ssize_t)index >= n_idf || (Py_ssize_t)tf >= n_logtf) {
            PyErr_SetString(PyExc_IndexError, "feature index or count beyond idf / log_tf");
            goto done;
        }
        oi[n] = (int64_t)index;
        w[n] = lt[tf] * id[index];
        n++;
    }
    double sq = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) sq += w[i] * w[i];
    double norm = sqrt(sq);
    for (Py_ssize_t i = 0; i < n; i++) ow[i] = (float)(w[i] / norm);
    result = PyLong_FromSsize_t(n);

done:
    PyMem_Free(w);
    PyMem_Free(work);
    while (got > 0) PyBuffer_Release(views[--got]);
    return result;
}

static PyMethodDef methods[] = {
    {"featurize_one", featurize_one, METH_VARARGS,
     "featurize_one(text, words, lo, hi, bigrams, table, log_tf, idf, out_index, out_weight) -> n\n\n"
     "Fill out_index (ascending feature indices) and out_weight (L2-normalised sublinear TF-IDF,\n"
     "float32) for one feature text and its words; return how many were written."},
    {"index_table", index_table, METH_VARARGS,
     "index_table(keys, values, table) -> duplicates\n\nFill the open-addressing table featurize_one probes."},
    {"word_keys", word_keys, METH_VARARGS,
     "word_keys(words, out)\n\nFill out (uint64) with the key of every word, or of every bigram written 'a b'."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_featurize", NULL, -1, methods};

PyMODINIT_FUNC PyInit__featurize(void) { return PyModule_Create(&module); }
