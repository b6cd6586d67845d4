#!/usr/bin/env python3
"""layerscan.py: bench/layerscan's layer and loss cases beside PyTorch's, to find cliffs.

Runs build/bench/layerscan (every nn layer kind and loss, forward and
backward from a seed of ones, on one float32 case each, float64 with
--dtype f64: see bench/layerscan.c) and the same layers in PyTorch
(torch.nn modules in training mode, torch.nn.functional losses with the
mean reduction), in turn, ROUNDS times, each run printing the least of REPS timings per case;
then prints, per case, the least of the rounds for each side and the ratio
ours / torch of the forward and of the backward, and marks "cliff" where a
ratio exceeds --cliff (default 2). --threads T on both sides (default 1),
with PyTorch at its best as in compare.py.

  bench/layerscan.py [--build DIR] [--rounds 3] [--reps 15] [--filter SUBSTR]
                     [--threads 1] [--dtype f32|f64] [--python EXE] [--cliff 2]

--dtype f64 runs both sides in float64 (every input, target and
parameter; torch.set_default_dtype on PyTorch's side).

The driver is bench/opscan.py's. Exit status 0 whatever the ratios: a
measurement, not a test.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opscan  # noqa: E402  (its driver)


def torch_cases(f64=False):
    """The cases of bench/layerscan.c, the same names, shapes, options and
    inputs' ranges (other random values)."""
    import warnings
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    warnings.filterwarnings("ignore")
    leaves = []

    def leaf(*shape, lo=None, hi=None):
        t = torch.randn(*shape) if lo is None else torch.rand(*shape) * (hi - lo) + lo
        leaves.append(t.requires_grad_())
        return t

    def mod(m):
        leaves.extend(m.parameters())
        return m.train()

    def signs(*shape, zero_one=False):
        k = torch.arange(torch.Size(shape).numel()).view(*shape)
        return torch.where(k * 7919 % 13 < 6, 0.0 if zero_one else -1.0, 1.0)

    a, b, c = leaf(256, 1024), leaf(256, 1024), leaf(256, 1024)
    p, prob = leaf(256, 1024, lo=0.5, hi=2), leaf(256, 1024, lo=0.01, hi=0.99)
    t01, tpm, tpm_rows = torch.rand(256, 1024), signs(256, 1024), signs(256)
    pw = torch.rand(1024) * 1.5 + 0.5
    cnt = (torch.arange(256 * 1024).view(256, 1024) * 7919 % 5).to(torch.get_default_dtype())
    img, simg = leaf(32, 64, 32, 32), leaf(8, 64, 32, 32)
    seq, vol = leaf(32, 64, 256), leaf(8, 16, 16, 16, 16)
    x1, x2 = leaf(256, 64), leaf(256, 64)
    logits, labels = leaf(256, 1000), torch.arange(256) * 13 % 1000
    cw, probs = torch.rand(1000) * 1.5 + 0.5, torch.rand(256, 1000) * 0.002
    seg, seg_labels = leaf(8, 21, 64, 64), (torch.arange(8 * 64 * 64) * 7919 % 21).view(8, 64, 64)
    causal = torch.triu(torch.ones(64, 64, dtype=torch.bool), 1)
    kpm = torch.arange(64)[None, :] >= 48 + torch.arange(16)[:, None]
    eidx = (torch.arange(2048) * 7919 % 1000).view(32, 64)
    bag, offsets = torch.arange(2048) * 7919 % 1000, torch.arange(128) * 16
    rx, att = leaf(32, 32, 128), leaf(16, 64, 256)
    ctc_lp = torch.log_softmax(torch.randn(50, 16, 20), 2).requires_grad_()
    leaves.append(ctc_lp)
    ctc_tg = (torch.arange(160) * 7 % 19 + 1).view(16, 10)
    ctc_in, ctc_tl = torch.full((16,), 50), torch.full((16,), 10)
    cols = F.unfold(simg.detach(), 3, padding=1).requires_grad_()
    leaves.append(cols)

    dense, bilinear = mod(nn.Linear(1024, 1024)), mod(nn.Bilinear(64, 64, 64))
    prelu, lrn = mod(nn.PReLU(1, 0.25)), mod(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    bn1d, bn2d = mod(nn.BatchNorm1d(1024)), mod(nn.BatchNorm2d(64))
    bn2d_eval = mod(nn.BatchNorm2d(64)).eval()
    gn, in2d, ln = mod(nn.GroupNorm(8, 64)), mod(nn.InstanceNorm2d(64)), mod(nn.LayerNorm(1024))
    conv1d, conv2d = mod(nn.Conv1d(64, 64, 3, padding=1)), mod(nn.Conv2d(64, 64, 3, padding=1))
    dwconv = mod(nn.Conv2d(64, 64, 3, padding=1, groups=64))
    dilconv = mod(nn.Conv2d(64, 64, 3, padding=2, dilation=2))
    convt2d, conv3d = mod(nn.ConvTranspose2d(64, 32, 2, stride=2)), mod(nn.Conv3d(16, 16, 3, padding=1))
    convt1d = mod(nn.ConvTranspose1d(64, 32, 2, stride=2))
    convt3d = mod(nn.ConvTranspose3d(16, 8, 2, stride=2))
    emb, bagl = mod(nn.Embedding(1000, 256)), mod(nn.EmbeddingBag(1000, 256, mode="mean"))
    rnn, lstm, gru = mod(nn.RNN(128, 256)), mod(nn.LSTM(128, 256)), mod(nn.GRU(128, 256))
    mha = mod(nn.MultiheadAttention(256, 8, batch_first=True))
    enc = mod(nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True))
    conv_refl = mod(nn.Conv2d(64, 64, 3, padding=1, padding_mode="reflect"))
    conv_s2 = mod(nn.Conv2d(64, 128, 3, stride=2, padding=1))
    conv_g4 = mod(nn.Conv2d(64, 64, 3, padding=1, groups=4))
    bilstm = mod(nn.LSTM(128, 256, num_layers=2, bidirectional=True))
    unpool_in = leaf(32, 64, 16, 16)
    pool_idx = F.max_pool2d(img.detach(), 2, return_indices=True)[1]
    convt_k3 = mod(nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1))
    lstm_bf = mod(nn.LSTM(128, 256, batch_first=True))
    dilconv1d = mod(nn.Conv1d(64, 64, 3, padding=2, dilation=2))
    dense3, ln2 = mod(nn.Linear(256, 256)), mod(nn.LayerNorm([64, 256]))
    cw21 = torch.rand(21) * 1.5 + 0.5
    dec = mod(nn.TransformerDecoderLayer(256, 8, 1024, dropout=0.0, batch_first=True))
    bn3d, in1d = mod(nn.BatchNorm3d(16)), mod(nn.InstanceNorm1d(64))
    enc_pre = mod(nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True,
                                             norm_first=True))
    sh16 = leaf(16384, 16)
    bag_sum = mod(nn.EmbeddingBag(1000, 256, mode="sum"))
    bag_max = mod(nn.EmbeddingBag(1000, 256, mode="max"))
    gru_bi = mod(nn.GRU(128, 256, bidirectional=True))
    rnn_relu = mod(nn.RNN(128, 256, nonlinearity="relu"))
    lstm_proj = mod(nn.LSTM(128, 256, proj_size=64))
    in3d, ln16 = mod(nn.InstanceNorm3d(16)), mod(nn.LayerNorm(16))
    conv1d_s2g4 = mod(nn.Conv1d(64, 64, 3, stride=2, padding=1, groups=4))
    conv_circ = mod(nn.Conv2d(64, 64, 3, padding=1, padding_mode="circular"))
    row1, rx1, rgb = leaf(1, 1024), leaf(32, 1, 128), leaf(32, 3, 64, 64)
    seq_lg, seq_lab = leaf(16, 64, 1000), torch.arange(1024) * 7919 % 1000
    dense1, conv1x1 = mod(nn.Linear(1024, 1)), mod(nn.Conv2d(64, 64, 1))
    stem = mod(nn.Conv2d(3, 64, 7, stride=2, padding=3))
    prelu64, gn32, bn1d3 = mod(nn.PReLU(64, 0.25)), mod(nn.GroupNorm(32, 64)), mod(nn.BatchNorm1d(64))
    img1, fmask = leaf(1, 64, 32, 32), -torch.rand(64, 64)
    z4, t4, pw4 = leaf(65536, 4), torch.rand(65536, 4), torch.rand(4) * 1.5 + 0.5
    sh64, sh256 = leaf(4096, 64), leaf(1024, 256)
    ln64, ln256 = mod(nn.LayerNorm(64)), mod(nn.LayerNorm(256))
    dense_nb, emb_pad = mod(nn.Linear(1024, 1024, bias=False)), mod(nn.Embedding(1000, 256, padding_idx=0))
    convt_g4 = mod(nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1, groups=4))
    gn1, in2d_aff = mod(nn.GroupNorm(1, 64)), mod(nn.InstanceNorm2d(64, affine=True))
    gru2 = mod(nn.GRU(128, 256, num_layers=2))

    cases = [
        ("dense", lambda: dense(a)), ("bilinear", lambda: bilinear(x1, x2)),
        ("silu", lambda: F.silu(a)), ("elu", lambda: F.elu(a)), ("selu", lambda: F.selu(a)),
        ("celu", lambda: F.celu(a)), ("mish", lambda: F.mish(a)),
        ("hardswish", lambda: F.hardswish(a)), ("hardsigmoid", lambda: F.hardsigmoid(a)),
        ("logsigmoid", lambda: F.logsigmoid(a)), ("softsign", lambda: F.softsign(a)),
        ("tanhshrink", lambda: F.tanhshrink(a)), ("relu6", lambda: F.relu6(a)),
        ("prelu", lambda: prelu(a)), ("rrelu", lambda: F.rrelu(a, 1 / 8, 1 / 3, training=True)),
        ("softshrink", lambda: F.softshrink(a, 0.5)), ("hardshrink", lambda: F.hardshrink(a, 0.5)),
        ("threshold", lambda: F.threshold(a, 0.1, 20)), ("softmin", lambda: F.softmin(a, 1)),
        ("softmax2d", lambda: F.softmax(img, -3)), ("glu", lambda: F.glu(a, 1)),
        ("dropout", lambda: F.dropout(a, 0.5, True)),
        ("dropout2d", lambda: F.dropout2d(img, 0.5, True)),
        ("batch_norm1d", lambda: bn1d(a)), ("batch_norm2d", lambda: bn2d(img)),
        ("batch_norm2d_eval", lambda: bn2d_eval(img)),
        ("group_norm", lambda: gn(img)), ("instance_norm2d", lambda: in2d(img)),
        ("layer_norm", lambda: ln(a)), ("local_response_norm", lambda: lrn(img)),
        ("conv1d", lambda: conv1d(seq)), ("conv2d", lambda: conv2d(img)),
        ("conv2d_depthwise", lambda: dwconv(img)), ("conv2d_dilated", lambda: dilconv(simg)),
        ("conv_transpose2d", lambda: convt2d(img)), ("conv3d", lambda: conv3d(vol)),
        ("conv_transpose1d", lambda: convt1d(seq)), ("conv_transpose3d", lambda: convt3d(vol)),
        ("max_pool2d", lambda: F.max_pool2d(img, 3, 2, 1)),
        ("avg_pool2d", lambda: F.avg_pool2d(img, 3, 1, 1)),
        ("max_pool1d", lambda: F.max_pool1d(seq, 2)), ("avg_pool1d", lambda: F.avg_pool1d(seq, 2)),
        ("max_pool3d", lambda: F.max_pool3d(vol, 2)), ("avg_pool3d", lambda: F.avg_pool3d(vol, 2)),
        ("adaptive_avg_pool2d", lambda: F.adaptive_avg_pool2d(img, 7)),
        ("adaptive_max_pool2d", lambda: F.adaptive_max_pool2d(img, 7)),
        ("adaptive_avg_pool3d", lambda: F.adaptive_avg_pool3d(vol, 5)),
        ("lp_pool2d", lambda: F.lp_pool2d(img, 2, 2)),
        ("global_avg_pool2d", lambda: F.adaptive_avg_pool2d(img, 1)),
        ("upsample_nearest", lambda: F.interpolate(simg, scale_factor=2, mode="nearest")),
        ("upsample_bilinear", lambda: F.interpolate(simg, scale_factor=2, mode="bilinear")),
        ("upsample_bicubic", lambda: F.interpolate(simg, scale_factor=2, mode="bicubic")),
        ("pixel_shuffle", lambda: F.pixel_shuffle(img, 2)),
        ("pixel_unshuffle", lambda: F.pixel_unshuffle(img, 2)),
        ("unfold", lambda: F.unfold(simg, 3, padding=1)),
        ("fold", lambda: F.fold(cols, (32, 32), 3, padding=1)),
        ("reflection_pad2d", lambda: F.pad(img, (2, 2, 2, 2), "reflect")),
        ("replication_pad2d", lambda: F.pad(img, (2, 2, 2, 2), "replicate")),
        ("constant_pad2d", lambda: F.pad(img, (2, 2, 2, 2), value=0.5)),
        ("reflection_pad1d", lambda: F.pad(seq, (3, 3), "reflect")),
        ("reflection_pad3d", lambda: F.pad(vol, (1,) * 6, "reflect")),
        ("cosine_similarity", lambda: F.cosine_similarity(a, b, 1, 1e-8)),
        ("pairwise_distance", lambda: F.pairwise_distance(a, b, 2, 1e-6)),
        ("embedding", lambda: emb(eidx)), ("embedding_bag", lambda: bagl(bag, offsets)),
        ("rnn_tanh", lambda: rnn(rx)[0]), ("lstm", lambda: lstm(rx)[0]), ("gru", lambda: gru(rx)[0]),
        ("multihead_attention", lambda: mha(att, att, att, need_weights=False)[0]),
        ("multihead_attention_causal",
         lambda: mha(att, att, att, need_weights=False, attn_mask=causal)[0]),
        ("multihead_attention_key_padding",
         lambda: mha(att, att, att, need_weights=False, key_padding_mask=kpm)[0]),
        ("transformer_encoder", lambda: enc(att)),
        ("conv2d_reflect", lambda: conv_refl(img)), ("conv2d_stride2", lambda: conv_s2(img)),
        ("conv2d_groups4", lambda: conv_g4(img)),
        ("avg_pool2d_exclude_pad_ceil",
         lambda: F.avg_pool2d(img, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
        ("lstm_2_layers_bidirectional", lambda: bilstm(rx)[0]),
        ("transformer_encoder_norm_first", lambda: enc_pre(att)),
        ("max_unpool2d", lambda: F.max_unpool2d(unpool_in, pool_idx, 2)),
        ("conv_transpose2d_k3s2p1op1", lambda: convt_k3(img)),
        ("lstm_batch_first", lambda: lstm_bf(rx)[0]), ("conv1d_dilated", lambda: dilconv1d(seq)),
        ("dense_3d", lambda: dense3(att)), ("layer_norm_two_dims", lambda: ln2(att)),
        ("transformer_decoder_causal", lambda: dec(att, att, tgt_mask=causal)),
        ("adaptive_max_pool3d", lambda: F.adaptive_max_pool3d(vol, 5)),
        ("batch_norm3d", lambda: bn3d(vol)), ("instance_norm1d", lambda: in1d(seq)),
        ("replication_pad3d", lambda: F.pad(vol, (1,) * 6, "replicate")),
        ("lp_pool1d", lambda: F.lp_pool1d(seq, 2, 2)),
        ("adaptive_max_pool1d", lambda: F.adaptive_max_pool1d(seq, 50)),
        ("hardtanh", lambda: F.hardtanh(a, -0.5, 0.5)), ("leaky_relu", lambda: F.leaky_relu(a, 0.01)),
        ("embedding_bag_sum", lambda: bag_sum(bag, offsets)),
        ("embedding_bag_max", lambda: bag_max(bag, offsets)),
        ("gru_bidirectional", lambda: gru_bi(rx)[0]), ("rnn_relu", lambda: rnn_relu(rx)[0]),
        ("lstm_proj_size", lambda: lstm_proj(rx)[0]), ("instance_norm3d", lambda: in3d(vol)),
        ("dropout1d", lambda: F.dropout1d(seq, 0.5, True)),
        ("dropout3d", lambda: F.dropout3d(vol, 0.5, True)), ("layer_norm_16", lambda: ln16(sh16)),
        ("conv1d_stride2_groups4", lambda: conv1d_s2g4(seq)),
        ("conv2d_circular", lambda: conv_circ(img)),
        ("adaptive_avg_pool1d", lambda: F.adaptive_avg_pool1d(seq, 50)),
        ("zero_pad2d", lambda: F.pad(img, (2, 2, 2, 2))),
        ("constant_pad3d", lambda: F.pad(vol, (1,) * 6, value=0.5)),
        ("replication_pad1d", lambda: F.pad(seq, (3, 3), "replicate")),
        ("mse_loss", lambda: F.mse_loss(a, b)), ("l1_loss", lambda: F.l1_loss(a, b)),
        ("smooth_l1_loss", lambda: F.smooth_l1_loss(a, b)), ("huber_loss", lambda: F.huber_loss(a, b)),
        ("kl_div_loss", lambda: F.kl_div(a, t01, reduction="mean")),
        ("gaussian_nll_loss", lambda: F.gaussian_nll_loss(a, b, p, eps=1e-6)),
        ("poisson_nll_loss", lambda: F.poisson_nll_loss(a, cnt, log_input=True)),
        ("margin_ranking_loss", lambda: F.margin_ranking_loss(a, b, tpm, 0.1)),
        ("hinge_embedding_loss", lambda: F.hinge_embedding_loss(a, tpm, 1.0)),
        ("soft_margin_loss", lambda: F.soft_margin_loss(a, tpm)),
        ("cosine_embedding_loss", lambda: F.cosine_embedding_loss(a, b, tpm_rows, 0.0)),
        ("triplet_margin_loss", lambda: F.triplet_margin_loss(a, b, c, 1.0, 2.0, 1e-6)),
        ("multilabel_soft_margin_loss", lambda: F.multilabel_soft_margin_loss(a, t01)),
        ("multi_margin_loss", lambda: F.multi_margin_loss(logits, labels, 1, 1.0)),
        ("ctc_loss", lambda: F.ctc_loss(ctc_lp, ctc_tg, ctc_in, ctc_tl, 0)),
        ("bce_loss", lambda: F.binary_cross_entropy(prob, t01)),
        ("bce_with_logits_loss", lambda: F.binary_cross_entropy_with_logits(a, t01)),
        ("bce_with_logits_pos_weight",
         lambda: F.binary_cross_entropy_with_logits(a, t01, pos_weight=pw)),
        ("cross_entropy_loss", lambda: F.cross_entropy(logits, labels)),
        ("nll_loss", lambda: F.nll_loss(logits, labels)),
        ("cross_entropy_label_smoothing", lambda: F.cross_entropy(logits, labels, label_smoothing=0.1)),
        ("cross_entropy_class_weight", lambda: F.cross_entropy(logits, labels, weight=cw)),
        ("cross_entropy_prob_targets", lambda: F.cross_entropy(logits, probs)),
        ("cross_entropy_spatial", lambda: F.cross_entropy(seg, seg_labels)),
        ("cross_entropy_spatial_weight_ignore",
         lambda: F.cross_entropy(seg, seg_labels, weight=cw21, ignore_index=0)),
        ("nll_loss_spatial", lambda: F.nll_loss(seg, seg_labels)),
        ("dense_batch1", lambda: dense(row1)), ("dense_1_output", lambda: dense1(a)),
        ("lstm_batch1", lambda: lstm(rx1)[0]), ("gru_batch1", lambda: gru(rx1)[0]),
        ("conv2d_1x1", lambda: conv1x1(img)), ("conv2d_7x7_stride2", lambda: stem(rgb)),
        ("max_pool2d_k3_s1", lambda: F.max_pool2d(img, 3, 1, 1)),
        ("upsample_trilinear", lambda: F.interpolate(vol, scale_factor=2, mode="trilinear")),
        ("upsample_linear", lambda: F.interpolate(seq, scale_factor=2, mode="linear")),
        ("upsample_bilinear_align_corners",
         lambda: F.interpolate(simg, scale_factor=2, mode="bilinear", align_corners=True)),
        ("prelu_channels", lambda: prelu64(img)), ("group_norm_32", lambda: gn32(img)),
        ("batch_norm1d_3d", lambda: bn1d3(seq)),
        ("sequence_cross_entropy",
         lambda: F.cross_entropy(seq_lg.view(-1, 1000), seq_lab, ignore_index=0)),
        ("conv2d_batch1", lambda: conv2d(img1)), ("dense_no_bias", lambda: dense_nb(a)),
        ("embedding_padding_idx", lambda: emb_pad(eidx)),
        ("multihead_attention_float_mask",
         lambda: mha(att, att, att, need_weights=False, attn_mask=fmask)[0]),
        ("conv_transpose2d_groups4", lambda: convt_g4(img)), ("group_norm_1", lambda: gn1(img)),
        ("instance_norm2d_affine", lambda: in2d_aff(img)), ("gru_2_layers", lambda: gru2(rx)[0]),
        ("bce_logits_pw4", lambda: F.binary_cross_entropy_with_logits(z4, t4, pos_weight=pw4)),
        ("layer_norm_64", lambda: ln64(sh64)), ("layer_norm_256", lambda: ln256(sh256)),
    ]
    return cases, leaves


if __name__ == "__main__":
    sys.exit(opscan.main("layerscan", __file__, __doc__, torch_cases, dtypes=("f32", "f64")))
