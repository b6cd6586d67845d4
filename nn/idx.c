/* idx.c: IDX files (the MNIST format), raw or gzip'd.
 *
 * Layout: a magic of four bytes 00 00 T D (T the element type code, D the
 * number of dims), D big-endian uint32 dims, then the elements row-major.
 * Only T = 0x08 (unsigned byte) is read. gzip is recognized by the magic
 * bytes 1f 8b and inflated here with zlib's inflate, member after member
 * (as gzip -d reads them); a raw file is read as it is. Both go through
 * idx_read, so the checks are the same for both. gzread is not used: it
 * skips whatever follows the last member, where a raw file with bytes
 * after its data is refused. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fseeko, fsync, O_CLOEXEC */
#endif
#include "ad_ext.h"
#include "nn_io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

/* deflate cannot compress better than about 1032:1 */
#define GZIP_MAX_RATIO 1100u

typedef struct idx_file {
  ad_ctx *ctx;
  const char *path;
  int fd;
  bool gzip;
  bool done; /* gzip: the last member ended at the end of the file */
  uint64_t fsize;
  uint64_t got;           /* bytes read from fd */
  ad_status st;           /* the error of the last failed idx_read */
  z_stream zs;            /* gzip: inflate's state (inflateInit2 done) */
  unsigned char in[8192]; /* gzip: input read from fd, at zs.next_in */
} idx_file;

static const char *type_name(unsigned code) {
  switch (code) {
  case 0x08:
    return "unsigned byte";
  case 0x09:
    return "signed byte";
  case 0x0B:
    return "int16";
  case 0x0C:
    return "int32";
  case 0x0D:
    return "float32";
  case 0x0E:
    return "float64";
  default:
    return "unknown";
  }
}

/* zlib's allocations go through the context's allocator, as every
 * allocation of a context does (ad_ctx_new_with_alloc): a context that
 * limits or counts memory sees inflate's state and window too. zfree gives
 * no size, so each block starts with a 64-byte header holding it (which
 * keeps the allocator's alignment for what follows). Nothing is recorded
 * on failure: inflate reports Z_MEM_ERROR and the reader names it. */
#define ZHEAD 64

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  ad_ctx *ctx = opaque;
  if (size && items > (SIZE_MAX - ZHEAD) / size) return Z_NULL;
  size_t n = (size_t)items * size + ZHEAD;
  ad_alloc_fn fn;
  void *ud;
  ad_get_allocator(ctx, &fn, &ud);
  unsigned char *p = fn(ud, NULL, 0, n);
  if (!p) return Z_NULL;
  memcpy(p, &n, sizeof n);
  return p + ZHEAD;
}

static void z_free(voidpf opaque, voidpf address) {
  if (!address) return;
  unsigned char *p = (unsigned char *)address - ZHEAD;
  size_t n;
  memcpy(&n, p, sizeof n);
  ad_free(opaque, p, n);
}

/* read(2) into buf: the count (0 at the end of the file), or -1 after
 * recording the error. */
static int64_t fd_read(idx_file *f, void *buf, size_t n) {
  ssize_t r;
  while ((r = read(f->fd, buf, n)) < 0 && errno == EINTR) {
  }
  if (r < 0) {
    f->st = ad_set_error(f->ctx, AD_ERR_IO, "idx %s: read error: %s", f->path, strerror(errno));
    return -1;
  }
  f->got += (uint64_t)r;
  return r;
}

/* gzip: after a member's end, reads on when at least two more bytes follow
 * and they start another member; returns 0 (go on), 1 (the end of the
 * file, done set) or -1 after recording the error: any other byte after a
 * member is refused, as a raw file's bytes after its data are. */
static int next_member(idx_file *f) {
  z_stream *zs = &f->zs;
  if (zs->avail_in < 2) { /* read behind what is left */
    if (zs->avail_in) f->in[0] = zs->next_in[0];
    int64_t r = fd_read(f, f->in + zs->avail_in, sizeof f->in - zs->avail_in);
    if (r < 0) return -1;
    zs->next_in = f->in;
    zs->avail_in += (uInt)r;
  }
  if (!zs->avail_in) {
    f->done = true;
    return 1;
  }
  if (zs->avail_in < 2 || zs->next_in[0] != 0x1f || zs->next_in[1] != 0x8b) {
    uint64_t used = f->got - zs->avail_in;
    f->st = ad_set_error(f->ctx, AD_ERR_FORMAT,
                         "idx %s: %" PRIu64 " bytes after the end of the gzip stream (a gzip "
                         "file holds gzip members only)",
                         f->path, f->fsize > used ? f->fsize - used : (uint64_t)zs->avail_in);
    return -1;
  }
  inflateReset(zs);
  return 0;
}

/* gzip: inflates up to n bytes into buf; the count, or -1 after recording
 * the error (a corrupt or truncated stream, bytes after it, a read
 * error). */
static int64_t gz_read(idx_file *f, unsigned char *buf, size_t n) {
  z_stream *zs = &f->zs;
  zs->next_out = buf;
  zs->avail_out = (uInt)n;
  while (zs->avail_out && !f->done) {
    if (!zs->avail_in) {
      int64_t r = fd_read(f, f->in, sizeof f->in);
      if (r < 0) return -1;
      if (!r) {
        f->st = ad_set_error(f->ctx, AD_ERR_FORMAT,
                             "idx %s: truncated gzip stream (unexpected end of file)", f->path);
        return -1;
      }
      zs->next_in = f->in;
      zs->avail_in = (uInt)r;
    }
    int ret = inflate(zs, Z_NO_FLUSH);
    if (ret == Z_STREAM_END) {
      if (next_member(f) < 0) return -1;
    } else if (ret == Z_MEM_ERROR) {
      f->st = ad_set_error(f->ctx, AD_ERR_OOM, "idx %s: out of memory inflating the gzip stream",
                           f->path);
      return -1;
    } else if (ret != Z_OK && !(ret == Z_BUF_ERROR && !zs->avail_in)) {
      f->st = ad_set_error(f->ctx, AD_ERR_FORMAT, "idx %s: corrupt gzip stream: %s", f->path,
                           zs->msg ? zs->msg : "unknown zlib error");
      return -1;
    }
  }
  return (int64_t)(n - zs->avail_out);
}

/* Reads up to n bytes (fewer only at the end of the data); returns the
 * count read, or -1 after recording the error. */
static int64_t idx_read(idx_file *f, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t m = n - got > (1u << 20) ? (1u << 20) : n - got;
    int64_t r = f->gzip ? gz_read(f, (unsigned char *)buf + got, m)
                        : fd_read(f, (unsigned char *)buf + got, m);
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (int64_t)got;
}

static const char *fmt_dims(char *buf, size_t cap, int ndim, const int64_t *dims) {
  size_t off = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && off < cap; i++)
    off += (size_t)snprintf(buf + off, cap - off, "%s%" PRId64, i ? "," : "", dims[i]);
  if (off < cap) snprintf(buf + off, cap - off, "]");
  return buf;
}

/* Reads the magic and dims; fills ndim, shape and the element count. */
static ad_status read_header(idx_file *f, int *ndim, int64_t *shape, uint64_t *count) {
  unsigned char m[4], d[4 * AD_MAX_DIMS];
  int64_t r = idx_read(f, m, 4);
  if (r < 0) return f->st;
  if (r < 4)
    return ad_set_error(f->ctx, AD_ERR_FORMAT,
                        "idx %s: truncated: the data ends after %d of the 4 magic bytes", f->path,
                        (int)r);
  if (m[0] != 0 || m[1] != 0)
    return ad_set_error(f->ctx, AD_ERR_FORMAT,
                        "idx %s: bad magic %02x %02x %02x %02x: an IDX file starts with 00 00, "
                        "the type code and the number of dims",
                        f->path, m[0], m[1], m[2], m[3]);
  if (m[2] != 0x08)
    return ad_set_error(f->ctx, AD_ERR_FORMAT,
                        "idx %s: unsupported type code 0x%02x (%s); only 0x08 (unsigned byte) "
                        "is supported",
                        f->path, m[2], type_name(m[2]));
  if (m[3] < 1 || m[3] > AD_MAX_DIMS)
    return ad_set_error(f->ctx, AD_ERR_FORMAT, "idx %s: %u dims; 1 to %d are supported", f->path,
                        m[3], AD_MAX_DIMS);
  *ndim = m[3];
  size_t nd = 4u * m[3];
  if ((r = idx_read(f, d, nd)) < 0) return f->st;
  if ((size_t)r < nd)
    return ad_set_error(f->ctx, AD_ERR_FORMAT,
                        "idx %s: truncated: the data ends inside the %d dims of the header",
                        f->path, *ndim);
  uint64_t n = 1;
  bool over = false;
  for (int i = 0; i < *ndim; i++) {
    uint64_t v = (uint64_t)d[4 * i] << 24 | (uint64_t)d[4 * i + 1] << 16 |
                 (uint64_t)d[4 * i + 2] << 8 | (uint64_t)d[4 * i + 3];
    shape[i] = (int64_t)v;
    if (v && n > (uint64_t)INT64_MAX / v) over = true;
    n = over ? 0 : n * v;
  }
  char sh[200];
  if (over || n > SIZE_MAX / sizeof(double))
    return ad_set_error(f->ctx, AD_ERR_FORMAT, "idx %s: dims %s overflow (too many elements)",
                        f->path, fmt_dims(sh, sizeof sh, *ndim, shape));
  uint64_t head = 4 + nd;
  if (!f->gzip && f->fsize != head + n)
    return ad_set_error(f->ctx, AD_ERR_FORMAT,
                        "idx %s: dims %s need %" PRIu64 " data bytes, but the file has %" PRIu64
                        "%s",
                        f->path, fmt_dims(sh, sizeof sh, *ndim, shape), n, f->fsize - head,
                        f->fsize < head + n ? " (truncated)" : "");
  if (f->gzip && n / GZIP_MAX_RATIO > f->fsize)
    return ad_set_error(f->ctx, AD_ERR_FORMAT,
                        "idx %s: dims %s need %" PRIu64 " data bytes, more than a %" PRIu64
                        "-byte gzip file can hold",
                        f->path, fmt_dims(sh, sizeof sh, *ndim, shape), n, f->fsize);
  *count = n;
  return AD_OK;
}

/* Reads count bytes and stores them converted into t. */
static ad_status read_data(idx_file *f, ad_tensor *t, uint64_t count, double scale) {
  unsigned char buf[16384];
  uint64_t done = 0;
  while (done < count) {
    size_t m = count - done < sizeof buf ? (size_t)(count - done) : sizeof buf;
    int64_t r = idx_read(f, buf, m);
    if (r < 0) return f->st;
    if ((size_t)r < m) {
      char sh[200];
      return ad_set_error(f->ctx, AD_ERR_FORMAT,
                          "idx %s: truncated: dims %s need %" PRIu64 " data bytes, got %" PRIu64,
                          f->path, fmt_dims(sh, sizeof sh, t->ndim, t->shape), count,
                          done + (uint64_t)r);
    }
    switch (t->dtype) {
    case AD_F32: {
      float *o = (float *)t->data + done;
      for (size_t i = 0; i < m; i++) o[i] = (float)((double)buf[i] * scale);
      break;
    }
    case AD_F64: {
      double *o = (double *)t->data + done;
      for (size_t i = 0; i < m; i++) o[i] = (double)buf[i] * scale;
      break;
    }
    default: {
      int32_t *o = (int32_t *)t->data + done;
      for (size_t i = 0; i < m; i++) o[i] = buf[i];
      break;
    }
    }
    done += m;
  }
  /* the file must end here (for gzip this also checks the CRC) */
  unsigned char extra;
  int64_t r = idx_read(f, &extra, 1);
  if (r < 0) return f->st;
  if (r > 0) {
    char sh[200];
    return ad_set_error(f->ctx, AD_ERR_FORMAT, "idx %s: more data than dims %s describe", f->path,
                        fmt_dims(sh, sizeof sh, t->ndim, t->shape));
  }
  return AD_OK;
}

ad_tensor *nn_idx_load(ad_ctx *ctx, const char *path, ad_dtype dtype, double scale) {
  if (!ctx) return NULL;
  if (!path) {
    ad_set_error(ctx, AD_ERR_NULL, "idx: path is NULL");
    return NULL;
  }
  if (dtype != AD_F32 && dtype != AD_F64 && dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_ARG, "idx %s: dtype %d is not AD_F32, AD_F64 or AD_I32", path,
                 (int)dtype);
    return NULL;
  }
  if (dtype != AD_I32 && !isfinite(scale)) { /* every pixel would be NaN or an infinity */
    ad_set_error(ctx, AD_ERR_ARG, "idx %s: scale %g is not finite", path, scale);
    return NULL;
  }
  idx_file f;
  memset(&f, 0, offsetof(idx_file, in)); /* the input buffer is filled before it is read */
  f.ctx = ctx;
  f.path = path;
  /* O_NONBLOCK: opening a FIFO without a writer would wait forever; it is
   * cleared again for the reads */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    ad_set_error(ctx, AD_ERR_IO, "idx %s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ad_set_error(ctx, AD_ERR_IO, "idx %s: not a readable regular file", path);
    close(fd);
    return NULL;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl != -1) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  f.fsize = (uint64_t)sb.st_size;
  unsigned char m[2];
  ssize_t got = 0, r;
  while (got < 2) {
    r = read(fd, m + got, (size_t)(2 - got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += r;
  }
  f.gzip = got == 2 && m[0] == 0x1f && m[1] == 0x8b;
  if (lseek(fd, 0, SEEK_SET) != 0) {
    ad_set_error(ctx, AD_ERR_IO, "idx %s: cannot read: %s", path, strerror(errno));
    close(fd);
    return NULL;
  }
  f.fd = fd;
  f.zs.zalloc = z_alloc;
  f.zs.zfree = z_free;
  f.zs.opaque = ctx;
  if (f.gzip && inflateInit2(&f.zs, 15 + 16) != Z_OK) { /* a gzip header and trailer */
    ad_set_error(ctx, AD_ERR_OOM, "idx %s: out of memory opening the file", path);
    close(fd);
    return NULL;
  }
  int ndim = 0;
  int64_t shape[AD_MAX_DIMS];
  uint64_t count = 0;
  ad_tensor *t = NULL;
  if (read_header(&f, &ndim, shape, &count) == AD_OK) {
    t = ad_zeros(ctx, dtype, ndim, shape);
    char sh[200];
    if (!t && ad_last_status(ctx) == AD_ERR_OOM)
      ad_set_error(ctx, AD_ERR_OOM, "idx %s: out of memory for dims %s", path,
                   fmt_dims(sh, sizeof sh, ndim, shape));
    else if (!t) /* a 0 among huge dims: no data, but no tensor either */
      ad_set_error(ctx, AD_ERR_FORMAT,
                   "idx %s: dims %s: no tensor can have this shape (the dims other than 0 "
                   "multiply to too many elements)",
                   path, fmt_dims(sh, sizeof sh, ndim, shape));
    else if (read_data(&f, t, count, scale) != AD_OK) {
      ad_tensor_free(t);
      t = NULL;
    }
  }
  if (f.gzip) inflateEnd(&f.zs);
  close(fd);
  return t;
}
