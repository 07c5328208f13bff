"""x86 GEMM micro-kernels for generated CPU kernels, as Numba intrinsics emitting LLVM IR.

Numba types int16 * int16 as int64, and LLVM then keeps only a lone dot-product reduction in
`vpmaddwd`; any register blocking widens the products to i64 (measured: 10 GOPS blocked against 20-30
for one dot). The micro-kernels therefore state their block in IR: `rows` rows of activations by 16
output channels, each row's 16 int32 accumulators in one or two vectors. Each step takes one group of
K from every row (2 int16 for AVX2, 4 uint8 for VNNI: one 32-bit lane), broadcast to all lanes, and
multiplies it with the weights packed as [N/16][K/group][16][group], so one instruction adds the
group's products per channel: no horizontal sums, no sign extension in the loop, and any K (the packing
pads K to the group and N to a multiple of 16 with zeros).

- AVX2 `vpmaddwd` on int16-widened operands, two 8-lane vectors per row (measured against a 2x4 block
  of dot products: 1.3x for K >= 96, 1.9-2.1x for K = 16 and 24).
- AVX-512 VNNI `vpdpbusd` on 512-bit vectors, one per row; AVX-VNNI `vpdpbusd` on 256-bit ones, two
  per row. `vpdpbusd` multiplies unsigned by signed bytes, so activations are stored plus 128 (uint8)
  and the kernels' bias carries -128 * sum(w) (REFERENCE.md section 4).

Exact: each group sum of int8 * int8 (or uint8 * int8) products fits in int32, and the int32
accumulators wrap as the TOSA accumulator may not overflow.

`table_lookup_avx512vbmi` is the TABLE gather of an int8 TABLE over 64 values at once: LLVM vectorizes no
gather on x86, and AVX-512 VBMI's `vpermi2b` looks up 64 bytes in a 128-byte table in one instruction.

Standalone (numpy, numba, llvmlite only): generated kernel modules embed this file's text, so that they
import nothing of tosaic and run as they are in a deploy bundle.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

BLOCK_N = 16
_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)

# Per instruction set: int32 lanes per vector, the packed element, K elements per lane, the LLVM
# intrinsic and whether it accumulates into its first operand (vpdpbusd) or returns products (vpmaddwd).
ISAS = {
    "avx2": (8, _I16, 2, "llvm.x86.avx2.pmadd.wd", False),
    "avx512vnni": (16, _I8, 4, "llvm.x86.avx512.vpdpbusd.512", True),
    "avxvnni": (8, _I8, 4, "llvm.x86.avx512.vpdpbusd.256", True),
}


def _gemm_block(isa: str, rows: int):
    lanes, element, group, name, accumulates = ISAS[isa]
    acc_t = ir.VectorType(_I32, lanes)
    operand_t = acc_t if accumulates else ir.VectorType(element, lanes * group)
    halves = BLOCK_N // lanes

    @intrinsic
    def gemm_block(typingctx, a, a0, lda, w, w0, groups, out, o0, ldo, bias, c):
        """out[o0 + i*ldo + j] = bias[c + j] + sum_k a[a0 + i*lda + k] * w(k, j) for i < rows, j < 16,
        k < group * groups, where w(k, j) = w[w0 + 16 * group * (k // group) + group * j + k % group].
        `a`, `w`, `out` and `bias` are C-contiguous arrays of any rank (only their data pointers are read,
        so the kernels need no reshape, which Numba compiles anew in each process); offsets count the
        elements of their flattened form."""
        if any(not isinstance(x, types.Array) or x.layout != "C" for x in (a, w, out, bias)):
            return None
        signature = types.void(a, a0, lda, w, w0, groups, out, o0, ldo, bias, c)

        def codegen(context, builder, sig, args):
            def data(i, elem):
                return builder.bitcast(context.make_array(sig.args[i])(context, builder, args[i]).data,
                                       elem.as_pointer())

            def at(base, offset, vector):
                return builder.bitcast(builder.gep(base, [offset]), vector.as_pointer())

            a_data, w_data, out_data, bias_data = data(0, element), data(3, element), data(6, _I32), data(9, _I32)
            a0, lda, w0, groups, o0, ldo, c = (args[i] for i in (1, 2, 4, 5, 7, 8, 10))
            index = groups.type

            def const(value):
                return ir.Constant(index, value)

            fn_type = ir.FunctionType(acc_t, [acc_t, operand_t, operand_t] if accumulates else [operand_t, operand_t])
            multiply = cgutils.get_or_insert_function(builder.module, fn_type, name)
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(acc_t, None)) for _ in range(halves)]
                    for _ in range(rows)]
            row_starts = [builder.add(a0, builder.mul(const(i), lda)) for i in range(rows)]
            with cgutils.for_range(builder, groups) as loop:
                kg = loop.index
                w_step = builder.add(w0, builder.mul(kg, const(group * BLOCK_N)))
                ws = [builder.load(at(w_data, builder.add(w_step, const(group * lanes * h)), operand_t), align=1)
                      for h in range(halves)]
                for i in range(rows):
                    lane = builder.load(at(a_data, builder.add(row_starts[i], builder.mul(kg, const(group))), _I32),
                                        align=1)
                    broadcast = builder.insert_element(ir.Constant(acc_t, None), lane, ir.Constant(_I32, 0))
                    broadcast = builder.shuffle_vector(broadcast, broadcast, ir.Constant(acc_t, [0] * lanes))
                    broadcast = builder.bitcast(broadcast, operand_t)
                    for h in range(halves):
                        slot = accs[i][h]
                        if accumulates:
                            builder.store(builder.call(multiply, [builder.load(slot), broadcast, ws[h]]), slot)
                        else:
                            builder.store(builder.add(builder.load(slot), builder.call(multiply, [broadcast, ws[h]])),
                                          slot)
            for h in range(halves):
                bias_h = builder.load(at(bias_data, builder.add(c, const(lanes * h)), acc_t), align=4)
                for i in range(rows):
                    offset = builder.add(builder.add(o0, builder.mul(const(i), ldo)), const(lanes * h))
                    builder.store(builder.add(builder.load(accs[i][h]), bias_h), at(out_data, offset, acc_t), align=4)
            return context.get_dummy_value()

        return signature, codegen

    return gemm_block


gemm_avx2_4x16 = _gemm_block("avx2", 4)
gemm_avx2_1x16 = _gemm_block("avx2", 1)
gemm_avx512vnni_8x16 = _gemm_block("avx512vnni", 8)
gemm_avx512vnni_1x16 = _gemm_block("avx512vnni", 1)
gemm_avxvnni_4x16 = _gemm_block("avxvnni", 4)
gemm_avxvnni_1x16 = _gemm_block("avxvnni", 1)


@intrinsic
def table_lookup_avx512vbmi(typingctx, values, offset, count, table):
    """values[offset + i] = table[values[offset + i] + 128] for i < count, in place: a C-contiguous int8
    array `values` of any rank (offsets count its elements as flattened), a 256-entry int8 `table` indexed
    by value + 128. `vpermi2b` selects by an index's low 7 bits from two 64-byte registers, and value + 128
    differs from the value only in bit 7: the low half of the table serves the negative values and the high
    half the others. The table's four registers load once per call, and the last block of fewer than 64
    values loads and stores under a mask (AVX-512BW byte masking): a call per 64 values reloaded the table
    each time, and a scalar loop over each row's tail (32 gathers after each row of 96 channels) took half
    of EfficientNet-B0's 112x112x96 SiLU GEMM."""
    if not isinstance(values, types.Array) or values.layout != "C":
        return None
    signature = types.void(values, offset, count, table)
    vector = ir.VectorType(_I8, 64)
    mask_t = ir.VectorType(ir.IntType(1), 64)

    def codegen(context, builder, sig, args):
        def data(i):
            return context.make_array(sig.args[i])(context, builder, args[i]).data

        def at(base, index):
            return builder.bitcast(builder.gep(base, [index]), vector.as_pointer())

        module = builder.module
        permute = cgutils.get_or_insert_function(module, ir.FunctionType(vector, [vector] * 3),
                                                 "llvm.x86.avx512.vpermi2var.qi.512")
        pointer_t = vector.as_pointer()
        masked_load = cgutils.get_or_insert_function(
            module, ir.FunctionType(vector, [pointer_t, _I32, mask_t, vector]), "llvm.masked.load.v64i8.p0")
        masked_store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [vector, pointer_t, _I32, mask_t]), "llvm.masked.store.v64i8.p0")
        values_data, table_data = data(0), data(3)
        offset, count = args[1], args[2]
        index_t = count.type
        quarters = [builder.load(at(table_data, ir.Constant(index_t, 64 * q)), align=1) for q in range(4)]
        lanes = ir.Constant(vector, list(range(64)))
        full = ir.Constant(index_t, 64)
        one = ir.Constant(_I32, 1)
        with cgutils.for_range_slice(builder, ir.Constant(index_t, 0), count, full, index_t) as (done, _):
            # Lanes below min(count - done, 64) are live: one byte compare.
            remaining = builder.sub(count, done)
            remaining = builder.trunc(builder.select(builder.icmp_signed("<", remaining, full), remaining, full), _I8)
            limit = builder.insert_element(ir.Constant(vector, None), remaining, ir.Constant(_I32, 0))
            limit = builder.shuffle_vector(limit, limit, ir.Constant(ir.VectorType(_I32, 64), [0] * 64))
            mask = builder.icmp_unsigned("<", lanes, limit)
            where = at(values_data, builder.add(offset, done))
            x = builder.call(masked_load, [where, one, mask, ir.Constant(vector, None)])
            low = builder.call(permute, [quarters[0], x, quarters[1]])
            high = builder.call(permute, [quarters[2], x, quarters[3]])
            nonnegative = builder.icmp_signed(">=", x, ir.Constant(vector, None))
            builder.call(masked_store, [builder.select(nonnegative, high, low), where, one, mask])
        return context.get_dummy_value()

    return signature, codegen
