/* scope.c: named groups (scopes) that label the ops recorded while they are
 * open, so a graph dump can draw an unrolled model as layers and steps.
 *
 * The tape is append-only, and a scope opens and closes between ops, so
 * the ops of one group are runs of consecutive tape positions. Instead of
 * a field in every node, the context keeps a log of marks: "from tape
 * position p on, ops go to group s", appended by each push and pop. An
 * op's group is the last mark at or before its position (a binary
 * search). Recording an op does no scope work at all, and a context that
 * never opens a scope has no scope state (ctx->scopes stays NULL).
 *
 * The state notes the tape generation it describes; the first push or pop
 * after an ad_tape_reset brings it to the new tape (see refresh_now), so
 * the tape's own code knows nothing of scopes; until then the accessors
 * read it as the refresh will leave it (peek), writing nothing.
 *
 * A group is interned by (parent group, label): opening "t=3" under "rnn"
 * twice gives the same small id. Labels are kept in one growing character
 * pool, and every array keeps its capacity across ad_tape_reset, so a
 * training loop that labels each step allocates nothing once warm. */
#include "ad_internal.h"

#define LABEL_MAX 255 /* longest label, in bytes */

typedef struct scope_group {
  uint32_t off;   /* label: pool + off, NUL-terminated */
  int32_t parent; /* enclosing group, -1 at the top */
  uint32_t hash;  /* of (parent, label), for the intern table */
} scope_group;

typedef struct scope_mark {
  int64_t from;  /* first tape position it applies to */
  int32_t group; /* -1: outside any scope */
} scope_mark;

struct ad_scope_state {
  scope_group *groups;
  int32_t ngroups, groups_cap;
  int32_t *slots; /* intern table: open addressing, group id or -1 */
  uint32_t nslots;
  char *pool;
  size_t pool_len, pool_cap;
  scope_mark *marks;
  size_t nmarks, marks_cap;
  int32_t stack[AD_SCOPE_MAX_DEPTH];
  int depth;
  uint32_t epoch; /* the tape generation groups and marks describe */
};

static uint32_t group_hash(int32_t parent, const char *label, size_t len) {
  uint32_t h = 2166136261u ^ (uint32_t)parent;
  h *= 16777619u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)label[i]) * 16777619u;
  return h;
}

/* Grows *p (elements of size sz, capacity *cap) to hold need; false on OOM. */
static bool grow(ad_ctx *ctx, void **p, size_t sz, size_t *cap, size_t need) {
  if (need <= *cap) return true;
  size_t ncap = *cap ? *cap : 16;
  while (ncap < need) ncap *= 2;
  void *q = ctx->alloc(ctx->alloc_ud, *p, *cap * sz, ncap * sz);
  if (!q) return false;
  *p = q;
  *cap = ncap;
  return true;
}

/* Rebuilds the intern table with nslots slots (a power of two). */
static bool rehash(ad_ctx *ctx, struct ad_scope_state *s, uint32_t nslots) {
  int32_t *slots = ctx->alloc(ctx->alloc_ud, NULL, 0, nslots * sizeof *slots);
  if (!slots) return false;
  for (uint32_t i = 0; i < nslots; i++) slots[i] = -1;
  for (int32_t g = 0; g < s->ngroups; g++) {
    uint32_t i = s->groups[g].hash & (nslots - 1);
    while (slots[i] >= 0) i = (i + 1) & (nslots - 1);
    slots[i] = g;
  }
  if (s->slots) ctx->alloc(ctx->alloc_ud, s->slots, s->nslots * sizeof *s->slots, 0);
  s->slots = slots;
  s->nslots = nslots;
  return true;
}

/* The id of group (parent, label), made if new; -1 on OOM. */
static int32_t intern(ad_ctx *ctx, struct ad_scope_state *s, int32_t parent, const char *label,
                      size_t len) {
  uint32_t h = group_hash(parent, label, len);
  if (s->nslots) {
    for (uint32_t i = h & (s->nslots - 1); s->slots[i] >= 0; i = (i + 1) & (s->nslots - 1)) {
      const scope_group *g = &s->groups[s->slots[i]];
      if (g->hash == h && g->parent == parent && !strcmp(s->pool + g->off, label))
        return s->slots[i];
    }
  }
  if (s->ngroups == INT32_MAX / 2 || s->pool_len + len + 1 > UINT32_MAX) return -1;
  size_t gcap = (size_t)s->groups_cap;
  if (!grow(ctx, (void **)&s->groups, sizeof *s->groups, &gcap, (size_t)s->ngroups + 1) ||
      !grow(ctx, (void **)&s->pool, 1, &s->pool_cap, s->pool_len + len + 1))
    return -1;
  s->groups_cap = (int32_t)gcap;
  if (((size_t)s->ngroups + 1) * 2 > s->nslots && !rehash(ctx, s, s->nslots ? s->nslots * 2 : 64))
    return -1;
  memcpy(s->pool + s->pool_len, label, len + 1);
  int32_t id = s->ngroups++;
  s->groups[id] = (scope_group){.off = (uint32_t)s->pool_len, .parent = parent, .hash = h};
  s->pool_len += len + 1;
  uint32_t i = h & (s->nslots - 1);
  while (s->slots[i] >= 0) i = (i + 1) & (s->nslots - 1);
  s->slots[i] = id;
  return id;
}

/* Ops recorded from now on go to group (the innermost open one, or -1). */
static bool mark(ad_ctx *ctx, struct ad_scope_state *s, int32_t group) {
  int64_t at = (int64_t)ctx->tape_len;
  if (s->nmarks && s->marks[s->nmarks - 1].from == at) s->nmarks--; /* no op in between */
  if (s->nmarks && s->marks[s->nmarks - 1].group == group) return true;
  if (!grow(ctx, (void **)&s->marks, sizeof *s->marks, &s->marks_cap, s->nmarks + 1)) return false;
  s->marks[s->nmarks++] = (scope_mark){.from = at, .group = group};
  return true;
}

/* After an ad_tape_reset: the groups and marks of the old tape go; the
 * scopes still open stay open, as groups 0 .. depth-1 (re-interned in
 * order, so each one's parent is the one before), and the new tape starts
 * in the innermost. Capacity is kept: nothing is allocated or freed. */
static void refresh_now(struct ad_scope_state *s) {
  s->nmarks = 0;
  if (!s->ngroups) return;
  /* the open labels stay where they are in the pool (a label an accessor
   * gave before the refresh stays valid), and the pool is cut after the
   * last of them. Group ids grow with depth (a parent is interned before
   * its child), so stack[d] >= d: groups[d] is overwritten only after its
   * own label was read */
  size_t len = 0;
  for (int d = 0; d < s->depth; d++) {
    uint32_t off = s->groups[s->stack[d]].off;
    size_t n = strlen(s->pool + off) + 1;
    s->groups[d] =
        (scope_group){.off = off, .parent = d - 1, .hash = group_hash(d - 1, s->pool + off, n - 1)};
    s->stack[d] = d;
    if (off + n > len) len = off + n;
  }
  s->pool_len = len;
  s->ngroups = s->depth;
  for (uint32_t i = 0; i < s->nslots; i++) s->slots[i] = -1;
  for (int32_t g = 0; g < s->ngroups; g++) {
    uint32_t i = s->groups[g].hash & (s->nslots - 1);
    while (s->slots[i] >= 0) i = (i + 1) & (s->nslots - 1);
    s->slots[i] = g;
  }
  if (s->depth) s->marks[s->nmarks++] = (scope_mark){.from = 0, .group = s->depth - 1};
}

/* ctx's scope state, brought to the current tape; NULL if none was made.
 * Only the calls that change scopes refresh it: the const accessors read
 * a state that is behind the tape as the refresh would leave it (stale),
 * writing nothing, so they may run beside each other on one context. */
static struct ad_scope_state *state(ad_ctx *ctx) {
  struct ad_scope_state *s = ctx ? ctx->scopes : NULL;
  if (s && s->epoch != ctx->epoch) {
    refresh_now(s);
    s->epoch = ctx->epoch;
  }
  return s;
}

/* ctx's scope state for reading, and whether it is behind the tape: then
 * the groups are the open scopes, group d the one d deep (label and
 * parent found through the stack), and every op of the tape is in the
 * innermost (as refresh_now would make them). */
static const struct ad_scope_state *peek(const ad_ctx *ctx, bool *stale) {
  const struct ad_scope_state *s = ctx ? ctx->scopes : NULL;
  *stale = s && s->epoch != ctx->epoch;
  return s;
}

ad_status ad_scope_push(ad_ctx *ctx, const char *label) {
  if (!ctx) return AD_ERR_NULL;
  if (!label) return ad_set_null_error(ctx, "scope_push: label is NULL");
  size_t len = strlen(label);
  if (!len) return ad_set_error(ctx, AD_ERR_ARG, "scope_push: label is empty");
  if (len > LABEL_MAX)
    return ad_set_error(ctx, AD_ERR_ARG, "scope_push: label of %zu bytes; at most %d", len,
                        LABEL_MAX);
  struct ad_scope_state *s = state(ctx);
  if (!s) {
    s = ctx->alloc(ctx->alloc_ud, NULL, 0, sizeof *s);
    if (!s) return ad_set_error(ctx, AD_ERR_OOM, "scope_push: out of memory");
    memset(s, 0, sizeof *s);
    s->epoch = ctx->epoch;
    ctx->scopes = s;
  }
  if (s->depth == AD_SCOPE_MAX_DEPTH)
    return ad_set_error(ctx, AD_ERR_STATE,
                        "scope_push: '%s' would be scope %d deep; at most %d "
                        "(AD_SCOPE_MAX_DEPTH) nest: is an ad_scope_pop missing?",
                        label, s->depth + 1, AD_SCOPE_MAX_DEPTH);
  int32_t parent = s->depth ? s->stack[s->depth - 1] : -1;
  int32_t id = intern(ctx, s, parent, label, len);
  if (id < 0 || !mark(ctx, s, id))
    return ad_set_error(ctx, AD_ERR_OOM, "scope_push: out of memory opening '%s'", label);
  s->stack[s->depth++] = id;
  return AD_OK;
}

ad_status ad_scope_pop(ad_ctx *ctx) {
  if (!ctx) return AD_ERR_NULL;
  struct ad_scope_state *s = state(ctx);
  if (!s || !s->depth)
    return ad_set_error(ctx, AD_ERR_STATE,
                        "scope_pop: no scope is open (ad_scope_pop without ad_scope_push)");
  int32_t outer = s->depth > 1 ? s->stack[s->depth - 2] : -1;
  if (!mark(ctx, s, outer))
    return ad_set_error(ctx, AD_ERR_OOM, "scope_pop: out of memory closing '%s'",
                        s->pool + s->groups[s->stack[s->depth - 1]].off);
  s->depth--;
  return AD_OK;
}

int ad_scope_depth(const ad_ctx *ctx) { return ctx && ctx->scopes ? ctx->scopes->depth : 0; }

int ad_tensor_scope(const ad_tensor *t) {
  int64_t idx = ad_tensor_tape_index(t);
  if (idx < 0) return -1;
  bool stale;
  const struct ad_scope_state *s = peek(ad_node_of(t)->ctx, &stale);
  if (!s) return -1;
  if (stale) return s->depth - 1; /* -1 with none open */
  size_t lo = 0, hi = s->nmarks;  /* the first mark after idx is marks[lo] */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->marks[mid].from <= idx)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo ? s->marks[lo - 1].group : -1;
}

const char *ad_scope_label(const ad_ctx *ctx, int group) {
  bool stale;
  const struct ad_scope_state *s = peek(ctx, &stale);
  if (!s || group < 0 || group >= (stale ? s->depth : s->ngroups)) return NULL;
  return s->pool + s->groups[stale ? s->stack[group] : group].off;
}

int ad_scope_parent(const ad_ctx *ctx, int group) {
  bool stale;
  const struct ad_scope_state *s = peek(ctx, &stale);
  if (!s || group < 0 || group >= (stale ? s->depth : s->ngroups)) return -1;
  return stale ? group - 1 : s->groups[group].parent;
}

int ad_scope_count(const ad_ctx *ctx) {
  bool stale;
  const struct ad_scope_state *s = peek(ctx, &stale);
  return s ? (stale ? s->depth : s->ngroups) : 0;
}

void ad_scope_free(ad_ctx *ctx) {
  struct ad_scope_state *s = ctx->scopes;
  if (!s) return;
  ad_alloc_fn fn = ctx->alloc;
  void *ud = ctx->alloc_ud;
  if (s->groups) fn(ud, s->groups, (size_t)s->groups_cap * sizeof *s->groups, 0);
  if (s->slots) fn(ud, s->slots, s->nslots * sizeof *s->slots, 0);
  if (s->pool) fn(ud, s->pool, s->pool_cap, 0);
  if (s->marks) fn(ud, s->marks, s->marks_cap * sizeof *s->marks, 0);
  fn(ud, s, sizeof *s, 0);
  ctx->scopes = NULL;
}
