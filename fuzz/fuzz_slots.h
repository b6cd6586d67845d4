/* fuzz_slots.h: the input reader and the tensor slots shared by the
 * program-running targets (fuzz_ops.c, fuzz_nn.c). Each includes it once,
 * after defining MAX_SLOTS; everything here is static, so each target has
 * its own. The bytes an input is read with are the same in both, so a
 * seed of one program encoding means the same after a change here only if
 * it changes both alike. */
#ifndef FUZZ_SLOTS_H
#define FUZZ_SLOTS_H

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
static ad_tensor *alien[4]; /* tensors of another context */

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

#endif
