"""Binary elementwise ops on int8 and int16: ADD, SUB, MUL, MAXIMUM, MINIMUM, PRELU.

TOSA's ADD, SUB, MUL, MAXIMUM, MINIMUM, GREATER_EQUAL compute on i32, so int8/int16 operands are widened to
i32 first and the result RESCALEd back. TOSA broadcasting needs equal ranks: TFLite aligns shapes at their
trailing dimensions (numpy rules), so the operand of lower rank is reshaped with leading 1s.

int16 (zero points 0, as LiteRT requires): ADD and SUB have two kernels. The general one is the int8
arithmetic with a left shift of 15 instead of 20. The power-of-two one (kernels/add.cc, sub.cc:
`pot_scale_int16`, which the schema defaults to true, and every scale a power of two by CheckedLog2's float
test) shifts one input right with gemmlowp's RoundingDivideByPOT (half away from zero) and adds or subtracts
with saturation.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import check_same_type, clamp_to_activation
from tosaic.importers.tflite.fixed_point import (
    STORAGE,
    checked_log2,
    from_i32,
    per_tensor,
    product_range,
    quantized_multiplier_smaller_than_one,
    quantized_range,
    requantize,
    rescale_exact,
    rounding_divide_by_pot,
    tensor_range,
    to_i32,
)
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value

# ADD/SUB: inputs are shifted left by 20 bits (int8) or 15 bits (int16) before their multipliers (kernels add.cc
# and sub.cc).
LEFT_SHIFT = {"int8": 20, "int16": 15}


def _operands(ctx):
    """The op's two input tensors and TOSA values, the lower-rank value reshaped to the higher rank."""
    a, b = ctx.input(0), ctx.input(1)
    check_same_type(ctx, (a, b))
    x, y = ctx.value(a), ctx.value(b)
    rank = max(x.type.rank, y.type.rank)
    return a, b, _with_rank(ctx, x, rank), _with_rank(ctx, y, rank)


def _with_rank(ctx, x: Value, rank: int) -> Value:
    return ctx.builder.reshape(x, (1,) * (rank - x.type.rank) + x.type.shape)


def _add_or_sub(ctx, op, tosa_op: str):
    """reference_integer_ops::AddFunc and reference_ops::SubElementwise / BroadcastQuantSubSlow (and their int16
    instances, AddElementwise / BroadcastAdd6DSlow<int16_t>):

        shifted_i = (q_i - zp_i) << left_shift            (20 for int8, 15 for int16)
        scaled_i  = MultiplyByQuantizedMultiplierSmallerThanOneExp(shifted_i, m_i, e_i)
        out       = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(scaled_1 -+ scaled_2, m_o, e_o) + zp_o)

    with m_i from `s_i / (2 max(s_1, s_2))` and m_o from `2 max(s_1, s_2) / (2^left_shift s_o)`, all in double
    as in Prepare. The left shift is its own exact step (a RESCALE by 2^20 for int8, a MUL by 2^15 for int16):
    folding it into the input multiplier would move the first rounding of the double-rounding multiply and
    change results (TF PR #59859).
    """
    a, b, x, y = _operands(ctx)
    out = ctx.output()
    kind = _check_same_type(ctx, a, b, out)
    (s1, zp1), (s2, zp2), (so, zpo) = per_tensor(ctx, a), per_tensor(ctx, b), per_tensor(ctx, out)
    name = op.opcode
    if kind == "int16":
        if zp1 or zp2 or zpo:
            raise ctx.error(f"int16 {name} needs zero points 0 (LiteRT rejects the model)")
        if _int16_pot_scales(ctx, op, s1, s2, so) is not None:
            _add_or_sub_pot(ctx, op, x, y, s1, s2, so, a.shape != b.shape)
            return
    left_shift = LEFT_SHIFT[kind]
    twice_max_input_scale = 2 * max(s1, s2)
    # SUB's Prepare takes QuantizeMultiplierGreaterThanOne for an output multiplier above 1 but its kernel still
    # calls MultiplyByQuantizedMultiplierSmallerThanOneExp, i.e. RoundingDivideByPOT with a negative exponent
    # (undefined behaviour); ADD's Prepare aborts. Both are refused by the smaller-than-one check.
    # `(1 << left_shift) * output scale` is an int times a float in C++: a float32 product, which overflows to
    # infinity for a huge scale (then the multiplier is 0 and Prepare aborts; so does this check).
    with np.errstate(over="ignore"):
        denominator = float(np.float32(1 << left_shift) * np.float32(so))
    m_out, shift_out = quantized_multiplier_smaller_than_one(
        ctx, twice_max_input_scale / denominator, f"{name} output multiplier")
    scaled = []
    bound = 0
    for value, tensor, scale, zp, which in ((x, a, s1, zp1, "input 1"), (y, b, s2, zp2, "input 2")):
        m, shift = quantized_multiplier_smaller_than_one(ctx, scale / twice_max_input_scale, f"{name} {which}")
        low, high = quantized_range(kind, zp)
        if kind == "int8":
            shifted = rescale_exact(ctx, value, 1 << 30, 30 - left_shift, (low, high), zp, 0, "i32",
                                    f"{name} {which} << {left_shift}")
        else:
            shifted = ctx.builder.mul_shift(to_i32(ctx, value), _i32_constant(ctx, 1 << left_shift, value.type.rank))
        scaled.append(rescale_exact(ctx, shifted, m, shift, (low << left_shift, high << left_shift), 0, 0, "i32",
                                    f"{name} {which} multiplier"))
        bound += max(-low, high) << left_shift
    # A multiplier below 1 never grows a value, so the sum or difference stays within the sum of the bounds.
    raw = ctx.builder.op(tosa_op, scaled)
    result = rescale_exact(ctx, raw, m_out, shift_out, (-bound, bound), 0, zpo, STORAGE[kind],
                           f"{name} output multiplier")
    ctx.set_output(clamp_to_activation(ctx, result, out, op.options.get("fused_activation_function", 0)))


def _i32_constant(ctx, value: int, rank: int) -> Value:
    return ctx.builder.const(np.full((1,) * rank, value), "i32")


def _check_same_type(ctx, *tensors) -> str:
    """The common type of the op's quantized operands and output: 'int8' or 'int16'."""
    kind = tensors[0].dtype
    if kind not in ("int8", "int16") or any(t.dtype != kind for t in tensors):
        raise ctx.error(f"{ctx.op.opcode} needs int8 or int16 operands and output of one type, got "
                        f"{', '.join(t.describe() for t in tensors)}")
    return kind


def _int16_pot_scales(ctx, op, s1: float, s2: float, so: float):
    """The power-of-two path's (input1_shift, input2_shift) when LiteRT takes it, else None: option
    pot_scale_int16 and all three scales powers of two by CheckedLog2. The schema defaults the option to true
    when AddOptions/SubOptions exist; without the options table LiteRT's zero-initialized params say false."""
    if not op.options.get("pot_scale_int16", False):
        return None
    logs = [checked_log2(s) for s in (s1, s2, so)]
    if any(log is None for log in logs):
        return None
    shifts = (logs[0] - logs[2], logs[1] - logs[2])
    # Prepare: one input must match the output's scale and neither may need a left shift.
    if not (shifts[0] == 0 or shifts[1] == 0) or shifts[0] > 0 or shifts[1] > 0:
        raise ctx.error(f"int16 {op.opcode} with power-of-two scales needs one input at the output's scale and "
                        f"the other at a smaller one (input shifts {shifts}; LiteRT rejects the model)")
    return shifts


def _add_or_sub_pot(ctx, op, x, y, s1, s2, so, broadcast: bool):
    """reference_ops::Add (int16, pot_scale) / Sub16 / BroadcastSub16POTSlow: the input whose scale is finer
    than the output's is divided by 2^k with RoundingDivideByPOT, then a saturating int16 add or subtract and the
    activation clamp. ADD's power-of-two kernel has no broadcasting (LiteRT aborts on unequal sizes)."""
    shifts = _int16_pot_scales(ctx, op, s1, s2, so)
    if broadcast and op.opcode == "ADD":
        raise ctx.error("int16 ADD with power-of-two scales cannot broadcast (LiteRT's kernel checks equal sizes "
                        "and aborts)")
    b = ctx.builder
    terms = [rounding_divide_by_pot(ctx, to_i32(ctx, v), -shift) for v, shift in ((x, shifts[0]), (y, shifts[1]))]
    raw = b.op("tosa.add" if op.opcode == "ADD" else "tosa.sub", terms)
    result = from_i32(ctx, raw, (-65536, 65535), 0, "int16")
    ctx.set_output(clamp_to_activation(ctx, result, ctx.output(), op.options.get("fused_activation_function", 0)))


@legalize("ADD", types=("int8", "int16"))
def add(ctx, op):
    """reference_integer_ops::Add / BroadcastAdd6DSlow (kernels/add.cc: int8, int16 general and
    power-of-two paths)."""
    _add_or_sub(ctx, op, "tosa.add")


@legalize("SUB", types=("int8", "int16"))
def sub(ctx, op):
    """reference_ops::Sub / BroadcastQuantSubSlow (kernels/sub.cc: int8, int16 general and power-of-two
    paths)."""
    _add_or_sub(ctx, op, "tosa.sub")


@legalize("MUL", types=("int8", "int16"))
def mul(ctx, op):
    """reference_integer_ops::MulElementwise / BroadcastMul6DSlow (kernels/mul.cc, int8 and int16):

        out = clamp(zp_o + MultiplyByQuantizedMultiplier((q_1 - zp_1) * (q_2 - zp_2), m, e))

    with (m, e) = QuantizeMultiplier(s_1 * s_2 / s_o), where Prepare evaluates `s_1 * s_2 / s_o` in float32
    (the tensors' float scales) and widens only the result to double. int16 needs zero points 0 (Eval fails
    otherwise); its product of two int16 values still fits int32.
    """
    a, b, x, y = _operands(ctx)
    out = ctx.output()
    kind = _check_same_type(ctx, a, b, out)
    (s1, zp1), (s2, zp2), (so, zpo) = per_tensor(ctx, a), per_tensor(ctx, b), per_tensor(ctx, out)
    if kind == "int16" and (zp1 or zp2 or zpo):
        raise ctx.error("int16 MUL needs zero points 0 (LiteRT fails the invocation)")
    real = float(np.float32(np.float32(s1) * np.float32(s2)) / np.float32(so))
    product = ctx.builder.mul_shift(to_i32(ctx, x, zp1), to_i32(ctx, y, zp2), 0)
    result = requantize(ctx, product, real, product_range(tensor_range(ctx, a), tensor_range(ctx, b)), 0, zpo,
                        STORAGE[kind], "MUL output multiplier")
    ctx.set_output(clamp_to_activation(ctx, result, out, op.options.get("fused_activation_function", 0)))


def _maximum_or_minimum(ctx, tosa_op: str):
    """reference_ops::MaximumMinimumBroadcastSlow on int8 or int16: `el1 > el2 ? el1 : el2` (or `<`) on the raw stored
    values. The kernel never reads scales or zero points (the converter gives all three tensors the same ones),
    so neither does this: the raw values are widened to i32 (TOSA MAXIMUM/MINIMUM are i32-only), compared,
    and narrowed back, all exactly."""
    _, _, x, y = _operands(ctx)
    b = ctx.builder
    result = b.op(tosa_op, [b.cast(x, "i32"), b.cast(y, "i32")])
    ctx.set_output(b.cast(result, x.type.dtype))


@legalize("MAXIMUM", types=("int8", "int16"))
def maximum(ctx, op):
    """MAXIMUM (kernels/maximum_minimum.cc, reference kernel)."""
    _maximum_or_minimum(ctx, "tosa.maximum")


@legalize("MINIMUM", types=("int8", "int16"))
def minimum(ctx, op):
    """MINIMUM (kernels/maximum_minimum.cc, reference kernel)."""
    _maximum_or_minimum(ctx, "tosa.minimum")


@legalize("PRELU", types=("int8", "int16"))
def prelu(ctx, op):
    """reference_ops::Prelu / BroadcastPrelu4DSlow (kernels/activations.cc PreluPrepare/PreluEval):

        v   = q - zp_in
        out = clamp(zp_o + (v >= 0 ? MBQM(v, m_1, e_1) : MBQM(v * (alpha - zp_alpha), m_2, e_2)))

    with m_1 from `s_in / s_o` and m_2 from `s_in * s_alpha / s_o`, each evaluated in float32. Both branches are
    computed for every element (each RESCALE is exact on all values it can see) and SELECT picks one. For int16
    input the kernel reads alpha as int8 (whatever its type); LiteRT does not require zero points 0 here.
    """
    x_tensor, alpha_tensor = ctx.input(0), ctx.input(1)
    out = ctx.output()
    kind = x_tensor.dtype
    if kind not in ("int8", "int16") or out.dtype != kind or alpha_tensor.dtype != "int8":
        raise ctx.error(f"PRELU needs an int8 or int16 input and output and an int8 alpha, got "
                        f"{x_tensor.describe()}, {alpha_tensor.describe()}, {out.describe()}")
    (s_in, zp_in), (s_alpha, zp_alpha), (so, zpo) = (per_tensor(ctx, x_tensor), per_tensor(ctx, alpha_tensor),
                                                    per_tensor(ctx, out))
    x = ctx.value(x_tensor)
    if x.type.shape != out.shape:
        raise ctx.error(f"input {x_tensor.describe()} and output {out.describe()} differ in shape")
    alpha = _with_rank(ctx, ctx.value(alpha_tensor), x.type.rank)
    b = ctx.builder
    value = to_i32(ctx, x, zp_in)
    value_range = quantized_range(kind, zp_in)
    real_1 = float(np.float32(s_in) / np.float32(so))
    real_2 = float(np.float32(np.float32(s_in) * np.float32(s_alpha)) / np.float32(so))
    identity = requantize(ctx, value, real_1, value_range, 0, zpo, STORAGE[kind], "PRELU multiplier 1")
    product = b.mul_shift(value, to_i32(ctx, alpha, zp_alpha), 0)
    scaled = requantize(ctx, product, real_2, product_range(value_range, quantized_range("int8", zp_alpha)), 0,
                        zpo, STORAGE[kind], "PRELU multiplier 2")
    non_negative = b.op("tosa.greater_equal", [value, b.const(np.zeros((1,) * x.type.rank), "i32")])
    ctx.set_output(b.op("tosa.select", [non_negative, identity, scaled]))
