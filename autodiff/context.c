/* context.c: making and freeing a context, the top of the library's
 * layers: it sets up the core (core.c), the registry (tape.c) and the
 * built-in ops (ops.c), none of which calls back into it. */
#include "ad_internal.h"

ad_ctx *ad_ctx_new_with_alloc(ad_alloc_fn alloc, void *ud) {
  if (!alloc) return NULL;
  ad_ctx *ctx = alloc(ud, NULL, 0, sizeof *ctx);
  if (!ctx) return NULL;
  memset(ctx, 0, sizeof *ctx);
  ctx->alloc = alloc;
  ctx->alloc_ud = ud;
  ctx->grad_enabled = true;
  ctx->epoch = 1;
  if (ad_builtin_register(ctx) != AD_OK) {
    ad_registry_free(ctx);
    alloc(ud, ctx, sizeof *ctx, 0);
    return NULL;
  }
  return ctx;
}

ad_ctx *ad_ctx_new(void) { return ad_ctx_new_with_alloc(ad_default_alloc, NULL); }

void ad_ctx_free(ad_ctx *ctx) {
  if (!ctx) return;
  ad_nodes_free_all(ctx);
  ad_arena_free_all(ctx);
  ad_free(ctx, ctx->tape, ctx->tape_cap * sizeof *ctx->tape);
  ad_free(ctx, ctx->touched, ctx->touched_cap * sizeof *ctx->touched);
  ad_free(ctx, ctx->writes, ctx->writes_cap * sizeof *ctx->writes);
  ad_registry_free(ctx);
  ad_scope_free(ctx);
  ad_prof_free(ctx);
  ctx->alloc(ctx->alloc_ud, ctx, sizeof *ctx, 0);
}
