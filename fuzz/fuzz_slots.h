/* fuzz_slots.h: the input reader, the tensor slots, the other context and
 * the end-of-input leak check shared by the program-running targets
 * (fuzz_ops.c, fuzz_nn.c). Each includes it once, after defining
 * MAX_SLOTS; everything here is static, so each target has its own. The bytes an input is read with are the same in both, so a
 * seed of one program encoding means the same after a change here only if
 * it changes both alike. */
#ifndef FUZZ_SLOTS_H
#define FUZZ_SLOTS_H

#include "fuzz_common.h" /* FUZZ_CHECK, fuzz_live */

#include <autodiff/ad.h>

#include <stddef.h>
#include <stdint.h>

/* The input being run, read one byte at a time; 0 once it is used up. */
static const uint8_t *in_p;
static size_t in_n, in_i;

static unsigned u8(void) { return in_i < in_n ? in_p[in_i++] : 0; }

/* The tensors an input holds: its leaves (inputs it made), results of its
 * calls still live (temporaries until the next tape reset), and freed
 * leaves, kept to be passed as bad operands. */
typedef enum { S_EMPTY, S_LEAF, S_TEMP, S_FREED } slot_kind;
static struct {
  ad_tensor *t;
  slot_kind kind;
} slots[MAX_SLOTS];
static ad_ctx *foreign;     /* another context, for the whole run */
static ad_tensor *alien[4]; /* its tensors */

static bool is_live(const ad_tensor *t) {
  if (!t) return false;
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].t == t && (slots[i].kind == S_LEAF || slots[i].kind == S_TEMP)) return true;
  return false;
}

/* Into the first empty slot (none left: not kept). */
static void store(ad_tensor *t, slot_kind kind) {
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].kind == S_EMPTY) {
      slots[i].t = t;
      slots[i].kind = kind;
      return;
    }
}

/* An operand: a live tensor of the slots, or now and then NULL, a freed
 * leaf or a tensor of the other context. */
static ad_tensor *pick(void) {
  unsigned b = u8();
  if (b >= 248) {
    if (b >= 252) return alien[b & 3];
    if (b >= 250)
      for (int i = 0; i < MAX_SLOTS; i++)
        if (slots[i].kind == S_FREED) return slots[i].t;
    return NULL;
  }
  int live = 0;
  for (int i = 0; i < MAX_SLOTS; i++) live += slots[i].kind == S_LEAF || slots[i].kind == S_TEMP;
  if (!live) return NULL;
  int k = (int)(b % (unsigned)live);
  for (int i = 0; i < MAX_SLOTS; i++)
    if ((slots[i].kind == S_LEAF || slots[i].kind == S_TEMP) && k-- == 0) return slots[i].t;
  return NULL;
}

/* The other context and its tensors, made once for the run: f32 [2,3]
 * requiring a gradient, f64 [3], i32 [2], and f32 of the shape nd3, s3
 * (each target's own). */
static void make_aliens(int nd3, const int64_t *s3) {
  foreign = ad_ctx_new();
  FUZZ_CHECK(foreign, "cannot create a context");
  alien[0] = ad_ones(foreign, AD_F32, 2, (const int64_t[]){2, 3});
  alien[1] = ad_ones(foreign, AD_F64, 1, (const int64_t[]){3});
  alien[2] = ad_zeros(foreign, AD_I32, 1, (const int64_t[]){2});
  alien[3] = ad_ones(foreign, AD_F32, nd3, s3);
  FUZZ_CHECK(alien[0] && alien[1] && alien[2] && alien[3], "%s", ad_last_error(foreign));
  ad_tensor_set_requires_grad(alien[0], true);
}

/* The end of an input on context c (its tape already reset, everything
 * but its leaves and w freed): frees them, then checks that c holds no
 * tensor and its allocator no block, and frees c. */
static void finish_input(ad_ctx *c, ad_tensor *w) {
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].kind == S_LEAF) ad_tensor_free(slots[i].t);
  ad_tensor_free(w);
  ad_tape_reset(c);
  ad_clear_error(c);
  FUZZ_CHECK(ad_ctx_live_tensors(c) == 0, "%zu tensors leaked", ad_ctx_live_tensors(c));
  ad_ctx_free(c);
  FUZZ_CHECK(fuzz_live == 0, "%ld blocks allocated through the context leaked", fuzz_live);
}

#endif
