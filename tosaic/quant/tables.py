"""TOSA TABLE contents for int8 -> int8 unary ops: ``int8_table`` evaluates a port of a LiteRT
int8 reference kernel on all 256 inputs, so the TABLE reproduces the kernel bit for bit.

What LiteRT's reference resolver (``OpResolverType.BUILTIN_REF``, tflite/kernels/register_ref.cc)
runs for int8, and what each port below reproduces:

- LOGISTIC, TANH (``*_REF`` registrations), GELU -- activations.cc: a 256-entry LUT filled at
  prepare time by ``LUTPopulate<int8_t>`` (internal/common.h, ``detail::LUTPopulateInt8``) in
  float32: ``dequantized = in_scale * (q - in_zp)``, ``f(dequantized)``,
  ``TfLiteRound(f * (1 / out_scale))``, ``+ out_zp``, cast, clamp. The gemmlowp fixed-point
  logistic/tanh (``Logistic16bitPrecision``) belong to the kFixedPointOptimized kernels only.
- HARD_SWISH -- ``reference_ops::HardSwish`` (internal/reference/hard_swish.h): int16 fixed
  point with multipliers quantized from float32 scale ratios in ``HardSwishPrepare``.
- LEAKY_RELU -- ``reference_ops::QuantizeLeakyRelu`` (internal/reference/leaky_relu.h): one
  MultiplyByQuantizedMultiplier per sign of ``q - in_zp``.
- RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1 -- ``QuantizedReluX`` (activations.cc) calling
  ``ReluX`` (internal/reference/reference_ops.h), the same for every resolver.
- RSQRT -- ``RsqrtEvalQuantizedInt8`` (elementwise.cc): ``GetInvSqrtQuantizedMultiplierExp`` and
  two MultiplyByQuantizedMultiplier.

Scales are the model's float32 values (a Python float is rounded to float32 first, as the flatbuffer
stores it). The float LUTs call the C library's ``expf``/``tanhf``/``erfcf`` through ctypes, because
LiteRT's binary imports exactly those libm symbols: on random inputs in [-8, 8], numpy's float32
``exp``/``tanh`` differ from glibc 2.36's in the last bit on 39% / 33% of them, and double-precision
``math.tanh``/``math.erfc`` rounded to float32 on 7% / 19%, enough to flip a rounding. Like
LiteRT's, these tables follow the host's libm.

Each kernel port takes an int8-valued int (returns an int) or integer array (returns an int8 array).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from typing import Callable

import numpy as np

from ._ints import INT8_MAX, INT8_MIN, check_range, int64, is_scalar, wrap
from .tflite_fixedpoint import (
    downscale_int32_to_int16_multiplier,
    get_inv_sqrt_quantized_multiplier_exp,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
    rounding_divide_by_pot,
    saturating_doubling_high_mul,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
)

__all__ = [
    "int8_table",
    "logistic_int8",
    "tanh_int8",
    "gelu_int8",
    "hard_swish_int8",
    "leaky_relu_int8",
    "relu_x_int8",
    "relu_int8",
    "relu6_int8",
    "relu_n1_to_1_int8",
    "relu_0_to_1_int8",
    "rsqrt_int8",
]

_f32 = np.float32


def int8_table(fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The 256 entries of a TOSA int8 TABLE: ``fn`` evaluated on inputs -128..127, so entry ``i``
    is the output for input ``i - 128`` (TOSA indexes ``table[x + 128]``)."""
    out = np.asarray(fn(np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)))
    if out.shape != (256,):
        raise ValueError(f"table function must map 256 inputs to 256 outputs, got shape {out.shape}")
    check_range("table entry", out.astype(np.int64), INT8_MIN, INT8_MAX)
    return out.astype(np.int8)


def _lookup(table: np.ndarray, x):
    """Apply a 256-entry table (index ``q + 128``) to int8-valued input."""
    scalar = is_scalar(x)
    q = int64("x", x)
    check_range("x", q, INT8_MIN, INT8_MAX)
    out = table[q + 128]
    return int(out) if scalar else out.astype(np.int8)


# ------------------------------------------------------------------------------ float32 LUT kernels


@functools.cache
def _libm_function(name: str):
    lib = ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c"))
    fn = getattr(lib, name)
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def _libm(name: str, x: np.ndarray) -> np.ndarray:
    """The C library's float function ``name`` (e.g. ``expf``) element by element on float32."""
    fn = _libm_function(name)
    return np.array([fn(float(v)) for v in x.ravel()], dtype=np.float32).reshape(x.shape)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    # SigmoidPrepare: [](float value) { return 1.0f / (1.0f + std::exp(-value)); }
    return _f32(1.0) / (_f32(1.0) + _libm("expf", -v))


def _tanh(v: np.ndarray) -> np.ndarray:
    # TanhPrepare: [](float value) { return std::tanh(value); }
    return _libm("tanhf", v)


# gelu.h: constexpr float kSqrt2dPi = M_2_SQRTPI * M_SQRT1_2 (double product, rounded to float).
_SQRT_2_OVER_PI = _f32(1.12837916709551257390 * 0.70710678118654752440)
_SQRT1_2 = 0.70710678118654752440


def _gelu_approximate(v: np.ndarray) -> np.ndarray:
    # reference_ops::GeluTransformApproximate, float32 left to right:
    # 0.5f * in * (1.f + std::tanh(kSqrt2dPi * (in + 0.044715f * in * in * in)))
    cube_term = _f32(0.044715) * v * v * v
    return _f32(0.5) * v * (_f32(1.0) + _libm("tanhf", _SQRT_2_OVER_PI * (v + cube_term)))


def _gelu(v: np.ndarray) -> np.ndarray:
    # reference_ops::GeluTransform: 0.5f * in * std::erfc(in * static_cast<float>(-M_SQRT1_2))
    return _f32(0.5) * v * _libm("erfcf", v * _f32(-_SQRT1_2))


_TRANSFORMS = {"logistic": _sigmoid, "tanh": _tanh, "gelu_approximate": _gelu_approximate,
               "gelu": _gelu}


@functools.lru_cache(maxsize=256)
def _float_lut(kind: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """``detail::LUTPopulateInt8`` with float32 arithmetic throughout; entry ``q + 128``."""
    q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)
    inverse_scale = _f32(1.0) / _f32(out_scale)
    dequantized = _f32(in_scale) * (q - in_zp).astype(np.float32)
    transformed = _TRANSFORMS[kind](dequantized)
    rescaled = round_half_away(transformed * inverse_scale)
    quantized = rescaled + _f32(out_zp)  # float + int32 -> float addition in the C++
    if not np.all(np.abs(quantized) < 2.0**31):
        raise ValueError(f"{kind} LUT: float->int32 cast out of range (undefined in the C++); "
                         f"output scale {out_scale} is too small")
    return np.clip(quantized.astype(np.int64), INT8_MIN, INT8_MAX)


def _float_lut_kernel(kind: str, x, in_scale, in_zp, out_scale, out_zp):
    table = _float_lut(kind, float(_f32(in_scale)), int(in_zp), float(_f32(out_scale)), int(out_zp))
    return _lookup(table, x)


def logistic_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 LOGISTIC (reference kernel): float32 LUT of ``1 / (1 + expf(-v))``. Like
    ``SigmoidPrepare``, requires ``out_scale == 1/256``."""
    if float(_f32(out_scale)) != 1.0 / 256:
        raise ValueError(f"LOGISTIC int8 needs output scale 1/256, got {out_scale}")
    return _float_lut_kernel("logistic", x, in_scale, in_zp, out_scale, out_zp)


def tanh_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 TANH (reference kernel): float32 LUT of ``tanhf(v)``."""
    return _float_lut_kernel("tanh", x, in_scale, in_zp, out_scale, out_zp)


def gelu_int8(x, in_scale, in_zp, out_scale, out_zp, approximate: bool):
    """LiteRT int8 GELU: float32 LUT of ``GeluTransformApproximate`` (tanh form) when
    ``approximate`` else ``GeluTransform`` (erfc form)."""
    kind = "gelu_approximate" if approximate else "gelu"
    return _float_lut_kernel(kind, x, in_scale, in_zp, out_scale, out_zp)


# ------------------------------------------------------------------------------ fixed-point kernels


def _int8_input(x) -> tuple[bool, np.ndarray]:
    scalar = is_scalar(x)
    q = int64("x", x)
    check_range("x", q, INT8_MIN, INT8_MAX)
    return scalar, q


def _int8_output(scalar: bool, out: np.ndarray):
    return int(out) if scalar else np.asarray(out).astype(np.int8)


def hard_swish_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 HARD_SWISH: ``HardSwishPrepare`` (float32 scale ratios, QuantizeMultiplier,
    DownScaleInt32ToInt16Multiplier) and ``reference_ops::HardSwish`` in int16 fixed point."""
    scalar, q = _int8_input(x)
    hires_input_scale = _f32(1.0 / 128.0) * _f32(in_scale)
    reluish_scale = _f32(3.0) / _f32(32768.0)
    out_m32, out_exponent = quantize_multiplier(float(hires_input_scale / _f32(out_scale)))
    out_m16 = downscale_int32_to_int16_multiplier(out_m32)
    if out_exponent > 0:
        raise ValueError("HARD_SWISH prepare requires output_multiplier_exponent <= 0")
    relu_m32, relu_exponent = quantize_multiplier(float(hires_input_scale / reluish_scale))
    relu_m16 = downscale_int32_to_int16_multiplier(relu_m32)

    input_value = wrap(q - int(in_zp), 16)
    hires = wrap(input_value * (1 << 7), 16)
    preshift_output = saturating_rounding_doubling_high_mul(hires, out_m16, bits=16)
    # Rescale to the [-3, 3] -> [-32768, 32767] "reluish" scale; the left shift is split so that
    # saturation happens only in its last bit (see the comments in hard_swish.h).
    reluish = hires
    if relu_exponent > 0:
        reluish = saturating_left_shift(reluish, relu_exponent - 1)
    reluish = saturating_rounding_doubling_high_mul(reluish, relu_m16, bits=16)
    if relu_exponent > 0:
        reluish = saturating_left_shift(reluish, 1)
    if relu_exponent < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_exponent, bits=16)
    reluish = (np.asarray(reluish) + (1 << 15)) >> 1  # [-1, 1] -> [0, 1]
    preshift = saturating_doubling_high_mul(reluish, preshift_output, bits=16)
    out = rounding_divide_by_pot(preshift, -out_exponent, bits=16)
    out = wrap(np.asarray(out) + int(out_zp), 16)  # int16_t += int32 zero point
    return _int8_output(scalar, np.clip(out, INT8_MIN, INT8_MAX))


def leaky_relu_int8(x, alpha, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 LEAKY_RELU: multipliers ``in_scale * alpha / out_scale`` and
    ``in_scale / out_scale`` computed in float32 (``LeakyReluPrepare``), then
    ``QuantizeLeakyRelu``: ``out_zp + MBQM(q - in_zp, ...)`` with the identity multiplier for
    ``q >= in_zp`` and the alpha multiplier otherwise (a negative alpha multiplier is applied to
    the magnitude and the product negated, as the kernel does), clamped to int8."""
    scalar, q = _int8_input(x)
    s_in, s_out = _f32(in_scale), _f32(out_scale)
    alpha_m, alpha_shift = quantize_multiplier(float(s_in * _f32(alpha) / s_out))
    identity_m, identity_shift = quantize_multiplier(float(s_in / s_out))
    value = q - int(in_zp)
    positive = multiply_by_quantized_multiplier(value, identity_m, identity_shift)
    negative = multiply_by_quantized_multiplier(value, abs(alpha_m), alpha_shift)
    if alpha_m < 0:
        negative = -negative
    out = int(out_zp) + np.where(value >= 0, positive, negative)
    return _int8_output(scalar, np.clip(out, INT8_MIN, INT8_MAX))


def _activation_bound(bound: float, out_scale: np.float32, out_zp: int) -> int:
    # out_zp + static_cast<int32>(roundf(bound / output->params.scale)), float32 division
    rounded = float(round_half_away(_f32(bound) / out_scale))
    if not -(2.0**31) <= rounded < 2.0**31:
        raise ValueError("activation bound overflows int32 (undefined in QuantizedReluX)")
    return out_zp + int(rounded)


def relu_x_int8(x, act_min, act_max, in_scale, in_zp, out_scale, out_zp):
    """LiteRT ``QuantizedReluX<int8_t>(act_min, act_max)`` + ``ReluX``:
    ``clamp(out_zp + MBQM(q - in_zp, m, shift), qmin, qmax)`` where ``(m, shift)`` quantize the
    float32 ratio ``in_scale / out_scale``, ``qmin = max(-128, out_zp + roundf(act_min / out_scale))``
    and ``qmax = min(127, out_zp + roundf(act_max / out_scale))`` (127 for ``act_max = inf``)."""
    scalar, q = _int8_input(x)
    s_out = _f32(out_scale)
    m, shift = quantize_multiplier(float(_f32(in_scale) / s_out))
    qmin = max(INT8_MIN, _activation_bound(act_min, s_out, int(out_zp)))
    qmax = INT8_MAX if math.isinf(act_max) else min(INT8_MAX, _activation_bound(act_max, s_out, int(out_zp)))
    out = int(out_zp) + np.asarray(multiply_by_quantized_multiplier(q - int(in_zp), m, shift))
    return _int8_output(scalar, np.minimum(np.maximum(out, qmin), qmax))


def relu_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 RELU (``ReluEval``): ``relu_x_int8`` on [0, inf)."""
    return relu_x_int8(x, 0.0, math.inf, in_scale, in_zp, out_scale, out_zp)


def relu6_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 RELU6 (``Relu6Eval``): ``relu_x_int8`` on [0, 6]."""
    return relu_x_int8(x, 0.0, 6.0, in_scale, in_zp, out_scale, out_zp)


def relu_n1_to_1_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 RELU_N1_TO_1 (``Relu1Eval``): ``relu_x_int8`` on [-1, 1]."""
    return relu_x_int8(x, -1.0, 1.0, in_scale, in_zp, out_scale, out_zp)


def relu_0_to_1_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 RELU_0_TO_1 (``Relu0to1Eval``): ``relu_x_int8`` on [0, 1]."""
    return relu_x_int8(x, 0.0, 1.0, in_scale, in_zp, out_scale, out_zp)


def rsqrt_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 RSQRT (``RsqrtEvalQuantizedInt8``): ``value = q - in_zp``; 127 for 0; else
    ``GetInvSqrtQuantizedMultiplierExp(value)``, ``data = MBQM(1, inv_sqrt, shift + 20)``,
    ``out = MBQM(data, m, s - 20) + out_zp`` clamped, with ``(m, s)`` quantizing
    ``1. / (sqrtf(in_scale) * out_scale)`` (float32 product, double division). LiteRT refuses a
    tensor holding any ``q < in_zp`` (``Rsqrt is only defined for positive values``); the port
    gives such inputs 127, like 0, so that a TABLE can be filled."""
    scalar, q = _int8_input(x)
    s_in, s_out = _f32(in_scale), _f32(out_scale)
    m, shift = quantize_multiplier(1.0 / float(np.sqrt(s_in) * s_out))
    value = np.maximum(q - int(in_zp), 0)
    inv_sqrt, inv_sqrt_shift = get_inv_sqrt_quantized_multiplier_exp(value, -1)
    k_shift = 20  # kShift in elementwise.cc: keeps the intermediate an integer
    data = multiply_by_quantized_multiplier(1, inv_sqrt, np.asarray(inv_sqrt_shift) + k_shift)
    out = np.asarray(multiply_by_quantized_multiplier(data, m, shift - k_shift)) + int(out_zp)
    out = np.where(value == 0, INT8_MAX, np.clip(out, INT8_MIN, INT8_MAX))
    return _int8_output(scalar, out)
