/* ad_internal.h: private structures shared by the autodiff sources. */
#ifndef AD_INTERNAL_H
#define AD_INTERNAL_H

#include "ad.h"

#include <stdarg.h>
#include <string.h>

/* Broken internal invariant: abort with file:line and a hint. Never for
 * user input, which gets an ad_status. */
#define AD_ASSERT(cond, hint)                                                                      \
  do {                                                                                             \
    if (!(cond)) ad_internal_abort(__FILE__, __LINE__, #cond, hint);                               \
  } while (0)
_Noreturn void ad_internal_abort(const char *file, int line, const char *cond, const char *hint);

/* Built-in op ids, generated from the table. */
enum {
#define AD_OP(E, name, ar, fl, sh, fw, bw, sa, m, dm) AD_OP_##E,
#include "ops.def"
#undef AD_OP
  AD_OP_BUILTIN_COUNT
};

#define AD_ALL_AXES 127 /* attrs.i[0] of a reduction over every element */
enum { AD_CMP_EQ, AD_CMP_GT, AD_CMP_GE, AD_CMP_LT, AD_CMP_LE };

/* node flags */
enum {
  AD_NF_REQUIRES_GRAD = 1, /* a gradient flows into it */
  AD_NF_LEAF = 2,          /* made by a constructor, not an op */
  AD_NF_PERSISTENT = 4,    /* malloc'd, survives tape reset */
  AD_NF_RETAIN = 8,        /* keep the gradient of an intermediate */
  AD_NF_RECORDED = 16,     /* on the tape */
  AD_NF_KEEP = 32          /* ad_grad input: keep gacc after its backward ran */
};

#define AD_NODE_MAGIC 0xAD7E5017u

/* Every tensor is a node; the public view comes first. Kept small: a
 * scalar chain allocates a few of these per op. */
#define AD_INLINE_SRC 3
typedef struct ad_node {
  ad_tensor t;
  uint32_t magic;
  uint16_t op; /* op id; meaningless for leaves */
  uint8_t flags;
  uint8_t nsrc;
  uint32_t epoch;   /* tape generation it was made in (temporaries) */
  int32_t tape_idx; /* position on the tape, -1 if not recorded */
  ad_ctx *ctx;
  struct ad_node **src;  /* nsrc inputs: src_inline or an arena array */
  const ad_attrs *attrs; /* NULL when all zero */
  ad_tensor *gacc;       /* gradient accumulated during backward */
  struct ad_node *src_inline[AD_INLINE_SRC];
} ad_node;

static inline ad_node *ad_node_of(const ad_tensor *t) { return (ad_node *)t; }

/* Registered op: the public definition plus a hash handle. */
typedef struct ad_op_entry ad_op_entry;

typedef struct ad_arena_chunk {
  struct ad_arena_chunk *next;
  size_t cap; /* usable bytes after the header */
  size_t used;
} ad_arena_chunk;

struct ad_ctx {
  ad_alloc_fn alloc;
  void *alloc_ud;
  ad_status status;
  char err[512];
  /* arena */
  ad_arena_chunk *chunks; /* first chunk */
  ad_arena_chunk *cur;    /* chunk being filled */
  char *bump, *bump_end;  /* free space in cur */
  size_t arena_cap, arena_used_before_cur;
  /* tape */
  ad_node **tape;
  size_t tape_len, tape_cap;
  uint32_t epoch;
  bool grad_enabled;
  const char *applying; /* name of the op whose shape is being checked, for errors */
  /* backward scratch: leaves touched by the running pass */
  ad_node **touched;
  size_t touched_len, touched_cap;
  ad_backward_hook hook;
  void *hook_ud;
  /* true while ad_backward's sweep runs without a hook: a backward function
   * may then add a persistent leaf's gradient straight into its grad (e.g.
   * matmul's GEMM with beta = 1) and leave gin NULL; see ad_leaf_grad */
  bool leaf_direct;
  /* registry */
  ad_op_def *ops;
  int nops, ops_cap;
  ad_op_entry *by_name;
};

/* arena: bump allocation, 16-byte granularity; NULL + AD_ERR_OOM on failure */
void *ad_arena_alloc_slow(ad_ctx *ctx, size_t bytes);
static inline void *ad_arena_alloc(ad_ctx *ctx, size_t bytes) {
  bytes = (bytes + 15) & ~(size_t)15;
  if (bytes && (size_t)(ctx->bump_end - ctx->bump) >= bytes) {
    void *p = ctx->bump;
    ctx->bump += bytes;
    return p;
  }
  return ad_arena_alloc_slow(ctx, bytes);
}
void ad_arena_free_all(ad_ctx *ctx);

/* A temporary (arena) tensor, uninitialized data, not recorded. */
ad_tensor *ad_tmp_new(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);
/* A temporary filled with v: a constant leaf (ad_tensor_op gives -1). */
ad_tensor *ad_tmp_full(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape, double v);

/* registry */
ad_status ad_registry_init(ad_ctx *ctx);
void ad_registry_free(ad_ctx *ctx);

/* helpers for op implementations */
int64_t ad_shape_size(int ndim, const int64_t *shape);
static inline bool ad_is_float(ad_dtype dt) { return dt == AD_F32 || dt == AD_F64; }
static inline size_t ad_dsize(ad_dtype dt) { return dt == AD_F64 ? 8 : 4; }
/* Checks that in[0..n-1] are float and share a dtype; records an error. */
ad_status ad_check_float_same(ad_ctx *ctx, const char *op, int n, ad_tensor *const *in);
/* NumPy broadcast of two shapes into out; AD_ERR_SHAPE when they clash. */
bool ad_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                        int64_t *out);
static inline bool ad_same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}
int ad_norm_axis(int axis, int ndim); /* -1 when out of range */
/* When ctx->leaf_direct and t is a persistent tensor requiring a gradient,
 * sets *grad to its grad (allocated as zeros on first use), into which a
 * backward function may add its contribution directly; else to NULL.
 * Returns AD_ERR_OOM when the grad cannot be allocated. */
ad_status ad_leaf_grad(ad_ctx *ctx, ad_tensor *t, ad_tensor **grad);
/* Makes gradient g fit input x: sum_to over broadcast dims, or NULL. */
ad_tensor *ad_reduce_to(ad_ctx *ctx, ad_tensor *g, const ad_tensor *x);
/* Strides of x seen through out's (broadcast) shape: 0 along broadcast dims. */
void ad_bc_strides(const ad_tensor *x, const ad_tensor *out, int64_t *st);
/* Visits out row by row (its last dim); for row r, ad_bc_row gives each
 * input's element offset; st[i][ndim-1] is its stride along the row. */
typedef struct ad_bc_rows {
  int nin;
  int64_t st[3][AD_MAX_DIMS];
  int64_t rows, len;
} ad_bc_rows;
void ad_bc_init(ad_bc_rows *it, int nin, ad_tensor *const *in, const ad_tensor *out);
void ad_bc_row(const ad_bc_rows *it, const ad_tensor *out, int64_t r, int64_t *off);
/* A temporary header whose data pointer is set by the caller (views). */
ad_tensor *ad_tmp_header(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);
/* Applies op id with attrs; shorthand used by the public builders. */
static inline ad_tensor *ad_apply1(ad_ctx *ctx, int op, ad_tensor *x, const ad_attrs *attrs) {
  return ad_op_apply(ctx, op, 1, &x, attrs);
}
static inline ad_tensor *ad_apply2(ad_ctx *ctx, int op, ad_tensor *a, ad_tensor *b,
                                   const ad_attrs *attrs) {
  ad_tensor *in[2] = {a, b};
  return ad_op_apply(ctx, op, 2, in, attrs);
}

/* Sample helpers for gradcheck */
ad_tensor *ad_sample_tensor(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim, const int64_t *shape,
                            double lo, double hi, bool grad);

/* Prototypes of every op's functions, one family file each. */
#define AD_NO_BACKWARD ad_unused_backward
#define AD_NO_SAMPLE   ad_unused_sample
#define AD_OP(E, name, ar, fl, sh, fw, bw, sa, m, dm)                                              \
  ad_status sh(ad_ctx *, int, ad_tensor *const *, const ad_attrs *, ad_dtype *, int *, int64_t *); \
  void fw(int, ad_tensor *const *, const ad_attrs *, ad_tensor *);
#include "ops.def"
#undef AD_OP
#define AD_OP(E, name, ar, fl, sh, fw, bw, sa, m, dm)                                              \
  ad_status bw(ad_ctx *, int, ad_tensor *const *, const ad_attrs *, ad_tensor *, ad_tensor *,      \
               const bool *, ad_tensor **);                                                        \
  int sa(ad_ctx *, ad_rng *, ad_dtype, int, ad_tensor **, ad_attrs *);
#include "ops.def"
#undef AD_OP
#undef AD_NO_BACKWARD
#undef AD_NO_SAMPLE

/* GEMM dispatch used by matmul */
void ad_gemm(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
             int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc);
/* One GEMM kernel, whatever ad_gemm_f32/f64 would pick (tests, bench): kernel 0 the best built-in
 * for the CPU, 1 portable, 2 AVX2, 3 AVX-512, -1 reference loop, -2 BLAS; + 16 always packs A,
 * + 32 never. Returns the kernel's name; NULL (nothing done) if the CPU or build lacks it. */
const char *ad_gemm_builtin(int kernel, ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                            int64_t k, double alpha, const void *a, int64_t lda, const void *b,
                            int64_t ldb, double beta, void *c, int64_t ldc);

#endif
