"""Random, realistically quantized int8 and 16x8 TFLite networks for end-to-end tests (no TensorFlow).

    model_bytes = random_network(seed=3, kind="mobilenet_v2")
    model_bytes = random_network(seed=3, kind="resnet", int16=True)

Kinds (``KINDS``):

- ``"mobilenet_v2"``: conv stem (stride 2, RELU6), inverted residual blocks (1x1 expand conv RELU6,
  3x3 depthwise stride 1/2 RELU6, sometimes dilated, 1x1 linear projection, residual ADD when the
  shapes allow), optional 1x1 head conv, MEAN over H,W or a whole-map AVERAGE_POOL_2D + RESHAPE,
  FULLY_CONNECTED, SOFTMAX.
- ``"mobilenet_v1"``: conv stem, depthwise + pointwise RELU6 pairs, AVERAGE_POOL_2D, then RESHAPE +
  FULLY_CONNECTED or a 1x1 conv classifier + RESHAPE, SOFTMAX.
- ``"kws"``: a DS-CNN keyword spotter on a 49x10x1 input (non-square conv stem, depthwise-separable
  RELU blocks, AVERAGE_POOL_2D, FULLY_CONNECTED on the 4-D pooled map, SOFTMAX).
- ``"mixed"``: a conv stem followed by a random subset of blocks in random order exercising
  MAX_POOL_2D, CONCATENATION (branches sharing quantization), MUL, SUB, ADD, MAXIMUM/MINIMUM, PAD,
  TRANSPOSE, STRIDED_SLICE, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, PRELU, QUANTIZE (int8->int8),
  MEAN keep_dims (squeeze-excite), AVERAGE_POOL_2D, then a classifier head (and sometimes a second
  output).

More kinds (``MORE_KINDS``, also in ``ALL_KINDS``; tests/test_random_networks_more.py):

- ``"transformer"``: FULLY_CONNECTED token embedding on [1, T, D], encoder layers with optional
  MEAN/SQUARED_DIFFERENCE/ADD eps/RSQRT/SUB/MUL normalisation, Q/K/V projections, BATCH_MATMUL for
  QK^T (adj_y, or an explicit TRANSPOSE), SOFTMAX (beta 1/sqrt(D)), BATCH_MATMUL with V, residual
  ADDs, GELU (exact or tanh-approximate) MLP, MEAN over tokens and a classifier.
- ``"unet"``: stride-2 conv encoder, decoder upsampling by TRANSPOSE_CONV (stride 2, k 2/3/4) or
  RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR (align_corners / half_pixel_centers), skip
  CONCATENATION of jointly quantized branches (a QUANTIZE requantizes a transpose conv's output).
- ``"lstm"``: an unrolled LSTM cell (FULLY_CONNECTED gates, SPLIT, LOGISTIC, TANH, MUL, ADD) over
  UNPACK-ed or STRIDED_SLICE-d time steps, hidden states joined by PACK or RESHAPE+CONCATENATION
  (h quantized 1/128, 0 at every step so they can be joined).
- ``"mobilenet_v3"``: HARD_SWISH / RELU inverted residuals, squeeze-excite gated by LOGISTIC or a
  hard sigmoid (ADD 3 with RELU6, MUL 1/6), MUL, residual ADD, HARD_SWISH head.
- ``"int16"``: 16x8 quantization (int16 activations with zero point 0, int8 per-channel weights,
  int64 biases): CONV_2D, DEPTHWISE_CONV_2D, ADD, MUL, LOGISTIC, TANH (outputs 1/32768, 0), pools,
  CONCATENATION, token attention (RESHAPE, FULLY_CONNECTED, BATCH_MATMUL adj_y, SOFTMAX 1/32768, 0),
  MEAN, FULLY_CONNECTED, SOFTMAX.
- ``"float_edges"``: float32 input, QUANTIZE, an int8 network, DEQUANTIZE to float32 output(s).
- ``"resnet"``: conv stem (sometimes 7x7/2 and a max pool), stages of basic (two 3x3 convs) or bottleneck
  (1x1, 3x3, expanding 1x1) blocks, stride-2 first blocks with 1x1 stride-2 projection shortcuts, residual
  ADD with a fused RELU, MEAN or AVERAGE_POOL_2D, FULLY_CONNECTED, sometimes SOFTMAX.

Every kind also has a 16x8 variant (``int16=True``): int16 activations with zero point 0, int8 weights,
int64 biases, the same architecture draws; the ops LiteRT has no int16 kernel for are spelled the way a
converter would (HARD_SWISH as ``x * relu6(x + 3) * (1/6)``, SQUARED_DIFFERENCE as SUB then MUL).

Published architectures at full size (``FULL_KINDS``, slow): ``"resnet18"`` (ResNet-18, 224x224) and
``"mobilenet_v2_224"`` (MobileNetV2 1.0, 224x224, in the ops Keras' model converts to), calibrated on a
smaller batch.

Quantization follows TFLite's post-training converter: the float network (dequantized weights) is
simulated with numpy on a calibration batch of random inputs drawn like the test inputs; every
activation gets an asymmetric int8 scale/zero point from its observed [min, max] (widened to hold 0),
and the simulation continues on the fake-quantized values. Weights are symmetric int8 per output
channel (zero point 0), biases int32 with scale in_scale * w_scale[c]. LiteRT's constraints are kept:
SOFTMAX and LOGISTIC outputs use scale 1/256 zero point -128, TANH 1/128 and 0, CONCATENATION,
MAXIMUM/MINIMUM, pools, PAD, RESHAPE, TRANSPOSE and STRIDED_SLICE keep their input's quantization.

``build_network`` returns a ``Network`` (builder, op list, tensor names) and ``single_op_model``
cuts one op out of a network as a one-op model, for minimal reproductions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tflite_builder import ModelBuilder, conv_output_size

__all__ = [
    "KINDS",
    "MORE_KINDS",
    "ALL_KINDS",
    "OPS_BY_KIND",
    "Network",
    "random_network",
    "build_network",
    "single_op_model",
]

KINDS = ("mobilenet_v2", "mobilenet_v1", "kws", "mixed")

# Ops each kind is meant to exercise (over a handful of seeds; a single seed may miss optional ones).
OPS_BY_KIND = {
    "mobilenet_v2": {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "AVERAGE_POOL_2D", "RESHAPE",
                     "FULLY_CONNECTED", "SOFTMAX"},
    "mobilenet_v1": {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE",
                     "FULLY_CONNECTED", "SOFTMAX"},
    "kws": {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"},
    "mixed": {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "CONCATENATION", "MUL", "SUB", "ADD",
              "MAXIMUM", "MINIMUM", "PAD", "TRANSPOSE", "STRIDED_SLICE", "LOGISTIC", "TANH",
              "HARD_SWISH", "LEAKY_RELU", "PRELU", "QUANTIZE", "MEAN", "AVERAGE_POOL_2D",
              "FULLY_CONNECTED", "SOFTMAX"},
}

_CALIB = 16        # calibration batch
_MARGIN = 0.08     # calibrated ranges are widened by this fraction of their span (unseen inputs)
_MAX_C = 48        # channel cap


# ------------------------------------------------------------------------------------ quantization
def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 parameters for the real range [lo, hi] as TFLite's converter picks them
    (range widened to hold 0, zero point nudged to an integer in [-128, 127])."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-2:          # a (near-)constant tensor: keep the scale sane
        hi = lo + 1e-2
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zp


def _calibrated(lo: float, hi: float) -> tuple[float, int]:
    """Quantization of an activation observed over [lo, hi] on the calibration batch: the range is
    widened a little (a larger representative data set would have seen more), except at 0, where
    ReLU-like activations stop."""
    span = hi - lo
    if lo < 0:
        lo -= _MARGIN * span
    if hi > 0:
        hi += _MARGIN * span
    return _qparams(lo, hi)


def _quant(v: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return np.clip(np.round(v / scale) + zp, -128, 127)


def _fake(v: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return (_quant(v, scale, zp) - zp) * scale


def _calibrated16(lo: float, hi: float) -> tuple[float, int]:
    """Symmetric int16 activation quantization (zero point 0), range widened like int8's."""
    amax = max(abs(float(lo)), abs(float(hi)), 1e-3) * (1 + _MARGIN)
    return float(np.float32(amax / 32767.0)), 0


def _fake16(v: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(v / scale), -32768, 32767) * scale


def _quant_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 along ``axis``: (int8 data, scales, dequantized float)."""
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=red)
    scale = np.maximum(amax, 1e-8) / 127.0
    scale = scale.astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.astype(np.float64).reshape(shape)
    q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
    return q, scale, q.astype(np.float64) * s


def _quant_per_tensor_sym(w: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    scale = float(np.float32(max(float(np.max(np.abs(w))), 1e-8) / 127.0))
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale, q.astype(np.float64) * scale


# ------------------------------------------------------------------------------- float reference ops
def _same_pads(in_size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int, int]:
    out = conv_output_size(in_size, k, s, d, padding)
    if padding == "SAME":
        eff = (k - 1) * d + 1
        total = max((out - 1) * s + eff - in_size, 0)
        return out, total // 2, total - total // 2
    return out, 0, 0


def _windows(x: np.ndarray, kh, kw, sh, sw, dh, dw, padding, pad_value=0.0):
    """Yield (ky, kx, slice of shape [B, OH, OW, C]) over the kernel taps (NHWC, TFLite padding)."""
    b, h, w, c = x.shape
    oh, pt, pb = _same_pads(h, kh, sh, dh, padding)
    ow, pl, pr = _same_pads(w, kw, sw, dw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            yield ky, kx, xp[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw, :]


def _conv_f(x, w, b, stride, padding, dilation):
    """x [B,H,W,C], w [OC,KH,KW,C] -> [B,OH,OW,OC]."""
    oc, kh, kw, _ = w.shape
    out = None
    for ky, kx, xs in _windows(x, kh, kw, stride[0], stride[1], dilation[0], dilation[1], padding):
        part = xs @ w[:, ky, kx, :].T
        out = part if out is None else out + part
    return out + (0 if b is None else b)


def _dwconv_f(x, w, b, stride, padding, dilation, mult):
    """w [1,KH,KW,C*M]."""
    _, kh, kw, _ = w.shape
    out = None
    for ky, kx, xs in _windows(x, kh, kw, stride[0], stride[1], dilation[0], dilation[1], padding):
        part = np.repeat(xs, mult, axis=-1) * w[0, ky, kx, :]
        out = part if out is None else out + part
    return out + (0 if b is None else b)


def _pool_f(x, kind, fh, fw, sh, sw, padding):
    if kind == "max":
        out = None
        for _, _, xs in _windows(x, fh, fw, sh, sw, 1, 1, padding, pad_value=-np.inf):
            out = xs if out is None else np.maximum(out, xs)
        return out
    total = count = None
    ones = np.ones(x.shape[:3] + (1,))
    for (_, _, xs), (_, _, os_) in zip(_windows(x, fh, fw, sh, sw, 1, 1, padding),
                                       _windows(ones, fh, fw, sh, sw, 1, 1, padding)):
        total = xs if total is None else total + xs
        count = os_ if count is None else count + os_
    return total / count


# ------------------------------------------------------------------------------------------ network
@dataclass
class Network:
    """A generated network: the builder it was made with and a summary."""

    kind: str
    seed: int
    builder: ModelBuilder
    model: bytes
    large: bool = False
    int16: bool = False

    @property
    def op_names(self) -> list[str]:
        return [op.opname for op in self.builder.ops]

    @property
    def op_counts(self) -> Counter:
        return Counter(self.op_names)

    def summary(self) -> str:
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
        variant = (" large" if self.large else "") + (" 16x8" if self.int16 else "")
        return f"{self.kind}{variant} seed {self.seed}: {len(self.builder.ops)} ops ({counts})"

    def producer(self, tensor_name: str) -> int | None:
        """Index of the op producing the tensor of that name."""
        for i, op in enumerate(self.builder.ops):
            if any(self.builder.tensors[o].name == tensor_name for o in op.outputs):
                return i
        return None

    def describe_op(self, op_index: int) -> str:
        op = self.builder.ops[op_index]
        b = self.builder

        def t(i):
            if i < 0:
                return "-"
            s = b.tensors[i]
            q = ""
            if s.scale is not None:
                q = (f" s={s.scale[0]:.6g} zp={int(s.zero_point[0])}" if s.scale.size == 1
                     else f" per-channel[{s.scale.size}] dim {s.quant_dim}")
            kind = "const " if s.is_const else ""
            extra = f"={s.data.reshape(-1).tolist()}" if s.is_const and s.dtype == np.int32 and s.data.size <= 8 else ""
            return f"{kind}{s.name}:{s.dtype.name}{s.shape}{q}{extra}"

        opts = {k: v for k, v in op.options.items()}
        return (f"#{op_index} {op.opname} v{op.version} {opts} inputs [{'; '.join(t(i) for i in op.inputs)}]"
                f" -> [{'; '.join(t(o) for o in op.outputs)}]")


class _Pending:
    """An op whose output quantization is still open (for groups sharing one scale)."""

    def __init__(self, vals: np.ndarray, shape: list[int], name: str, emit: Callable[[int], None]):
        self.vals, self.shape, self.name, self.emit = vals, shape, name, emit


class _Net:
    def __init__(self, rng: np.random.Generator, description: str, int16: bool = False, calib_n: int = _CALIB):
        self.rng = rng
        self.b = ModelBuilder(description=description)
        self.v: dict[int, np.ndarray] = {}     # tensor -> calibration values, shape (calib_n, *shape)
        self._names: Counter = Counter()
        self.dt = np.int16 if int16 else np.int8   # activation dtype (np.int16 for 16x8 networks)
        self.calib_n = calib_n

    @property
    def int16(self) -> bool:
        return self.dt == np.int16

    def qparams(self, lo, hi):
        """Parameters for the real range [lo, hi] without calibration margin: asymmetric int8, or
        symmetric int16 with zero point 0."""
        if self.dt == np.int8:
            return _qparams(lo, hi)
        return float(np.float32(max(abs(float(lo)), abs(float(hi)), 1e-3) / 32767.0)), 0

    def calib(self, lo, hi):
        return _calibrated(lo, hi) if self.dt == np.int8 else _calibrated16(lo, hi)

    def fake(self, v, scale, zp):
        return _fake(v, scale, zp) if self.dt == np.int8 else _fake16(v, scale)

    @property
    def bias_dt(self):
        return np.int32 if self.dt == np.int8 else np.int64

    # --------------------------------------------------------------------------------- bookkeeping
    def name(self, base: str) -> str:
        self._names[base] += 1
        n = self._names[base]
        return base if n == 1 else f"{base}_{n}"

    def shape(self, t: int) -> list[int]:
        return list(self.b.tensors[t].shape)

    def q(self, t: int) -> tuple[float, int]:
        s = self.b.tensors[t]
        return float(s.scale[0]), int(s.zero_point[0])

    def input(self, shape: Sequence[int], scale: float, zp: int, name: str = "input") -> int:
        """A model input; (scale, zp) are int8 parameters, which a 16x8 network turns into the int16
        parameters of the same real range."""
        if self.int16:
            scale, zp = self.qparams((-128 - zp) * scale, (127 - zp) * scale)
        t = self.b.tensor(list(shape), self.dt, scale=scale, zero_point=zp, name=self.name(name))
        info = np.iinfo(self.dt)
        ints = self.rng.integers(info.min, info.max + 1, size=(self.calib_n, *shape))
        self.v[t] = (ints - zp) * float(np.float32(scale))
        return t

    def _finish(self, vals, shape, name, emit, q):
        """Create the output tensor (quantization from ``q`` or calibrated) and emit the op."""
        if q == "defer":
            return _Pending(vals, list(shape), name, emit)
        if q is None:
            q = self.calib(float(vals.min()), float(vals.max()))
        scale, zp = q
        t = self.b.tensor(list(shape), self.dt, scale=scale, zero_point=zp, name=self.name(name))
        emit(t)
        self.v[t] = self.fake(vals, float(np.float32(scale)), zp)
        return t

    def commit(self, pendings: Sequence[_Pending], q: tuple[float, int] | None = None) -> list[int]:
        """Emit a group of pending ops sharing one quantization (their joint range unless given)."""
        if q is None:
            lo = min(float(p.vals.min()) for p in pendings)
            hi = max(float(p.vals.max()) for p in pendings)
            q = self.calib(lo, hi)
        return [self._finish(p.vals, p.shape, p.name, p.emit, q) for p in pendings]

    def _same_q(self, x: int, vals, shape, name, opname, extra_inputs=(), **options) -> int:
        """Data-movement op: output keeps the input's quantization."""
        scale, zp = self.q(x)
        t = self.b.tensor(list(shape), self.b.tensors[x].dtype, scale=scale, zero_point=zp,
                          name=self.name(name))
        self.b.op(opname, [x, *extra_inputs], [t], **options)
        self.v[t] = vals
        return t

    def i32(self, data, name) -> int:
        return self.b.const(np.asarray(data, dtype=np.int32), name=self.name(name))

    # ------------------------------------------------------------------------------- weight layers
    @staticmethod
    def _act(vals, act: str):
        if act == "RELU":
            return np.maximum(vals, 0)
        if act == "RELU6":
            return np.clip(vals, 0, 6)
        if act == "RELU_N1_TO_1":
            return np.clip(vals, -1, 1)
        return vals

    def _fold_bn(self, pre: np.ndarray, logit_std: float | None):
        """Per-output-channel (scale, bias) that batch-normalise the float pre-activations ``pre``
        (last axis = channels) over the calibration batch, then apply a random gamma/beta, as a
        trained network's folded batch norm would. Classifiers (``logit_std``) get one gamma."""
        oc = pre.shape[-1]
        flat = pre.reshape(-1, oc)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        rms = np.sqrt((flat ** 2).mean(axis=0))
        std = np.maximum(std, (0.25 if logit_std is None else 0.5) * rms)  # no blow-up
        std = np.where(std < 1e-6, 1.0, std)   # a channel that sees only padding
        if logit_std is None:
            gamma = np.exp(self.rng.normal(0.0, 0.35, size=oc))
            beta = self.rng.normal(0.2, 0.6, size=oc)
        else:
            gamma = np.full(oc, logit_std)
            beta = self.rng.normal(0.0, 0.4 * logit_std, size=oc)
        scale = gamma / std
        return scale, beta - mean * scale

    def _quant_bias(self, bf, s_in: float, ws: np.ndarray):
        b_scale = (np.float32(s_in) * ws).astype(np.float32)
        bq = np.clip(np.round(bf / b_scale.astype(np.float64)), -(2 ** 31) + 1, 2 ** 31 - 1)
        bq = bq.astype(self.bias_dt)
        return bq, bq * b_scale.astype(np.float64), b_scale

    @staticmethod
    def _triple(v):
        return (v, v) if np.isscalar(v) else tuple(v)

    def conv(self, x, oc, k=(3, 3), stride=(1, 1), padding="SAME", dilation=(1, 1), act="NONE",
             bias=True, q=None, logit_std=None, name="conv"):
        k, stride, dilation = self._triple(k), self._triple(stride), self._triple(dilation)
        _, h, w, c = self.shape(x)
        xv = self.v[x].reshape(-1, h, w, c)
        wf = self.rng.normal(0, np.sqrt(2.0 / (k[0] * k[1] * c)), size=(oc, k[0], k[1], c))
        scale, bf = self._fold_bn(_conv_f(xv, wf, None, stride, padding, dilation), logit_std)
        wf *= scale[:, None, None, None]
        wq, ws, wd = _quant_weights(wf, 0)
        s_in, _ = self.q(x)
        # int8 CONV_2D needs a bias (LiteRT checks has_bias); a conv without one gets zeros, as
        # the converter writes it.
        bq, bd, b_scale = self._quant_bias(bf if bias else np.zeros(oc), s_in, ws)
        out = self._act(_conv_f(xv, wd, bd, stride, padding, dilation), act)
        shape = [1, out.shape[1], out.shape[2], oc]
        nm = self.name(name)

        def emit(t):
            wt = self.b.tensor(wq.shape, np.int8, scale=ws, zero_point=0, data=wq, quant_dim=0,
                               name=f"{nm}/weights")
            bt = self.b.tensor([oc], self.bias_dt, scale=b_scale, zero_point=0, data=bq,
                               name=f"{nm}/bias")
            self.b.op("CONV_2D", [x, wt, bt], [t], padding=padding, stride_h=stride[0],
                      stride_w=stride[1], dilation_h_factor=dilation[0],
                      dilation_w_factor=dilation[1], fused_activation_function=act)

        return self._finish(out.reshape(self.calib_n, *shape), shape, f"{nm}/out", emit, q)

    def dwconv(self, x, mult=1, k=(3, 3), stride=(1, 1), padding="SAME", dilation=(1, 1),
               act="NONE", q=None, name="dwconv"):
        k, stride, dilation = self._triple(k), self._triple(stride), self._triple(dilation)
        _, h, w, c = self.shape(x)
        oc = c * mult
        xv = self.v[x].reshape(-1, h, w, c)
        wf = self.rng.normal(0, np.sqrt(2.0 / (k[0] * k[1])), size=(1, k[0], k[1], oc))
        scale, bf = self._fold_bn(_dwconv_f(xv, wf, None, stride, padding, dilation, mult), None)
        wf *= scale[None, None, None, :]
        wq, ws, wd = _quant_weights(wf, 3)
        s_in, _ = self.q(x)
        bq, bd, b_scale = self._quant_bias(bf, s_in, ws)
        out = self._act(_dwconv_f(xv, wd, bd, stride, padding, dilation, mult), act)
        shape = [1, out.shape[1], out.shape[2], oc]
        nm = self.name(name)

        def emit(t):
            wt = self.b.tensor(wq.shape, np.int8, scale=ws, zero_point=0, data=wq, quant_dim=3,
                               name=f"{nm}/weights")
            bt = self.b.tensor([oc], self.bias_dt, scale=b_scale, zero_point=0, data=bq,
                               name=f"{nm}/bias")
            self.b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [t], padding=padding, stride_h=stride[0],
                      stride_w=stride[1], dilation_h_factor=dilation[0],
                      dilation_w_factor=dilation[1], depth_multiplier=mult,
                      fused_activation_function=act)

        return self._finish(out.reshape(self.calib_n, *shape), shape, f"{nm}/out", emit, q)

    def fc(self, x, units, act="NONE", bias=True, per_channel=True, keep_num_dims=False, q=None,
           logit_std=None, uniform=False, name="fc"):
        """FULLY_CONNECTED on the last axis. ``logit_std``: the outputs' spread over the
        calibration batch (a classifier that is not absurdly confident on random inputs). ``uniform``:
        weights drawn uniformly (Keras' Glorot-uniform Dense) rather than normally; their quantized sum of
        magnitudes is about twice as large, which makes a deep 16x8 layer's accumulator able to leave int32."""
        xs = self.shape(x)
        depth = xs[-1]
        xv = self.v[x].reshape(self.calib_n, -1, depth)
        if uniform:
            limit = np.sqrt(6.0 / (depth + units))
            wf = self.rng.uniform(-limit, limit, size=(units, depth))
        else:
            wf = self.rng.normal(0, np.sqrt(2.0 / depth), size=(units, depth))
        scale, bf = self._fold_bn(xv @ wf.T, logit_std)
        wf *= scale[:, None]
        if per_channel:
            wq, ws, wd = _quant_weights(wf, 0)
        else:
            wq, s, wd = _quant_per_tensor_sym(wf)
            ws = np.array([s], dtype=np.float32)
        s_in, _ = self.q(x)
        bq = bd = b_scale = None
        if bias:
            bq, bd, b_scale = self._quant_bias(bf, s_in, ws if per_channel else np.full(units, ws[0]))
            if not per_channel:
                b_scale = b_scale[:1]
        out = self._act(xv @ wd.T + (0 if bd is None else bd), act)
        shape = xs[:-1] + [units] if keep_num_dims else [int(np.prod(xs)) // depth, units]
        nm = self.name(name)

        def emit(t):
            wt = self.b.tensor(wq.shape, np.int8, scale=ws, zero_point=0, data=wq, quant_dim=0,
                               name=f"{nm}/weights")
            bt = -1
            if bq is not None:
                bt = self.b.tensor([units], self.bias_dt, scale=b_scale, zero_point=0, data=bq,
                                   name=f"{nm}/bias")
            opts = {"fused_activation_function": act}
            if keep_num_dims:
                opts["keep_num_dims"] = True
            self.b.op("FULLY_CONNECTED", [x, wt, bt], [t], **opts)

        return self._finish(out.reshape(self.calib_n, *shape), shape, f"{nm}/out", emit, q)

    # ------------------------------------------------------------------------ quantization-keeping
    def pool(self, x, kind, f=(2, 2), stride=(2, 2), padding="VALID", act="NONE", name=None):
        f = (f, f) if np.isscalar(f) else tuple(f)
        stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
        _, h, w, c = self.shape(x)
        out = _pool_f(self.v[x].reshape(-1, h, w, c), kind, f[0], f[1], stride[0], stride[1], padding)
        out = self._act(out, act)
        oh = conv_output_size(h, f[0], stride[0], 1, padding)
        ow = conv_output_size(w, f[1], stride[1], 1, padding)
        shape = [1, oh, ow, c]
        s, zp = self.q(x)
        opname = "MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D"
        return self._same_q(x, self.fake(out.reshape(self.calib_n, *shape), s, zp), shape,
                            name or ("maxpool" if kind == "max" else "avgpool"), opname,
                            padding=padding, stride_h=stride[0], stride_w=stride[1],
                            filter_height=f[0], filter_width=f[1], fused_activation_function=act)

    def reshape(self, x, new_shape, with_option=False, name="reshape"):
        vals = self.v[x].reshape(self.calib_n, *new_shape)
        opts = {"new_shape": list(new_shape)} if with_option else {}
        return self._same_q(x, vals, new_shape, name, "RESHAPE",
                            [self.i32(new_shape, "reshape/shape")], **opts)

    def transpose(self, x, perm, name="transpose"):
        xs = self.shape(x)
        vals = np.transpose(self.v[x], [0] + [p + 1 for p in perm])
        return self._same_q(x, vals, [xs[p] for p in perm], name, "TRANSPOSE",
                            [self.i32(perm, "transpose/perm")])

    def pad(self, x, pads, name="pad"):
        vals = np.pad(self.v[x], [(0, 0)] + [tuple(p) for p in pads])  # pads with real 0
        shape = [d + a + b for d, (a, b) in zip(self.shape(x), pads)]
        return self._same_q(x, vals, shape, name, "PAD", [self.i32(pads, "pad/paddings")])

    def strided_slice(self, x, begin, end, strides, begin_mask=0, end_mask=0,
                      shrink_axis_mask=0, name="strided_slice"):
        xs = self.shape(x)
        slices, shape = [], []
        for d in range(len(xs)):
            n = xs[d]
            st = strides[d]
            b = None if begin_mask >> d & 1 else begin[d]
            e = None if end_mask >> d & 1 else end[d]
            if shrink_axis_mask >> d & 1:
                bb = b if b is not None else 0
                bb = bb + n if bb < 0 else bb
                slices.append(slice(bb, bb + 1))
                continue
            sl = slice(b, e, st)
            slices.append(sl)
            shape.append(len(range(*sl.indices(n))))
        vals = self.v[x][(slice(None), *slices)].reshape(self.calib_n, *shape)
        assert all(s > 0 for s in shape), shape
        return self._same_q(x, vals, shape, name, "STRIDED_SLICE",
                            [self.i32(begin, "ss/begin"), self.i32(end, "ss/end"),
                             self.i32(strides, "ss/strides")],
                            begin_mask=begin_mask, end_mask=end_mask,
                            shrink_axis_mask=shrink_axis_mask)

    def concat(self, xs: Sequence[int], axis: int, name="concat"):
        s, zp = self.q(xs[0])
        for t in xs[1:]:
            assert self.q(t) == (s, zp)
        ndim = len(self.shape(xs[0]))
        vals = np.concatenate([self.v[t] for t in xs], axis=(axis % ndim) + 1)
        shape = list(vals.shape[1:])
        t = self.b.tensor(shape, self.b.tensors[xs[0]].dtype, scale=s, zero_point=zp, name=self.name(name))
        self.b.op("CONCATENATION", list(xs), [t], axis=axis, fused_activation_function="NONE")
        self.v[t] = vals
        return t

    def maxmin(self, a, bt, opname, name=None):
        assert self.q(a) == self.q(bt)
        fn = np.maximum if opname == "MAXIMUM" else np.minimum
        vals = fn(self.v[a], self.v[bt])
        shape = list(vals.shape[1:])
        return self._same_q(a, vals, shape, name or opname.lower(), opname, [bt])

    # ------------------------------------------------------------------------- requantizing ops
    def const_act(self, values: np.ndarray, q=None, name="const"):
        """Constant int8 activation operand (e.g. of MUL/SUB/MINIMUM), quantized from its range."""
        s, zp = self.qparams(values.min(), values.max()) if q is None else q
        if self.dt == np.int16:
            data = np.clip(np.round(values / s), -32768, 32767).astype(np.int16)
        else:
            data = _quant(values, s, zp).astype(np.int8)
        t = self.b.tensor(list(values.shape), self.dt, scale=s, zero_point=zp, data=data,
                          name=self.name(name))
        self.v[t] = np.broadcast_to((data.astype(np.float64) - zp) * float(np.float32(s)),
                                    (self.calib_n, *values.shape))
        return t

    def binary(self, opname, a, bt, act="NONE", q=None, name=None):
        shape = list(np.broadcast_shapes(tuple(self.shape(a)), tuple(self.shape(bt))))
        fa, fb = (self.v[t].reshape(self.calib_n, *([1] * (len(shape) - len(self.shape(t)))), *self.shape(t))
                  for t in (a, bt))
        f = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply,
             "SQUARED_DIFFERENCE": lambda u, w: (u - w) ** 2}[opname]
        vals = self._act(f(fa, fb), act)
        vals = np.broadcast_to(vals, (self.calib_n, *shape))

        def emit(t):
            if opname == "SQUARED_DIFFERENCE":
                self.b.op(opname, [a, bt], [t])
            else:
                self.b.op(opname, [a, bt], [t], fused_activation_function=act)

        return self._finish(vals, shape, name or opname.lower(), emit, q)

    def unary(self, opname, x, q=None, name=None, **options):
        v = self.v[x]
        i16 = self.dt == np.int16
        if opname == "LOGISTIC":
            vals, q = 1 / (1 + np.exp(-v)), ((1 / 32768, 0) if i16 else (1 / 256, -128))
        elif opname == "TANH":
            vals, q = np.tanh(v), ((1 / 32768, 0) if i16 else (1 / 128, 0))
        elif opname == "SOFTMAX":
            beta = options.get("beta", 1.0)
            e = np.exp(beta * (v - v.max(axis=-1, keepdims=True)))
            vals, q = e / e.sum(axis=-1, keepdims=True), ((1 / 32768, 0) if i16 else (1 / 256, -128))
        elif opname == "GELU":
            from math import erf
            if options.get("approximate"):
                vals = 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))
            else:
                vals = 0.5 * v * (1 + np.vectorize(erf)(v / np.sqrt(2)))
        elif opname == "RSQRT":
            vals = 1 / np.sqrt(np.maximum(v, 1e-6))
        elif opname == "HARD_SWISH":
            vals = v * np.clip(v + 3, 0, 6) / 6
        elif opname == "LEAKY_RELU":
            vals = np.where(v >= 0, v, v * options["alpha"])
        elif opname == "QUANTIZE":
            vals = v
        elif opname in ("RELU", "RELU6"):
            vals = self._act(v, opname)
        else:
            raise ValueError(opname)
        shape = self.shape(x)

        def emit(t):
            self.b.op(opname, [x], [t], **options)

        return self._finish(vals, shape, name or opname.lower(), emit, q)

    def hard_swish(self, x, name="hard_swish"):
        """HARD_SWISH; in a 16x8 network, which LiteRT's HARD_SWISH refuses, the spelling
        x * relu6(x + 3) * (1/6) in ADD and MUL ops."""
        if not self.int16:
            return self.unary("HARD_SWISH", x, name=name)
        three = self.const_act(np.full((1,) * len(self.shape(x)), 3.0), name=f"{name}/three")
        gate = self.binary("ADD", x, three, act="RELU6", name=f"{name}/plus3")
        sixth = self.const_act(np.full((1,) * len(self.shape(x)), 1 / 6), name=f"{name}/sixth")
        return self.binary("MUL", self.binary("MUL", x, gate, name=f"{name}/times"), sixth, name=name)

    def squared_difference(self, a, bt, name="sqdiff"):
        """SQUARED_DIFFERENCE; in a 16x8 network, which LiteRT's refuses, SUB then MUL."""
        if not self.int16:
            return self.binary("SQUARED_DIFFERENCE", a, bt, name=name)
        d = self.binary("SUB", a, bt, name=f"{name}/sub")
        return self.binary("MUL", d, d, name=name)

    def prelu(self, x, name="prelu"):
        c = self.shape(x)[-1]
        alpha = self.rng.uniform(-0.3, 0.6, size=(1, 1, c))
        s, zp = _qparams(alpha.min(), alpha.max())
        aq = _quant(alpha, s, zp).astype(np.int8)
        ad = (aq.astype(np.float64) - zp) * float(np.float32(s))
        v = self.v[x]
        vals = np.where(v >= 0, v, v * ad)
        nm = self.name(name)

        def emit(t):
            at = self.b.tensor([1, 1, c], np.int8, scale=s, zero_point=zp, data=aq, name=f"{nm}/alpha")
            self.b.op("PRELU", [x, at], [t])

        return self._finish(vals, self.shape(x), f"{nm}/out", emit, None)

    def mean(self, x, axes, keep_dims, q=None, name="mean"):
        xs = self.shape(x)
        vals = self.v[x].mean(axis=tuple(a + 1 for a in axes), keepdims=True)
        shape = [1 if d in axes else n for d, n in enumerate(xs)] if keep_dims else \
            [n for d, n in enumerate(xs) if d not in axes]
        vals = vals.reshape(self.calib_n, *shape)
        nm = self.name(name)

        def emit(t):
            self.b.op("MEAN", [x, self.i32(axes, f"{nm}/axes")], [t], keep_dims=keep_dims)

        return self._finish(vals, shape, f"{nm}/out", emit, q)

    def requantize(self, x, name="requantize"):
        """QUANTIZE int8 -> int8 to a different scale/zero point (as converters insert)."""
        v = self.v[x]
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo
        lo2 = lo - self.rng.uniform(0, 0.5) * span
        hi2 = hi + self.rng.uniform(-0.1, 0.5) * span
        return self.unary("QUANTIZE", x, q=self.qparams(lo2, hi2), name=name)


# ----------------------------------------------------------------------------------------- helpers
def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def _ch(rng, lo, hi):
    return int(rng.integers(max(1, lo), min(_MAX_C, hi) + 1))


def _input_q(rng) -> tuple[float, int]:
    if rng.random() < 0.5:
        return float(np.float32(1 / 127.5)), int(rng.choice([0, -1]))  # images in [-1, 1]
    return float(np.float32(rng.uniform(0.005, 0.08))), int(rng.integers(-40, 41))


def _spatial(rng, lo=8, hi=40):
    h = int(rng.integers(lo, hi + 1))
    w = h if rng.random() < 0.5 else int(rng.integers(lo, hi + 1))
    return h, w


def _head(net: _Net, rng, x, classes, large):
    """Classifier: features [1, C] or [1,1,1,C] -> FULLY_CONNECTED -> SOFTMAX."""
    logits = net.fc(x, classes, per_channel=rng.random() < 0.7, bias=rng.random() < 0.85,
                    logit_std=float(rng.uniform(0.3, 1.0)), name="logits")
    beta = 1.0 if rng.random() < 0.8 else float(np.float32(rng.uniform(0.5, 2.0)))
    return net.unary("SOFTMAX", logits, beta=beta, name="softmax")


# ------------------------------------------------------------------------------------- generators
def _mobilenet_v2(net: _Net, rng, large: bool) -> list[int]:
    h, w = _spatial(rng, 12 if large else 8, 40)
    cin = int(_choice(rng, [1, 3, 3, 4]))
    x = net.input([1, h, w, cin], *_input_q(rng))
    c = _ch(rng, 4, 16)
    x = net.conv(x, c, k=3, stride=2, padding="SAME", act="RELU6", name="stem")
    nblocks = int(rng.integers(5, 11)) if large else int(rng.integers(2, 5))
    for i in range(nblocks):
        _, hh, ww, cin_b = net.shape(x)
        t = 1 if i == 0 else int(_choice(rng, [2, 3, 4, 6]))
        if rng.random() < 0.45 and i > 0:
            cout, stride = cin_b, 1           # repeated block: residual
        else:
            cout = _ch(rng, 4, 48)
            stride = 2 if min(hh, ww) >= 6 and rng.random() < 0.5 else 1
        dil = 2 if stride == 1 and min(hh, ww) >= 6 and rng.random() < 0.2 else 1
        inp = x
        y = x
        if t != 1:
            y = net.conv(y, min(_MAX_C, cin_b * t), k=1, act="RELU6", name=f"block{i}/expand")
        pad = "SAME" if rng.random() < 0.85 or min(hh, ww) < 5 else "VALID"
        y = net.dwconv(y, k=3, stride=stride, padding=pad, dilation=dil, act="RELU6",
                       name=f"block{i}/depthwise")
        y = net.conv(y, cout, k=1, act="NONE", name=f"block{i}/project")
        if net.shape(y) == net.shape(inp):
            y = net.binary("ADD", inp, y, name=f"block{i}/add")
        x = y
    if rng.random() < 0.6:
        x = net.conv(x, _ch(rng, 16, 48), k=1, act="RELU6", name="head_conv")
    _, hh, ww, c = net.shape(x)
    if rng.random() < 0.5:
        feat = net.mean(x, [1, 2], keep_dims=False, name="global_mean")
    else:
        feat = net.pool(x, "avg", f=(hh, ww), stride=(1, 1), padding="VALID", name="global_pool")
        feat = net.reshape(feat, [1, c], with_option=rng.random() < 0.5)
    return [_head(net, rng, feat, int(rng.integers(3, 21)), large)]


def _mobilenet_v1(net: _Net, rng, large: bool) -> list[int]:
    h, w = _spatial(rng, 12 if large else 8, 40)
    x = net.input([1, h, w, int(_choice(rng, [1, 3]))], *_input_q(rng))
    x = net.conv(x, _ch(rng, 4, 16), k=3, stride=2, act="RELU6", name="stem")
    n = int(rng.integers(4, 10)) if large else int(rng.integers(2, 5))
    for i in range(n):
        _, hh, ww, c = net.shape(x)
        stride = 2 if min(hh, ww) >= 4 and rng.random() < 0.4 else 1
        mult = 2 if c * 2 <= _MAX_C and rng.random() < 0.15 else 1
        x = net.dwconv(x, mult=mult, k=3, stride=stride, act="RELU6", name=f"block{i}/depthwise")
        cout = min(_MAX_C, max(c, int(c * float(_choice(rng, [1, 1.5, 2])))))
        x = net.conv(x, cout, k=1, act="RELU6", name=f"block{i}/pointwise")
    _, hh, ww, c = net.shape(x)
    x = net.pool(x, "avg", f=(hh, ww), stride=(2, 2), padding="VALID", name="global_pool")
    classes = int(rng.integers(3, 33))
    if rng.random() < 0.5:
        x = net.reshape(x, [1, c])
        return [_head(net, rng, x, classes, large)]
    x = net.conv(x, classes, k=1, act="NONE", logit_std=float(rng.uniform(0.3, 1.0)),
                 name="classifier")
    x = net.reshape(x, [1, classes], with_option=rng.random() < 0.5)
    return [net.unary("SOFTMAX", x, name="softmax")]


def _kws(net: _Net, rng, large: bool) -> list[int]:
    x = net.input([1, 49, 10, 1], float(np.float32(rng.uniform(0.02, 0.5))), int(rng.integers(-20, 21)))
    c = _ch(rng, 8, 48)
    kh, kw = (10, 4) if rng.random() < 0.7 else (int(rng.integers(3, 11)), int(rng.integers(2, 5)))
    stride = (2, 2) if rng.random() < 0.7 else (2, 1)
    x = net.conv(x, c, k=(kh, kw), stride=stride, padding="SAME", act="RELU", name="conv1")
    n = int(rng.integers(3, 7)) if large else int(rng.integers(1, 4))
    for i in range(n):
        x = net.dwconv(x, k=3, act="RELU", name=f"ds{i}/depthwise")
        x = net.conv(x, c, k=1, act="RELU", name=f"ds{i}/pointwise")
    _, hh, ww, _ = net.shape(x)
    if rng.random() < 0.7:
        x = net.pool(x, "avg", f=(hh, ww), stride=(1, 1), padding="VALID", name="avgpool")
    else:
        x = net.mean(x, [1, 2], keep_dims=True, name="global_mean")
    logits = net.fc(x, int(_choice(rng, [12, 12, 10, 35])), bias=rng.random() < 0.6,
                    logit_std=float(rng.uniform(0.3, 1.0)), name="fc")
    return [net.unary("SOFTMAX", logits, name="softmax")]


def _mixed(net: _Net, rng, large: bool) -> list[int]:
    h, w = _spatial(rng, 10, 40 if large else 28)
    x = net.input([1, h, w, int(_choice(rng, [1, 2, 3, 4]))], *_input_q(rng))
    x = net.conv(x, _ch(rng, 6, 24), k=3, stride=int(_choice(rng, [1, 2])), act="RELU",
                 name="stem")
    outputs: list[int] = []

    def hw(t):
        return net.shape(t)[1:3]

    def b_maxpool(x):
        if min(hw(x)) < 4:
            return x
        f = int(_choice(rng, [2, 3]))
        return net.pool(x, "max", f=f, stride=int(_choice(rng, [1, 2])),
                        padding=_choice(rng, ["SAME", "VALID"]))

    def b_avgpool(x):
        if min(hw(x)) < 4:
            return x
        return net.pool(x, "avg", f=int(_choice(rng, [2, 3])), stride=int(_choice(rng, [1, 2])),
                        padding=_choice(rng, ["SAME", "VALID"]))

    def b_concat(x):
        n1, n2 = _ch(rng, 2, 16), _ch(rng, 2, 16)
        p1 = net.conv(x, n1, k=1, act="RELU", q="defer", name="inception/1x1")
        p2 = net.conv(x, n2, k=3, act="RELU", q="defer", name="inception/3x3")
        branches = [p1, p2]
        if rng.random() < 0.5:
            branches.append(net.dwconv(x, k=3, act="RELU6", q="defer", name="inception/dw"))
        ts = net.commit(branches)
        if rng.random() < 0.4:
            # a pooled branch keeps its own quantization: requantize it into the shared one
            mp = net.pool(x, "max", f=3, stride=1, padding="SAME")
            ts.append(net.unary("QUANTIZE", mp, q=net.q(ts[0]), name="inception/pool_requant"))
        order = list(rng.permutation(len(ts)))
        y = net.concat([ts[i] for i in order], axis=int(_choice(rng, [3, 3, -1])))
        if net.shape(y)[-1] > _MAX_C:
            y = net.conv(y, _ch(rng, 8, 32), k=1, act="RELU", name="inception/reduce")
        return y

    def b_se(x):
        # squeeze-excite: MEAN keep_dims -> 1x1 RELU -> 1x1 -> LOGISTIC -> MUL
        c = net.shape(x)[-1]
        s = net.mean(x, [1, 2], keep_dims=True, name="se/squeeze")
        s = net.conv(s, max(1, c // 4), k=1, act="RELU", name="se/reduce")
        s = net.conv(s, c, k=1, name="se/expand")
        s = net.unary("LOGISTIC", s, name="se/gate")
        return net.binary("MUL", x, s, name="se/scale")

    def b_swish(x):
        g = net.unary("LOGISTIC", x, name="silu/sigmoid")
        return net.binary("MUL", x, g, name="silu/mul")

    def b_hardswish(x):
        y = net.conv(x, _ch(rng, 4, 32), k=1, name="hs/conv")
        return net.hard_swish(y, name="hard_swish")

    def b_tanh(x):
        y = net.conv(x, _ch(rng, 4, 32), k=3, name="tanh/conv")
        y = net.unary("TANH", y, name="tanh")
        return net.conv(y, _ch(rng, 4, 32), k=1, act="RELU", name="tanh/after")

    def b_leaky(x):
        y = net.conv(x, _ch(rng, 4, 32), k=3, name="leaky/conv")
        return net.unary("LEAKY_RELU", y, alpha=float(np.float32(rng.uniform(0.01, 0.35))),
                         name="leaky_relu")

    def b_prelu(x):
        y = net.conv(x, _ch(rng, 4, 32), k=3, name="prelu/conv")
        return net.prelu(y)

    def b_sub(x):
        c = net.shape(x)[-1]
        if rng.random() < 0.5 or min(hw(x)) < 3:
            mean = net.rng.normal(0, 0.5, size=(1, 1, 1, c)) + float(net.v[x].mean())
            return net.binary("SUB", x, net.const_act(mean, name="sub/mean"), name="sub")
        a = net.conv(x, c, k=1, name="sub/a")            # local contrast: a - avgpool(a)
        return net.binary("SUB", a, net.pool(a, "avg", f=3, stride=1, padding="SAME"),
                          act=_choice(rng, ["NONE", "NONE", "RELU"]), name="sub")

    def b_mul(x):
        c = net.shape(x)[-1]
        if rng.random() < 0.5:
            scale = net.rng.uniform(0.2, 2.0, size=(c,))
            return net.binary("MUL", x, net.const_act(scale, name="mul/gamma"), name="mul")
        a = net.conv(x, c, k=1, act="RELU6", name="mul/a")
        return net.binary("MUL", a, x, name="mul")

    def b_add(x):
        c = net.shape(x)[-1]
        y = net.conv(x, c, k=3, act="RELU", name="res/conv")
        return net.binary("ADD", x, y, act=_choice(rng, ["NONE", "RELU", "RELU6"]), name="res/add")

    def b_maxmin(x):
        c = net.shape(x)[-1]
        op = _choice(rng, ["MAXIMUM", "MINIMUM"])
        if rng.random() < 0.5:
            a, b = net.commit([net.conv(x, c, k=1, q="defer", name=f"{op.lower()}/a"),
                               net.dwconv(x, k=3, q="defer", name=f"{op.lower()}/b")])
            y = net.maxmin(a, b, op)
        else:
            v = net.v[x]
            thr = np.full((1, 1, 1, 1) if rng.random() < 0.5 else (1, 1, 1, c),
                          float(np.quantile(v, 0.9 if op == "MINIMUM" else 0.1)))
            thr += rng.normal(0, float(v.std()) * 0.1, size=thr.shape)
            other = net.const_act(thr, q=net.q(x), name=f"{op.lower()}/bound")
            y = net.maxmin(x, other, op) if rng.random() < 0.5 else net.maxmin(other, x, op)
        return y

    def b_pad(x):
        pads = [[0, 0], [int(rng.integers(0, 3)), int(rng.integers(0, 3))],
                [int(rng.integers(0, 3)), int(rng.integers(0, 3))], [0, 0]]
        if rng.random() < 0.25:
            pads[3] = [int(rng.integers(0, 3)), int(rng.integers(0, 3))]
        y = net.pad(x, pads)
        return net.conv(y, _ch(rng, 4, 32), k=3 if min(hw(y)) >= 3 else 1, padding="VALID",
                        act="RELU", stride=int(_choice(rng, [1, 2])) if min(hw(y)) >= 6 else 1,
                        name="pad/conv")

    def b_transpose(x):
        perm = [0] + [int(p) + 1 for p in rng.permutation(3)]
        if perm == [0, 1, 2, 3]:
            perm = [0, 2, 1, 3]
        y = net.transpose(x, perm)
        if max(net.shape(y)) > _MAX_C or rng.random() < 0.5:
            y = net.transpose(y, list(np.argsort(perm)))
        else:
            y = net.conv(y, _ch(rng, 4, 32), k=1, act="RELU", name="transposed/conv")
        return y

    def b_slice(x):
        _, hh, ww, c = net.shape(x)
        begin, end, strides = [0, 0, 0, 0], [1, hh, ww, c], [1, 1, 1, 1]
        bm = em = 0
        for d, n in ((1, hh), (2, ww)):
            if n < 3:
                continue
            b = int(rng.integers(0, n // 3 + 1))
            e = int(rng.integers(b + max(1, n // 2), n + 1))
            if e < n and rng.random() < 0.4:
                e -= n                         # negative end index, same position
            begin[d], end[d] = b, e
            strides[d] = int(_choice(rng, [1, 1, 2]))
        if c >= 4 and rng.random() < 0.3:
            begin[3], end[3] = int(rng.integers(0, c // 2)), c
        if rng.random() < 0.4:
            bm |= 1
        if rng.random() < 0.3:
            em |= 1 << 3
        return net.strided_slice(x, begin, end, strides, begin_mask=bm, end_mask=em)

    def b_requant(x):
        return net.requantize(x)

    def b_tokens(x):
        # transformer-style token MLP: [1,H,W,C] -> [1,HW,C] -> FC per token -> back
        _, hh, ww, c = net.shape(x)
        t = net.reshape(x, [1, hh * ww, c], name="tokens")
        t = net.fc(t, _ch(rng, 4, 32), keep_num_dims=True, act=_choice(rng, ["RELU", "NONE"]),
                   per_channel=rng.random() < 0.7, name="token_mlp")
        if rng.random() < 0.6 and hh * ww <= 196:
            # MLP-Mixer token mixing: FC across the tokens of each channel
            t = net.transpose(t, [0, 2, 1], name="tokens_t")      # [1, D, HW]
            t = net.fc(t, hh * ww, keep_num_dims=True, name="token_mixing")
            t = net.transpose(t, [0, 2, 1], name="tokens_tt")
        return net.reshape(t, [1, hh, ww, net.shape(t)[-1]], name="untokens")

    def b_spatial_concat(x):
        # two branches stacked along H or W (as in feature-pyramid style merges)
        c = net.shape(x)[-1]
        axis = int(_choice(rng, [1, 2]))
        a, b = net.commit([net.conv(x, c, k=1, act="RELU6", q="defer", name="stack/a"),
                           net.conv(x, c, k=3, act="RELU6", q="defer", name="stack/b")])
        y = net.concat([a, b], axis=axis, name="stack")
        return net.pool(y, "max", f=(2, 1) if axis == 1 else (1, 2), stride=(2, 1) if axis == 1 else (1, 2),
                        padding="VALID", name="stack_pool")

    def b_bias_add(x):
        c = net.shape(x)[-1]
        shift = net.rng.normal(0, float(net.v[x].std()) + 1e-3, size=(c,))
        return net.binary("ADD", x, net.const_act(shift, name="add/shift"),
                          act=_choice(rng, ["NONE", "RELU"]), name="add_const")

    def b_dw(x):
        stride = 2 if min(hw(x)) >= 6 and rng.random() < 0.5 else 1
        dil = 2 if stride == 1 and min(hw(x)) >= 6 and rng.random() < 0.5 else 1
        mult = int(_choice(rng, [1, 1, 2])) if net.shape(x)[-1] * 2 <= _MAX_C else 1
        k = int(_choice(rng, [3, 5]))
        valid_ok = min(hw(x)) >= (k - 1) * dil + 2
        return net.dwconv(x, mult=mult, k=k, stride=stride, dilation=dil,
                          padding=_choice(rng, ["SAME", "SAME", "VALID"]) if valid_ok else "SAME",
                          act=_choice(rng, ["RELU6", "NONE"]), name="dw")

    def b_conv(x):
        stride = 2 if min(hw(x)) >= 6 and rng.random() < 0.5 else 1
        dil = 2 if stride == 1 and min(hw(x)) >= 7 and rng.random() < 0.4 else 1
        k = int(_choice(rng, [1, 3, 3, 5]))
        valid_ok = min(hw(x)) >= (k - 1) * dil + 2
        return net.conv(x, _ch(rng, 4, 48), k=k, stride=stride,
                        dilation=dil, act=_choice(rng, ["RELU", "RELU6", "NONE", "RELU_N1_TO_1"]),
                        padding=_choice(rng, ["SAME", "VALID"]) if valid_ok else "SAME",
                        bias=rng.random() < 0.85, name="conv")

    blocks = {
        "maxpool": b_maxpool, "avgpool": b_avgpool, "concat": b_concat, "se": b_se, "swish": b_swish,
        "hardswish": b_hardswish, "tanh": b_tanh, "leaky": b_leaky, "prelu": b_prelu, "sub": b_sub,
        "mul": b_mul, "add": b_add, "maxmin": b_maxmin, "pad": b_pad, "transpose": b_transpose,
        "slice": b_slice, "requant": b_requant, "dw": b_dw, "conv": b_conv, "tokens": b_tokens,
        "spatial_concat": b_spatial_concat, "bias_add": b_bias_add,
    }
    names = list(blocks)
    keep = rng.random(len(names)) < (0.8 if large else 0.5)
    chosen = [n for n, k in zip(names, keep) if k]
    if large:
        chosen += [_choice(rng, names) for _ in range(int(rng.integers(2, 8)))]
    order = [chosen[i] for i in rng.permutation(len(chosen))]
    for bname in order:
        x = blocks[bname](x)
        if min(hw(x)) > 20 and rng.random() < 0.3:
            x = net.pool(x, "max", f=2, stride=2, padding="VALID")
        if large and rng.random() < 0.15 and not outputs:
            # a second, dense output (as in detection-style heads)
            outputs.append(net.conv(x, _ch(rng, 1, 8), k=1, name="aux_head"))
    _, hh, ww, c = net.shape(x)
    r = rng.random()
    if r < 0.45:
        feat = net.mean(x, [1, 2], keep_dims=False, name="global_mean")
    elif r < 0.85:
        feat = net.pool(x, "avg", f=(hh, ww), stride=(1, 1), padding="VALID", name="global_pool")
        feat = net.reshape(feat, [1, c])
    else:
        # ViT-style: tokens, then the first ("class") token, by a shrinking STRIDED_SLICE
        t = net.reshape(x, [1, hh * ww, c], name="head_tokens")
        feat = net.strided_slice(t, [0, 0, 0], [1, 1, c], [1, 1, 1], shrink_axis_mask=0b010,
                                 name="class_token")
    head = _head(net, rng, feat, int(rng.integers(3, 17)), large)
    return [head] + outputs




# ------------------------------------------------------------------------- more kinds (new ops)
def _batch_matmul(net: _Net, a, bt, adj_y=False, q=None, name="bmm"):
    va, vb = net.v[a], net.v[bt]
    if adj_y:
        vb = np.swapaxes(vb, -1, -2)
    vals = va @ vb
    shape = list(vals.shape[1:])

    def emit(t):
        net.b.op("BATCH_MATMUL", [a, bt], [t], adj_x=False, adj_y=adj_y)

    return net._finish(vals, shape, name, emit, q)


def _transpose_conv(net: _Net, x, oc, k=3, stride=2, act_bias=True, name="tconv"):
    _, h, w, c = net.shape(x)
    oh, ow = h * stride, w * stride
    xv = net.v[x].reshape(-1, h, w, c)
    wf = net.rng.normal(0, np.sqrt(2.0 / (k * k * c / (stride * stride))), size=(oc, k, k, c))

    def sim(wd, bd):
        full = np.zeros((xv.shape[0], (h - 1) * stride + k, (w - 1) * stride + k, oc))
        for ky in range(k):
            for kx in range(k):
                full[:, ky:ky + (h - 1) * stride + 1:stride, kx:kx + (w - 1) * stride + 1:stride, :] += \
                    xv @ wd[:, ky, kx, :].T
        pt = max((h - 1) * stride + k - oh, 0) // 2
        pl = max((w - 1) * stride + k - ow, 0) // 2
        return full[:, pt:pt + oh, pl:pl + ow, :] + (0 if bd is None else bd)

    scale, bf = net._fold_bn(sim(wf, None), None)
    wf *= scale[:, None, None, None]
    wq, ws, wd = _quant_weights(wf, 0)
    s_in, _ = net.q(x)
    bq, bd, b_scale = net._quant_bias(bf, s_in, ws)
    out = sim(wd, bd if act_bias else None)
    shape = [1, oh, ow, oc]
    nm = net.name(name)

    def emit(t):
        os_ = net.i32(shape, f"{nm}/output_shape")
        wt = net.b.tensor(wq.shape, np.int8, scale=ws, zero_point=0, data=wq, quant_dim=0,
                          name=f"{nm}/weights")
        ins = [os_, wt, x]
        if act_bias:
            ins.append(net.b.tensor([oc], net.bias_dt, scale=b_scale, zero_point=0, data=bq,
                                    name=f"{nm}/bias"))
        net.b.op("TRANSPOSE_CONV", ins, [t], padding="SAME", stride_h=stride, stride_w=stride)

    return net._finish(out.reshape(net.calib_n, *shape), shape, f"{nm}/out", emit, None)


def _resize(net: _Net, x, opname, factor=2, align_corners=False, half_pixel=False, name=None):
    _, h, w, c = net.shape(x)
    oh, ow = h * factor, w * factor
    v = net.v[x].reshape(-1, h, w, c)

    def coords(n_out, n_in):
        o = np.arange(n_out, dtype=np.float64)
        sc = (n_in - 1) / (n_out - 1) if align_corners and n_out > 1 else n_in / n_out
        return (o + 0.5) * sc - 0.5 if half_pixel else o * sc

    ys, xs = coords(oh, h), coords(ow, w)
    if opname == "RESIZE_NEAREST_NEIGHBOR":
        fy = np.minimum(np.floor(ys + 0.5 if (half_pixel or align_corners) else ys), h - 1).astype(int)
        fx = np.minimum(np.floor(xs + 0.5 if (half_pixel or align_corners) else xs), w - 1).astype(int)
        out = v[:, np.maximum(fy, 0)][:, :, np.maximum(fx, 0)]
    else:
        ys, xs = np.maximum(ys, 0), np.maximum(xs, 0)
        y0 = np.minimum(np.floor(ys).astype(int), h - 1)
        x0 = np.minimum(np.floor(xs).astype(int), w - 1)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        dy, dx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
        top = v[:, y0][:, :, x0] * (1 - dx) + v[:, y0][:, :, x1] * dx
        bot = v[:, y1][:, :, x0] * (1 - dx) + v[:, y1][:, :, x1] * dx
        out = top * (1 - dy) + bot * dy
    shape = [1, oh, ow, c]
    s, zp = net.q(x)
    return net._same_q(x, net.fake(out.reshape(net.calib_n, *shape), s, zp), shape,
                       name or opname.lower(), opname, [net.i32([oh, ow], "resize/size")],
                       align_corners=align_corners, half_pixel_centers=half_pixel)


def _split(net: _Net, x, num, axis, name="split"):
    s, zp = net.q(x)
    xs = net.shape(x)
    ax = axis % len(xs)
    parts = np.split(net.v[x], num, axis=ax + 1)
    shape = list(parts[0].shape[1:])
    outs = [net.b.tensor(shape, net.b.tensors[x].dtype, scale=s, zero_point=zp, name=net.name(name))
            for _ in range(num)]
    net.b.op("SPLIT", [net.i32(axis, "split/axis"), x], outs, num_splits=num)
    for t, p in zip(outs, parts):
        net.v[t] = p
    return outs


def _unpack(net: _Net, x, axis, name="unpack"):
    s, zp = net.q(x)
    xs = net.shape(x)
    n = xs[axis]
    shape = [d for i, d in enumerate(xs) if i != axis]
    outs = [net.b.tensor(shape, net.b.tensors[x].dtype, scale=s, zero_point=zp, name=net.name(name))
            for _ in range(n)]
    net.b.op("UNPACK", [x], outs, num=n, axis=axis)
    for i, t in enumerate(outs):
        net.v[t] = np.take(net.v[x], i, axis=axis + 1)
    return outs


def _pack(net: _Net, xs, axis, name="pack"):
    s, zp = net.q(xs[0])
    assert all(net.q(t) == (s, zp) for t in xs)
    vals = np.stack([net.v[t] for t in xs], axis=axis + 1)
    t = net.b.tensor(list(vals.shape[1:]), net.b.tensors[xs[0]].dtype, scale=s, zero_point=zp,
                     name=net.name(name))
    net.b.op("PACK", list(xs), [t], values_count=len(xs), axis=axis)
    net.v[t] = vals
    return t


def _layer_norm(net: _Net, x, name="ln"):
    """MEAN / SQUARED_DIFFERENCE / MEAN / ADD eps / RSQRT / SUB / MUL normalisation over the last axis."""
    d = len(net.shape(x)) - 1
    mu = net.mean(x, [d], keep_dims=True, name=f"{name}/mean")
    var = net.mean(net.squared_difference(x, mu, name=f"{name}/sqdiff"), [d], keep_dims=True,
                   name=f"{name}/var")
    eps = net.const_act(np.full([1] * (d + 1), float(net.v[var].mean()) * 0.05 + 1e-3),
                        name=f"{name}/eps")
    inv = net.unary("RSQRT", net.binary("ADD", var, eps, name=f"{name}/var_eps"), name=f"{name}/rsqrt")
    centred = net.binary("SUB", x, mu, name=f"{name}/centre")
    return net.binary("MUL", centred, inv, name=f"{name}/norm")


def _transformer(net: _Net, rng, large: bool) -> list[int]:
    t_len = int(rng.integers(4, 17 if large else 11))
    d_in = _ch(rng, 4, 24)
    x = net.input([1, t_len, d_in], *_input_q(rng))
    d = int(_choice(rng, [8, 12, 16, 24, 32]))
    x = net.fc(x, d, keep_num_dims=True, name="embed")
    nlayers = int(rng.integers(2, 4)) if large else int(rng.integers(1, 3))
    use_ln = rng.random() < 0.6
    for i in range(nlayers):
        h = _layer_norm(net, x, name=f"l{i}/ln1") if use_ln else x
        q = net.fc(h, d, keep_num_dims=True, name=f"l{i}/q")
        k = net.fc(h, d, keep_num_dims=True, name=f"l{i}/k")
        v = net.fc(h, d, keep_num_dims=True, name=f"l{i}/v")
        if rng.random() < 0.5:
            kt = net.transpose(k, [0, 2, 1], name=f"l{i}/kT")
            scores = _batch_matmul(net, q, kt, name=f"l{i}/scores")
        else:
            scores = _batch_matmul(net, q, k, adj_y=True, name=f"l{i}/scores")
        probs = net.unary("SOFTMAX", scores, beta=float(np.float32(1 / np.sqrt(d))), name=f"l{i}/softmax")
        ctx = _batch_matmul(net, probs, v, name=f"l{i}/context")
        o = net.fc(ctx, d, keep_num_dims=True, name=f"l{i}/out_proj")
        x = net.binary("ADD", x, o, name=f"l{i}/res1")
        h = _layer_norm(net, x, name=f"l{i}/ln2") if use_ln else x
        m = net.fc(h, min(_MAX_C, 2 * d), keep_num_dims=True, name=f"l{i}/mlp1")
        m = net.unary("GELU", m, approximate=bool(rng.random() < 0.5), name=f"l{i}/gelu")
        m = net.fc(m, d, keep_num_dims=True, name=f"l{i}/mlp2")
        x = net.binary("ADD", x, m, name=f"l{i}/res2")
    feat = net.mean(x, [1], keep_dims=False, name="pool_tokens")
    return [_head(net, rng, feat, int(rng.integers(3, 11)), large)]


def _unet(net: _Net, rng, large: bool) -> list[int]:
    depth = int(rng.integers(2, 4)) if large else 2
    n = 2 ** depth
    h, w = n * int(rng.integers(2, 5)), n * int(rng.integers(2, 5))
    x = net.input([1, h, w, int(_choice(rng, [1, 3]))], *_input_q(rng))
    c = _ch(rng, 4, 12)
    x = net.conv(x, c, k=3, act="RELU", name="enc0")
    skips = []
    for i in range(depth):
        skips.append(x)
        c = min(_MAX_C, c * 2)
        x = net.conv(x, c, k=3, stride=2, act="RELU", name=f"down{i}")
        x = net.conv(x, c, k=3, act="RELU", name=f"enc{i + 1}")
    for i in reversed(range(depth)):
        skip = skips[i]
        cs = net.shape(skip)[-1]
        r = rng.random()
        if r < 0.4:
            up = _transpose_conv(net, x, cs, k=int(_choice(rng, [2, 3, 4])), act_bias=rng.random() < 0.8,
                                 name=f"up{i}")
        else:
            op = "RESIZE_BILINEAR" if r < 0.7 else "RESIZE_NEAREST_NEIGHBOR"
            ac = rng.random() < 0.3
            hp = (not ac) and rng.random() < 0.5
            up = _resize(net, x, op, align_corners=ac, half_pixel=hp, name=f"up{i}/{op.lower()}")
            up = net.conv(up, cs, k=1, act="RELU", q="defer", name=f"up{i}/proj")
        # skip connection: requantize both into a shared quantization, then concatenate
        if isinstance(up, _Pending):
            a = up
        else:
            a = None
        sk = net.conv(skip, cs, k=1, act="RELU", q="defer", name=f"skip{i}")
        if a is not None:
            ta, tb = net.commit([a, sk])
        else:
            tb = net.commit([sk])[0]
            ta = net.unary("QUANTIZE", up, q=net.q(tb), name=f"up{i}/requant")
        y = net.concat([ta, tb], axis=3, name=f"cat{i}")
        x = net.conv(y, cs, k=3, act="RELU", name=f"dec{i}")
    return [net.conv(x, int(_choice(rng, [1, 2, 3])), k=1, name="seg_head")]


def _lstm(net: _Net, rng, large: bool) -> list[int]:
    steps = int(rng.integers(3, 7 if large else 5))
    d = _ch(rng, 4, 16)
    hdim = int(_choice(rng, [4, 8, 12]))
    x = net.input([1, steps, d], *_input_q(rng))
    use_unpack = rng.random() < 0.5
    if use_unpack:
        xs = _unpack(net, x, 1, name="x_t")
    else:
        xs = [net.strided_slice(x, [0, t, 0], [1, t + 1, d], [1, 1, 1], shrink_axis_mask=0b010,
                                name="x_t") for t in range(steps)]
    hq = (1 / 128, 0)
    h = c = None
    hs = []
    for t, xt in enumerate(xs):
        gx = net.fc(xt, 4 * hdim, name="gates_x")
        if h is not None:
            gh = net.fc(h, 4 * hdim, bias=False, name="gates_h")
            g = net.binary("ADD", gx, gh, name="gates")
        else:
            g = gx
        gi, gf, gg, go = _split(net, g, 4, 1, name="gate")
        i_ = net.unary("LOGISTIC", gi, name="i")
        f_ = net.unary("LOGISTIC", gf, name="f")
        g_ = net.unary("TANH", gg, name="g")
        o_ = net.unary("LOGISTIC", go, name="o")
        ig = net.binary("MUL", i_, g_, name="i_g")
        c = ig if c is None else net.binary("ADD", net.binary("MUL", f_, c, name="f_c"), ig, name="c")
        h = net.binary("MUL", o_, net.unary("TANH", c, name="tanh_c"), q=hq, name="h")
        hs.append(h)
    if use_unpack:
        seq = _pack(net, hs, 1, name="h_seq")
    else:
        seq = net.concat([net.reshape(t, [1, 1, hdim], name="h_t") for t in hs], axis=1, name="h_seq")
    return [seq, net.fc(h, int(rng.integers(2, 8)), name="readout")]


def _mobilenet_v3(net: _Net, rng, large: bool) -> list[int]:
    h, w = _spatial(rng, 12 if large else 8, 32)
    x = net.input([1, h, w, 3], *_input_q(rng))
    x = net.conv(x, _ch(rng, 8, 16), k=3, stride=2, name="stem")
    x = net.hard_swish(x, name="stem/hswish")
    nblocks = int(rng.integers(3, 7)) if large else int(rng.integers(2, 4))
    for i in range(nblocks):
        _, hh, ww, cin = net.shape(x)
        hswish = rng.random() < 0.6
        exp = min(_MAX_C, cin * int(_choice(rng, [2, 3, 4])))
        y = net.conv(x, exp, k=1, act="NONE" if hswish else "RELU", name=f"b{i}/expand")
        if hswish:
            y = net.hard_swish(y, name=f"b{i}/expand_hs")
        stride = 2 if min(hh, ww) >= 6 and rng.random() < 0.4 else 1
        y = net.dwconv(y, k=int(_choice(rng, [3, 5])), stride=stride,
                       act="NONE" if hswish else "RELU", name=f"b{i}/dw")
        if hswish:
            y = net.hard_swish(y, name=f"b{i}/dw_hs")
        if rng.random() < 0.7:
            s = net.mean(y, [1, 2], keep_dims=True, name=f"b{i}/se/squeeze")
            s = net.conv(s, max(2, exp // 4), k=1, act="RELU", name=f"b{i}/se/reduce")
            s = net.conv(s, exp, k=1, name=f"b{i}/se/expand")
            if rng.random() < 0.5:
                s = net.unary("LOGISTIC", s, name=f"b{i}/se/sigmoid")
            else:   # hard sigmoid: relu6(x + 3) * (1/6)
                three = net.const_act(np.full((1, 1, 1, 1), 3.0), name=f"b{i}/se/three")
                s = net.binary("ADD", s, three, act="RELU6", name=f"b{i}/se/plus3")
                sixth = net.const_act(np.full((1, 1, 1, 1), 1 / 6), name=f"b{i}/se/sixth")
                s = net.binary("MUL", s, sixth, name=f"b{i}/se/hsigmoid")
            y = net.binary("MUL", y, s, name=f"b{i}/se/scale")
        cout = cin if stride == 1 and rng.random() < 0.5 else _ch(rng, 8, 32)
        y = net.conv(y, cout, k=1, name=f"b{i}/project")
        if net.shape(y) == net.shape(x):
            y = net.binary("ADD", x, y, name=f"b{i}/add")
        x = y
    feat = net.mean(x, [1, 2], keep_dims=False, name="global_mean")
    feat = net.fc(feat, _ch(rng, 16, 48), name="head_fc")
    feat = net.hard_swish(feat, name="head_hs")
    return [_head(net, rng, feat, int(rng.integers(3, 17)), large)]


def _int16(net: _Net, rng, large: bool) -> list[int]:
    """16x8: int16 activations (zero point 0), int8 per-channel weights, int64 biases."""
    net.dt = np.int16
    h, w = _spatial(rng, 8, 24)
    x = net.input([1, h, w, int(_choice(rng, [1, 3]))], float(np.float32(rng.uniform(1e-4, 1e-3))), 0)
    x = net.conv(x, _ch(rng, 4, 16), k=3, stride=2, act="RELU6", name="stem")
    n = int(rng.integers(3, 6)) if large else int(rng.integers(2, 4))
    for i in range(n):
        _, hh, ww, c = net.shape(x)
        r = rng.random()
        if r < 0.35:
            y = net.dwconv(x, k=3, act="RELU6", name=f"b{i}/dw")
            y = net.conv(y, c, k=1, name=f"b{i}/pw")
            x = net.binary("ADD", x, y, name=f"b{i}/add")
        elif r < 0.55:
            y = net.conv(x, c, k=1, name=f"b{i}/gate_conv")
            g = net.unary("LOGISTIC", y, name=f"b{i}/sigmoid")
            x = net.binary("MUL", x, g, name=f"b{i}/gate")
        elif r < 0.7:
            y = net.conv(x, _ch(rng, 4, 24), k=3, name=f"b{i}/conv")
            x = net.unary("TANH", y, name=f"b{i}/tanh")
        elif r < 0.78 and min(hh, ww) >= 4:
            x = net.pool(x, _choice(rng, ["max", "avg"]), f=2, stride=2)
        elif r < 0.85:
            a, b = net.commit([net.conv(x, _ch(rng, 2, 12), k=1, act="RELU", q="defer", name=f"b{i}/cat_a"),
                               net.conv(x, _ch(rng, 2, 12), k=3, q="defer", name=f"b{i}/cat_b")])
            x = net.concat([a, b], axis=3, name=f"b{i}/cat")
        else:
            x = net.conv(x, _ch(rng, 4, 32), k=3, stride=2 if min(hh, ww) >= 6 else 1, act="RELU",
                         name=f"b{i}/conv")
    if rng.random() < 0.5:
        # token self-attention at int16: [1, HW, C] -> BATCH_MATMUL (adj_y) -> SOFTMAX -> BATCH_MATMUL
        _, hh, ww, c = net.shape(x)
        t = net.reshape(x, [1, hh * ww, c], name="tokens")
        qv = net.fc(t, c, keep_num_dims=True, name="attn/q")
        kv = net.fc(t, c, keep_num_dims=True, name="attn/k")
        p = net.unary("SOFTMAX", _batch_matmul(net, qv, kv, adj_y=True, name="attn/scores"),
                      beta=float(np.float32(1 / np.sqrt(c))), name="attn/softmax")
        x = net.binary("ADD", t, _batch_matmul(net, p, t, name="attn/context"), name="attn/res")
        feat = net.mean(x, [1], keep_dims=False, name="global_mean")
    else:
        feat = net.mean(x, [1, 2], keep_dims=False, name="global_mean")
    return [_head(net, rng, feat, int(rng.integers(3, 13)), large)]


def _float_edges(net: _Net, rng, large: bool) -> list[int]:
    """float32 input -> QUANTIZE -> int8 network -> DEQUANTIZE -> float32 output."""
    h, w = _spatial(rng, 8, 24)
    shape = [1, h, w, int(_choice(rng, [1, 3]))]
    xf = net.b.tensor(shape, np.float32, name=net.name("input_float"))
    net.v[xf] = net.rng.uniform(-1, 1, size=(net.calib_n, *shape))
    q = net.qparams(-1.0, 1.0) if rng.random() < 0.5 else net.calib(-1.0, 1.0)
    x = net.b.tensor(shape, net.dt, scale=q[0], zero_point=q[1], name=net.name("input_q"))
    net.b.op("QUANTIZE", [xf], [x])
    net.v[x] = net.fake(net.v[xf], float(np.float32(q[0])), q[1])
    x = net.conv(x, _ch(rng, 4, 16), k=3, stride=2, act="RELU6", name="stem")
    for i in range(int(rng.integers(1, 4))):
        y = net.dwconv(x, k=3, act="RELU6", name=f"b{i}/dw")
        x = net.conv(y, _ch(rng, 4, 24), k=1, name=f"b{i}/pw")
        if rng.random() < 0.5:
            x = net.hard_swish(x, name=f"b{i}/hs")
    outs = []
    feat = net.mean(x, [1, 2], keep_dims=False, name="global_mean")
    probs = _head(net, rng, feat, int(rng.integers(3, 11)), large)
    for t in ([probs, x] if rng.random() < 0.5 else [probs]):
        f = net.b.tensor(net.shape(t), np.float32, name=net.name("output_float"))
        net.b.op("DEQUANTIZE", [t], [f])
        outs.append(f)
    return outs


def _resnet(net: _Net, rng, large: bool) -> list[int]:
    """ResNet: conv stem (RELU, sometimes a stride-2 7x7 and a 3x3 max pool), stages of basic (two 3x3
    convs) or bottleneck (1x1, 3x3, 1x1 expanding) blocks; a stage after the first starts with a stride-2
    block whose shortcut is a 1x1 stride-2 projection conv (as is any block changing the channel count);
    residual ADD with a fused RELU; global MEAN or AVERAGE_POOL_2D, FULLY_CONNECTED, sometimes SOFTMAX."""
    h, w = _spatial(rng, 16 if large else 12, 48 if large else 32)
    x = net.input([1, h, w, int(_choice(rng, [1, 3, 3]))], *_input_q(rng))
    width = int(_choice(rng, [4, 6, 8]))
    if rng.random() < 0.5:
        x = net.conv(x, width, k=7, stride=2, act="RELU", name="stem")
        if min(net.shape(x)[1:3]) >= 8:
            x = net.pool(x, "max", f=3, stride=2, padding="SAME", name="stem/maxpool")
    else:
        x = net.conv(x, width, k=3, act="RELU", name="stem")
    bottleneck = rng.random() < 0.4
    expansion = 4 if bottleneck else 1
    stages = int(rng.integers(3, 5)) if large else int(rng.integers(2, 4))
    for s in range(stages):
        planes = min(_MAX_C // expansion, width * 2 ** s)
        for i in range(int(rng.integers(1, 3))):
            _, hh, ww, cin = net.shape(x)
            stride = 2 if s > 0 and i == 0 and min(hh, ww) >= 4 else 1
            cout = planes * expansion
            name = f"s{s}b{i}"
            if bottleneck:
                y = net.conv(x, planes, k=1, act="RELU", name=f"{name}/reduce")
                y = net.conv(y, planes, k=3, stride=stride, act="RELU", name=f"{name}/conv")
                y = net.conv(y, cout, k=1, name=f"{name}/expand")
            else:
                y = net.conv(x, planes, k=3, stride=stride, act="RELU", name=f"{name}/conv1")
                y = net.conv(y, cout, k=3, name=f"{name}/conv2")
            shortcut = x
            if stride != 1 or cin != cout:
                shortcut = net.conv(x, cout, k=1, stride=stride, name=f"{name}/projection")
            operands = (shortcut, y) if rng.random() < 0.5 else (y, shortcut)
            x = net.binary("ADD", *operands, act="RELU", name=f"{name}/add")
    _, hh, ww, c = net.shape(x)
    if rng.random() < 0.5:
        feat = net.mean(x, [1, 2], keep_dims=False, name="global_mean")
    else:
        feat = net.reshape(net.pool(x, "avg", f=(hh, ww), stride=(1, 1), padding="VALID", name="global_pool"),
                           [1, c])
    classes = int(rng.integers(3, 21))
    if rng.random() < 0.5:
        return [_head(net, rng, feat, classes, large)]
    return [net.fc(feat, classes, logit_std=float(rng.uniform(0.3, 1.0)), name="logits")]


def _resnet18(net: _Net, rng, large: bool) -> list[int]:
    """ResNet-18 as published, at 224x224: 7x7/2 stem, 3x3/2 max pool, four stages of two basic blocks
    (64, 128, 256, 512 channels; stages 2-4 start with a stride-2 block and a 1x1/2 projection
    shortcut), residual ADD then RELU, global average pool, 1000-way FULLY_CONNECTED."""
    x = net.input([1, 224, 224, 3], float(np.float32(1 / 127.5)), -1)
    x = net.conv(x, 64, k=7, stride=2, act="RELU", name="stem")
    x = net.pool(x, "max", f=3, stride=2, padding="SAME", name="stem/maxpool")
    for s, planes in enumerate((64, 128, 256, 512)):
        for i in range(2):
            stride = 2 if s > 0 and i == 0 else 1
            name = f"layer{s + 1}.{i}"
            y = net.conv(x, planes, k=3, stride=stride, act="RELU", name=f"{name}/conv1")
            y = net.conv(y, planes, k=3, name=f"{name}/conv2")
            shortcut = x if stride == 1 else net.conv(x, planes, k=1, stride=2, name=f"{name}/downsample")
            x = net.binary("ADD", shortcut, y, act="RELU", name=f"{name}/add")
    x = net.pool(x, "avg", f=(7, 7), stride=(1, 1), padding="VALID", name="avgpool")
    return [net.fc(net.reshape(x, [1, 512]), 1000, logit_std=2.0, uniform=True, name="fc")]


def _mobilenet_v2_224(net: _Net, rng, large: bool) -> list[int]:
    """MobileNetV2 1.0 as published, at 224x224, in the ops Keras' model converts to: 3x3/2 stem of 32,
    the seventeen inverted residual blocks (t, c, n, s) of the paper (a stride-2 depthwise conv is PAD
    bottom/right then VALID), 1x1 head of 1280, MEAN over H and W, 1000-way FULLY_CONNECTED, SOFTMAX
    (all RELU6)."""
    x = net.input([1, 224, 224, 3], float(np.float32(1 / 127.5)), -1)
    x = net.conv(x, 32, k=3, stride=2, act="RELU6", name="stem")
    block = 0
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            cin = net.shape(x)[-1]
            y = x if t == 1 else net.conv(x, cin * t, k=1, act="RELU6", name=f"block{block}/expand")
            stride = s if i == 0 else 1
            if stride == 2:
                y = net.pad(y, [[0, 0], [0, 1], [0, 1], [0, 0]], name=f"block{block}/pad")
            y = net.dwconv(y, k=3, stride=stride, padding="VALID" if stride == 2 else "SAME", act="RELU6",
                           name=f"block{block}/depthwise")
            y = net.conv(y, c, k=1, name=f"block{block}/project")
            x = net.binary("ADD", x, y, name=f"block{block}/add") if net.shape(y) == net.shape(x) else y
            block += 1
    x = net.conv(x, 1280, k=1, act="RELU6", name="head_conv")
    logits = net.fc(net.mean(x, [1, 2], keep_dims=False, name="global_mean"), 1000, logit_std=2.0, uniform=True,
                    name="logits")
    return [net.unary("SOFTMAX", logits, name="softmax")]


MORE_KINDS = ("transformer", "unet", "lstm", "mobilenet_v3", "int16", "float_edges", "resnet")
OPS_BY_KIND.update({
    "transformer": {"FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "ADD", "GELU", "MEAN",
                    "SQUARED_DIFFERENCE", "RSQRT", "SUB", "MUL", "TRANSPOSE"},
    "unet": {"CONV_2D", "CONCATENATION", "TRANSPOSE_CONV", "RESIZE_BILINEAR",
             "RESIZE_NEAREST_NEIGHBOR", "QUANTIZE"},
    "lstm": {"FULLY_CONNECTED", "SPLIT", "LOGISTIC", "TANH", "MUL", "ADD", "UNPACK", "PACK",
             "STRIDED_SLICE", "CONCATENATION", "RESHAPE"},
    "mobilenet_v3": {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "MEAN", "LOGISTIC", "MUL", "ADD",
                     "FULLY_CONNECTED", "SOFTMAX"},
    "int16": {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "LOGISTIC", "TANH", "MEAN",
              "FULLY_CONNECTED", "SOFTMAX", "CONCATENATION", "BATCH_MATMUL", "RESHAPE"},
    "float_edges": {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN",
                    "FULLY_CONNECTED", "SOFTMAX"},
    "resnet": {"CONV_2D", "ADD", "MAX_POOL_2D", "MEAN", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
               "SOFTMAX"},
})
ALL_KINDS = KINDS + MORE_KINDS
# Published architectures at full size (224x224, real channel counts): slow to build and to run.
FULL_KINDS = ("resnet18", "mobilenet_v2_224")


_GENERATORS = {"mobilenet_v2": _mobilenet_v2, "mobilenet_v1": _mobilenet_v1, "kws": _kws,
               "mixed": _mixed, "transformer": _transformer, "unet": _unet, "lstm": _lstm,
               "mobilenet_v3": _mobilenet_v3, "int16": _int16, "float_edges": _float_edges, "resnet": _resnet,
               "resnet18": _resnet18, "mobilenet_v2_224": _mobilenet_v2_224}


def build_network(seed: int, kind: str, *, large: bool = False, int16: bool = False) -> Network:
    """Generate a network; deterministic in (seed, kind, large, int16). ``int16`` makes the 16x8 variant
    of the kind (int16 activations with zero point 0, int8 weights, int64 biases), with the same
    architecture draws as the int8 network of that seed."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown network kind {kind!r}; one of {ALL_KINDS + FULL_KINDS}")
    salt = (ALL_KINDS + FULL_KINDS).index(kind) * 1_000_003 + (7 if large else 0)
    rng = np.random.default_rng([int(seed), salt])
    variant = (" large" if large else "") + (" 16x8" if int16 else "")
    net = _Net(rng, f"tosaic tests/network_generator {kind} seed {seed}{variant}", int16=int16,
               calib_n=2 if kind in FULL_KINDS else _CALIB)
    outs = _GENERATORS[kind](net, rng, large)
    net.b.outputs(outs)
    return Network(kind, seed, net.b, net.b.build(), large, int16)


def random_network(seed: int, kind: str, *, large: bool = False, int16: bool = False) -> bytes:
    """A TFLite flatbuffer of the given kind (see the module docstring)."""
    return build_network(seed, kind, large=large, int16=int16).model


def single_op_model(net: Network, op_index: int, *, const_inputs: dict[int, np.ndarray] | None = None
                    ) -> tuple[bytes, list[int]]:
    """One op of ``net`` as a model of its own, tensors and options unchanged. Its non-constant
    inputs become model inputs (unless given in ``const_inputs`` by original tensor index). Returns
    the model and the original indices of its inputs, in order."""
    src = net.builder
    op = src.ops[op_index]
    b = ModelBuilder(description=f"single op #{op_index} {op.opname} of {net.kind} seed {net.seed}")
    remap: dict[int, int] = {}
    graph_inputs: list[int] = []
    for i in list(op.inputs) + list(op.outputs):
        if i < 0 or i in remap:
            continue
        s = src.tensors[i]
        data = s.data
        if const_inputs and i in const_inputs:
            data = const_inputs[i]
        remap[i] = b.tensor(s.shape, s.dtype, scale=s.scale, zero_point=s.zero_point, data=data,
                            name=s.name, quant_dim=s.quant_dim if s.scale is not None and s.scale.size > 1 else None)
        if data is None and i in op.inputs:
            graph_inputs.append(i)
    b.op(op.opname, [remap.get(i, -1) if i >= 0 else -1 for i in op.inputs],
         [remap[o] for o in op.outputs], version=op.version, **op.options)
    b.inputs([remap[i] for i in graph_inputs]).outputs([remap[o] for o in op.outputs])
    return b.build(), graph_inputs
