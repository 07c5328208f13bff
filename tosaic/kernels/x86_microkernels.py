"""x86 micro-kernels for generated CPU kernels, as Numba intrinsics emitting LLVM IR: the GEMM blocks, the
AVX-512 row kernels, the TABLE gather.

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

The AVX-512 row kernels (AVX-512BW byte masks for a row's last block) replace loops that LLVM vectorized
but guarded: not knowing that a kernel's arrays do not overlap, it compared their address ranges before
each inner loop, once per pixel or row, which at a few dozen channels cost as much as the loop's work.
`depthwise_avx512_*` and `depthwise_border_avx512_*` sum a depthwise layer's taps for a row of pixels and
for one border pixel; `requantize_rows_avx512` and its saturating form are the float64 requantization of
int32 rows into int8 (kernels/requant.py); `offset_rows_avx512` and `patch_rows_avx512` copy activations
and im2col patches in the form `vpdpbusd` reads.

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
    # One row has one or two accumulators, each a chain of dependent multiply-adds as long as K, whose
    # latency (not throughput) then bounds it: it keeps four chains over alternate groups of K and adds
    # them at the end (MobileNetV2's 1280 -> 1000 classifier, one row: 45 us in one chain).
    chains = 4 if rows == 1 else 1
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
            accs = [[[cgutils.alloca_once_value(builder, ir.Constant(acc_t, None)) for _ in range(halves)]
                     for _ in range(rows)] for _ in range(chains)]
            row_starts = [builder.add(a0, builder.mul(const(i), lda)) for i in range(rows)]

            def step(kg, chain):
                """Group kg of K into the accumulators of `chain`."""
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
                        slot = accs[chain][i][h]
                        if accumulates:
                            builder.store(builder.call(multiply, [builder.load(slot), broadcast, ws[h]]), slot)
                        else:
                            builder.store(builder.add(builder.load(slot), builder.call(multiply, [broadcast, ws[h]])),
                                          slot)

            whole = builder.mul(builder.sdiv(groups, const(chains)), const(chains))
            with cgutils.for_range_slice(builder, const(0), whole, const(chains), index) as (kg, _):
                for chain in range(chains):
                    step(builder.add(kg, const(chain)), chain)
            with cgutils.for_range_slice(builder, whole, groups, const(1), index) as (kg, _):
                step(kg, 0)
            for h in range(halves):
                bias_h = builder.load(at(bias_data, builder.add(c, const(lanes * h)), acc_t), align=4)
                for i in range(rows):
                    total = bias_h
                    for chain in range(chains):
                        total = builder.add(total, builder.load(accs[chain][i][h]))
                    offset = builder.add(builder.add(o0, builder.mul(const(i), ldo)), const(lanes * h))
                    builder.store(total, at(out_data, offset, acc_t), align=4)
            return context.get_dummy_value()

        return signature, codegen

    return gemm_block


gemm_avx2_4x16 = _gemm_block("avx2", 4)
gemm_avx2_1x16 = _gemm_block("avx2", 1)
gemm_avx512vnni_8x16 = _gemm_block("avx512vnni", 8)
gemm_avx512vnni_1x16 = _gemm_block("avx512vnni", 1)
gemm_avxvnni_4x16 = _gemm_block("avxvnni", 4)
gemm_avxvnni_1x16 = _gemm_block("avxvnni", 1)


def _splat(builder, value, vector_t):
    """`value` in every lane of a `vector_t`."""
    v = builder.insert_element(ir.Constant(vector_t, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vector_t.count), [0] * vector_t.count))


def _in_blocks(builder, count, lanes: int, block):
    """`block(start, mask)` over `count` (an i64) elements `lanes` at a time: whole blocks with mask None,
    then the rest, if any, under the mask of its lanes."""
    i64 = ir.IntType(64)
    full = builder.sub(count, builder.srem(count, ir.Constant(i64, lanes)))
    with cgutils.for_range_slice(builder, ir.Constant(i64, 0), full, ir.Constant(i64, lanes), i64) as (start, _):
        block(start, None)
    with builder.if_then(builder.icmp_signed("<", full, count)):
        remaining = _splat(builder, builder.trunc(builder.sub(count, full), _I32), ir.VectorType(_I32, lanes))
        block(full, builder.icmp_unsigned("<", ir.Constant(ir.VectorType(_I32, lanes), list(range(lanes))), remaining))


_BYTES64, _MASK64 = ir.VectorType(_I8, 64), ir.VectorType(ir.IntType(1), 64)


def _masked_bytes64(module):
    """LLVM's masked load and masked store of 64 bytes (AVX-512BW: one instruction each)."""
    pointer_t = _BYTES64.as_pointer()
    load = cgutils.get_or_insert_function(
        module, ir.FunctionType(_BYTES64, [pointer_t, _I32, _MASK64, _BYTES64]), "llvm.masked.load.v64i8.p0")
    store = cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.VoidType(), [_BYTES64, pointer_t, _I32, _MASK64]), "llvm.masked.store.v64i8.p0")
    return load, store


def _below64(builder, limit):
    """The mask of the 64 byte lanes below `limit` (an i64), from a 64-bit integer: 2^limit - 1, none below
    1, all from 64."""
    i64 = ir.IntType(64)
    bits = builder.sub(builder.shl(ir.Constant(i64, 1), limit), ir.Constant(i64, 1))
    bits = builder.select(builder.icmp_signed(">=", limit, ir.Constant(i64, 64)), ir.Constant(i64, -1), bits)
    bits = builder.select(builder.icmp_signed("<", limit, ir.Constant(i64, 1)), ir.Constant(i64, 0), bits)
    return builder.bitcast(bits, _MASK64)


def _store(builder, value, where, mask, masked_store, align: int):
    """Store `value` at `where`, under `mask` unless it is None."""
    if mask is None:
        builder.store(value, where, align=align)
    else:
        builder.call(masked_store, [value, where, ir.Constant(_I32, 1), mask])


def _depthwise_rows(taps: int, border: bool):
    """The depthwise sum over `taps` taps; `border`: only the taps whose bit is set in `valid` read `x`, the
    others read `fill` (the zero point, whose products the folded bias expects), through the load's mask:
    a pixel at the input's border, one call each."""
    lanes = 16
    bytes_t, acc_t, mask_t = ir.VectorType(_I8, lanes), ir.VectorType(_I32, lanes), ir.VectorType(ir.IntType(1), lanes)

    @intrinsic
    def depthwise_rows(typingctx, acc, a0, x, x0, step, offsets, w, bias, count, channels, valid, fill):
        """acc[a0 + i*channels + c] = bias[c] + sum_t x[x0 + i*step + offsets[t] + c] * w[t*channels + c] for
        i < count, c < channels and the `taps` taps t: int8 `x` and `w`, int32 `acc` and `bias`, int64
        `offsets`, all C-contiguous of any rank (offsets count elements of the flattened arrays). Channels go
        16 to a 512-bit vector, the last block under a mask (AVX-512BW); per block the taps' weights are
        widened once and stay in registers while the loop runs over the `count` pixels. Written as IR
        because LLVM's vectorizer, not knowing that the arrays do not overlap, checked the 19 address
        ranges pairwise before each pixel's loop over channels: at 32 channels that cost more than the
        products. Exact: |x * w| <= 2^14, and the int32 sum wraps as the TOSA accumulator may not
        overflow. In the border form, x[...] is `fill` for a tap t whose bit t of `valid` is clear (that
        address is not read)."""
        arrays = (acc, x, offsets, w, bias)
        if any(not isinstance(v, types.Array) or v.layout != "C" for v in arrays):
            return None
        signature = types.void(acc, a0, x, x0, step, offsets, w, bias, count, channels, valid, fill)

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)

            def data(i, elem):
                return builder.bitcast(context.make_array(sig.args[i])(context, builder, args[i]).data,
                                       elem.as_pointer())

            def index(i):
                return context.cast(builder, args[i], sig.args[i], types.int64)

            acc_data, x_data, offsets_data = data(0, _I32), data(2, _I8), data(5, i64)
            w_data, bias_data = data(6, _I8), data(7, _I32)
            a0, x0, step, count, channels = (index(i) for i in (1, 3, 4, 8, 9))
            module = builder.module
            masked_load8 = cgutils.get_or_insert_function(module, ir.FunctionType(
                bytes_t, [bytes_t.as_pointer(), _I32, mask_t, bytes_t]), "llvm.masked.load.v16i8.p0")
            masked_load32 = cgutils.get_or_insert_function(module, ir.FunctionType(
                acc_t, [acc_t.as_pointer(), _I32, mask_t, acc_t]), "llvm.masked.load.v16i32.p0")
            masked_store32 = cgutils.get_or_insert_function(module, ir.FunctionType(
                ir.VoidType(), [acc_t, acc_t.as_pointer(), _I32, mask_t]), "llvm.masked.store.v16i32.p0")
            offsets = [builder.load(builder.gep(offsets_data, [ir.Constant(i64, t)])) for t in range(taps)]
            one = ir.Constant(_I32, 1)
            valid = index(10)
            fill = _splat(builder, builder.trunc(index(11), _I8), bytes_t)

            def load_bytes(base, at, mask, passthru=ir.Constant(bytes_t, None)):
                pointer = builder.bitcast(builder.gep(base, [at]), bytes_t.as_pointer())
                value = builder.load(pointer, align=1) if mask is None else \
                    builder.call(masked_load8, [pointer, one, mask, passthru])
                return builder.sext(value, acc_t)

            def tap_masks(mask):
                """Per tap, the lanes `x` is read in: all of `mask` (every lane if None), or in the border form
                none where the tap's bit of `valid` is clear."""
                if not border:
                    return [mask] * taps
                lanes_mask = ir.Constant(mask_t, [1] * lanes) if mask is None else mask
                bits = [builder.trunc(builder.lshr(valid, ir.Constant(i64, t)), ir.IntType(1)) for t in range(taps)]
                return [builder.select(bit, lanes_mask, ir.Constant(mask_t, None)) for bit in bits]

            def words(base, at):
                return builder.bitcast(builder.gep(base, [at]), acc_t.as_pointer())

            def block(c, mask):
                """Channels c .. c+15 (those under `mask`) of every pixel."""
                weights = [load_bytes(w_data, builder.add(builder.mul(ir.Constant(i64, t), channels), c), mask)
                           for t in range(taps)]
                start = builder.load(words(bias_data, c), align=4) if mask is None else \
                    builder.call(masked_load32, [words(bias_data, c), one, mask, ir.Constant(acc_t, None)])
                reads = tap_masks(mask)
                with cgutils.for_range(builder, count) as loop:
                    pixel = builder.add(x0, builder.add(builder.mul(loop.index, step), c))
                    total = start
                    for t in range(taps):
                        value = load_bytes(x_data, builder.add(pixel, offsets[t]), reads[t], fill)
                        total = builder.add(total, builder.mul(value, weights[t]))
                    where = words(acc_data, builder.add(a0, builder.add(builder.mul(loop.index, channels), c)))
                    _store(builder, total, where, mask, masked_store32, 4)

            _in_blocks(builder, channels, lanes, block)
            return context.get_dummy_value()

        return signature, codegen

    return depthwise_rows


@intrinsic
def offset_rows_avx512(typingctx, dst, d0, ldd, src, s0, lds, rows, count, padded):
    """dst[d0 + i*ldd + k] = src[s0 + i*lds + k] ^ -128 for k < count and 0 for count <= k < padded, i < rows:
    int8 activations as `vpdpbusd` reads them (plus 128, as uint8 bits), K padded with zeros to whole groups.
    64 bytes a step under a byte mask (AVX-512BW); C-contiguous int8 arrays of any rank, offsets counting
    elements of the flattened arrays. Written as IR for the reason `requantize_rows_avx512` is: the loop
    LLVM vectorized checked its arrays for overlap before each row, which at K = 16 cost more than the copy."""
    if any(not isinstance(v, types.Array) or v.layout != "C" for v in (dst, src)):
        return None
    signature = types.void(dst, d0, ldd, src, s0, lds, rows, count, padded)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)

        def data(i):
            return builder.bitcast(context.make_array(sig.args[i])(context, builder, args[i]).data, _I8.as_pointer())

        def index(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)

        dst_data, src_data = data(0), data(3)
        d0, ldd, s0, lds, rows, count, padded = (index(i) for i in (1, 2, 4, 5, 6, 7, 8))
        masked_load, masked_store = _masked_bytes64(builder.module)
        pointer_t = _BYTES64.as_pointer()
        top = ir.Constant(_BYTES64, [0x80] * 64)
        one = ir.Constant(_I32, 1)
        with cgutils.for_range(builder, rows) as row:
            source = builder.add(s0, builder.mul(row.index, lds))
            target = builder.add(d0, builder.mul(row.index, ldd))
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), padded, ir.Constant(i64, 64), i64) as (k, _):
                # Lanes past `count` load 0x80 (not memory), which the flip makes the zero padding.
                at = builder.bitcast(builder.gep(src_data, [builder.add(source, k)]), pointer_t)
                loaded = builder.call(masked_load, [at, one, _below64(builder, builder.sub(count, k)), top])
                where = builder.bitcast(builder.gep(dst_data, [builder.add(target, k)]), pointer_t)
                builder.call(masked_store, [builder.xor(loaded, top), where, one,
                                            _below64(builder, builder.sub(padded, k))])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def patch_rows_avx512(typingctx, patch, p0, ldp, x, x0, step, row_offsets, width, count):
    """The im2col patches of `count` pixels whose taps are all inside the input: for i < count and each
    kernel row t < len(row_offsets), patch[p0 + i*ldp + t*width + k] = x[x0 + i*step + row_offsets[t] + k] ^ -128
    for k < width (a kernel row's taps, contiguous in the input when the dilation across is 1; width <= 64),
    int8 as `vpdpbusd` reads it (plus 128). One masked 64-byte load, flip and store per kernel row; the
    loop over taps and channels it replaces took two thirds of a 224x224x3 stem convolution (3 channels a
    tap, a bounds check each). C-contiguous int8 arrays of any rank, offsets counting flattened elements."""
    if any(not isinstance(v, types.Array) or v.layout != "C" for v in (patch, x, row_offsets)):
        return None
    signature = types.void(patch, p0, ldp, x, x0, step, row_offsets, width, count)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)

        def array(i):
            return context.make_array(sig.args[i])(context, builder, args[i])

        def index(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)

        patch_data = builder.bitcast(array(0).data, _I8.as_pointer())
        x_data = builder.bitcast(array(3).data, _I8.as_pointer())
        offsets = array(6)
        offsets_data, kernel_rows = builder.bitcast(offsets.data, i64.as_pointer()), offsets.nitems
        p0, ldp, x0, step, width, count = (index(i) for i in (1, 2, 4, 5, 7, 8))
        masked_load, masked_store = _masked_bytes64(builder.module)
        pointer_t = _BYTES64.as_pointer()
        top = ir.Constant(_BYTES64, [0x80] * 64)
        mask = _below64(builder, width)
        one = ir.Constant(_I32, 1)
        with cgutils.for_range(builder, count) as pixel:
            source = builder.add(x0, builder.mul(pixel.index, step))
            target = builder.add(p0, builder.mul(pixel.index, ldp))
            with cgutils.for_range(builder, kernel_rows) as row:
                offset = builder.load(builder.gep(offsets_data, [row.index]))
                at = builder.bitcast(builder.gep(x_data, [builder.add(source, offset)]), pointer_t)
                loaded = builder.call(masked_load, [at, one, mask, top])
                to = builder.gep(patch_data, [builder.add(target, builder.mul(row.index, width))])
                builder.call(masked_store, [builder.xor(loaded, top), builder.bitcast(to, pointer_t), one, mask])
        return context.get_dummy_value()

    return signature, codegen


def _requantize_rows(saturating: bool):
    """The requantizing epilogue; `saturating`: for the full int8 range and shifts of at least 32 only (the
    caller checks), clamping by the int32-to-int8 conversion's signed saturation instead of in float64:
    there acc * scale < 2^30 in magnitude, so its floor and the zero point fit int32, and a value the
    float64 rounding could move lies beyond both bounds (`requant.float64_applies`)."""
    @intrinsic
    def requantize_rows(typingctx, out, o0, ldo, acc, a0, lda, rows, count, k0, scale, round_up, round_down, low,
                        high, zp):
        """out[o0 + i*ldo + j] = floor(clamp(acc[a0 + i*lda + j] * scale[k0 + j] + rounding, low, high)) + zp
        for i < rows, j < count, where rounding is round_up[k0 + j] for a value >= 0 and round_down[k0 + j]
        below: TOSA's apply_scale_32 in the float64 strategy (kernels/requant.py, exact where
        `float64_applies`), an int32 `acc`, an int8 `out`, float64 per-channel arrays, all C-contiguous of
        any rank (offsets count elements of the flattened arrays); `low`, `high` are the clamp's bounds less
        the zero point. 16 values a step, the last block under a mask; the floor is the conversion's own
        rounding mode (AVX-512 embedded rounding). Written as IR because the epilogue loop LLVM vectorized
        checked its arrays' address ranges for overlap before each row, as costly as the row's arithmetic
        at 96 channels."""
        return _requantize_signature(saturating, out, o0, ldo, acc, a0, lda, rows, count, k0, scale, round_up,
                                     round_down, low, high, zp)

    return requantize_rows


def _requantize_signature(saturating, out, o0, ldo, acc, a0, lda, rows, count, k0, scale, round_up, round_down,
                          low, high, zp):
    if any(not isinstance(v, types.Array) or v.layout != "C" for v in (out, acc, scale, round_up, round_down)):
        return None
    signature = types.void(out, o0, ldo, acc, a0, lda, rows, count, k0, scale, round_up, round_down, low, high, zp)
    lanes = 16
    f64 = ir.DoubleType()
    words_t, doubles_t, bytes_t = ir.VectorType(_I32, lanes), ir.VectorType(f64, lanes), ir.VectorType(_I8, lanes)
    mask_t = ir.VectorType(ir.IntType(1), lanes)
    half_t, half_words_t = ir.VectorType(f64, 8), ir.VectorType(_I32, 8)

    def codegen(context, builder, sig, args):
        def data(i, elem):
            return builder.bitcast(context.make_array(sig.args[i])(context, builder, args[i]).data, elem.as_pointer())

        def index(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)

        def double(i):
            return context.cast(builder, args[i], sig.args[i], types.float64)

        out_data, acc_data = data(0, _I8), data(3, _I32)
        scale_data, up_data, down_data = data(9, f64), data(10, f64), data(11, f64)
        o0, ldo, a0, lda, rows, count, k0 = (index(i) for i in (1, 2, 4, 5, 6, 7, 8))
        low, high = _splat(builder, double(12), doubles_t), _splat(builder, double(13), doubles_t)
        zp = _splat(builder, builder.trunc(index(14), _I32), words_t)
        module = builder.module

        def function(name, result, operands):
            return cgutils.get_or_insert_function(module, ir.FunctionType(result, operands), name)

        masked_load_words = function("llvm.masked.load.v16i32.p0", words_t, [words_t.as_pointer(), _I32, mask_t, words_t])
        masked_load_doubles = function("llvm.masked.load.v16f64.p0", doubles_t,
                                       [doubles_t.as_pointer(), _I32, mask_t, doubles_t])
        masked_store_bytes = function("llvm.masked.store.v16i8.p0", ir.VoidType(), [bytes_t, bytes_t.as_pointer(), _I32, mask_t])
        floor_convert = function("llvm.x86.avx512.mask.cvtpd2dq.512", half_words_t,
                                 [half_t, half_words_t, ir.IntType(8), _I32])
        narrow = function("llvm.x86.avx512.mask.pmovs.db.512", bytes_t, [words_t, bytes_t, ir.IntType(16)])
        fma = function("llvm.fma.v16f64", doubles_t, [doubles_t] * 3)
        one = ir.Constant(_I32, 1)

        def at(base, offset, vector_t):
            return builder.bitcast(builder.gep(base, [offset]), vector_t.as_pointer())

        def load(base, offset, vector_t, masked_load, mask, align):
            if mask is None:
                return builder.load(at(base, offset, vector_t), align=align)
            return builder.call(masked_load, [at(base, offset, vector_t), one, mask, ir.Constant(vector_t, None)])

        def block(j, mask):
            k = builder.add(k0, j)
            scale = load(scale_data, k, doubles_t, masked_load_doubles, mask, 8)
            up = load(up_data, k, doubles_t, masked_load_doubles, mask, 8)
            down = load(down_data, k, doubles_t, masked_load_doubles, mask, 8)
            with cgutils.for_range(builder, rows) as loop:
                v = load(acc_data, builder.add(a0, builder.add(builder.mul(loop.index, lda), j)), words_t,
                         masked_load_words, mask, 4)
                rounding = builder.select(builder.icmp_signed(">=", v, ir.Constant(words_t, None)), up, down)
                # One fused multiply-add: where the product is exact (below 2^53) it equals the multiply and
                # the add; above, the value lies beyond both bounds either way (`float64_applies`).
                t = builder.call(fma, [builder.sitofp(v, doubles_t), scale, rounding])
                if not saturating:
                    # Compare and select, which x86 does in one vmaxpd or vminpd (maxnum's NaN rules take three).
                    t = builder.select(builder.fcmp_ordered(">", t, low), t, low)
                    t = builder.select(builder.fcmp_ordered("<", t, high), t, high)
                halves = [builder.call(floor_convert, [
                    builder.shuffle_vector(t, t, ir.Constant(ir.VectorType(_I32, 8), list(range(h * 8, h * 8 + 8)))),
                    ir.Constant(half_words_t, None), ir.Constant(ir.IntType(8), -1), ir.Constant(_I32, 9)])
                    for h in range(2)]   # 9: round toward negative infinity, exceptions suppressed
                q = builder.shuffle_vector(halves[0], halves[1], ir.Constant(ir.VectorType(_I32, lanes), list(range(lanes))))
                q = builder.add(q, zp)
                q = builder.call(narrow, [q, ir.Constant(bytes_t, None), ir.Constant(ir.IntType(16), -1)]) \
                    if saturating else builder.trunc(q, bytes_t)
                where = at(out_data, builder.add(o0, builder.add(builder.mul(loop.index, ldo), j)), bytes_t)
                _store(builder, q, where, mask, masked_store_bytes, 1)

        _in_blocks(builder, count, lanes, block)
        return context.get_dummy_value()

    return signature, codegen


requantize_rows_avx512 = _requantize_rows(False)
requantize_rows_saturating_avx512 = _requantize_rows(True)
# Depthwise rows by kernel size (3x3, 5x5); other kernel sizes take the generic loops.
depthwise_avx512_9 = _depthwise_rows(9, False)
depthwise_avx512_25 = _depthwise_rows(25, False)
depthwise_border_avx512_9 = _depthwise_rows(9, True)
depthwise_border_avx512_25 = _depthwise_rows(25, True)


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
