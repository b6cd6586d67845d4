/* test_nn_acts.c: the activations after relu6 (silu, elu, selu, celu,
 * mish, hardswish, hardsigmoid, logsigmoid, softsign, tanhshrink and the
 * prelu layer) against PyTorch 1.13: values, first and second derivatives
 * in float64 and float32, at their kinks, for NaN and at +-1000; gradcheck
 * and gradgradcheck; prelu's weight gradient; describe strings, names and
 * errors.
 *
 * REFS was printed by this script with /usr/bin/python3 (torch 1.13), one
 * element per call, so that PyTorch runs its scalar kernels (its CPU
 * kernels of elu and hardswish give NaN at a NaN x, and hardswish' 1 at 3,
 * for the elements they take a vector at a time; the scalar code's slopes
 * are the ones nn.h documents):
 *
 *   X = [-1000.0, -3.0, -2.5, -1.0, -0.5, -1e-10, 0.0, 0.5, 2.5, 3.0, 1000.0, nan]
 *   for f in (F.silu, F.elu, elu(0.5), F.selu, F.celu, celu(2.0), celu(0.1),
 *             F.mish, F.hardswish, F.hardsigmoid, F.logsigmoid, F.softsign,
 *             F.tanhshrink):
 *     for dt in (torch.float64, torch.float32):
 *       for v in X:
 *         t = torch.tensor([v], dtype=dt, requires_grad=True)
 *         g, = torch.autograd.grad(f(t).sum(), t, create_graph=True)
 *         g2, = torch.autograd.grad(g.sum(), t)  # hardsigmoid: 0 (1.13 has no
 *                                                # double backward for it)
 *         print(f(t).item(), g.item(), g2.item())
 *
 * The PRELU_* arrays: F.prelu in float64 on x[i] = ((7 i) % 11 - 5) / 4
 * (zeros included) of shape [2,3,2,2] and [4,3], weight [0.25] or [0.25,
 * -0.1, 0.5], cotangent v[i] = ((5 i) % 7 - 3) / 2: Y = prelu(x, w), GX and
 * GW = autograd.grad((y * v).sum(), (x, w), create_graph=True), HW =
 * autograd.grad((GX * r).sum(), w) with r = v flattened and reversed. */
#include "ad_ext.h"
#include "nn.h"
#include "nn_io.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST_CTX_SUITE(acts);
TEST_CTX_SUITE_ALSO(prelu);

#define NX 12
static const double X[NX] = {-1000.0, -3.0, -2.5, -1.0, -0.5,   -1e-10,
                             0.0,     0.5,  2.5,  3.0,  1000.0, NAN};

typedef struct act_ref {
  nn_act act;
  double alpha;
  ad_dtype dtype;
  double y[NX], g[NX], g2[NX];
} act_ref;

static const act_ref REFS[] = {
    {NN_ACT_SILU,
     0,
     AD_F64,
     {-0.0, -0.14227761953270035, -0.18964545005310887, -0.2689414213699951, -0.1887703343990727,
      -4.9999999997500004e-11, 0.0, 0.3112296656009273, 2.3103545499468914, 2.8577223804672998,
      1000.0, NAN},
     {-0.0, -0.08810410601516962, -0.09940111134152682, 0.07232948812851325, 0.2600388126973482,
      0.49999999995, 0.5, 0.7399611873026519, 1.0994011113415267, 1.0881041060151693, 1.0, NAN},
     {0.0, -0.032321404521006174, -0.008462156523368847, 0.3023661188100153, 0.44122902697702865,
      0.5, 0.5, 0.4412290269770286, -0.008462156523368874, -0.03232140452100613, 0.0, NAN}},
    {NN_ACT_SILU,
     0,
     AD_F32,
     {-0.0, -0.14227761328220367, -0.189645454287529, -0.2689414322376251, -0.1887703388929367,
      -5.00000006675716e-11, 0.0, 0.3112296760082245, 2.310354471206665, 2.857722520828247, 1000.0,
      NAN},
     {-0.0, -0.08810409903526306, -0.09940110146999359, 0.07232948392629623, 0.260038822889328, 0.5,
      0.5, 0.7399612069129944, 1.0994011163711548, 1.0881041288375854, 1.0, NAN},
     {0.0, -0.03232140466570854, -0.008462153375148773, 0.30236613750457764, 0.4412290155887604,
      0.5, 0.5, 0.441228985786438, -0.008462153375148773, -0.032321393489837646, 0.0, NAN}},
    {NN_ACT_ELU,
     1,
     AD_F64,
     {-1.0, -0.950212931632136, -0.9179150013761012, -0.6321205588285577, -0.3934693402873666,
      -1.000000082740371e-10, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.049787068367863944, 0.0820849986238988, 0.36787944117144233, 0.6065306597126334,
      0.9999999999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.049787068367863944, 0.0820849986238988, 0.36787944117144233, 0.6065306597126334,
      0.9999999999, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_ELU,
     1,
     AD_F32,
     {-1.0, -0.9502129554748535, -0.9179149866104126, -0.6321205496788025, -0.39346933364868164,
      0.0, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.049787066876888275, 0.08208499848842621, 0.3678794503211975, 0.6065306663513184, 1.0,
      1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.049787066876888275, 0.08208499848842621, 0.3678794503211975, 0.6065306663513184, 1.0,
      0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_ELU,
     0.5,
     AD_F64,
     {-0.5, -0.475106465816068, -0.4589575006880506, -0.31606027941427883, -0.1967346701436833,
      -5.000000413701855e-11, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.024893534183931972, 0.0410424993119494, 0.18393972058572117, 0.3032653298563167,
      0.49999999995, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.024893534183931972, 0.0410424993119494, 0.18393972058572117, 0.3032653298563167,
      0.49999999995, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_ELU,
     0.5,
     AD_F32,
     {-0.5, -0.47510647773742676, -0.4589574933052063, -0.31606027483940125, -0.19673466682434082,
      0.0, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.024893533438444138, 0.041042499244213104, 0.18393972516059875, 0.3032653331756592, 0.5,
      0.5, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.024893533438444138, 0.041042499244213104, 0.18393972516059875, 0.3032653331756592, 0.5,
      0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_SELU,
     0,
     AD_F64,
     {-1.7580993408473766, -1.6705687287671118, -1.6137857588732423, -1.1113307378125625,
      -0.6917581878028713, -1.7580994863131684e-10, 0.0, 0.5253504936777402, 2.626752468388701,
      3.1521029620664414, 1050.7009873554805, NAN},
     {0.0, 0.08753061208026487, 0.1443135819741343, 0.646768603034814, 1.0663411530445053,
      1.7580993406715666, 1.7580993408473766, 1.0507009873554805, 1.0507009873554805,
      1.0507009873554805, 1.0507009873554805, 1.0507009873554805},
     {0.0, 0.08753061208026487, 0.1443135819741343, 0.646768603034814, 1.0663411530445053,
      1.7580993406715666, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_SELU,
     0,
     AD_F32,
     {-1.7580993175506592, -1.6705687046051025, -1.613785743713379, -1.1113307476043701,
      -0.6917581558227539, 0.0, 0.0, 0.5253505110740662, 2.6267526149749756, 3.1521029472351074,
      1050.7010498046875, NAN},
     {0.0, 0.08753060549497604, 0.14431357383728027, 0.6467686295509338, 1.0663411617279053,
      1.7580993175506592, 1.7580993175506592, 1.0507010221481323, 1.0507010221481323,
      1.0507010221481323, 1.0507010221481323, 1.0507010221481323},
     {0.0, 0.08753060549497604, 0.14431357383728027, 0.6467686295509338, 1.0663411617279053,
      1.7580993175506592, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_CELU,
     1,
     AD_F64,
     {-1.0, -0.950212931632136, -0.9179150013761012, -0.6321205588285577, -0.3934693402873666,
      -1.000000082740371e-10, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.049787068367863944, 0.0820849986238988, 0.36787944117144233, 0.6065306597126334,
      0.9999999999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.049787068367863944, 0.0820849986238988, 0.36787944117144233, 0.6065306597126334,
      0.9999999999, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_CELU,
     1,
     AD_F32,
     {-1.0, -0.9502129554748535, -0.9179149866104126, -0.6321205496788025, -0.39346933364868164,
      0.0, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.049787066876888275, 0.08208499848842621, 0.3678794503211975, 0.6065306663513184, 1.0,
      1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.049787066876888275, 0.08208499848842621, 0.3678794503211975, 0.6065306663513184, 1.0,
      0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_CELU,
     2,
     AD_F64,
     {-2.0, -1.5537396797031404, -1.4269904062796197, -0.7869386805747332, -0.44239843385719024,
      -1.000000082740371e-10, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {7.124576406741286e-218, 0.22313016014842982, 0.2865047968601901, 0.6065306597126334,
      0.7788007830714049, 0.99999999995, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {3.562288203370643e-218, 0.11156508007421491, 0.14325239843009505, 0.3032653298563167,
      0.38940039153570244, 0.499999999975, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_CELU,
     2,
     AD_F32,
     {-2.0, -1.5537396669387817, -1.4269903898239136, -0.7869386672973633, -0.44239842891693115,
      0.0, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 0.22313016653060913, 0.2865048050880432, 0.6065306663513184, 0.7788007855415344, 1.0,
      1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 0.11156508326530457, 0.1432524025440216, 0.3032653331756592, 0.3894003927707672, 0.5,
      0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_CELU,
     0.1,
     AD_F64,
     {-0.1, -0.09999999999999065, -0.09999999999861121, -0.09999546000702375, -0.09932620530009145,
      -9.999999717180686e-11, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 9.357627012584983e-14, 1.3887948831680625e-11, 4.539993585109023e-05,
      0.006737947400698411, 0.9999999840988391, 0.999999985098839, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 9.357626873145475e-13, 1.3887948624734064e-10, 0.0004539993517457848,
      0.06737947300295173, 9.999999691976784, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_CELU,
     0.1,
     AD_F32,
     {-0.10000000149011612, -0.10000000149011612, -0.10000000149011612, -0.099995456635952,
      -0.09932620823383331, 0.0, 0.0, 0.5, 2.5, 3.0, 1000.0, NAN},
     {0.0, 9.357622912219837e-14, 1.3887943746404563e-11, 4.539993096841499e-05,
      0.0067379469983279705, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
     {0.0, 9.35762318327038e-13, 1.3887943572932215e-10, 0.00045399932423606515,
      0.06737946718931198, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_MISH,
     0,
     AD_F64,
     {-0.0, -0.1456474612756246, -0.19681620390653337, -0.30340146137410895, -0.22074377465173,
      -5.99999999968e-11, 0.0, 0.3752452113048951, 2.471392304557881, 2.9865350049679575, 1000.0,
      NAN},
     {0.0, -0.09339311453232084, -0.10974357275018568, 0.059216755877395, 0.28951067791351226,
      0.5999999999360001, 0.6, 0.8864243753577273, 1.041129530131353, 1.0211069109294435, 1.0, NAN},
     {0.0, -0.03992871324212924, -0.021145911278747737, 0.34970567367064487, 0.5639709231132665,
      0.6400000000095999, 0.64, 0.46805337784488654, -0.050011029299785015, -0.030266496639326814,
      NAN, NAN}},
    {NN_ACT_MISH,
     0,
     AD_F32,
     {-0.0, -0.14564746618270874, -0.19681619107723236, -0.3034014403820038, -0.22074376046657562,
      -6.000000496442226e-11, 0.0, 0.37524524331092834, 2.4713923931121826, 2.98653507232666,
      1000.0, NAN},
     {0.0, -0.09339312463998795, -0.10974355041980743, 0.05921675264835358, 0.28951066732406616,
      0.6000000238418579, 0.6000000238418579, 0.8864243626594543, 1.041129469871521,
      1.0211069583892822, 1.0, NAN},
     {0.0, -0.039928704500198364, -0.02114589512348175, 0.34970569610595703, 0.5639709830284119,
      0.6399999856948853, 0.6399999856948853, 0.4680533707141876, -0.0500110387802124,
      -0.03026661090552807, NAN, NAN}},
    {NN_ACT_HARDSWISH,
     0,
     AD_F64,
     {-0.0, -0.0, -0.20833333333333334, -0.3333333333333333, -0.20833333333333334,
      -4.9999999998333336e-11, 0.0, 0.2916666666666667, 2.2916666666666665, 3.0, 1000.0, NAN},
     {0.0, -0.5, -0.33333333333333337, 0.16666666666666669, 0.33333333333333337,
      0.49999999996666666, 0.5, 0.6666666666666666, 1.3333333333333335, 1.5, 1.0, 1.0},
     {0.0, 0.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333,
      0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.0, 0.0, 0.0}},
    {NN_ACT_HARDSWISH,
     0,
     AD_F32,
     {-0.0, -0.0, -0.2083333283662796, -0.3333333432674408, -0.2083333283662796,
      -5.00000006675716e-11, 0.0, 0.2916666567325592, 2.2916667461395264, 3.0, 1000.0, NAN},
     {0.0, -0.5, -0.3333333134651184, 0.1666666567325592, 0.3333333134651184, 0.5, 0.5,
      0.6666666865348816, 1.3333332538604736, 1.5, 1.0, 1.0},
     {0.0, 0.0, 0.3333333432674408, 0.3333333432674408, 0.3333333432674408, 0.3333333432674408,
      0.3333333432674408, 0.3333333432674408, 0.3333333432674408, 0.0, 0.0, 0.0}},
    {NN_ACT_HARDSIGMOID,
     0,
     AD_F64,
     {0.0, 0.0, 0.08333333333333333, 0.3333333333333333, 0.4166666666666667, 0.49999999998333333,
      0.5, 0.5833333333333334, 0.9166666666666666, 1.0, 1.0, NAN},
     {0.0, 0.0, 0.1666666716337204, 0.1666666716337204, 0.1666666716337204, 0.1666666716337204,
      0.1666666716337204, 0.1666666716337204, 0.1666666716337204, 0.0, 0.0, 0.0},
     {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_HARDSIGMOID,
     0,
     AD_F32,
     {0.0, 0.0, 0.0833333358168602, 0.3333333432674408, 0.4166666567325592, 0.5, 0.5,
      0.5833333134651184, 0.9166666865348816, 1.0, 1.0, NAN},
     {0.0, 0.0, 0.1666666716337204, 0.1666666716337204, 0.1666666716337204, 0.1666666716337204,
      0.1666666716337204, 0.1666666716337204, 0.1666666716337204, 0.0, 0.0, 0.0},
     {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}},
    {NN_ACT_LOGSIGMOID,
     0,
     AD_F64,
     {-1000.0, -3.048587351573742, -2.5788897342925496, -1.3132616875182228, -0.9740769841801067,
      -0.6931471806099453, -0.6931471805599453, -0.4740769841801067, -0.07888973429254963,
      -0.04858735157374206, 0.0, NAN},
     {1.0, 0.9525741268224333, 0.9241418199787564, 0.7310585786300049, 0.6224593312018545,
      0.500000000025, 0.5, 0.37754066879814546, 0.07585818002124356, 0.04742587317756679, 0.0, NAN},
     {-0.0, -0.04517665973091214, -0.07010371654510815, -0.19661193324148185, -0.2350037122015945,
      -0.25, -0.25, -0.2350037122015945, -0.07010371654510807, -0.045176659730912, 0.0, NAN}},
    {NN_ACT_LOGSIGMOID,
     0,
     AD_F32,
     {-1000.0, -3.0485873222351074, -2.578889846801758, -1.3132617473602295, -0.9740769863128662,
      -0.6931471824645996, -0.6931471824645996, -0.4740769863128662, -0.07888973504304886,
      -0.04858735203742981, 0.0, NAN},
     {1.0, 0.9525741338729858, 0.9241418242454529, 0.7310585975646973, 0.6224592924118042, 0.5, 0.5,
      0.3775406777858734, 0.07585817575454712, 0.04742587357759476, 0.0, NAN},
     {-0.0, -0.045176658779382706, -0.0701037123799324, -0.1966119408607483, -0.23500370979309082,
      -0.25, -0.25, -0.23500370979309082, -0.0701037123799324, -0.04517665505409241, 0.0, NAN}},
    {NN_ACT_SOFTSIGN,
     0,
     AD_F64,
     {-0.999000999000999, -0.75, -0.7142857142857143, -0.5, -0.3333333333333333, -9.999999999e-11,
      0.0, 0.3333333333333333, 0.7142857142857143, 0.75, 0.999000999000999, NAN},
     {9.98002996005021e-07, 0.0625, 0.08163265306122447, 0.25, 0.4444444444444444, 0.9999999998,
      1.0, 0.4444444444444444, 0.08163265306122447, 0.0625, 9.98002996005021e-07, NAN},
     {1.994011980029956e-09, 0.03125, 0.046647230320699694, 0.25, 0.5925925925925926, 1.9999999994,
      -0.0, -0.5925925925925926, -0.046647230320699694, -0.03125, -1.994011980029956e-09, NAN}},
    {NN_ACT_SOFTSIGN,
     0,
     AD_F32,
     {-0.9990010261535645, -0.75, -0.7142857313156128, -0.5, -0.3333333432674408,
      -1.000000013351432e-10, 0.0, 0.3333333432674408, 0.7142857313156128, 0.75, 0.9990010261535645,
      NAN},
     {9.979121387004852e-07, 0.0625, 0.08163265883922577, 0.25, 0.444444477558136, 1.0, 1.0,
      0.444444477558136, 0.08163265883922577, 0.0625, 9.979121387004852e-07, NAN},
     {1.993839759961702e-09, 0.03125, 0.04664723575115204, 0.25, 0.5925925970077515, 2.0, -0.0,
      -0.5925925970077515, -0.04664723575115204, -0.03125, -1.993839759961702e-09, NAN}},
    {NN_ACT_TANHSHRINK,
     0,
     AD_F64,
     {-999.0, -2.0049452463132695, -1.5133857018485697, -0.23840584404423515, -0.03788284273999026,
      0.0, 0.0, 0.03788284273999026, 1.5133857018485697, 2.0049452463132695, 999.0, NAN},
     {1.0, 0.9901339628345598, 0.9734077733168395, 0.5800256583859739, 0.2135522670340726, 0.0, 0.0,
      0.2135522670340726, 0.9734077733168395, 0.9901339628345598, 1.0, NAN},
     {-0.0, -0.019634494363042387, -0.052472542130580405, -0.6397000084492246, -0.7268619813835873,
      -2e-10, 0.0, 0.7268619813835873, 0.052472542130580405, 0.019634494363042387, 0.0, NAN}},
    {NN_ACT_TANHSHRINK,
     0,
     AD_F32,
     {-999.0, -2.0049452781677246, -1.5133857727050781, -0.23840582370758057, -0.037882834672927856,
      0.0, 0.0, 0.037882834672927856, 1.5133857727050781, 2.0049452781677246, 999.0, NAN},
     {1.0, 0.9901340007781982, 0.9734077453613281, 0.5800256729125977, 0.2135522961616516, 0.0, 0.0,
      0.2135522961616516, 0.9734077453613281, 0.9901340007781982, 1.0, NAN},
     {-0.0, -0.019634384661912918, -0.05247258394956589, -0.6396999359130859, -0.7268619537353516,
      -2.000000026702864e-10, 0.0, 0.7268619537353516, 0.05247258394956589, 0.019634384661912918,
      0.0, NAN}},
};

static const double PRELU_4d_C1_Y[] = {
    -0.3125, 0.5,    -0.125, 1.25, 0.25,    -0.1875, 1.0, 0.0,   -0.25, 0.75,    -0.0625, -0.3125,
    0.5,     -0.125, 1.25,   0.25, -0.1875, 1.0,     0.0, -0.25, 0.75,  -0.0625, -0.3125, 0.5};
static const double PRELU_4d_C1_GX[] = {-0.375, 1.0,  0.0,   -1.0,  1.5,  0.125,  -0.5, -0.375,
                                        0.25,   0.0,  -0.25, 0.375, 0.5,  -0.125, -1.5, 1.0,
                                        0.0,    -1.0, 0.375, 0.125, -0.5, -0.375, 0.25, 0.0};
static const double PRELU_4d_C1_GW[] = {-2.25};
static const double PRELU_4d_C1_HW[] = {6.0};
static const double PRELU_4d_C3_Y[] = {
    -0.3125, 0.5, -0.125, 1.25, 0.25, 0.07500000000000001, 1.0, -0.0, -0.5, 0.75, -0.125,
    -0.625,  0.5, -0.125, 1.25, 0.25, 0.07500000000000001, 1.0, -0.0, 0.1,  0.75, -0.125,
    -0.625,  0.5};
static const double PRELU_4d_C3_GX[] = {
    -0.375, 1.0, 0.0,    -1.0, 1.5, -0.05, -0.5, 0.15000000000000002,  0.5,   0.0,  -0.5,
    0.75,   0.5, -0.125, -1.5, 1.0, -0.0,  -1.0, -0.15000000000000002, -0.05, -0.5, -0.75,
    0.5,    0.0};
static const double PRELU_4d_C3_GW[] = {2.125, -0.875, -3.5};
static const double PRELU_4d_C3_HW[] = {0.5, 2.25, 3.25};
static const double PRELU_2d_C1_Y[] = {-0.3125, 0.5, -0.125, 1.25, 0.25,    -0.1875,
                                       1.0,     0.0, -0.25,  0.75, -0.0625, -0.3125};
static const double PRELU_2d_C1_GX[] = {-0.375, 1.0,    0.0,  -1.0, 1.5,   0.125,
                                        -0.5,   -0.375, 0.25, 0.0,  -0.25, 0.375};
static const double PRELU_2d_C1_GW[] = {-1.125};
static const double PRELU_2d_C1_HW[] = {-9.0};
static const double PRELU_2d_C3_Y[] = {-0.3125, 0.5,  -0.25, 1.25, 0.25,  -0.375,
                                       1.0,     -0.0, -0.5,  0.75, 0.025, -0.625};
static const double PRELU_2d_C3_GX[] = {
    -0.375, 1.0, 0.0, -1.0, 1.5, 0.25, -0.5, 0.15000000000000002, 0.5, 0.0, 0.1, 0.75};
static const double PRELU_2d_C3_GW[] = {1.875, 0.25, -3.25};
static const double PRELU_2d_C3_HW[] = {-2.25, -3.25, -3.5};

static void expect_msg(ad_status st, const char *needle) {
  cr_assert_eq(ad_last_status(ctx), st, "status %s: %s", ad_status_str(ad_last_status(ctx)),
               ad_last_error(ctx));
  cr_assert(strstr(ad_last_error(ctx), needle), "message: %s", ad_last_error(ctx));
  ad_clear_error(ctx);
}

/* got == want (both NaN included), or within atol + rtol |want|. */
static bool near(double got, double want, double atol, double rtol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want; /* rtol * inf would take any got */
  return got == want || fabs(got - want) <= atol + rtol * fabs(want);
}

static ad_tensor *vec(ad_dtype dt, int64_t n, const double *v) {
  ad_tensor *t = ad_zeros(ctx, dt, 1, &n);
  for (int64_t i = 0; i < n; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

/* y, dy/dx and d2y/dx2 of act at every X (elementwise: the gradients of
 * sum(y) and of sum(dy/dx)), the second one recorded with create_graph. */
static void run_act(const act_ref *r, ad_tensor **y, ad_tensor **g, ad_tensor **g2) {
  ad_tensor *x = vec(r->dtype, NX, X);
  ad_tensor_set_requires_grad(x, true);
  *y = nn_activate(ctx, x, r->act, r->alpha);
  cr_assert_not_null(*y, "%s: %s", nn_act_name(r->act), ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, *y), NULL, 1, &x, g, true), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, *g), NULL, 1, &x, g2, false), AD_OK, "%s",
               ad_last_error(ctx));
}

static const char *dt_name(ad_dtype dt) { return dt == AD_F32 ? "f32" : "f64"; }

Test(acts, values_and_two_derivatives_match_torch) {
  for (size_t k = 0; k < sizeof REFS / sizeof REFS[0]; k++) {
    const act_ref *r = &REFS[k];
    ad_tensor *out[3];
    run_act(r, &out[0], &out[1], &out[2]);
    const double *want[3] = {r->y, r->g, r->g2};
    double atol = r->dtype == AD_F64 ? 1e-15 : 1e-7, rtol = r->dtype == AD_F64 ? 1e-14 : 2e-6;
    for (int d = 0; d < 3; d++)
      for (int i = 0; i < NX; i++) {
        double w = want[d][i];
        /* PyTorch's mish double backward makes inf * 0 at 1000; the limit is 0 */
        if (r->act == NN_ACT_MISH && d == 2 && X[i] == 1000) {
          cr_assert(isnan(w), "the reference changed");
          w = 0;
        }
        double got = ad_tensor_get(out[d], i);
        cr_assert(near(got, w, atol, rtol),
                  "%s(alpha=%g) %s, derivative %d at %g: %.17g, torch %.17g", nn_act_name(r->act),
                  r->alpha, dt_name(r->dtype), d, X[i], got, w);
        /* at the kinks, at +-1000 and for NaN: PyTorch's numbers exactly */
        bool exact =
            X[i] == 1000 || X[i] == -1000 || isnan(X[i]) || X[i] == 0 || X[i] == 3 || X[i] == -3;
        bool smooth = r->act == NN_ACT_SILU || r->act == NN_ACT_MISH ||
                      r->act == NN_ACT_LOGSIGMOID || r->act == NN_ACT_SOFTSIGN ||
                      r->act == NN_ACT_TANHSHRINK;
        if (smooth && !(X[i] == 1000 || X[i] == -1000 || isnan(X[i]))) exact = false;
        if (exact)
          cr_assert(isnan(w) ? isnan(got) : got == w,
                    "%s(alpha=%g) %s, derivative %d at %g: %.17g, torch %.17g exactly",
                    nn_act_name(r->act), r->alpha, dt_name(r->dtype), d, X[i], got, w);
      }
    ad_tape_reset(ctx);
  }
}

/* The one-sided choices, spelled out (the table holds them too). */
Test(acts, kinks_take_torch_sides) {
  static const double xs[] = {0.0, -3.0, 3.0, NAN};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    ad_tensor *x = vec(dt, 4, xs), *g;
    ad_tensor_set_requires_grad(x, true);
    struct {
      nn_act act;
      double alpha, g[4];
    } c[] = {
        {NN_ACT_ELU, 0.5, {0.5, 0.024893534183931972, 1, 1}},   /* left slope at 0 */
        {NN_ACT_CELU, 2, {1, 0.22313016014842982, 1, 1}},       /* alpha / alpha */
        {NN_ACT_HARDSWISH, 0, {0.5, -0.5, 1.5, 1}},             /* [-3, 3] closed */
        {NN_ACT_HARDSIGMOID, 0, {0.1666666716337204, 0, 0, 0}}, /* (-3, 3) open */
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
      ad_tensor *y = nn_activate(ctx, x, c[k].act, c[k].alpha);
      cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, false), AD_OK);
      for (int i = 0; i < 4; i++)
        cr_assert(near(ad_tensor_get(g, i), c[k].g[i], 0, dt == AD_F32 ? 1e-7 : 0),
                  "%s %s at %g: %.17g", nn_act_name(c[k].act), dt_name(dt), xs[i],
                  ad_tensor_get(g, i));
      ad_tape_reset(ctx);
    }
  }
}

/* celu(x, alpha) of x[0..n) in dtype dt: its value, slope and second
 * derivative against want (three rows of n) to rtol, infinities exactly. */
static void expect_celu(double alpha, ad_dtype dt, int n, const double *xs, const double *want,
                        double rtol) {
  ad_tensor *x = vec(dt, n, xs), *g, *g2;
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = nn_activate(ctx, x, NN_ACT_CELU, alpha);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, true), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, g), NULL, 1, &x, &g2, false), AD_OK, "%s",
               ad_last_error(ctx));
  const ad_tensor *got[3] = {y, g, g2};
  for (int q = 0; q < 3; q++)
    for (int i = 0; i < n; i++)
      cr_assert(near(ad_tensor_get(got[q], i), want[q * n + i], 0, rtol),
                "alpha %g %s derivative %d at %g: %.17g, torch %.17g", alpha, dt_name(dt), q, xs[i],
                ad_tensor_get(got[q], i), want[q * n + i]);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* celu with a negative alpha grows without bound to the left: e^(x / alpha)
 * is inf at x = -inf, and so are PyTorch's slope and second derivative
 * there (torch 1.13; the bound of the input's clamp once gave 0 at -inf).
 * alpha = -0.1 is not a float32 value: the value comes from 1 / alpha, the
 * slope from 1 / float32(alpha), and their split was NaN where both are
 * inf. */
Test(acts, celu_negative_alpha_at_minus_infinity) {
  static const double x2[] = {-INFINITY, -1e30, -100.0, -1.0, 0.0, 1.0};
  static const double w2[2][18] = {
      {-INFINITY, -INFINITY, -1.0369411057174144e+22, -1.2974425414002564, -0.0, 1.0, /* f64 */
       INFINITY, INFINITY, 5.184705528587072e+21, 1.6487212707001282, 1.0, 1.0, -INFINITY,
       -INFINITY, -2.592352764293536e+21, -0.8243606353500641, -0.0, -0.0},
      {-INFINITY, -INFINITY, -1.0369410915331094e+22, -1.2974424362182617, -0.0, 1.0, /* f32 */
       INFINITY, INFINITY, 5.184705457665547e+21, 1.6487212181091309, 1.0, 1.0, -INFINITY,
       -INFINITY, -2.5923527288327735e+21, -0.8243606090545654, -0.0, -0.0}};
  static const double x01[] = {-INFINITY, -1e30, -1.0};
  static const double w01[2][9] = {{-INFINITY, -INFINITY, -2202.546579480672, INFINITY, INFINITY,
                                    22026.462184387965, -INFINITY, -INFINITY, -220264.61856168107},
                                   {-INFINITY, -INFINITY, -2202.546630859375, INFINITY, INFINITY,
                                    22026.46484375, -INFINITY, -INFINITY, -220264.65625}};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    expect_celu(-2.0, dt, 6, x2, w2[d], d ? 1e-6 : 1e-15);
    expect_celu(-0.1, dt, 3, x01, w01[d], d ? 1e-6 : 1e-14);
  }
}

/* Large |x| gives finite values and derivatives, both dtypes, also where
 * a naive form overflows (e^1000, x / (1 + e^-x) at -1000). */
Test(acts, no_overflow_at_large_x) {
  static const double xs[] = {-1000, -100, -90, 90, 100, 1000};
  for (int d = 0; d < 2; d++)
    for (int a = NN_ACT_SILU; a < NN_ACT_PRELU; a++) {
      act_ref r = {.act = (nn_act)a, .alpha = 1, .dtype = d ? AD_F32 : AD_F64};
      ad_tensor *x = vec(r.dtype, 6, xs), *g, *g2;
      ad_tensor_set_requires_grad(x, true);
      ad_tensor *y = nn_activate(ctx, x, r.act, r.alpha);
      cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, true), AD_OK);
      cr_assert_eq(ad_grad(ctx, ad_sum(ctx, g), NULL, 1, &x, &g2, false), AD_OK);
      cr_assert(!ad_tensor_has_nonfinite(y) && !ad_tensor_has_nonfinite(g) &&
                    !ad_tensor_has_nonfinite(g2),
                "%s %s", nn_act_name(r.act), dt_name(r.dtype));
      ad_tape_reset(ctx);
    }
}

typedef struct act_case {
  nn_act act;
  double alpha;
} act_case;

static ad_tensor *act_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const act_case *a = ud;
  return nn_activate(c, in[0], a->act, a->alpha);
}

/* Central differences agree with the tape, first and second order, away
 * from the kinks (0, +-3). */
Test(acts, gradcheck_and_gradgradcheck) {
  double xs[21];
  for (int i = 0; i < 21; i++) xs[i] = -3.9 + 0.37 * i;
  act_case cs[] = {{NN_ACT_SILU, 0},       {NN_ACT_ELU, 1},       {NN_ACT_ELU, 0.5},
                   {NN_ACT_SELU, 0},       {NN_ACT_CELU, 1},      {NN_ACT_CELU, 0.1},
                   {NN_ACT_MISH, 0},       {NN_ACT_HARDSWISH, 0}, {NN_ACT_HARDSIGMOID, 0},
                   {NN_ACT_LOGSIGMOID, 0}, {NN_ACT_SOFTSIGN, 0},  {NN_ACT_TANHSHRINK, 0}};
  for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
    ad_tensor *x = vec(AD_F64, 21, xs);
    ad_tensor_set_requires_grad(x, true);
    ad_check_opts o = {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-6, .seed = 3};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(ctx, act_fn, &cs[k], 1, &x, &o, &rep), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(rep.passed && rep.checked == 21, "%s: at %lld analytic %g numeric %g",
              nn_act_name(cs[k].act), (long long)rep.index, rep.analytic, rep.numeric);
    cr_assert_eq(ad_gradgradcheck(ctx, act_fn, &cs[k], 1, &x, &o, &rep), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(rep.passed, "%s second order: at %lld analytic %g numeric %g", nn_act_name(cs[k].act),
              (long long)rep.index, rep.analytic, rep.numeric);
    ad_tensor_free(x);
  }
}

/* The layers compute what nn_activate does, and Dense takes every one but
 * prelu (refused in acts::errors), with alpha 1 for elu and celu when opts
 * leave it 0. */
Test(acts, layers_and_dense) {
  static const double xv[6] = {-2, -0.5, 0, 0.5, 3, 7};
  int64_t s[2] = {2, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, s);
  for (int i = 0; i < 6; i++) ad_tensor_set(x, i, xv[i]);
  for (int a = NN_ACT_SILU; a < NN_ACT_PRELU; a++) {
    nn_layer *l = nn_activation_new(ctx, (nn_act)a);
    cr_assert_not_null(l);
    cr_assert_str_eq(nn_layer_kind(l), nn_act_name((nn_act)a));
    ad_tensor *y = nn_layer_forward(l, x, true), *w = nn_activate(ctx, x, (nn_act)a, 1.0);
    for (int i = 0; i < 6; i++) cr_assert_eq(ad_tensor_get(y, i), ad_tensor_get(w, i));
    nn_layer_free(l);

    /* dense with identity weights: act(x) */
    nn_dense_opts o = {
        .activation = (nn_act)a, .dtype = AD_F64, .weight_init = nn_init_make(NN_INIT_ZEROS, 0, 0)};
    nn_layer *d = nn_dense_new(ctx, 3, 3, NULL, &o);
    cr_assert_not_null(d, "%s", ad_last_error(ctx));
    ad_tensor *wt = nn_params_find(nn_layer_params(d), "weight");
    for (int i = 0; i < 3; i++) ad_tensor_set(wt, i * 3 + i, 1);
    y = nn_layer_forward(d, x, true);
    for (int i = 0; i < 6; i++)
      cr_assert_eq(ad_tensor_get(y, i), ad_tensor_get(w, i), "dense %s", nn_act_name((nn_act)a));
    nn_layer_free(d);
  }
  nn_layer *e = nn_elu_new(ctx, 0.3), *c = nn_celu_new(ctx, 0.3);
  ad_tensor *ye = nn_layer_forward(e, x, true), *yc = nn_layer_forward(c, x, true);
  cr_assert_float_eq(ad_tensor_get(ye, 0), 0.3 * (exp(-2.0) - 1), 1e-16);
  cr_assert_float_eq(ad_tensor_get(yc, 0), 0.3 * (exp(-2.0 * (1 / 0.3)) - 1), 1e-16);
  cr_assert_eq(ad_tensor_get(ye, 5), 7);
  nn_layer_free(e);
  nn_layer_free(c);
}

Test(acts, names_and_describe_as_torch_repr) {
  /* repr of nn.SiLU(), nn.ELU(), ... in torch 1.13, lower-cased */
  static const char *want[] = {"silu()",
                               "elu(alpha=1.0)",
                               "selu()",
                               "celu(alpha=1.0)",
                               "mish()",
                               "hardswish()",
                               "hardsigmoid()",
                               "logsigmoid()",
                               "softsign()",
                               "tanhshrink()",
                               "prelu(num_parameters=1)"};
  char buf[128];
  for (int a = NN_ACT_SILU; a <= NN_ACT_PRELU; a++) {
    nn_layer *l = nn_activation_new(ctx, (nn_act)a);
    cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), want[a - NN_ACT_SILU]);
    nn_layer_free(l);
  }
  nn_layer *l = nn_elu_new(ctx, 0.5);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), "elu(alpha=0.5)");
  nn_layer_free(l);
  l = nn_celu_new(ctx, 2);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), "celu(alpha=2.0)");
  nn_layer_free(l);
  l = nn_prelu_new(ctx, 3, 0.1, AD_F64);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), "prelu(num_parameters=3)");
  nn_layer_free(l);
  l = nn_dense_new(ctx, 2, 2, NULL,
                   &(nn_dense_opts){.activation = NN_ACT_CELU,
                                    .weight_init = nn_init_make(NN_INIT_ZEROS, 0, 0)});
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "dense(in_features=2, out_features=2, bias=True, activation=celu, alpha=1.0)");
  nn_layer_free(l);
  l = nn_dense_new(ctx, 2, 2, NULL,
                   &(nn_dense_opts){.activation = NN_ACT_ELU,
                                    .alpha = 0.25,
                                    .weight_init = nn_init_make(NN_INIT_ZEROS, 0, 0)});
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "dense(in_features=2, out_features=2, bias=True, activation=elu, alpha=0.25)");
  nn_layer_free(l);

  static const char *names[] = {"silu",     "elu",        "selu",        "celu",
                                "mish",     "hardswish",  "hardsigmoid", "logsigmoid",
                                "softsign", "tanhshrink", "prelu"};
  for (int a = NN_ACT_SILU; a <= NN_ACT_PRELU; a++)
    cr_assert_str_eq(nn_act_name((nn_act)a), names[a - NN_ACT_SILU]);
  cr_assert_str_eq(nn_act_name((nn_act)(NN_ACT_PRELU + 1)), "?");
}

Test(acts, errors) {
  int64_t n = 3;
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n), *xi = ad_zeros(ctx, AD_I32, 1, &n);
  nn_act past = (nn_act)(NN_ACT_PRELU + 1);
  char want[64];
  snprintf(want, sizeof want, "dense: unknown activation %d", (int)past);
  cr_assert_null(nn_activate(ctx, x, past, 0));
  expect_msg(AD_ERR_ARG, want + 7);
  cr_assert_null(nn_activation_new(ctx, past));
  expect_msg(AD_ERR_ARG, want + 7);
  cr_assert_null(nn_dense_new(ctx, 2, 2, NULL, &(nn_dense_opts){.activation = past}));
  expect_msg(AD_ERR_ARG, want);
  cr_assert_null(nn_dense_new(ctx, 2, 2, NULL, &(nn_dense_opts){.activation = NN_ACT_PRELU}));
  expect_msg(AD_ERR_ARG, "dense: prelu has a learnable weight");
  cr_assert_null(
      nn_dense_new(ctx, 2, 2, NULL, &(nn_dense_opts){.activation = NN_ACT_ELU, .alpha = INFINITY}));
  expect_msg(AD_ERR_ARG, "dense: elu alpha inf is not finite");
  cr_assert_null(nn_activate(ctx, x, NN_ACT_PRELU, 0.25));
  expect_msg(AD_ERR_ARG, "activate: prelu has a learnable weight; use the layer nn_prelu_new");
  cr_assert_null(nn_activate(ctx, x, NN_ACT_CELU, 0));
  expect_msg(AD_ERR_ARG, "celu: alpha cannot be 0");
  cr_assert_null(nn_activate(ctx, xi, NN_ACT_MISH, 0));
  expect_msg(AD_ERR_DTYPE, "mish: input [3] is i32; a float dtype is needed");
  cr_assert_null(nn_activate(ctx, NULL, NN_ACT_SILU, 0));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  ad_clear_error(ctx);
  ad_tensor_free(xi);
  cr_assert_null(nn_activate(ctx, xi, NN_ACT_SILU, 0));
  expect_msg(AD_ERR_STATE, "activate: x was freed");
  cr_assert_null(nn_elu_new(ctx, NAN));
  expect_msg(AD_ERR_ARG, "elu: alpha nan is not finite");
  cr_assert_null(nn_celu_new(ctx, 0));
  expect_msg(AD_ERR_ARG, "celu: alpha 0 must be finite and not 0");
  cr_assert_null(nn_celu_new(ctx, -INFINITY));
  expect_msg(AD_ERR_ARG, "celu: alpha -inf must be finite and not 0");
  cr_assert_null(nn_prelu_new(ctx, 0, 0.25, AD_F32));
  expect_msg(AD_ERR_ARG, "prelu: num_parameters 0 must be >= 1 and init 0.25 finite");
  cr_assert_null(nn_prelu_new(ctx, 1, NAN, AD_F32));
  expect_msg(AD_ERR_ARG, "init nan finite");
  cr_assert_null(nn_prelu_new(ctx, 1, 0.25, AD_I32));
  expect_msg(AD_ERR_DTYPE, "prelu: the weight must be float, got i32");
  cr_assert_null(nn_elu_new(NULL, 1));
  cr_assert_null(nn_prelu_new(NULL, 1, 0.25, AD_F32));
}

/* Settings a float32 input cannot hold: PyTorch 1.13 refuses them for an
 * f32 tensor ("value cannot be converted to type float without
 * overflow"): F.leaky_relu, F.elu, F.celu (alpha, and celu's 1 / alpha),
 * F.softshrink, F.hardshrink (lambd), F.threshold (threshold, value) and
 * F.rrelu (lower, upper) with 1e39, F.celu with alpha 1e-45. They were
 * taken here and gave -inf, NaN or 0 without a word. float64 takes them,
 * but celu's alpha beyond float32, whose slope PyTorch takes from
 * 1 / float32(alpha). FLT_MAX itself fits. */
Test(acts, f32_settings_beyond_float_range) {
  int64_t n = 3;
  ad_tensor *x = ad_zeros(ctx, AD_F32, 1, &n), *xd = ad_zeros(ctx, AD_F64, 1, &n);
  ad_tensor_set(x, 0, -1), ad_tensor_set(xd, 0, -1);
  cr_assert_null(nn_activate(ctx, x, NN_ACT_LEAKY_RELU, 1e39));
  expect_msg(AD_ERR_ARG, "leaky_relu: alpha 1e+39 is outside float32's range (x is f32)");
  nn_layer *l = nn_leaky_relu_new(ctx, -1e39);
  cr_assert_null(nn_layer_forward(l, x, false));
  expect_msg(AD_ERR_ARG, "leaky_relu: alpha -1e+39 is outside float32's range");
  ad_tensor *y = nn_layer_forward(l, xd, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(y, 0), 1e39);
  nn_layer_free(l);
  cr_assert_null(nn_activate(ctx, x, NN_ACT_ELU, 1e39));
  expect_msg(AD_ERR_ARG, "elu: alpha 1e+39 is outside float32's range (x is f32)");
  cr_assert_null(nn_activate(ctx, x, NN_ACT_CELU, 1e-45));
  expect_msg(AD_ERR_ARG, "celu: 1 / alpha 1e+45 is outside float32's range (x is f32)");
  cr_assert_null(nn_activate(ctx, x, NN_ACT_CELU, 1e39));
  expect_msg(AD_ERR_ARG, "celu: alpha 1e+39 is outside float32's range");
  cr_assert_null(nn_activate(ctx, xd, NN_ACT_CELU, 1e39));
  expect_msg(AD_ERR_ARG, "celu: alpha 1e+39 is outside float32's range (PyTorch's gradient");
  cr_assert_null(nn_softshrink(ctx, x, 1e39));
  expect_msg(AD_ERR_ARG, "softshrink: lambd 1e+39 is outside float32's range (x is f32)");
  cr_assert_null(nn_hardshrink(ctx, x, -1e39));
  expect_msg(AD_ERR_ARG, "hardshrink: lambd -1e+39 is outside float32's range (x is f32)");
  cr_assert_null(nn_threshold(ctx, x, 1e39, 0));
  expect_msg(AD_ERR_ARG, "threshold: threshold 1e+39 is outside float32's range (x is f32)");
  cr_assert_null(nn_threshold(ctx, x, 0, 1e39));
  expect_msg(AD_ERR_ARG, "threshold: value 1e+39 is outside float32's range (x is f32)");
  cr_assert_null(nn_rrelu(ctx, x, 1e39, 2e39, false, NULL));
  expect_msg(AD_ERR_ARG, "rrelu: lower 1e+39 is outside float32's range (x is f32)");
  /* what fits: FLT_MAX, infinities, float64 inputs */
  cr_assert_not_null(nn_activate(ctx, x, NN_ACT_LEAKY_RELU, FLT_MAX), "%s", ad_last_error(ctx));
  cr_assert_not_null(nn_threshold(ctx, x, INFINITY, 1), "%s", ad_last_error(ctx));
  cr_assert_not_null(nn_activate(ctx, xd, NN_ACT_ELU, 1e39), "%s", ad_last_error(ctx));
  cr_assert_not_null(nn_activate(ctx, xd, NN_ACT_CELU, 1e-45), "%s", ad_last_error(ctx));
  cr_assert_not_null(nn_softshrink(ctx, xd, 1e39), "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(xd);
}

/* ------------------------------------------------------------------ prelu */

/* x[i] = ((7 i) % 11 - 5) / 4 and v[i] = ((5 i) % 7 - 3) / 2 of shape s. */
static ad_tensor *pattern(ad_dtype dt, int nd, const int64_t *s, int mul, int mod, double sub,
                          double div) {
  ad_tensor *t = ad_zeros(ctx, dt, nd, s);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, ((i * mul) % mod - sub) / div);
  return t;
}

static void check_prelu(int nd, const int64_t *s, int64_t C, ad_dtype dt, const double *Y,
                        const double *GX, const double *GW, const double *HW) {
  static const double w3[3] = {0.25, -0.1, 0.5};
  nn_layer *l = nn_prelu_new(ctx, C, 0.25, dt);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  cr_assert_eq(w->ndim, 1);
  cr_assert_eq(w->shape[0], C);
  for (int64_t c = 0; c < C; c++) ad_tensor_set(w, c, w3[c]);
  ad_tensor *x = pattern(dt, nd, s, 7, 11, 5, 4), *v = pattern(dt, nd, s, 5, 7, 3, 2);
  ad_tensor *r = ad_zeros_like(ctx, v);
  for (int64_t i = 0; i < v->size; i++) ad_tensor_set(r, i, ad_tensor_get(v, v->size - 1 - i));
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = nn_layer_forward(l, x, true);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_tensor *in[2] = {x, w}, *g[2], *hw;
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, y, v)), NULL, 2, in, g, true), AD_OK);
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, g[0], r)), NULL, 1, &w, &hw, false), AD_OK,
               "%s", ad_last_error(ctx));
  double tol = dt == AD_F64 ? 1e-15 : 1e-6;
  for (int64_t i = 0; i < x->size; i++) {
    cr_assert(near(ad_tensor_get(y, i), Y[i], tol, tol), "y[%lld]", (long long)i);
    cr_assert(near(ad_tensor_get(g[0], i), GX[i], tol, tol), "dx[%lld]", (long long)i);
  }
  for (int64_t c = 0; c < C; c++) {
    cr_assert(near(ad_tensor_get(g[1], c), GW[c], tol, tol), "dw[%lld] %g", (long long)c,
              ad_tensor_get(g[1], c));
    cr_assert(near(ad_tensor_get(hw, c), HW[c], tol, tol), "d2/dw dx[%lld]", (long long)c);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(v);
  ad_tensor_free(r);
  nn_layer_free(l);
}

Test(prelu, weight_gradient_matches_torch) {
  int64_t s4[4] = {2, 3, 2, 2}, s2[2] = {4, 3};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    check_prelu(4, s4, 1, dt, PRELU_4d_C1_Y, PRELU_4d_C1_GX, PRELU_4d_C1_GW, PRELU_4d_C1_HW);
    check_prelu(4, s4, 3, dt, PRELU_4d_C3_Y, PRELU_4d_C3_GX, PRELU_4d_C3_GW, PRELU_4d_C3_HW);
    check_prelu(2, s2, 1, dt, PRELU_2d_C1_Y, PRELU_2d_C1_GX, PRELU_2d_C1_GW, PRELU_2d_C1_HW);
    check_prelu(2, s2, 3, dt, PRELU_2d_C3_Y, PRELU_2d_C3_GX, PRELU_2d_C3_GW, PRELU_2d_C3_HW);
  }
}

/* F.prelu(x, w=[0.25]) at 0, -2, NaN, 1000, -1000: y 0, -0.5, NaN, 1000,
 * -250; slope w but 1 at 1000; w's gradient sum x (x <= 0 or NaN) = NaN,
 * and -1002 without the NaN. A 0-d and a 1-D input take one weight. */
Test(prelu, kink_nan_and_small_inputs) {
  static const double xs[5] = {0, -2, 1000, -1000, NAN};
  nn_layer *l = nn_activation_new(ctx, NN_ACT_PRELU);
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  cr_assert_eq(w->dtype, AD_F32);
  cr_assert_eq(ad_tensor_get(w, 0), 0.25);
  for (int n = 4; n <= 5; n++) {
    ad_tensor *x = vec(AD_F32, n, xs), *g[2];
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true), *in[2] = {x, w};
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, false), AD_OK);
    static const double wy[5] = {0, -0.5, 1000, -250, NAN}, wg[5] = {0.25, 0.25, 1, 0.25, 0.25};
    for (int i = 0; i < n; i++) {
      cr_assert(near(ad_tensor_get(y, i), wy[i], 0, 0));
      cr_assert(near(ad_tensor_get(g[0], i), wg[i], 0, 0));
    }
    cr_assert(near(ad_tensor_get(g[1], 0), n == 5 ? NAN : -1002, 0, 0));
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
  ad_tensor *s = ad_scalar(ctx, AD_F32, -4);
  ad_tensor *y = nn_layer_forward(l, s, false);
  cr_assert_eq(y->ndim, 0);
  cr_assert_eq(ad_tensor_item(y), -1);
  ad_tape_reset(ctx);
  ad_tensor_free(s);
  nn_layer_free(l);
}

/* F.prelu(x, w=[0.25]) at x = [NaN, -2, 3], gradients of sum(y), then of
 * s = sum(0.7 dx) + 1.9 dw: PyTorch's double backward masks its terms by
 * x > 0 and x <= 0, neither of which a NaN satisfies, so d2/dx dw is 0
 * there: ds/dx [0, 1.9, 0] and ds/dw 0.7 (x = -2 alone), while dx at the
 * NaN is w and dw NaN. The cross term at the NaN was 1 (ds/dx[0] 1.9,
 * ds/dw 1.4). */
Test(prelu, nan_input_second_derivative_as_torch) {
  static const double xs[3] = {NAN, -2, 3}, hx[3] = {0, 1.9, 0};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    nn_layer *l = nn_prelu_new(ctx, 1, 0.25, dt);
    ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
    ad_tensor *x = vec(dt, 3, xs), *g[2], *h[2];
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true), *in[2] = {x, w};
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, true), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(isnan(ad_tensor_get(y, 0)) && isnan(ad_tensor_get(g[1], 0)));
    cr_assert_eq(ad_tensor_get(g[0], 0), 0.25);
    ad_tensor *s = ad_add(ctx, ad_mul_scalar(ctx, ad_sum(ctx, g[0]), 0.7),
                          ad_mul_scalar(ctx, ad_sum(ctx, g[1]), 1.9));
    cr_assert_eq(ad_grad(ctx, s, NULL, 2, in, h, false), AD_OK, "%s", ad_last_error(ctx));
    double tol = d ? 1e-15 : 1e-6;
    for (int i = 0; i < 3; i++)
      cr_assert(near(ad_tensor_get(h[0], i), hx[i], tol, tol), "%s d2/dx[%d] dw %g",
                ad_dtype_name(dt), i, ad_tensor_get(h[0], i));
    cr_assert(near(ad_tensor_get(h[1], 0), 0.7, tol, tol), "%s d2/dw dx %g", ad_dtype_name(dt),
              ad_tensor_get(h[1], 0));
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

/* F.prelu(x, w=[0.25]) with infinite x, float32 and float64: an x of +inf
 * is on the identity side and adds nothing to w's gradient, -inf adds
 * -inf. x = [inf, -2, 3, -0.5]: y [inf, -0.5, 3, -0.125], x's gradient
 * [1, 0.25, 1, 0.25], w's -2.5 (it was NaN: 0 * inf from the branch the
 * where left out); x = [-inf, 1, inf]: w's gradient -inf. */
Test(prelu, infinite_inputs_weight_gradient) {
  static const double x1[4] = {INFINITY, -2, 3, -0.5}, y1[4] = {INFINITY, -0.5, 3, -0.125};
  static const double g1[4] = {1, 0.25, 1, 0.25}, x2[3] = {-INFINITY, 1, INFINITY};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    nn_layer *l = nn_prelu_new(ctx, 1, 0.25, dt);
    ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
    ad_tensor *x = vec(dt, 4, x1), *g[2];
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true), *in[2] = {x, w};
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, false), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 0; i < 4; i++) {
      cr_assert_eq(ad_tensor_get(y, i), y1[i], "%s y[%d] %g", ad_dtype_name(dt), i,
                   ad_tensor_get(y, i));
      cr_assert_eq(ad_tensor_get(g[0], i), g1[i], "%s dx[%d] %g", ad_dtype_name(dt), i,
                   ad_tensor_get(g[0], i));
    }
    cr_assert_eq(ad_tensor_get(g[1], 0), -2.5, "%s dw %g", ad_dtype_name(dt),
                 ad_tensor_get(g[1], 0));
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    x = vec(dt, 3, x2);
    y = nn_layer_forward(l, x, true);
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &w, g, false), AD_OK);
    cr_assert_eq(ad_tensor_get(g[0], 0), -INFINITY, "%s dw %g", ad_dtype_name(dt),
                 ad_tensor_get(g[0], 0));
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

/* F.prelu(x, w=[0.25, -0.1]) on x [3, 2] = [[NaN, -inf], [-2, inf], [3,
 * -0.5]], float32 and float64, gradients of sum(y) (recorded), then of s =
 * 0.7 sum(dx) + 1.9 dw[0] + 1.3 dw[1] (PyTorch 1.13's values): dw [NaN,
 * -inf], the NaN of channel 0 not reaching channel 1; d2/dx dw [[0, 1.3],
 * [1.9, 0], [0, 1.3]], 0 at the NaN; d2/dw dx [0.7, 1.4]. The layer's
 * special case at NaN multiplied the other elements' x by a zero dy
 * (0 * inf = NaN): dw[1] was NaN. */
Test(prelu, nan_in_one_channel_infinity_in_another) {
  static const double xs[6] = {NAN, -INFINITY, -2, INFINITY, 3, -0.5};
  static const double hx[6] = {0, 1.3, 1.9, 0, 0, 1.3}, gx[6] = {0.25, -0.1, 0.25, 1, 1, -0.1};
  int64_t shape[2] = {3, 2};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    nn_layer *l = nn_prelu_new(ctx, 2, 0.25, dt);
    ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
    ad_tensor_set(w, 1, -0.1);
    ad_tensor *flat = vec(dt, 6, xs), *wv = vec(dt, 2, (double[]){1.9, 1.3}), *g[2], *h[2];
    ad_tensor *x = ad_tensor_clone(ctx, ad_reshape(ctx, flat, 2, shape));
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true), *in[2] = {x, w};
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, true), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 0; i < 6; i++)
      cr_assert(near(ad_tensor_get(g[0], i), gx[i], 1e-7, 1e-7), "%s dx[%d] %g", ad_dtype_name(dt),
                i, ad_tensor_get(g[0], i));
    cr_assert(isnan(ad_tensor_get(g[1], 0)), "%s dw[0] %g", ad_dtype_name(dt),
              ad_tensor_get(g[1], 0));
    cr_assert_eq(ad_tensor_get(g[1], 1), -INFINITY, "%s dw[1] %g", ad_dtype_name(dt),
                 ad_tensor_get(g[1], 1));
    ad_tensor *s =
        ad_add(ctx, ad_mul_scalar(ctx, ad_sum(ctx, g[0]), 0.7), ad_sum(ctx, ad_mul(ctx, g[1], wv)));
    cr_assert_eq(ad_grad(ctx, s, NULL, 2, in, h, false), AD_OK, "%s", ad_last_error(ctx));
    double tol = d ? 1e-15 : 1e-6;
    for (int i = 0; i < 6; i++)
      cr_assert(near(ad_tensor_get(h[0], i), hx[i], tol, tol), "%s d2/dx[%d] dw %g",
                ad_dtype_name(dt), i, ad_tensor_get(h[0], i));
    cr_assert(
        near(ad_tensor_get(h[1], 0), 0.7, tol, tol) && near(ad_tensor_get(h[1], 1), 1.4, tol, tol),
        "%s d2/dw dx %g %g", ad_dtype_name(dt), ad_tensor_get(h[1], 0), ad_tensor_get(h[1], 1));
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    ad_tensor_free(flat);
    ad_tensor_free(wv);
    nn_layer_free(l);
  }
}

/* The layer's forward on in[0] (ad_gradcheck perturbs copies of its
 * inputs, so the weight, which the layer holds, is checked by hand). */
static ad_tensor *prelu_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c;
  (void)n;
  return nn_layer_forward(ud, in[0], true);
}

static double prelu_loss(nn_layer *l, ad_tensor *x) {
  double s = 0;
  ad_tensor *y = nn_layer_forward(l, x, true);
  for (int64_t i = 0; i < y->size; i++) s += ad_tensor_get(y, i) * (double)(i % 5 - 2);
  ad_tape_reset(ctx);
  return s;
}

Test(prelu, gradcheck_x_and_weight) {
  int64_t s[3] = {2, 3, 4};
  nn_layer *l = nn_prelu_new(ctx, 3, 0.25, AD_F64);
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  ad_tensor_set(w, 1, -0.3);
  ad_tensor *x = pattern(AD_F64, 3, s, 7, 11, 5.5, 4); /* no zeros: the kink */
  ad_tensor_set_requires_grad(x, true);
  ad_check_report rep;
  ad_check_opts o = {.atol = 1e-8, .rtol = 1e-7, .seed = 4};
  cr_assert_eq(ad_gradcheck(ctx, prelu_fn, l, 1, &x, &o, &rep), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(rep.passed && rep.checked == 24, "[%lld]: %g vs %g", (long long)rep.index, rep.analytic,
            rep.numeric);
  cr_assert_eq(ad_gradgradcheck(ctx, prelu_fn, l, 1, &x, &o, &rep), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(rep.passed, "second order [%lld]: %g vs %g", (long long)rep.index, rep.analytic,
            rep.numeric);
  /* the weight: central differences of sum(y * v), v[i] = i % 5 - 2 */
  ad_tensor *y = nn_layer_forward(l, x, true), *v = ad_zeros_like(ctx, y), *gw;
  for (int64_t i = 0; i < v->size; i++) ad_tensor_set(v, i, (double)(i % 5 - 2));
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, y, v)), NULL, 1, &w, &gw, false), AD_OK);
  double an[3];
  for (int c = 0; c < 3; c++) an[c] = ad_tensor_get(gw, c);
  ad_tape_reset(ctx);
  for (int c = 0; c < 3; c++) {
    double w0 = ad_tensor_get(w, c), h = 1e-6;
    ad_tensor_set(w, c, w0 + h);
    double up = prelu_loss(l, x);
    ad_tensor_set(w, c, w0 - h);
    double down = prelu_loss(l, x);
    ad_tensor_set(w, c, w0);
    cr_assert_float_eq(an[c], (up - down) / (2 * h), 1e-7, "dw[%d] %g", c, an[c]);
    cr_assert_neq(an[c], 0);
  }
  ad_tensor_free(v);
  nn_layer_free(l);
  ad_tensor_free(x);
}

Test(prelu, input_checks) {
  int64_t s1 = 3, s2[2] = {2, 4}, s3[3] = {2, 3, 5};
  nn_layer *l = nn_prelu_new(ctx, 3, 0.25, AD_F32);
  ad_tensor *x1 = ad_zeros(ctx, AD_F32, 1, &s1), *x2 = ad_zeros(ctx, AD_F32, 2, s2);
  ad_tensor *x3 = ad_zeros(ctx, AD_F64, 3, s3);
  cr_assert_null(nn_layer_forward(l, x1, true));
  expect_msg(AD_ERR_SHAPE, "prelu: input [3] has 1 channel (no dim 1), the layer has 3 weights");
  cr_assert_null(nn_layer_forward(l, x2, true));
  expect_msg(AD_ERR_SHAPE, "prelu: input [2,4] has 4 channels (dim 1), the layer has 3 weights");
  cr_assert_null(nn_layer_forward(l, x3, true));
  expect_msg(AD_ERR_DTYPE, "prelu: input [2,3,5] is f64, the weight is f32");
  cr_assert_null(nn_layer_forward(l, NULL, true));
  expect_msg(AD_ERR_NULL, "prelu");
  ad_tensor_free(x1);
  ad_tensor_free(x2);
  ad_tensor_free(x3);
  nn_layer_free(l);
}

/* In a model the weight is "<layer>.weight", as PyTorch's state dict names
 * it; a checkpoint stores and restores it under that name. */
Test(prelu, checkpoint_name) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx), *m2 = nn_sequential_new(ctx);
  for (int k = 0; k < 2; k++) {
    nn_model *mm = k ? m2 : m;
    cr_assert_eq(nn_model_add(mm, nn_dense_new(ctx, 2, 3, &rng, NULL)), AD_OK);
    cr_assert_eq(nn_model_add(mm, nn_prelu_new(ctx, 3, k ? 0.0 : 0.25, AD_F32)), AD_OK);
  }
  nn_params *p = nn_model_params(m);
  cr_assert_eq(nn_params_count(p), 3);
  cr_assert_str_eq(nn_params_name(p, 2), "1.weight");
  ad_tensor *w = nn_params_find(p, "1.weight");
  cr_assert_not_null(w);
  ad_tensor_set(w, 2, -0.75);
  char path[] = "/tmp/test_nn_acts-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info);
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, "1.weight");
  cr_assert_not_null(e);
  cr_assert_str_eq(e->dtype_name, "F32");
  cr_assert_eq(e->ndim, 1);
  cr_assert_eq(e->shape[0], 3);
  nn_checkpoint_info_free(info);
  cr_assert_eq(nn_model_load(m2, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *w2 = nn_params_find(nn_model_params(m2), "1.weight");
  cr_assert_eq(ad_tensor_get(w2, 0), 0.25);
  cr_assert_eq(ad_tensor_get(w2, 2), -0.75);
  unlink(path);
  nn_model_free(m);
  nn_model_free(m2);
}

/* ---------------------------------------------------------------- memory */

/* Forward, then first and second derivatives, with the allocator refusing
 * request k and every later one, for k = 0, 1, ... until a run sees no
 * refusal: each refused run fails with AD_ERR_OOM (never a crash), and
 * after freeing the context nothing is left. a is an nn_act; prelu runs as
 * a layer of 3 weights. (The tape's arena takes memory in large chunks, so
 * this refuses few requests; each composite passes a NULL on through its
 * ad_ ops, which return NULL for a NULL input.) */
static ad_status oom_run(ad_ctx *c, int a, ad_tensor *x, nn_layer *l) {
  ad_tensor *y = l ? nn_layer_forward(l, x, true) : nn_activate(c, x, (nn_act)a, 0.5), *g, *g2;
  if (!y) return ad_last_status(c);
  ad_status st = ad_grad(c, ad_sum(c, y), NULL, 1, &x, &g, true);
  if (st == AD_OK) st = ad_grad(c, ad_sum(c, g), NULL, 1, &x, &g2, false);
  return st;
}

Test(acts, out_of_memory) {
  static const double xv[6] = {-3, -1, 0, NAN, 3, 1000};
  for (int a = NN_ACT_SILU; a <= NN_ACT_PRELU; a++)
    for (long k = 0;; k++) {
      test_alloc ta = {0};
      ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
      int64_t s[2] = {2, 3};
      ad_tensor *x = ad_zeros(c, AD_F32, 2, s);
      for (int i = 0; i < 6; i++) ad_tensor_set(x, i, xv[i]);
      ad_tensor_set_requires_grad(x, true);
      nn_layer *l = a == NN_ACT_PRELU ? nn_prelu_new(c, 3, 0.25, AD_F32) : NULL;
      test_alloc_refuse_after(&ta, k);
      ad_status st = oom_run(c, a, x, l);
      test_alloc_grant_all(&ta);
      bool done = ta.refused == 0;
      cr_assert(done ? st == AD_OK : st == AD_ERR_OOM, "%s, k = %ld: %s", nn_act_name((nn_act)a), k,
                ad_last_error(c));
      ad_tape_reset(c);
      nn_layer_free(l);
      ad_tensor_free(x);
      ad_ctx_free(c);
      cr_assert_eq(ta.live, 0, "%s, k = %ld: %ld blocks leaked", nn_act_name((nn_act)a), k,
                   ta.live);
      if (done) {
        cr_assert_gt(k, 0, "%s: the sweep refused nothing", nn_act_name((nn_act)a));
        break;
      }
    }
}
