/* checkpoint.c: safetensors checkpoints (save, load, inspect).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON, then
 * the data buffer. The header is parsed by a small strict JSON reader that
 * follows the schema: a top-level object whose values are tensor objects
 * {"dtype": str, "shape": [int..], "data_offsets": [int, int]} or the
 * "__metadata__" object of strings. It accepts objects, arrays, strings
 * (escapes, \u with surrogate pairs, UTF-8 checked) and non-negative
 * integers, and rejects everything else (floats, true/false/null, trailing
 * commas, duplicate keys, unknown keys, trailing garbage). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fseeko, fsync, O_CLOEXEC */
#endif
#include "ad_ext.h"
#include "nn_internal.h"
#include "nn_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h> /* flock */
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Same limit as the reference implementation: a header this large is a
 * corrupt length, not a real checkpoint. */
#define HEADER_MAX ((uint64_t)100 * 1000 * 1000)

/* ------------------------------------------------------------- dtypes */

typedef struct st_dtype {
  const char *name;
  unsigned size; /* bytes per element */
  int ad;        /* the ad_dtype, or -1 when the engine has none */
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 4, AD_F32}, {"F64", 8, AD_F64}, {"I32", 4, AD_I32}, {"BOOL", 1, -1}, {"U8", 1, -1},
    {"I8", 1, -1},      {"F8_E5M2", 1, -1}, {"F8_E4M3", 1, -1}, {"I16", 2, -1},  {"U16", 2, -1},
    {"F16", 2, -1},     {"BF16", 2, -1},    {"U32", 4, -1},     {"I64", 8, -1},  {"U64", 8, -1},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static const st_dtype *st_dtype_find(const char *name) {
  for (int i = 0; i < ST_NDTYPES; i++)
    if (strcmp(st_dtypes[i].name, name) == 0) return &st_dtypes[i];
  return NULL;
}

/* "F32" etc. for a valid ad_dtype, NULL otherwise. */
static const char *st_name_of(ad_dtype dt) {
  for (int i = 0; i < ST_NDTYPES; i++)
    if (st_dtypes[i].ad == (int)dt) return st_dtypes[i].name;
  return NULL;
}

/* ------------------------------------------------------------- helpers */

static bool host_is_le(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 1;
}

/* Reverses the bytes of each esize-byte element (little <-> big endian). */
static void swap_elems(unsigned char *p, size_t nbytes, size_t esize) {
  for (size_t i = 0; i + esize <= nbytes; i += esize)
    for (size_t a = i, b = i + esize - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

/* I64 storage (nn_store): the int64 read from 8 little-endian bytes, and
 * the range each engine dtype holds exactly (elements are read and written
 * as doubles through ad_tensor_get / ad_tensor_set). */
static int64_t le_i64(const unsigned char *p) {
  uint64_t u = 0;
  for (int k = 7; k >= 0; k--) u = u << 8 | p[k];
  int64_t v;
  memcpy(&v, &u, sizeof v);
  return v;
}

static void i64_range(ad_dtype dt, int64_t *lo, int64_t *hi) {
  *hi = dt == AD_F64 ? (int64_t)1 << 53 : dt == AD_F32 ? (int64_t)1 << 24 : INT32_MAX;
  *lo = dt == AD_I32 ? INT32_MIN : -*hi;
}

/* Whether tensor i is stored as I64. */
static bool store_i64(const nn_store *stores, int i) { return stores && stores[i] == NN_STORE_I64; }

/* "[2,3,4]" into buf. */
static const char *fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t off = 0;
  off += (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && off < cap; i++)
    off += (size_t)snprintf(buf + off, cap - off, "%s%" PRId64, i ? "," : "", shape[i]);
  if (off < cap) snprintf(buf + off, cap - off, "]");
  return buf;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if it
 * is not valid (overlong forms, surrogates and code points past U+10FFFF
 * are invalid). s[0] >= 0x80. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else
    return 0;
  if (n < len) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

static bool utf8_valid(const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  size_t n = strlen(str);
  for (size_t i = 0; i < n;) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t l = utf8_seq(s + i, n - i);
    if (!l) return false;
    i += l;
  }
  return true;
}

/* Stable bottom-up merge sort of the index array idx[0..n-1] (set to
 * 0..n-1 first) by cmp(u, a, b). false on OOM. */
typedef int (*idx_cmp)(const void *u, int a, int b);

static bool sort_idx(ad_ctx *ctx, int *idx, int n, idx_cmp cmp, const void *u) {
  for (int i = 0; i < n; i++) idx[i] = i;
  if (n < 2) return true;
  int *tmp = ad_malloc(ctx, (size_t)n * sizeof *tmp);
  if (!tmp) return false;
  for (int w = 1; w<n; w = w> n / 2 ? n : 2 * w) {
    for (int lo = 0; lo < n; lo += 2 * w) {
      int mid = n - lo > w ? lo + w : n;
      int hi = n - mid > w ? mid + w : n;
      int a = lo, b = mid, k = lo;
      while (a < mid && b < hi) tmp[k++] = cmp(u, idx[b], idx[a]) < 0 ? idx[b++] : idx[a++];
      while (a < mid) tmp[k++] = idx[a++];
      while (b < hi) tmp[k++] = idx[b++];
    }
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
  }
  ad_free(ctx, tmp, (size_t)n * sizeof *tmp);
  return true;
}

/* Strings at base + i * stride (a const char * field of an array). */
typedef struct strtab {
  const char *base;
  size_t stride;
} strtab;

static const char *strtab_at(const strtab *t, int i) {
  const char *s;
  memcpy(&s, t->base + (size_t)i * t->stride, sizeof s);
  return s;
}

static int cmp_str(const void *u, int a, int b) { return strcmp(strtab_at(u, a), strtab_at(u, b)); }

/* Sorts idx by the strings of tab and sets *dup to a repeated string's
 * index (or -1). false on OOM. */
static bool sort_find_dup(ad_ctx *ctx, int *idx, int n, const void *base, size_t stride, int *dup) {
  strtab tab = {(const char *)base, stride};
  *dup = -1;
  if (!sort_idx(ctx, idx, n, cmp_str, &tab)) return false;
  for (int i = 1; i < n && *dup < 0; i++)
    if (cmp_str(&tab, idx[i - 1], idx[i]) == 0) *dup = idx[i];
  return true;
}

/* --------------------------------------------------------- the header */

typedef struct header {
  ad_ctx *ctx;
  const char *path;
  char *strs; /* decoded strings, NUL-terminated, back to back */
  size_t strs_cap, spos;
  nn_checkpoint_entry *ent;
  int n_ent, cap_ent;
  nn_checkpoint_meta *meta;
  int n_meta, cap_meta;
  int *by_name; /* entry indices sorted by name */
  uint64_t hlen, dlen, fsize;
} header;

static void header_free(header *h) {
  ad_free(h->ctx, h->strs, h->strs_cap);
  ad_free(h->ctx, h->ent, (size_t)h->cap_ent * sizeof *h->ent);
  ad_free(h->ctx, h->meta, (size_t)h->cap_meta * sizeof *h->meta);
  ad_free(h->ctx, h->by_name, (size_t)(h->n_ent ? h->n_ent : 1) * sizeof *h->by_name);
  h->strs = NULL;
  h->ent = NULL;
  h->meta = NULL;
  h->by_name = NULL;
}

/* Grows the array *p of *cap elements of size elem to hold one more. */
static ad_status grow(ad_ctx *ctx, void **p, int *cap, int used, size_t elem) {
  if (used < *cap) return AD_OK;
  if (*cap > (1 << 29)) return ad_set_error(ctx, AD_ERR_OOM, "checkpoint: too many entries");
  int ncap = *cap ? *cap * 2 : 16;
  void *q = ad_malloc(ctx, (size_t)ncap * elem);
  if (!q) return AD_ERR_OOM;
  if (*p) {
    memcpy(q, *p, (size_t)used * elem);
    ad_free(ctx, *p, (size_t)*cap * elem);
  }
  *p = q;
  *cap = ncap;
  return AD_OK;
}

/* ---------------------------------------------------------- JSON reader */

typedef struct jp {
  header *h;
  const unsigned char *s;
  size_t n, i;
} jp;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static ad_status
jerr(jp *p, const char *fmt, ...) {
  char msg[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ad_set_error(p->h->ctx, AD_ERR_FORMAT, "checkpoint %s: bad header at byte %zu: %s",
                      p->h->path, (size_t)8 + p->i, msg);
}

static int jpeek(jp *p) {
  while (p->i < p->n &&
         (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
    p->i++;
  return p->i < p->n ? p->s[p->i] : -1;
}

static ad_status jexpect(jp *p, int c, const char *where) {
  int got = jpeek(p);
  if (got == c) {
    p->i++;
    return AD_OK;
  }
  if (got < 0) return jerr(p, "unexpected end of header, expected '%c' %s", c, where);
  return jerr(p, "expected '%c' %s", c, where);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Four hex digits at p->i (after "\u"). */
static long jhex4(jp *p) {
  if (p->n - p->i < 4) return -1;
  long v = 0;
  for (int k = 0; k < 4; k++) {
    int d = hexval(p->s[p->i + (size_t)k]);
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  p->i += 4;
  return v;
}

/* The character of a one-letter escape such as \n, or -1. */
static int simple_escape(unsigned e) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  const char *q = e ? strchr(from, (int)e) : NULL;
  return q ? to[q - from] : -1;
}

/* Parses a string into h->strs (NUL-terminated) and points *out at it. The
 * decoded bytes plus the NUL never exceed the encoded bytes with quotes, so
 * strs (header length + 1) always has room. */
static ad_status jstring(jp *p, const char **out) {
  header *h = p->h;
  int c0 = jpeek(p);
  if (c0 != '"')
    return c0 < 0 ? jerr(p, "unexpected end of header, expected a string")
                  : jerr(p, "expected a string");
  p->i++;
  char *o = h->strs + h->spos;
  size_t k = 0;
  for (;;) {
    if (p->i >= p->n) return jerr(p, "unterminated string");
    unsigned c = p->s[p->i];
    if (c == '"') {
      p->i++;
      break;
    }
    if (c < 0x20) return jerr(p, "control character 0x%02x in string", c);
    if (c == '\\') {
      if (p->n - p->i < 2) return jerr(p, "unterminated string");
      unsigned e = p->s[p->i + 1];
      p->i += 2;
      int simple = simple_escape(e);
      if (simple >= 0) {
        o[k++] = (char)simple;
      } else if (e == 'u') {
        long cp = jhex4(p);
        if (cp < 0) return jerr(p, "bad \\u escape");
        if (cp >= 0xDC00 && cp <= 0xDFFF) return jerr(p, "lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
            return jerr(p, "high surrogate not followed by a low surrogate");
          p->i += 2;
          long lo = jhex4(p);
          if (lo < 0xDC00 || lo > 0xDFFF)
            return jerr(p, "high surrogate not followed by a low surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) return jerr(p, "\\u0000 in a string is not supported");
        if (cp < 0x80)
          o[k++] = (char)cp;
        else if (cp < 0x800) {
          o[k++] = (char)(0xC0 | (cp >> 6));
          o[k++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          o[k++] = (char)(0xE0 | (cp >> 12));
          o[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
          o[k++] = (char)(0x80 | (cp & 0x3F));
        } else {
          o[k++] = (char)(0xF0 | (cp >> 18));
          o[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
          o[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
          o[k++] = (char)(0x80 | (cp & 0x3F));
        }
      } else {
        p->i--;
        return jerr(p, "invalid escape '\\%c'", e >= 0x20 && e < 0x7F ? e : '?');
      }
    } else if (c < 0x80) {
      o[k++] = (char)c;
      p->i++;
    } else {
      size_t l = utf8_seq(p->s + p->i, p->n - p->i);
      if (!l) return jerr(p, "invalid UTF-8 in string");
      memcpy(o + k, p->s + p->i, l);
      k += l;
      p->i += l;
    }
  }
  o[k++] = 0;
  h->spos += k;
  *out = o;
  return AD_OK;
}

/* A non-negative integer <= max. */
static ad_status juint(jp *p, uint64_t max, uint64_t *out, const char *what) {
  int c = jpeek(p);
  if (c == '-') return jerr(p, "negative number in %s", what);
  if (c < '0' || c > '9')
    return c < 0 ? jerr(p, "unexpected end of header in %s", what)
                 : jerr(p, "expected an integer in %s", what);
  if (c == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
    return jerr(p, "leading zero in %s", what);
  uint64_t v = 0;
  while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
    unsigned d = (unsigned)(p->s[p->i] - '0');
    if (v > (max - d) / 10) return jerr(p, "number too large in %s", what);
    v = v * 10 + d;
    p->i++;
  }
  if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
    return jerr(p, "only integers are allowed in %s", what);
  *out = v;
  return AD_OK;
}

/* After an element: ',' (returns 1) or the closing bracket (returns 0). */
static int jnext(jp *p, int close, const char *where, ad_status *st) {
  int c = jpeek(p);
  p->i++;
  if (c == ',') return 1;
  if (c == close) return 0;
  p->i--;
  *st = c < 0 ? jerr(p, "unexpected end of header in %s", where)
              : jerr(p, "expected ',' or '%c' in %s", close, where);
  return -1;
}

enum { F_DTYPE = 1, F_SHAPE = 2, F_OFFSETS = 4 };

/* The tensor object of entry name. */
static ad_status parse_entry(jp *p, const char *name) {
  header *h = p->h;
  ad_status st = grow(h->ctx, (void **)&h->ent, &h->cap_ent, h->n_ent, sizeof *h->ent);
  if (st) return st;
  nn_checkpoint_entry *e = &h->ent[h->n_ent];
  memset(e, 0, sizeof *e);
  e->name = name;
  if ((st = jexpect(p, '{', "to open a tensor"))) return st;
  unsigned seen = 0;
  if (jpeek(p) == '}')
    p->i++;
  else
    for (;;) {
      size_t mark = h->spos, at = p->i;
      const char *key;
      if ((st = jstring(p, &key))) return st;
      unsigned f = strcmp(key, "dtype") == 0          ? F_DTYPE
                   : strcmp(key, "shape") == 0        ? F_SHAPE
                   : strcmp(key, "data_offsets") == 0 ? F_OFFSETS
                                                      : 0;
      if (!f || (seen & f)) {
        p->i = at;
        return jerr(p, "tensor '%s': %s key '%s'", name, f ? "duplicate" : "unknown", key);
      }
      h->spos = mark;
      seen |= f;
      if ((st = jexpect(p, ':', "after a key"))) return st;
      if (f == F_DTYPE) {
        const char *d;
        if ((st = jstring(p, &d))) return st;
        const st_dtype *sd = st_dtype_find(d);
        if (sd) {
          h->spos = mark; /* point at the static name instead */
          e->dtype_name = sd->name;
          e->has_dtype = sd->ad >= 0;
          e->dtype = sd->ad >= 0 ? (ad_dtype)sd->ad : AD_F32;
        } else {
          e->dtype_name = d; /* unknown: fine unless this tensor is loaded */
        }
      } else if (f == F_SHAPE) {
        if ((st = jexpect(p, '[', "to open a shape"))) return st;
        if (jpeek(p) == ']')
          p->i++;
        else
          for (int r;;) {
            if (e->ndim == AD_MAX_DIMS)
              return jerr(p, "tensor '%s' has more than %d dimensions", name, AD_MAX_DIMS);
            uint64_t v;
            if ((st = juint(p, INT64_MAX, &v, "a shape"))) return st;
            e->shape[e->ndim++] = (int64_t)v;
            if ((r = jnext(p, ']', "a shape", &st)) < 0) return st;
            if (!r) break;
          }
      } else {
        uint64_t b, en;
        if ((st = jexpect(p, '[', "to open data_offsets"))) return st;
        if ((st = juint(p, UINT64_MAX, &b, "data_offsets"))) return st;
        if ((st = jexpect(p, ',', "in data_offsets (it needs 2 integers)"))) return st;
        if ((st = juint(p, UINT64_MAX, &en, "data_offsets"))) return st;
        if ((st = jexpect(p, ']', "after data_offsets (it needs 2 integers)"))) return st;
        if (b > en)
          return jerr(p, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 "] are reversed", name,
                      b, en);
        e->offset = b;
        e->nbytes = en - b;
      }
      int r = jnext(p, '}', "a tensor", &st);
      if (r < 0) return st;
      if (!r) break;
    }
  if (seen != (F_DTYPE | F_SHAPE | F_OFFSETS)) {
    p->i--;
    return jerr(p, "tensor '%s' lacks \"%s\"", name,
                !(seen & F_DTYPE)   ? "dtype"
                : !(seen & F_SHAPE) ? "shape"
                                    : "data_offsets");
  }
  h->n_ent++;
  return AD_OK;
}

static ad_status parse_meta(jp *p) {
  header *h = p->h;
  ad_status st;
  if ((st = jexpect(p, '{', "to open __metadata__"))) return st;
  if (jpeek(p) == '}') {
    p->i++;
    return AD_OK;
  }
  for (;;) {
    if ((st = grow(h->ctx, (void **)&h->meta, &h->cap_meta, h->n_meta, sizeof *h->meta))) return st;
    nn_checkpoint_meta *m = &h->meta[h->n_meta];
    size_t at = p->i;
    if ((st = jstring(p, &m->key))) return st;
    if (!m->key[0]) {
      p->i = at;
      return jerr(p, "__metadata__ key %d is empty", h->n_meta);
    }
    if ((st = jexpect(p, ':', "after a key"))) return st;
    if (jpeek(p) != '"') return jerr(p, "__metadata__ value of '%s' is not a string", m->key);
    if ((st = jstring(p, &m->value))) return st;
    h->n_meta++;
    int r = jnext(p, '}', "__metadata__", &st);
    if (r < 0) return st;
    if (!r) return AD_OK;
  }
}

static ad_status parse_json(header *h, const unsigned char *s, size_t n) {
  jp p = {h, s, n, 0};
  ad_status st;
  bool seen_meta = false;
  if ((st = jexpect(&p, '{', "to open the header"))) return st;
  if (jpeek(&p) == '}')
    p.i++;
  else
    for (;;) {
      size_t mark = h->spos, at = p.i;
      const char *key;
      if ((st = jstring(&p, &key))) return st;
      if ((st = jexpect(&p, ':', "after a key"))) return st;
      if (!key[0]) { /* as nn_checkpoint_save refuses to write one */
        p.i = at;
        return jerr(&p, "tensor %d has an empty name", h->n_ent);
      }
      if (strcmp(key, "__metadata__") == 0) {
        h->spos = mark;
        if (seen_meta) {
          p.i = at;
          return jerr(&p, "duplicate \"__metadata__\"");
        }
        seen_meta = true;
        st = parse_meta(&p);
      } else {
        st = parse_entry(&p, key);
      }
      if (st) return st;
      int r = jnext(&p, '}', "the header object", &st);
      if (r < 0) return st;
      if (!r) break;
    }
  if (jpeek(&p) >= 0) return jerr(&p, "unexpected data after the header object");
  return AD_OK;
}

static int cmp_offset(const void *u, int a, int b) {
  const nn_checkpoint_entry *x = (const nn_checkpoint_entry *)u + a;
  const nn_checkpoint_entry *y = (const nn_checkpoint_entry *)u + b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Checks names and metadata keys for duplicates, sizes against dtypes and
 * shapes, and that the tensors tile the data buffer exactly. */
static ad_status validate(header *h) {
  ad_ctx *ctx = h->ctx;
  const char *path = h->path;
  size_t idx_bytes = (size_t)(h->n_ent ? h->n_ent : 1) * sizeof(int);
  int dup;
  h->by_name = ad_malloc(ctx, idx_bytes);
  if (!h->by_name) return AD_ERR_OOM;
  if (!sort_find_dup(ctx, h->by_name, h->n_ent, h->ent ? &h->ent[0].name : NULL, sizeof *h->ent,
                     &dup))
    return AD_ERR_OOM;
  if (dup >= 0)
    return ad_set_error(ctx, AD_ERR_FORMAT, "checkpoint %s: duplicate tensor name '%s'", path,
                        h->ent[dup].name);
  if (h->n_meta > 1) {
    int *mi = ad_malloc(ctx, (size_t)h->n_meta * sizeof *mi);
    if (!mi) return AD_ERR_OOM;
    bool ok = sort_find_dup(ctx, mi, h->n_meta, &h->meta[0].key, sizeof *h->meta, &dup);
    ad_free(ctx, mi, (size_t)h->n_meta * sizeof *mi);
    if (!ok) return AD_ERR_OOM;
    if (dup >= 0)
      return ad_set_error(ctx, AD_ERR_FORMAT, "checkpoint %s: duplicate __metadata__ key '%s'",
                          path, h->meta[dup].key);
  }
  for (int i = 0; i < h->n_ent; i++) {
    const nn_checkpoint_entry *e = &h->ent[i];
    uint64_t end = e->offset + e->nbytes;
    if (end > h->dlen)
      return ad_set_error(ctx, AD_ERR_FORMAT,
                          "checkpoint %s: tensor '%s' has data_offsets [%" PRIu64 ",%" PRIu64
                          "] beyond the data buffer of %" PRIu64 " bytes (truncated file?)",
                          path, e->name, e->offset, end, h->dlen);
    const st_dtype *sd = st_dtype_find(e->dtype_name);
    if (!sd) continue; /* unknown dtype: size cannot be checked */
    uint64_t need = sd->size;
    bool over = false;
    for (int d = 0; d < e->ndim; d++) {
      uint64_t s = (uint64_t)e->shape[d];
      if (s && need > UINT64_MAX / s) over = true;
      need = over ? 0 : need * s;
    }
    if (over || need != e->nbytes) {
      char sh[160];
      return ad_set_error(
          ctx, AD_ERR_FORMAT,
          "checkpoint %s: tensor '%s' has dtype %s and shape %s, which need "
          "%s%" PRIu64 " bytes, but data_offsets [%" PRIu64 ",%" PRIu64 "] hold %" PRIu64,
          path, e->name, e->dtype_name, fmt_shape(sh, sizeof sh, e->ndim, e->shape),
          over ? "more than " : "", over ? UINT64_MAX : need, e->offset, end, e->nbytes);
    }
  }
  /* tiling: in order of (offset, end) each tensor starts where the last
   * ended, and the last ends at the end of the buffer */
  int *ord = ad_malloc(ctx, idx_bytes);
  if (!ord) return AD_ERR_OOM;
  ad_status st = AD_OK;
  if (!sort_idx(ctx, ord, h->n_ent, cmp_offset, h->ent)) st = AD_ERR_OOM;
  uint64_t pos = 0;
  const nn_checkpoint_entry *prev = NULL;
  for (int i = 0; i < h->n_ent && !st; i++) {
    const nn_checkpoint_entry *e = &h->ent[ord[i]];
    if (e->offset < pos)
      st = ad_set_error(ctx, AD_ERR_FORMAT, "checkpoint %s: tensors '%s' and '%s' overlap", path,
                        prev->name, e->name);
    else if (e->offset > pos)
      st = ad_set_error(ctx, AD_ERR_FORMAT,
                        "checkpoint %s: %" PRIu64 " unused bytes in the data buffer before "
                        "tensor '%s'",
                        path, e->offset - pos, e->name);
    pos = e->offset + e->nbytes;
    prev = e;
  }
  if (!st && pos != h->dlen)
    st = ad_set_error(ctx, AD_ERR_FORMAT,
                      "checkpoint %s: %" PRIu64 " unused bytes after the last tensor", path,
                      h->dlen - pos);
  ad_free(ctx, ord, idx_bytes);
  return st;
}

/* Opens path, reads, parses and validates its header. On success *fout is
 * the open file (the caller closes it; NULL fout closes it here). On error
 * h holds nothing to free. */
static ad_status header_open(ad_ctx *ctx, const char *path, header *h, FILE **fout) {
  memset(h, 0, sizeof *h);
  h->ctx = ctx;
  h->path = path;
  if (fout) *fout = NULL;
  /* O_NONBLOCK: opening a FIFO without a writer would wait forever; it is
   * cleared again for the reads */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int err = errno;
    close(fd);
    return ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: not a regular file", path);
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl != -1) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    int err = errno;
    close(fd);
    return ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot open: %s", path, strerror(err));
  }
  ad_status st = AD_OK;
  unsigned char *json = NULL;
  unsigned char b8[8];
  h->fsize = (uint64_t)sb.st_size;
  if (h->fsize < 8) {
    st = ad_set_error(ctx, AD_ERR_FORMAT,
                      "checkpoint %s: file is %" PRIu64 " bytes, too short for a header", path,
                      h->fsize);
    goto done;
  }
  if (fread(b8, 1, 8, f) != 8) {
    st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot read the header length", path);
    goto done;
  }
  for (int i = 7; i >= 0; i--) h->hlen = (h->hlen << 8) | b8[i];
  if (h->hlen > h->fsize - 8) {
    st = ad_set_error(ctx, AD_ERR_FORMAT,
                      "checkpoint %s: header length %" PRIu64 " exceeds the %" PRIu64
                      " bytes after it (truncated or not a safetensors file)",
                      path, h->hlen, h->fsize - 8);
    goto done;
  }
  if (h->hlen < 2 || h->hlen > HEADER_MAX) {
    st = ad_set_error(ctx, AD_ERR_FORMAT,
                      "checkpoint %s: header length %" PRIu64 " is not in [2, %" PRIu64 "]", path,
                      h->hlen, HEADER_MAX);
    goto done;
  }
  h->dlen = h->fsize - 8 - h->hlen;
  json = ad_malloc(ctx, (size_t)h->hlen);
  h->strs_cap = (size_t)h->hlen + 1;
  h->strs = ad_malloc(ctx, h->strs_cap);
  if (!json || !h->strs) {
    st = AD_ERR_OOM;
    goto done;
  }
  if (fread(json, 1, (size_t)h->hlen, f) != (size_t)h->hlen) {
    st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot read the %" PRIu64 "-byte header",
                      path, h->hlen);
    goto done;
  }
  if ((st = parse_json(h, json, (size_t)h->hlen))) goto done;
  st = validate(h);
done:
  ad_free(ctx, json, (size_t)h->hlen);
  if (st) {
    header_free(h);
    h->n_ent = h->n_meta = 0;
  }
  if (st || !fout)
    fclose(f);
  else
    *fout = f;
  return st;
}

static const nn_checkpoint_entry *header_find(const header *h, const char *name) {
  int lo = 0, hi = h->n_ent - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    const nn_checkpoint_entry *e = &h->ent[h->by_name[mid]];
    int c = strcmp(name, e->name);
    if (!c) return e;
    if (c < 0)
      hi = mid - 1;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* ------------------------------------------------------ temporary files
 *
 * A save writes "<path>.tmp.<pid>.<16 hex digits>" (path's last component
 * cut to TMP_BASE_MAX bytes) next to path and renames
 * it over path. While it writes, it holds an exclusive flock on the file
 * (locks of open file descriptions: they conflict between threads of one
 * process too, and the kernel drops them when the writer dies). A save or
 * load of path then removes the temporary files of path whose lock it can
 * take: their writer was killed. A file whose lock is held belongs to a
 * live writer and is left alone, and so is every file whose name carries
 * this process's id (a lock emulated over NFS may not conflict within one
 * process). */

#define TMP_TAG ".tmp."

/* The temporary name keeps at most this many bytes of path's last
 * component, so that it fits NAME_MAX (255) whenever that component
 * does: ".tmp.", the pid and ".<16 hex digits>" add at most 34. */
#define TMP_BASE_MAX 200

/* The length of path up to the end of the part of its last component that
 * a temporary name keeps. */
static size_t temp_prefix_len(const char *path) {
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  size_t blen = strlen(base);
  return (size_t)(base - path) + (blen > TMP_BASE_MAX ? TMP_BASE_MAX : blen);
}

/* Whether name is base + ".tmp.<digits>.<16 hex digits>"; *pid gets the
 * digits' value. */
static bool is_temp_name(const char *name, const char *base, size_t blen, long *pid) {
  if (strncmp(name, base, blen) != 0 || strncmp(name + blen, TMP_TAG, 5) != 0) return false;
  const char *p = name + blen + 5, *q = p;
  long v = 0;
  while (*q >= '0' && *q <= '9' && q - p < 12) v = v * 10 + (*q++ - '0');
  if (q == p || *q != '.') return false;
  q++;
  for (int i = 0; i < 16; i++, q++)
    if (hexval((unsigned char)*q) < 0) return false;
  *pid = v;
  return *q == 0;
}

/* Whether fd is the file named name (not unlinked or replaced since). */
static bool still_named(int fd, const char *name) {
  struct stat a, b;
  return fstat(fd, &a) == 0 && stat(name, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Splits path into its directory (into dir, which has room for
 * strlen(path) + 2 bytes) and returns its last component. */
static const char *split_path(const char *path, char *dir) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    strcpy(dir, ".");
  else if (slash == path)
    strcpy(dir, "/");
  else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = 0;
  }
  return slash ? slash + 1 : path;
}

/* Whether path (through symlinks) is a device, FIFO or socket, which a
 * save must not rename a file over (over /dev/null, as root, it would
 * replace the device node). */
static bool special_target(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode);
}

/* The most links followed at the end of a path, as Linux's own limit. */
#define MAX_LINKS 40

/* The file a save at path replaces: path with the symbolic links at its
 * end followed, as open(2) follows them to write a file (and as torch.save
 * writes through them), so that a link stays a link, to the new file; a
 * link to a name that is not there yet gives that name (open would create
 * it). A link's relative target is taken from the link's folder. Into out,
 * of PATH_MAX bytes. Returns 0, or an errno: ELOOP after MAX_LINKS links,
 * ENAMETOOLONG for a path (given, or made of a link's folder and its
 * target) of PATH_MAX bytes or more, ENOENT for an empty link. */
static int follow_links(const char *path, char *out) {
  size_t n = strlen(path);
  if (n >= PATH_MAX) return ENAMETOOLONG;
  memcpy(out, path, n + 1);
  char link[PATH_MAX];
  for (int hops = 0;; hops++) {
    /* readlink alone (no lstat first, which a rename between the two
     * could make a lie): not a link (EINVAL), a new name (ENOENT), or an
     * error that creating the file there will report */
    ssize_t k = readlink(out, link, sizeof link);
    if (k < 0) return 0;
    if (hops == MAX_LINKS) return ELOOP;
    if (k == 0) return ENOENT;
    const char *slash = strrchr(out, '/');
    size_t dlen = link[0] == '/' || !slash ? 0 : (size_t)(slash - out) + 1;
    if ((size_t)k >= PATH_MAX - dlen) return ENAMETOOLONG;
    memcpy(out + dlen, link, (size_t)k); /* after the link's folder, kept in place */
    out[dlen + (size_t)k] = 0;
  }
}

/* The name a save's messages give: path, or "path (a link to target)". */
typedef struct shown_name {
  char text[2 * PATH_MAX + 16];
} shown_name;

/* follow_links for a save called what ("checkpoint") into out (PATH_MAX
 * bytes), with its errors as the caller's (AD_ERR_IO with the reason),
 * and a target that is a device, FIFO or socket refused (special_target);
 * the name for the messages into shown. */
static ad_status save_target(ad_ctx *ctx, const char *what, const char *path, char *out,
                             shown_name *shown) {
  int err = follow_links(path, out);
  if (err) return ad_set_error(ctx, AD_ERR_IO, "%s %s: %s", what, path, strerror(err));
  if (strcmp(out, path) == 0)
    snprintf(shown->text, sizeof shown->text, "%s", path);
  else
    snprintf(shown->text, sizeof shown->text, "%s (a link to %s)", path, out);
  if (special_target(out))
    return ad_set_error(ctx, AD_ERR_IO,
                        "%s %s: not a regular file (a device, FIFO or socket is not replaced)",
                        what, shown->text);
  return AD_OK;
}

/* Best effort: removes path's temporary files whose writer is gone (see
 * above). Errors (unreadable folder, a path of PATH_MAX bytes or more)
 * leave them. */
static void remove_stale_temps(const char *path) {
  char dir[PATH_MAX + 2], full[PATH_MAX + 64];
  size_t fcap = sizeof full;
  if (strlen(path) >= PATH_MAX) return;
  const char *base = split_path(path, dir);
  size_t dlen = (size_t)(base - path), blen = temp_prefix_len(path) - dlen; /* the kept part */
  DIR *d = blen ? opendir(dir) : NULL;
  struct dirent *e;
  long pid;
  while (d && (e = readdir(d))) {
    if (!is_temp_name(e->d_name, base, blen, &pid) || pid == (long)getpid()) continue;
    if (dlen + strlen(e->d_name) + 1 > fcap) continue;
    memcpy(full, path, dlen);
    strcpy(full + dlen, e->d_name);
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        still_named(fd, full))
      unlink(full); /* its writer is gone: nobody else holds the lock */
    close(fd);
  }
  if (d) closedir(d);
}

/* Gives fd the permission bits of the regular file at path, if there is
 * one (best effort): a save must not widen a private checkpoint's mode to
 * the umask's default. */
static void keep_mode(const char *path, int fd) {
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) (void)fchmod(fd, sb.st_mode & 0777);
}

/* Creates path's temporary file (its name into tmp, of cap bytes) with the
 * mode of the file at path (keep_mode) and locks it. Returns the
 * descriptor, -1 with errno on error. */
static int open_temp(const char *path, char *tmp, size_t cap) {
  static atomic_uint counter; /* distinct names across threads */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)&ts;
  for (int attempt = 0; attempt < 100; attempt++) {
    /* splitmix64 of the seed and a counter */
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (atomic_fetch_add(&counter, 1u) + 1ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(tmp, cap, "%.*s" TMP_TAG "%ld.%016" PRIx64, (int)temp_prefix_len(path), path,
             (long)getpid(), z);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return -1;
    }
    keep_mode(path, fd);
    if (flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) { /* try again under another name */
        unlink(tmp);
        close(fd);
        continue;
      }
      /* a file system without flock (ENOLCK): write unlocked; a cleaner
       * cannot take the lock there either, so it removes nothing */
      return fd;
    }
    if (still_named(fd, tmp)) return fd;
    /* a cleaner took the new file for a dead writer's before we locked it,
     * and removed it: take another name */
    close(fd);
  }
  errno = EEXIST;
  return -1;
}

/* ---------------------------------------------------------------- load */

static ad_status check_args(ad_ctx *ctx, const char *fn, const char *path, int n,
                            const char *const *names, ad_tensor *const *tensors,
                            const nn_store *stores) {
  if (!path) return ad_set_error(ctx, AD_ERR_NULL, "%s: path is NULL", fn);
  if (!*path) return ad_set_error(ctx, AD_ERR_ARG, "%s: path is empty", fn);
  if (n < 0) return ad_set_error(ctx, AD_ERR_ARG, "%s %s: n = %d is negative", fn, path, n);
  if (n > 0 && (!names || !tensors))
    return ad_set_error(ctx, AD_ERR_NULL, "%s %s: names or tensors is NULL", fn, path);
  for (int i = 0; i < n; i++) {
    if (!names[i]) return ad_set_error(ctx, AD_ERR_NULL, "%s %s: names[%d] is NULL", fn, path, i);
    if (!names[i][0])
      return ad_set_error(ctx, AD_ERR_ARG, "%s %s: names[%d] is empty", fn, path, i);
    const ad_tensor *t = tensors[i];
    if (!t)
      return ad_set_null_error(ctx, "%s %s: tensor '%s' (tensors[%d]) is NULL", fn, path, names[i],
                               i);
    if (!st_name_of(t->dtype) || t->ndim < 0 || t->ndim > AD_MAX_DIMS || t->size < 0 ||
        (t->size > 0 && !t->data))
      return ad_set_error(ctx, AD_ERR_ARG, "%s %s: tensor '%s' (tensors[%d]) is invalid", fn, path,
                          names[i], i);
    if (stores && (unsigned)stores[i] > NN_STORE_I64)
      return ad_set_error(ctx, AD_ERR_ARG, "%s %s: tensor '%s' has unknown store %d", fn, path,
                          names[i], (int)stores[i]);
  }
  return AD_OK;
}

ad_status nn_checkpoint_load_as(ad_ctx *ctx, const char *path, int n, const char *const *names,
                                ad_tensor *const *tensors, const nn_store *stores) {
  if (!ctx) return AD_ERR_NULL;
  ad_status st = check_args(ctx, "checkpoint", path, n, names, tensors, stores);
  if (st) return st;
  char real[PATH_MAX]; /* a save through a link left its temporary files beside the target */
  if (follow_links(path, real) == 0) remove_stale_temps(real);
  header h;
  FILE *f;
  if ((st = header_open(ctx, path, &h, &f))) return st;
  const nn_checkpoint_entry **ents = NULL;
  unsigned char *stage = NULL;
  uint64_t total = 0;
  if (n > 0 && !(ents = ad_malloc(ctx, (size_t)n * sizeof *ents))) {
    st = AD_ERR_OOM;
    goto done;
  }
  for (int i = 0; i < n; i++) {
    const ad_tensor *t = tensors[i];
    const nn_checkpoint_entry *e = header_find(&h, names[i]);
    char a[160], b[160];
    if (!e) {
      st = ad_set_error(ctx, AD_ERR_NOTFOUND,
                        "checkpoint %s: tensor '%s' not found (the file has %d tensors)", path,
                        names[i], h.n_ent);
      goto done;
    }
    if (!st_dtype_find(e->dtype_name)) {
      st = ad_set_error(ctx, AD_ERR_FORMAT, "checkpoint %s: tensor '%s' has unknown dtype '%s'",
                        path, names[i], e->dtype_name);
      goto done;
    }
    bool i64 = store_i64(stores, i) && strcmp(e->dtype_name, "I64") == 0;
    if (!i64 && (!e->has_dtype || e->dtype != t->dtype)) {
      st = ad_set_error(ctx, AD_ERR_DTYPE, "checkpoint %s: tensor '%s' has dtype %s, expected %s%s",
                        path, names[i], e->dtype_name, st_name_of(t->dtype),
                        store_i64(stores, i) ? " or I64" : "");
      goto done;
    }
    bool same = e->ndim == t->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == t->shape[d];
    if (!same) {
      st = ad_set_error(ctx, AD_ERR_SHAPE, "checkpoint %s: tensor '%s' has shape %s, expected %s",
                        path, names[i], fmt_shape(a, sizeof a, e->ndim, e->shape),
                        fmt_shape(b, sizeof b, t->ndim, t->shape));
      goto done;
    }
    ents[i] = e;
    total += e->nbytes;
    if (total > SIZE_MAX / 2) {
      st = ad_set_error(ctx, AD_ERR_OOM, "checkpoint %s: tensors too large to stage", path);
      goto done;
    }
  }
  /* read everything into a staging buffer first: all-or-nothing */
  if (total > 0 && !(stage = ad_malloc(ctx, (size_t)total))) {
    st = AD_ERR_OOM;
    goto done;
  }
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    const nn_checkpoint_entry *e = ents[i];
    if (!e->nbytes) continue;
    uint64_t at = 8 + h.hlen + e->offset;
    if ((uint64_t)(off_t)at != at || fseeko(f, (off_t)at, SEEK_SET) != 0 ||
        fread(stage + off, 1, (size_t)e->nbytes, f) != (size_t)e->nbytes) {
      st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot read tensor '%s'%s%s", path, e->name,
                        ferror(f) ? ": " : " (file changed while reading?)",
                        ferror(f) ? strerror(errno) : "");
      goto done;
    }
    bool i64 = !e->has_dtype; /* I64, checked above; decoded from its bytes below */
    if (!i64 && !host_is_le()) swap_elems(stage + off, (size_t)e->nbytes, ad_dtype_size(e->dtype));
    for (uint64_t k = 0; i64 && k < e->nbytes / 8; k++) { /* every value fits, or nothing loads */
      int64_t v = le_i64(stage + off + 8 * k), lo, hi;
      i64_range(tensors[i]->dtype, &lo, &hi);
      if (v < lo || v > hi) {
        st = ad_set_error(ctx, AD_ERR_FORMAT,
                          "checkpoint %s: tensor '%s' element %" PRIu64 " = %" PRId64
                          " (I64) does not fit %s exactly (range [%" PRId64 ", %" PRId64 "])",
                          path, e->name, k, v, st_name_of(tensors[i]->dtype), lo, hi);
        goto done;
      }
    }
    off += (size_t)e->nbytes;
  }
  for (int i = 0; i < n; i++) /* written through their data below (ad_tensor_set's notes) */
    if (ents[i]->nbytes && (st = ad_tensor_mark_modified(tensors[i])) != AD_OK) goto done;
  off = 0;
  for (int i = 0; i < n; i++) {
    const nn_checkpoint_entry *e = ents[i];
    ad_tensor *t = tensors[i];
    if (!e->nbytes) continue;
    if (e->has_dtype) {
      memcpy(t->data, stage + off, (size_t)e->nbytes);
    } else {
      for (int64_t k = 0; k < t->size; k++) {
        int64_t v = le_i64(stage + off + 8 * (size_t)k);
        if (t->dtype == AD_F64)
          ((double *)t->data)[k] = (double)v;
        else if (t->dtype == AD_F32)
          ((float *)t->data)[k] = (float)v;
        else
          ((int32_t *)t->data)[k] = (int32_t)v;
      }
    }
    off += (size_t)e->nbytes;
  }
done:
  ad_free(ctx, stage, (size_t)total);
  ad_free(ctx, (void *)ents, (size_t)n * sizeof *ents);
  fclose(f);
  header_free(&h);
  return st;
}

ad_status nn_checkpoint_load(ad_ctx *ctx, const char *path, int n, const char *const *names,
                             ad_tensor *const *tensors) {
  return nn_checkpoint_load_as(ctx, path, n, names, tensors, NULL);
}

/* ---------------------------------------------------------------- info */

typedef struct info_block {
  nn_checkpoint_info pub; /* first: the public pointer is the block */
  header h;
} info_block;

nn_checkpoint_info *nn_checkpoint_info_read(ad_ctx *ctx, const char *path) {
  if (!ctx) return NULL;
  if (!path) {
    ad_set_error(ctx, AD_ERR_NULL, "checkpoint: path is NULL");
    return NULL;
  }
  info_block *b = ad_malloc(ctx, sizeof *b);
  if (!b) return NULL;
  if (header_open(ctx, path, &b->h, NULL)) {
    ad_free(ctx, b, sizeof *b);
    return NULL;
  }
  b->h.path = NULL; /* the caller's string may not outlive the info */
  b->pub.n = b->h.n_ent;
  b->pub.entries = b->h.ent;
  b->pub.n_meta = b->h.n_meta;
  b->pub.meta = b->h.meta;
  b->pub.header_bytes = b->h.hlen;
  b->pub.data_bytes = b->h.dlen;
  return &b->pub;
}

void nn_checkpoint_info_free(nn_checkpoint_info *info) {
  if (!info) return;
  info_block *b = (info_block *)info;
  ad_ctx *ctx = b->h.ctx;
  header_free(&b->h);
  ad_free(ctx, b, sizeof *b);
}

const nn_checkpoint_entry *nn_checkpoint_info_find(const nn_checkpoint_info *info,
                                                   const char *name) {
  if (!info || !name) return NULL;
  return header_find(&((const info_block *)info)->h, name);
}

const char *nn_checkpoint_info_meta(const nn_checkpoint_info *info, const char *key) {
  if (!info || !key) return NULL;
  for (int i = 0; i < info->n_meta; i++)
    if (strcmp(info->meta[i].key, key) == 0) return info->meta[i].value;
  return NULL;
}

/* ---------------------------------------------------------------- save */

/* A growing text buffer; with buf == NULL it only counts. */
typedef struct sbuf {
  char *buf;
  size_t len, cap;
} sbuf;

static void sb_put(sbuf *s, const char *p, size_t n) {
  if (s->buf && s->len + n <= s->cap) memcpy(s->buf + s->len, p, n);
  s->len += n;
}

static void sb_str(sbuf *s, const char *p) { sb_put(s, p, strlen(p)); }

/* A JSON string literal: quotes, backslashes and control characters are
 * escaped; everything else (valid UTF-8) is copied. */
static void sb_json(sbuf *s, const char *str) {
  sb_put(s, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
    char esc[8];
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      sb_put(s, esc, 2);
    } else if (*p < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *p);
      sb_put(s, esc, 6);
    } else {
      sb_put(s, (const char *)p, 1);
    }
  }
  sb_put(s, "\"", 1);
}

static void emit_header(sbuf *s, int n, const char *const *names, ad_tensor *const *tensors,
                        const nn_store *stores, int n_meta, const char *const *keys,
                        const char *const *values) {
  char num[64];
  sb_str(s, "{");
  if (n_meta > 0) {
    sb_str(s, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i) sb_str(s, ",");
      sb_json(s, keys[i]);
      sb_str(s, ":");
      sb_json(s, values[i]);
    }
    sb_str(s, "}");
  }
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    const ad_tensor *t = tensors[i];
    if (i || n_meta > 0) sb_str(s, ",");
    sb_json(s, names[i]);
    sb_str(s, ":{\"dtype\":\"");
    sb_str(s, store_i64(stores, i) ? "I64" : st_name_of(t->dtype));
    sb_str(s, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
      snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
      sb_str(s, num);
    }
    uint64_t nb = (uint64_t)t->size * (store_i64(stores, i) ? 8 : ad_dtype_size(t->dtype));
    snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + nb);
    sb_str(s, num);
    off += nb;
  }
  sb_str(s, "}");
}

/* Writes nbytes of elements of size esize little-endian. */
static bool write_le(FILE *f, const void *data, size_t nbytes, size_t esize) {
  if (!nbytes) return true;
  if (host_is_le()) return fwrite(data, 1, nbytes, f) == nbytes;
  unsigned char chunk[4096];
  for (size_t off = 0; off < nbytes;) {
    size_t m = nbytes - off < sizeof chunk ? nbytes - off : sizeof chunk;
    memcpy(chunk, (const unsigned char *)data + off, m);
    swap_elems(chunk, m, esize);
    if (fwrite(chunk, 1, m, f) != m) return false;
    off += m;
  }
  return true;
}

/* Writes t's elements (whole numbers, checked) as little-endian int64. */
static bool write_i64(FILE *f, const ad_tensor *t) {
  unsigned char chunk[4096];
  size_t m = 0;
  for (int64_t k = 0; k < t->size; k++) {
    uint64_t u = (uint64_t)(int64_t)ad_tensor_get(t, k);
    for (int b = 0; b < 8; b++) chunk[m++] = (unsigned char)(u >> (8 * b));
    if (m == sizeof chunk || k + 1 == t->size) {
      if (fwrite(chunk, 1, m, f) != m) return false;
      m = 0;
    }
  }
  return true;
}

/* Best effort: makes the rename durable by syncing path's directory.
 * buf has room for strlen(path) + 2 bytes. */
static void sync_dir(const char *path, char *buf) {
  split_path(path, buf);
  int fd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

ad_status nn_checkpoint_save_as(ad_ctx *ctx, const char *path, int n, const char *const *names,
                                ad_tensor *const *tensors, const nn_store *stores, int n_meta,
                                const char *const *meta_keys, const char *const *meta_values) {
  if (!ctx) return AD_ERR_NULL;
  ad_status st = check_args(ctx, "checkpoint", path, n, names, tensors, stores);
  if (st) return st;
  for (int i = 0; i < n; i++) /* values stored as I64 must be whole numbers in range */
    for (int64_t k = 0; store_i64(stores, i) && k < tensors[i]->size; k++) {
      double v = ad_tensor_get(tensors[i], k);
      if (!(v == trunc(v) && v >= -0x1p63 && v < 0x1p63))
        return ad_set_error(ctx, AD_ERR_ARG,
                            "checkpoint %s: tensor '%s' element %lld = %g cannot be stored as "
                            "I64 (not a whole number in the int64 range)",
                            path, names[i], (long long)k, v);
    }
  if (n_meta < 0)
    return ad_set_error(ctx, AD_ERR_ARG, "checkpoint %s: n_meta = %d is negative", path, n_meta);
  if (n_meta > 0 && (!meta_keys || !meta_values))
    return ad_set_error(ctx, AD_ERR_NULL, "checkpoint %s: meta_keys or meta_values is NULL", path);
  for (int i = 0; i < n; i++) {
    if (strcmp(names[i], "__metadata__") == 0)
      return ad_set_error(ctx, AD_ERR_ARG,
                          "checkpoint %s: names[%d] is \"__metadata__\", a reserved name", path, i);
    if (!utf8_valid(names[i]))
      return ad_set_error(ctx, AD_ERR_ARG, "checkpoint %s: names[%d] is not valid UTF-8", path, i);
  }
  for (int i = 0; i < n_meta; i++) {
    if (!meta_keys[i] || !meta_values[i])
      return ad_set_error(ctx, AD_ERR_NULL, "checkpoint %s: metadata pair %d has a NULL string",
                          path, i);
    if (!meta_keys[i][0])
      return ad_set_error(ctx, AD_ERR_ARG, "checkpoint %s: metadata key %d is empty", path, i);
    if (!utf8_valid(meta_keys[i]) || !utf8_valid(meta_values[i]))
      return ad_set_error(ctx, AD_ERR_ARG, "checkpoint %s: metadata pair %d is not valid UTF-8",
                          path, i);
  }
  /* duplicates */
  int cnt = n > n_meta ? n : n_meta, dup = -1, mdup = -1;
  int *idx = ad_malloc(ctx, (size_t)(cnt ? cnt : 1) * sizeof *idx);
  if (!idx) return AD_ERR_OOM;
  bool ok = sort_find_dup(ctx, idx, n, names, sizeof *names, &dup) &&
            (dup >= 0 || sort_find_dup(ctx, idx, n_meta, meta_keys, sizeof *meta_keys, &mdup));
  ad_free(ctx, idx, (size_t)(cnt ? cnt : 1) * sizeof *idx);
  if (!ok) return AD_ERR_OOM;
  if (dup >= 0)
    return ad_set_error(ctx, AD_ERR_ARG, "checkpoint %s: duplicate tensor name '%s'", path,
                        names[dup]);
  if (mdup >= 0)
    return ad_set_error(ctx, AD_ERR_ARG, "checkpoint %s: duplicate metadata key '%s'", path,
                        meta_keys[mdup]);

  /* the header, padded with spaces to a multiple of 8 */
  sbuf sb = {NULL, 0, 0};
  emit_header(&sb, n, names, tensors, stores, n_meta, meta_keys, meta_values);
  size_t jlen = sb.len, hlen = (jlen + 7) / 8 * 8;
  if (hlen > HEADER_MAX)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "checkpoint %s: the header would be %zu bytes, more than the limit of "
                        "%" PRIu64,
                        path, hlen, HEADER_MAX);
  /* the file to replace: path's link target, if it is a link */
  char real[PATH_MAX];
  shown_name shown;
  if ((st = save_target(ctx, "checkpoint", path, real, &shown))) return st;
  sb.buf = ad_malloc(ctx, hlen);
  if (!sb.buf) return AD_ERR_OOM;
  sb.cap = hlen;
  sb.len = 0;
  emit_header(&sb, n, names, tensors, stores, n_meta, meta_keys, meta_values);
  memset(sb.buf + jlen, ' ', hlen - jlen);

  /* the temporary file's name, then room for the directory's name */
  size_t tcap = strlen(real) + 48, bcap = tcap + strlen(real) + 2;
  char *tmp = ad_malloc(ctx, bcap);
  if (!tmp) {
    ad_free(ctx, sb.buf, hlen);
    return AD_ERR_OOM;
  }
  FILE *f = NULL;
  remove_stale_temps(real);
  int fd = open_temp(real, tmp, tcap), lock_fd = -1;
  if (fd < 0) {
    st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot create a temporary file: %s",
                      shown.text, strerror(errno));
    goto done;
  }
  /* a second descriptor of the same open file keeps the lock held after
   * fclose, until the rename is done */
  lock_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (lock_fd < 0 || !(f = fdopen(fd, "wb"))) {
    int err = errno;
    close(fd);
    st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot write: %s", shown.text, strerror(err));
    goto fail;
  }
  unsigned char b8[8];
  for (int i = 0; i < 8; i++) b8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  ok = fwrite(b8, 1, 8, f) == 8 && fwrite(sb.buf, 1, hlen, f) == hlen;
  for (int i = 0; ok && i < n; i++) {
    size_t es = ad_dtype_size(tensors[i]->dtype);
    ok = store_i64(stores, i) ? write_i64(f, tensors[i])
                              : write_le(f, tensors[i]->data, (size_t)tensors[i]->size * es, es);
  }
  if (ok) ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  if (fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot write: %s", shown.text, strerror(err));
    goto fail;
  }
  if (rename(tmp, real) != 0) {
    st = ad_set_error(ctx, AD_ERR_IO, "checkpoint %s: cannot replace the file: %s", shown.text,
                      strerror(errno));
    goto fail;
  }
  sync_dir(real, tmp + tcap);
  goto done;
fail:
  unlink(tmp);
done:
  if (lock_fd >= 0) close(lock_fd);
  ad_free(ctx, tmp, bcap);
  ad_free(ctx, sb.buf, hlen);
  return st;
}

ad_status nn_write_file_atomic(ad_ctx *ctx, const char *what, const char *path, const void *buf,
                               size_t len) {
  char real[PATH_MAX];
  shown_name shown;
  ad_status st = save_target(ctx, what, path, real, &shown);
  if (st) return st;
  size_t tcap = strlen(real) + 48, bcap = tcap + strlen(real) + 2;
  char *tmp = ad_malloc(ctx, bcap);
  if (!tmp) /* "out of memory", as every other OOM error says */
    return ad_set_error(ctx, AD_ERR_OOM, "%s %s: out of memory", what, path);
  remove_stale_temps(real);
  int fd = open_temp(real, tmp, tcap), lock_fd = -1;
  bool ok = fd >= 0;
  FILE *f = NULL;
  if (ok) { /* the lock stays held through lock_fd until the rename */
    lock_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (lock_fd < 0 || !(f = fdopen(fd, "wb"))) {
      int err = errno;
      close(fd);
      unlink(tmp); /* nothing of it is worth keeping */
      errno = err;
      ok = false;
    }
  }
  if (f) {
    ok = fwrite(buf, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) err = errno, ok = false;
    if (ok && rename(tmp, real) != 0) err = errno, ok = false;
    if (ok) sync_dir(real, tmp + tcap);
    if (!ok) unlink(tmp);
    errno = err;
  }
  int err = errno;
  if (lock_fd >= 0) close(lock_fd);
  ad_free(ctx, tmp, bcap);
  return ok ? AD_OK : ad_set_error(ctx, AD_ERR_IO, "%s %s: %s", what, shown.text, strerror(err));
}

ad_status nn_checkpoint_save_meta(ad_ctx *ctx, const char *path, int n, const char *const *names,
                                  ad_tensor *const *tensors, int n_meta,
                                  const char *const *meta_keys, const char *const *meta_values) {
  return nn_checkpoint_save_as(ctx, path, n, names, tensors, NULL, n_meta, meta_keys, meta_values);
}

ad_status nn_checkpoint_save(ad_ctx *ctx, const char *path, int n, const char *const *names,
                             ad_tensor *const *tensors) {
  return nn_checkpoint_save_meta(ctx, path, n, names, tensors, 0, NULL, NULL);
}
