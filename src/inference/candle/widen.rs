//! candle has SIMD dot products for Q8_0 and the K-quants but computes Q5_0 with scalar code,
//! which made Qwen2.5 files (their "Q4_K_M" mixes in Q5_0 where rows are not a multiple of 256)
//! several times slower on candle. A Q5_0 weight is `d · (q − 16)` with q in 0..32, which Q8_0
//! (`d · q8`, q8 an i8) holds exactly: same scale, `q8 = q − 16`. So at load we re-encode Q5_0
//! tensors as Q8_0: identical weights, 34 instead of 22 bytes per 32.

use candle_core::{
    quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor},
    Result,
};

const Q5_0_BLOCK_BYTES: usize = 22;
const Q8_0_BLOCK_BYTES: usize = 34;
const BLOCK: usize = 32;

/// The tensor itself, or for Q5_0 the Q8_0 tensor holding exactly its values.
pub fn without_q5_0(weight: QTensor) -> Result<QTensor> {
    if weight.dtype() != GgmlDType::Q5_0 {
        return Ok(weight);
    }
    let data = weight.data()?;
    let mut q8 = vec![0u8; data.len() / Q5_0_BLOCK_BYTES * Q8_0_BLOCK_BYTES];
    for (q5, q8) in data
        .chunks_exact(Q5_0_BLOCK_BYTES)
        .zip(q8.chunks_exact_mut(Q8_0_BLOCK_BYTES))
    {
        q5_0_block_to_q8_0(q5, q8);
    }
    qtensor_from_ggml(
        GgmlDType::Q8_0,
        &q8,
        weight.shape().dims().to_vec(),
        &weight.device(),
    )
}

/// Re-encodes one Q5_0 block as the Q8_0 block with the same values.
pub fn q5_0_block_to_q8_0(q5: &[u8], q8: &mut [u8]) {
    // Layout: f16 d, u32 high bits, 16 bytes of low nibbles (element j low, j + 16 high).
    q8[..2].copy_from_slice(&q5[..2]);
    let high = u32::from_le_bytes([q5[2], q5[3], q5[4], q5[5]]);
    for j in 0..BLOCK / 2 {
        let low = q5[6 + j];
        let first = (low & 0x0f) | ((((high >> j) & 1) as u8) << 4);
        let second = (low >> 4) | ((((high >> (j + 16)) & 1) as u8) << 4);
        q8[2 + j] = (first as i8 - 16) as u8;
        q8[2 + j + 16] = (second as i8 - 16) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn widened_blocks_hold_exactly_the_same_weights() {
        // Pseudo-random Q5_0 blocks with a few different scales.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut q5 = Vec::new();
        for block in 0..64u16 {
            // Positive normal f16 scales of several sizes.
            let d: u16 = 0x1c00 + block * 0x35;
            q5.extend_from_slice(&d.to_le_bytes());
            for _ in 0..20 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                q5.push(state as u8);
            }
        }
        let original =
            qtensor_from_ggml(GgmlDType::Q5_0, &q5, vec![2, 1024], &Device::Cpu).unwrap();
        let widened = without_q5_0(
            qtensor_from_ggml(GgmlDType::Q5_0, &q5, vec![2, 1024], &Device::Cpu).unwrap(),
        )
        .unwrap();
        assert_eq!(widened.dtype(), GgmlDType::Q8_0);
        let values = |t: &QTensor| {
            let dense = t.dequantize(&Device::Cpu).unwrap();
            dense.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (original, widened) = (values(&original), values(&widened));
        assert_eq!(original, widened);
        assert!(original.iter().any(|w| *w != 0.0));
    }
}
