"""x86 AVX2 micro-kernels for generated CPU kernels, as Numba intrinsics emitting LLVM IR.

Numba types int16 * int16 as int64, and LLVM then keeps only a lone dot-product reduction in
`vpmaddwd`; any register blocking widens the products to i64 (measured: 10 GOPS blocked against 20-30
for one dot). `dot_2x4` states the block in IR instead: two rows of int8 activations against four
rows of int8 weights, 16 bytes per step, eight `<8 x i32>` accumulators fed by `vpmaddwd`, summed at
the end. Exact: every pair sum of int8 * int8 products fits int16 * int16 -> int32, and the int32
accumulators wrap as the TOSA accumulator may not overflow. Only for targets with AVX2
(`target.host().x86_avx2`); K must be a multiple of 16.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
_V16I8, _V16I16, _V8I32 = ir.VectorType(_I8, 16), ir.VectorType(_I16, 16), ir.VectorType(_I32, 8)


@intrinsic
def dot_2x4(typingctx, a, a0, a1, w, w0, w1, w2, w3, k):
    """The eight int32 dot products of length `k` between the int8 vectors at element offsets a0, a1 of
    the flat array `a` and those at w0..w3 of `w`, row-major: (a0.w0, a0.w1, ..., a1.w3)."""
    signature = types.UniTuple(types.int32, 8)(a, a0, a1, w, w0, w1, w2, w3, k)

    def codegen(context, builder, sig, args):
        a_data = builder.bitcast(context.make_array(sig.args[0])(context, builder, args[0]).data, _I8.as_pointer())
        w_data = builder.bitcast(context.make_array(sig.args[3])(context, builder, args[3]).data, _I8.as_pointer())
        rows, cols, length = args[1:3], args[4:8], args[8]
        pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8I32, [_V16I16, _V16I16]),
                                               "llvm.x86.avx2.pmadd.wd")
        hsum = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_V8I32]),
                                              "llvm.vector.reduce.add.v8i32")
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V8I32, None)) for _ in range(8)]
        step = ir.Constant(length.type, 16)
        with cgutils.for_range_slice(builder, ir.Constant(length.type, 0), length, step) as (kk, _):
            def load(base, offset):
                pointer = builder.gep(base, [builder.add(offset, kk)])
                return builder.sext(builder.load(builder.bitcast(pointer, _V16I8.as_pointer()), align=1), _V16I16)

            xs = [load(a_data, r) for r in rows]
            ws = [load(w_data, c) for c in cols]
            for i, x in enumerate(xs):
                for j, y in enumerate(ws):
                    slot = accs[4 * i + j]
                    builder.store(builder.add(builder.load(slot), builder.call(pmadd, [x, y])), slot)
        sums = [builder.call(hsum, [builder.load(slot)]) for slot in accs]
        return context.make_tuple(builder, sig.return_type, sums)

    return signature, codegen
