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
- EXP (exp.cc), LOG (``LogLUTPrepare``, elementwise.cc) -- ``LUTPopulate<int8_t>`` of ``expf`` /
  ``logf``. SQRT -- ``SqrtEvalQuantized<int8_t>``: float32 per element, the quotient truncated.

int16 EXP, LOG, RSQRT and GELU are LUTs too: ``LUTPopulate<int16_t>`` fills 513 entries
(``*_int16_lut``) that ``LUTLookup`` interpolates (``int16_lut_lookup``); a TOSA i16 TABLE does the
same wherever ``int16_lut_is_tosa_exact``. The other ports here are the integer kernels that tosaic
emits as TOSA arithmetic, kept for checking it: SQUARED_DIFFERENCE, DIV (int8/int16, with the x86
behaviour of its out-of-range shifts) and LOG_SOFTMAX (with ``log_x_for_x_greater_than_or_equal_to_1``).

Scales are the model's float32 values (a Python float is rounded to float32 first, as the flatbuffer
stores it). The float LUTs call the C library's ``expf``/``tanhf``/``erfcf`` through ctypes, because
LiteRT's binary imports exactly those libm symbols (``logf`` too): on random inputs in [-8, 8], numpy's float32
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
from typing import Callable, NamedTuple

import numpy as np

from ._ints import (
    INT8_MAX,
    INT8_MIN,
    INT16_MAX,
    INT16_MIN,
    INT32_MAX,
    INT32_MIN,
    check_range,
    int64,
    is_scalar,
    wrap,
)
from .tflite_fixedpoint import (
    calculate_input_radius,
    downscale_int32_to_int16_multiplier,
    exp_on_negative_values,
    get_inv_sqrt_quantized_multiplier_exp,
    get_reciprocal,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_smaller_than_one_exp,
    one_over_one_plus_x_for_x_in_0_1,
    preprocess_softmax_scaling,
    quantize_multiplier,
    rescale,
    round_half_away,
    rounding_divide_by_pot,
    rounding_half_sum,
    saturating_doubling_high_mul,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
)
from .tosa_scale import count_leading_zeros32

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
    "exp_int8",
    "log_int8",
    "sqrt_int8",
    "int16_lut_lookup",
    "int16_lut_is_tosa_exact",
    "exp_int16_lut",
    "log_int16_lut",
    "rsqrt_int16_lut",
    "gelu_int16_lut",
    "squared_difference_int8",
    "squared_difference_multipliers",
    "count_leading_sign_bits32",
    "rounding_divide_by_pot_x86",
    "div_multiplier",
    "div_quantized",
    "log_x_for_x_greater_than_or_equal_to_1",
    "LogSoftmaxInt8Params",
    "log_softmax_int8_params",
    "log_softmax_terms",
    "log_softmax_int8",
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


def _exp(v: np.ndarray) -> np.ndarray:
    # exp.cc Prepare: [](float value) { return std::exp(value); }
    return _libm("expf", v)


def _log(v: np.ndarray, output_min: np.float32) -> np.ndarray:
    # elementwise.cc LogLUTPrepare: value <= 0 ? output_min : std::log(value), where output_min is
    # the output type's lowest value dequantized, (min - output_zero_point) * output_scale in float.
    positive = v > 0
    logs = _libm("logf", np.where(positive, v, _f32(1.0)))
    return np.where(positive, logs, output_min).astype(np.float32)


def _rsqrt(v: np.ndarray, non_positive_value: np.float32) -> np.ndarray:
    # elementwise.cc GenericPrepare (int16 RSQRT): value <= 0 ? 32767 * output_scale
    # : 1.0f / std::sqrt(value). IEEE sqrt and division are correctly rounded, as numpy's are.
    positive = v > 0
    roots = _f32(1.0) / np.sqrt(np.where(positive, v, _f32(1.0)))
    return np.where(positive, roots, non_positive_value).astype(np.float32)


_TRANSFORMS = {"logistic": _sigmoid, "tanh": _tanh, "gelu_approximate": _gelu_approximate,
               "gelu": _gelu, "exp": _exp, "log": _log, "rsqrt": _rsqrt}


def _transform(kind: str, v: np.ndarray, param) -> np.ndarray:
    return _TRANSFORMS[kind](v) if param is None else _TRANSFORMS[kind](v, _f32(param))


@functools.lru_cache(maxsize=256)
def _float_lut(kind: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int,
               param: float | None = None) -> np.ndarray:
    """``detail::LUTPopulateInt8`` with float32 arithmetic throughout; entry ``q + 128``.
    ``param`` is the transform's extra float argument (LUTPopulate's ``transform_params``)."""
    q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)
    inverse_scale = _f32(1.0) / _f32(out_scale)
    dequantized = _f32(in_scale) * (q - in_zp).astype(np.float32)
    transformed = _transform(kind, dequantized, param)
    with np.errstate(over="ignore", invalid="ignore"):  # +-inf entries saturate below
        rescaled = round_half_away(transformed * inverse_scale)
        quantized = rescaled + _f32(out_zp)  # float + int32 -> float addition in the C++
    if np.isnan(quantized).any():
        raise ValueError(f"{kind} LUT: the transform gives NaN on the input range (the C++ cast is undefined)")
    # static_cast<int32_t> of a float beyond int32 is undefined; LiteRT 2.3.0's binary saturates it
    # (measured: EXP entries that overflow to +inf, or that pass 2^31 with output scale 1e-30, give 127;
    # LOG entries below -2^31 give -128), which clamping the float reproduces.
    return np.clip(quantized, INT8_MIN, INT8_MAX).astype(np.int64)


def _float_lut_kernel(kind: str, x, in_scale, in_zp, out_scale, out_zp, param=None):
    param = None if param is None else float(_f32(param))
    table = _float_lut(kind, float(_f32(in_scale)), int(in_zp), float(_f32(out_scale)), int(out_zp), param)
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


def exp_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 EXP (``exp.cc``, the only kernel): float32 LUT of ``expf(v)``."""
    return _float_lut_kernel("exp", x, in_scale, in_zp, out_scale, out_zp)


def _log_output_min(type_min: int, out_scale, out_zp) -> np.float32:
    # (numeric_limits<T>::min() - output_zero_point) * output_scale: int converted to float, float product
    return _f32(type_min - int(out_zp)) * _f32(out_scale)


def log_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 LOG (``LogLUTPrepare`` in elementwise.cc): float32 LUT of ``logf(v)``, with the
    dequantized int8 minimum of the output for ``v <= 0``."""
    output_min = _log_output_min(INT8_MIN, out_scale, out_zp)
    return _float_lut_kernel("log", x, in_scale, in_zp, out_scale, out_zp, output_min)


def sqrt_int8(x, in_scale, in_zp, out_scale, out_zp):
    """LiteRT int8 SQRT (``SqrtEvalQuantized<int8_t>`` in elementwise.cc), per element in float32:
    ``static_cast<int>(sqrtf(in_scale * (q - in_zp)) / out_scale) + out_zp``, clamped -- the
    quotient is truncated toward zero, not rounded. LiteRT fails the invocation when any
    ``q < in_zp`` ("Sqrt is only defined for non-negative values"); the port gives such inputs the
    output of ``q == in_zp`` (sqrt(0)) so that a TABLE can be filled."""
    scalar, q = _int8_input(x)
    dequantized = _f32(in_scale) * np.maximum(q - int(in_zp), 0).astype(np.float32)
    quotient = np.sqrt(dequantized) / _f32(out_scale)
    if not np.all(quotient < 2.0**31):
        raise ValueError(f"SQRT: sqrt(input) / output scale {out_scale} leaves int32 (the C++ cast is "
                         f"undefined)")
    out = np.trunc(quotient).astype(np.int64) + int(out_zp)
    return _int8_output(scalar, np.clip(out, INT8_MIN, INT8_MAX))


# ------------------------------------------------------------------------------ int16 LUTs


def int16_lut_lookup(x, lut: np.ndarray):
    """``LUTLookup(int16_t, const int16_t*)`` (internal/common.h): entry ``256 + (x >> 7)``, linear
    interpolation on the low 7 bits with the slope held in an int16 (wrapping) and rounded half up,
    ``(slope * offset + 64) >> 7``; the sum is cast to int16 (wrapping)."""
    scalar = is_scalar(x)
    v = int64("x", x)
    check_range("x", v, INT16_MIN, INT16_MAX)
    table = np.asarray(lut, dtype=np.int64)
    index = 256 + (v >> 7)
    offset = v & 0x7F
    base = table[index]
    slope = wrap(table[index + 1] - base, 16)
    out = wrap(base + ((slope * offset + 64) >> 7), 16)
    return int(out) if scalar else out.astype(np.int16)


def int16_lut_is_tosa_exact(lut: np.ndarray) -> bool:
    """True when TOSA's i16 TABLE (``(t[i] << 7) + (t[i+1] - t[i]) * frac`` in int32) followed by a
    rounding ``>> 7`` computes ``int16_lut_lookup`` for every int16 input: exactly when no slope
    ``t[i+1] - t[i]`` wraps in int16 (then ``base + delta`` lies between two entries and never wraps)."""
    slopes = np.diff(np.asarray(lut, dtype=np.int64))
    return bool(np.all((slopes >= INT16_MIN) & (slopes <= INT16_MAX)))


@functools.lru_cache(maxsize=256)
def _int16_lut(kind: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int,
               param: float | None = None) -> np.ndarray:
    """``detail::LUTPopulateInt16<float>`` (internal/common.h): 512 samples of the transform over the
    input's real range, each entry biased by half the interpolation error at the segment's midpoint,
    plus the value at the range's end; float32 arithmetic in the C++'s order throughout."""
    s_in, s_out = _f32(in_scale), _f32(out_scale)
    input_min = s_in * _f32(INT16_MIN - in_zp)
    input_max = s_in * _f32(INT16_MAX - in_zp)
    output_min = s_out * _f32(INT16_MIN - out_zp)
    output_max = s_out * _f32(INT16_MAX - out_zp)
    nb_steps = 512
    step = (input_max - input_min) / _f32(nb_steps)
    half_step = step / _f32(2)
    output_scaling_inv = _f32(INT16_MAX - INT16_MIN + 1) / (output_max - output_min)
    i = np.arange(nb_steps, dtype=np.float32)
    start = input_min + i * step
    val = _transform(kind, start, param)
    val_midpoint = _transform(kind, start + half_step, param)
    val_next = _transform(kind, input_min + (i + _f32(1)) * step, param)
    with np.errstate(invalid="ignore", over="ignore"):
        sample_val = round_half_away(val * output_scaling_inv)
        midpoint_interp_val = round_half_away((val_next * output_scaling_inv + sample_val) / _f32(2))
        midpoint_val = round_half_away(val_midpoint * output_scaling_inv)
        bias = round_half_away((midpoint_interp_val - midpoint_val) / _f32(2))
        entries = np.append(sample_val - bias,
                            round_half_away(_transform(kind, np.array([input_max]), param) * output_scaling_inv))
    # Where the transform overflows float32, the bias is inf - inf = NaN and std::min/std::max pass the
    # NaN through to static_cast<int16_t>, which is undefined; LiteRT 2.3.0's binary stores 0 there
    # (measured on int16 EXP: the entries past expf's overflow are 0, the last one, inf clamped, 32767).
    entries = np.where(np.isnan(entries), _f32(0), entries)
    return np.clip(entries, INT16_MIN, INT16_MAX).astype(np.int64)


def _int16_lut_of(kind: str, in_scale, in_zp, out_scale, out_zp, param=None) -> np.ndarray:
    param = None if param is None else float(_f32(param))
    return _int16_lut(kind, float(_f32(in_scale)), int(in_zp), float(_f32(out_scale)), int(out_zp), param).copy()


def exp_int16_lut(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """The 513 entries of LiteRT's int16 EXP LUT (``LUTPopulate<int16_t>`` of ``expf``)."""
    return _int16_lut_of("exp", in_scale, in_zp, out_scale, out_zp)


def log_int16_lut(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """The 513 entries of LiteRT's int16 LOG LUT (``LogLUTPrepare``: ``logf``, or the dequantized int16
    minimum of the output for ``v <= 0``)."""
    return _int16_lut_of("log", in_scale, in_zp, out_scale, out_zp, _log_output_min(INT16_MIN, out_scale, out_zp))


def rsqrt_int16_lut(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """The 513 entries of LiteRT's int16 RSQRT LUT (``1.0f / sqrtf(v)``, or ``32767 * out_scale`` for
    ``v <= 0``)."""
    return _int16_lut_of("rsqrt", in_scale, in_zp, out_scale, out_zp, _f32(INT16_MAX) * _f32(out_scale))


def gelu_int16_lut(in_scale, in_zp, out_scale, out_zp, approximate: bool) -> np.ndarray:
    """The 513 entries of LiteRT's int16 GELU LUT (``GeluPrepare``: ``LUTPopulate<int16_t>`` of
    ``GeluTransformApproximate`` or ``GeluTransform``)."""
    return _int16_lut_of("gelu_approximate" if approximate else "gelu", in_scale, in_zp, out_scale, out_zp)


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
    denominator = float(np.sqrt(s_in) * s_out)   # a float32 product, as in the C++
    if not 0.0 < denominator < np.inf:
        raise ValueError(f"RSQRT: sqrt(input scale) x output scale is {denominator} in float32, so its inverse "
                         f"is no multiplier (LiteRT's QuantizeMultiplier is undefined there)")
    m, shift = quantize_multiplier(1.0 / denominator)
    value = np.maximum(q - int(in_zp), 0)
    inv_sqrt, inv_sqrt_shift = get_inv_sqrt_quantized_multiplier_exp(value, -1)
    k_shift = 20  # kShift in elementwise.cc: keeps the intermediate an integer
    data = multiply_by_quantized_multiplier(1, inv_sqrt, np.asarray(inv_sqrt_shift) + k_shift)
    out = np.asarray(multiply_by_quantized_multiplier(data, m, shift - k_shift)) + int(out_zp)
    out = np.where(value == 0, INT8_MAX, np.clip(out, INT8_MIN, INT8_MAX))
    return _int8_output(scalar, out)


# ------------------------------------------------------------------------------ binary kernels


def squared_difference_int8(a, b, in1_scale, in1_zp, in2_scale, in2_zp, out_scale, out_zp):
    """LiteRT int8 SQUARED_DIFFERENCE (squared_difference.cc, the only kernel): both inputs
    ``(q - zp) << 7`` scaled by ``s_i / (2 max(s_1, s_2))``, the difference squared in int32 and
    scaled by ``(2 max)^2 / (2^14 s_out)``, each multiplier from ``QuantizeMultiplierSmallerThanOneExp``
    (Prepare aborts unless all three lie in (0, 1) after rounding), plus ``out_zp``, clamped."""
    scalar = is_scalar(a, b)
    q1, q2 = int64("a", a), int64("b", b)
    check_range("a", q1, INT8_MIN, INT8_MAX)
    check_range("b", q2, INT8_MIN, INT8_MAX)
    (m1, e1), (m2, e2), (mo, eo) = squared_difference_multipliers(in1_scale, in2_scale, out_scale)
    left_shift = 7
    scaled1 = multiply_by_quantized_multiplier_smaller_than_one_exp((q1 - int(in1_zp)) << left_shift, m1, e1)
    scaled2 = multiply_by_quantized_multiplier_smaller_than_one_exp((q2 - int(in2_zp)) << left_shift, m2, e2)
    raw_diff = np.asarray(scaled1) - np.asarray(scaled2)
    out = np.asarray(multiply_by_quantized_multiplier_smaller_than_one_exp(raw_diff * raw_diff, mo, eo))
    out = np.clip(out + int(out_zp), INT8_MIN, INT8_MAX)
    return int(out) if scalar else out.astype(np.int8)


def squared_difference_multipliers(in1_scale, in2_scale, out_scale) -> list[tuple[int, int]]:
    """SQUARED_DIFFERENCE Prepare: ``(multiplier, exponent <= 0)`` for input 1, input 2 and the
    output. ``2 * std::max(float, float)`` is float arithmetic widened to double; the rest is double."""
    s1, s2, so = _f32(in1_scale), _f32(in2_scale), _f32(out_scale)
    twice_max_input_scale = float(_f32(2) * max(s1, s2))
    reals = [float(s1) / twice_max_input_scale, float(s2) / twice_max_input_scale,
             twice_max_input_scale * twice_max_input_scale / float(_f32(1 << 14) * so)]
    return [_smaller_than_one_exp(real, what)
            for real, what in zip(reals, ("input 1", "input 2", "output"))]


def _smaller_than_one_exp(real: float, what: str) -> tuple[int, int]:
    # QuantizeMultiplierSmallerThanOneExp: TFLITE_CHECK 0 < real < 1, then TFLITE_CHECK_LE(shift, 0).
    if not 0.0 < real < 1.0:
        raise ValueError(f"{what} multiplier {real!r} is not in (0, 1): LiteRT aborts in Prepare")
    multiplier, exponent = quantize_multiplier(real)
    if exponent > 0:
        raise ValueError(f"{what} multiplier {real!r} rounds up to 1: LiteRT aborts in Prepare")
    return int(multiplier), int(exponent)


def count_leading_sign_bits32(x):
    """``CountLeadingSignBits<int32_t>`` as LiteRT's x86 binary computes it: GCC's
    ``__builtin_clrsb`` (the redundant sign bits; 31 for 0 and for -1). The non-GCC branch of
    common.h gives one less for negative powers of two; LiteRT's DIV matches ``clrsb`` (measured)."""
    v = int64("x", x)
    check_range("x", v, INT32_MIN, INT32_MAX)
    folded = np.where(v < 0, ~v, v)
    return np.asarray(count_leading_zeros32(folded), dtype=np.int64) - 1


def rounding_divide_by_pot_x86(x, exponent):
    """gemmlowp ``RoundingDivideByPOT(int32 x, int exponent)`` as LiteRT's x86 binary runs it, including
    exponents 32..63 that the reference DIV kernel reaches (gemmlowp only asserts ``exponent <= 31``):
    the mask ``(1ll << exponent) - 1`` truncates to -1 in int32 and ``x >> exponent`` shifts by
    ``exponent mod 32`` (the SAR instruction), so the result is ``(x >> (e - 32)) + (x >= 0)``.
    Measured against LiteRT 2.3.0's DIV on all 65536 int8 pairs over many scales."""
    scalar = is_scalar(x, exponent)
    v = int64("x", x)
    e = int64("exponent", exponent)
    check_range("x", v, INT32_MIN, INT32_MAX)
    check_range("exponent", e, 0, 63)
    mask = wrap(np.left_shift(np.int64(1), e) - 1, 32)
    threshold = (mask >> 1) + (v < 0)
    out = wrap((v >> (e & 31)) + ((v & mask) > threshold), 32)
    return int(out) if scalar else out


def div_multiplier(in1_scale, in2_scale, out_scale) -> tuple[int, int]:
    """DIV Prepare: ``QuantizeMultiplier(s_1 / (s_2 * s_out))`` with the quotient computed in float."""
    real = _f32(in1_scale) / (_f32(in2_scale) * _f32(out_scale))
    return tuple(int(v) for v in quantize_multiplier(float(real)))


def div_quantized(a, b, in1_scale, in1_zp, in2_scale, in2_zp, out_scale, out_zp, act_min, act_max):
    """LiteRT int8/int16 DIV (``reference_ops::DivElementwise`` / ``BroadcastDivSlowQuantized``):

        v1, v2   = a - zp_1, b - zp_2        (both negated when v2 < 0)
        inv, rs  = GetReciprocal(v2, 31)
        hr       = CountLeadingSignBits(v1)
        quotient = SaturatingRoundingDoublingHighMul(v1 << hr, inv)
        out      = clamp(zp_o + RoundingDivideByPOT(SRDHM(quotient, m), hr + rs - e))

    with ``(m, e) = div_multiplier(...)``. LiteRT fails the invocation when ``b == zp_2``; the port
    divides by 1 there. The exponent reaches 32..63 for small ``|v1|``: see
    ``rounding_divide_by_pot_x86``."""
    scalar = is_scalar(a, b)
    v1 = int64("a", a) - int(in1_zp)
    v2 = int64("b", b) - int(in2_zp)
    v1, v2 = np.broadcast_arrays(v1, v2)
    negative = v2 < 0
    v1 = np.where(negative, -v1, v1)
    v2 = np.maximum(np.where(negative, -v2, v2), 1)
    inverse, recip_shift = get_reciprocal(v2, 31)
    headroom = count_leading_sign_bits32(v1)
    quotient = saturating_rounding_doubling_high_mul(wrap(v1 << headroom, 32), inverse)
    multiplier, exponent = div_multiplier(in1_scale, in2_scale, out_scale)
    scaled = saturating_rounding_doubling_high_mul(quotient, multiplier)
    out = int(out_zp) + np.asarray(rounding_divide_by_pot_x86(scaled, headroom + np.asarray(recip_shift) - exponent))
    out = np.clip(out, act_min, act_max)
    return int(out) if scalar else out


# ------------------------------------------------------------------------------ LOG_SOFTMAX


def _saturating_multiply_by_pot_param(x, exponent):
    """TFLite ``SaturatingRoundingMultiplyByPOTParam`` for exponents >= 0: a saturating left shift."""
    v = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    threshold = np.left_shift(np.int64(1), 31 - e) - 1
    shifted = wrap(v << e, 32)
    shifted = np.where(v > threshold, INT32_MAX, np.where(v < -threshold, INT32_MIN, shifted))
    return np.where(e == 0, v, shifted)


def _fp_mul(a, b):
    # gemmlowp FixedPoint operator*: SaturatingRoundingDoublingHighMul of the raw values.
    return np.asarray(saturating_rounding_doubling_high_mul(a, b), dtype=np.int64)


def _fp_add(a, b):
    # gemmlowp FixedPoint operator+ / operator-: int32 additions that wrap.
    return wrap(np.asarray(a, dtype=np.int64) + b, 32)


def log_x_for_x_greater_than_or_equal_to_1(x, input_integer_bits: int, output_integer_bits: int):
    """TFLite ``log_x_for_x_greater_than_or_equal_to_1_impl<OutputIntegerBits, InputIntegerBits>``
    (internal/common.h): ``log(x)`` for a raw ``FixedPoint<int32, input_integer_bits>`` x >= 1, as a raw
    ``FixedPoint<int32, output_integer_bits>``: x is normalised two ways (by its headroom, and by the
    headroom of ``x * sqrt(1/2)``), the better-centred mantissa r goes through a rational approximation
    of ``log(r)`` around ``2^(-1/4)``, and the power of two adds ``z_pow_2_adj * log(2)``."""
    scalar = is_scalar(x)
    v = int64("x", x)
    check_range("x", v, 1, INT32_MAX)
    accum_bits = output_integer_bits + 1
    log_2, sqrt_sqrt_half, sqrt_half, one_quarter = 1488522236, 1805811301, 1518500250, 536870912
    alpha_n, alpha_d, alpha_i, alpha_f = 117049297, 127690142, 1057819769, 638450708
    shifted_quarter = np.asarray(rescale(one_quarter, 0, accum_bits), dtype=np.int64)

    z_a_headroom_plus_1 = np.asarray(count_leading_zeros32(v), dtype=np.int64)
    r_a_tmp = _saturating_multiply_by_pot_param(v, z_a_headroom_plus_1 - 1)
    r_a_raw = _saturating_multiply_by_pot_param(_fp_mul(r_a_tmp, sqrt_half), 1)
    z_a_pow_2_adj = np.clip(_saturating_multiply_by_pot_param(input_integer_bits - z_a_headroom_plus_1,
                                                              31 - accum_bits) + shifted_quarter,
                            INT32_MIN, INT32_MAX)
    z_b = _fp_mul(v, sqrt_half)
    z_b_headroom = np.asarray(count_leading_zeros32(z_b), dtype=np.int64) - 1
    r_b_raw = _saturating_multiply_by_pot_param(v, z_b_headroom)
    z_b_pow_2_adj = np.clip(_saturating_multiply_by_pot_param(input_integer_bits - z_b_headroom,
                                                              31 - accum_bits) - shifted_quarter,
                            INT32_MIN, INT32_MAX)
    r = np.minimum(r_a_raw, r_b_raw)
    z_pow_2_adj = np.maximum(z_a_pow_2_adj, z_b_pow_2_adj)

    p = np.asarray(rounding_half_sum(r, sqrt_sqrt_half), dtype=np.int64)
    q = _fp_add(r, -sqrt_sqrt_half)
    q = _fp_add(q, q)
    common_sq = _fp_mul(q, q)
    num = _fp_add(_fp_mul(q, r), _fp_mul(_fp_mul(q, common_sq), alpha_n))
    denom_minus_one_0 = _fp_add(_fp_mul(p, _fp_add(_fp_add(alpha_i, q), _fp_mul(alpha_d, common_sq))),
                                _fp_mul(alpha_f, q))
    recip_denom = np.asarray(one_over_one_plus_x_for_x_in_0_1(denom_minus_one_0), dtype=np.int64)
    num_scaled = np.asarray(rescale(num, 0, accum_bits), dtype=np.int64)
    total = _fp_add(_fp_mul(z_pow_2_adj, log_2), _fp_mul(num_scaled, recip_denom))
    return _result_of(scalar, rescale(total, accum_bits, output_integer_bits))


def _result_of(scalar: bool, value):
    return int(value) if scalar else np.asarray(value, dtype=np.int64)


class LogSoftmaxInt8Params(NamedTuple):
    input_multiplier: int
    input_left_shift: int
    reverse_scaling_divisor: int
    reverse_scaling_right_shift: int
    diff_min: int


LOG_SOFTMAX_INPUT_INTEGER_BITS = 5  # kScaledDiffIntegerBits / kInputIntegerBits: input differences in Q5.26
LOG_SOFTMAX_ACCUMULATION_INTEGER_BITS = 12  # the sum of exps is Q12.19
LOG_SOFTMAX_OUTPUT_INTEGER_BITS = 4  # the output is Q4.27 before the final shift


def log_softmax_int8_params(input_scale) -> LogSoftmaxInt8Params:
    """``LogSoftmaxPrepare<kReference>`` for int8 (activations.cc): ``PreprocessLogSoftmaxScalingExp(1.0,
    input_scale, 5)`` -- the input multiplier of softmax plus ``QuantizeMultiplierSmallerThanOneExp`` of
    its inverse ``2^(31 - left_shift) / multiplier`` -- and ``diff_min = -CalculateInputRadius(5, shift)``.
    Raises ValueError where LiteRT aborts (a TFLITE_CHECK in either quantization)."""
    s_in = float(_f32(input_scale))
    multiplier, left_shift = preprocess_softmax_scaling(1.0, s_in, LOG_SOFTMAX_INPUT_INTEGER_BITS)
    if not 1 <= left_shift <= 31:  # the multiplier is capped below 2^31, so this is what the C++ can meet
        raise ValueError(f"input scale {s_in}: left shift {left_shift} makes 1 << (31 - shift) undefined")
    real_reverse = float(1 << (31 - left_shift)) / float(multiplier)
    reverse_multiplier, reverse_exponent = _smaller_than_one_exp(real_reverse, "reverse scaling")
    diff_min = -calculate_input_radius(LOG_SOFTMAX_INPUT_INTEGER_BITS, left_shift)
    return LogSoftmaxInt8Params(int(multiplier), int(left_shift), reverse_multiplier, -reverse_exponent,
                                int(diff_min))


def log_softmax_terms(params: LogSoftmaxInt8Params) -> tuple[np.ndarray, np.ndarray]:
    """Per input difference ``diff = q - max(row)`` in [-255, 0] (entry ``diff + 255``): the difference
    in Q5.26, ``MultiplyByQuantizedMultiplier(diff, m, left_shift)``, and its term of the sum,
    ``Rescale<12>(exp_on_negative_values(diff_in_q5))``, 0 where ``diff < diff_min``."""
    diffs = np.arange(-255, 1, dtype=np.int64)
    used = diffs >= params.diff_min
    # MultiplyByQuantizedMultiplier with a left shift: SRDHM(diff * (1 << left_shift), m). The product is only
    # evaluated for used differences, where it fits int32 (left_shift reaches 31 only when diff_min is 0).
    shifted = wrap(np.where(used, diffs, 0) << params.input_left_shift, 32)
    in_q5 = np.where(used, _fp_mul(shifted, params.input_multiplier), INT32_MIN)
    exps = np.asarray(exp_on_negative_values(np.where(used, in_q5, 0), LOG_SOFTMAX_INPUT_INTEGER_BITS))
    terms = np.asarray(rescale(exps, 0, LOG_SOFTMAX_ACCUMULATION_INTEGER_BITS), dtype=np.int64)
    return in_q5, np.where(used, terms, 0)


def log_softmax_int8(x, params: LogSoftmaxInt8Params, axis: int = -1) -> np.ndarray:
    """``reference_integer_ops::LogSoftmax`` (internal/reference/integer_ops/log_softmax.h) on an
    int8-valued array along ``axis``; output scale 16/256, zero point 127. Per row: the sum of the exp
    terms (int32, wrapping), its log in Q5.26, ``adjusted_diff_min = max(diff_min - 1,
    MBQM(log_sum + INT32_MIN, reverse_divisor, -reverse_shift))``, then for ``diff > adjusted_diff_min``
    ``RoundingDivideByPOT(diff_in_q5 - log_sum, 22) + 127`` clamped, else -128."""
    q = int64("x", x)
    check_range("x", q, INT8_MIN, INT8_MAX)
    q = np.moveaxis(q, axis, -1)
    diff = q - q.max(axis=-1, keepdims=True)
    in_q5_table, term_table = log_softmax_terms(params)
    sum_of_exps = wrap(term_table[diff + 255].sum(axis=-1, keepdims=True), 32)
    log_sum = np.asarray(log_x_for_x_greater_than_or_equal_to_1(
        sum_of_exps, LOG_SOFTMAX_ACCUMULATION_INTEGER_BITS, LOG_SOFTMAX_INPUT_INTEGER_BITS), dtype=np.int64)
    adjusted_diff_min = np.maximum(params.diff_min - 1, np.asarray(multiply_by_quantized_multiplier(
        log_sum + INT32_MIN, params.reverse_scaling_divisor, -params.reverse_scaling_right_shift)))
    shift = 31 - LOG_SOFTMAX_INPUT_INTEGER_BITS - LOG_SOFTMAX_OUTPUT_INTEGER_BITS
    passed = diff > adjusted_diff_min
    delta = wrap(np.where(passed, in_q5_table[diff + 255], 0) - log_sum, 32)
    out = np.clip(np.asarray(rounding_divide_by_pot(delta, shift)) + 127, INT8_MIN, INT8_MAX)
    out = np.where(passed, out, INT8_MIN)
    return np.moveaxis(out, -1, axis).astype(np.int8)
