"""x86 AVX2 micro-kernels for generated CPU kernels, as Numba intrinsics emitting LLVM IR.

Numba types int16 * int16 as int64, and LLVM then keeps only a lone dot-product reduction in
`vpmaddwd`; any register blocking widens the products to i64 (measured: 10 GOPS blocked against 20-30
for one dot). The GEMM micro-kernel therefore states its block in IR: `rows` rows of int16 activations
by 16 output channels, as 2 * rows `<8 x i32>` accumulators. Each step takes one pair of K from every
row, broadcast to all lanes, and multiplies it with the weights packed as [N/16][K/2][16][2] int16,
so `vpmaddwd` adds both products of the pair per channel: no horizontal sums, no sign extension in
the loop, and any K (the packing pads K to even and N to a multiple of 16 with zeros). Measured
against a 2x4 block of dot products: 1.3x for K >= 96, 1.9-2.1x for K = 16 and 24. Exact: each pair
sum of int8 * int8 products fits int16 * int16 -> int32, and the int32 accumulators wrap as the TOSA
accumulator may not overflow. Only for targets with AVX2 (`CpuTarget.x86_avx2`).

Standalone (numpy, numba, llvmlite only): generated kernel modules embed this file's text, so that they
import nothing of tosaic and run as they are in a deploy bundle.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I16, _I32 = ir.IntType(16), ir.IntType(32)
_V16I16, _V8I32 = ir.VectorType(_I16, 16), ir.VectorType(_I32, 8)

BLOCK_N = 16


def _gemm_block(rows: int):
    @intrinsic
    def gemm_block(typingctx, a, a0, lda, w, w0, pairs, out, o0, ldo, bias, c):
        """out[o0 + i*ldo + j] = bias[c + j] + sum_k a[a0 + i*lda + k] * w(k, j) for i < rows, j < 16,
        k < 2 * pairs, where w(k, j) = w[w0 + 32 * (k // 2) + 2 * j + k % 2]. Offsets are in elements of
        the flat int16 `a` and `w` and int32 `out` and `bias`."""
        signature = types.void(a, a0, lda, w, w0, pairs, out, o0, ldo, bias, c)

        def codegen(context, builder, sig, args):
            def data(i, element):
                return builder.bitcast(context.make_array(sig.args[i])(context, builder, args[i]).data,
                                       element.as_pointer())

            def at(base, offset, vector):
                return builder.bitcast(builder.gep(base, [offset]), vector.as_pointer())

            a_data, w_data, out_data, bias_data = data(0, _I16), data(3, _I16), data(6, _I32), data(9, _I32)
            a0, lda, w0, pairs, o0, ldo, c = (args[i] for i in (1, 2, 4, 5, 7, 8, 10))
            index = pairs.type

            def const(value):
                return ir.Constant(index, value)

            pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8I32, [_V16I16, _V16I16]),
                                                   "llvm.x86.avx2.pmadd.wd")
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(_V8I32, None)) for _ in range(2)]
                    for _ in range(rows)]
            row_starts = [builder.add(a0, builder.mul(const(i), lda)) for i in range(rows)]
            with cgutils.for_range(builder, pairs) as loop:
                kp = loop.index
                w_step = builder.add(w0, builder.mul(kp, const(2 * BLOCK_N)))
                ws = [builder.load(at(w_data, builder.add(w_step, const(BLOCK_N * h)), _V16I16), align=2)
                      for h in range(2)]
                for i in range(rows):
                    pair = builder.load(at(a_data, builder.add(row_starts[i], builder.add(kp, kp)), _I32), align=2)
                    lanes = builder.insert_element(ir.Constant(_V8I32, None), pair, ir.Constant(_I32, 0))
                    lanes = builder.bitcast(builder.shuffle_vector(lanes, lanes, ir.Constant(_V8I32, [0] * 8)),
                                            _V16I16)
                    for h in range(2):
                        slot = accs[i][h]
                        builder.store(builder.add(builder.load(slot), builder.call(pmadd, [lanes, ws[h]])), slot)
            for h in range(2):
                bias8 = builder.load(at(bias_data, builder.add(c, const(8 * h)), _V8I32), align=4)
                for i in range(rows):
                    offset = builder.add(builder.add(o0, builder.mul(const(i), ldo)), const(8 * h))
                    builder.store(builder.add(builder.load(accs[i][h]), bias8), at(out_data, offset, _V8I32),
                                  align=4)
            return context.get_dummy_value()

        return signature, codegen

    return gemm_block


gemm_4x16 = _gemm_block(4)
gemm_1x16 = _gemm_block(1)
