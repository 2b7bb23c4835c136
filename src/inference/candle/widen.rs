//! candle has SIMD dot products for Q8_0 and the K-quants but computes Q5_0 with scalar code,
//! which made Qwen2.5 files (their "Q4_K_M" mixes in Q5_0 where rows are not a multiple of 256)
//! several times slower on candle. A Q5_0 weight is `d · (q − 16)` with q in 0..32, which Q8_0
//! (`d · q8`, q8 an i8) holds exactly: same scale, `q8 = q − 16`. So at load we re-encode Q5_0
//! tensors as Q8_0 — identical weights, 34 instead of 22 bytes per 32 — and serve the new bytes
//! through a reader that appends them past the end of the file.

use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::{gguf_file, GgmlDType};

const Q5_0_BLOCK_BYTES: usize = 22;
const Q8_0_BLOCK_BYTES: usize = 34;
const BLOCK: usize = 32;

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

/// A file with extra bytes logically appended after its end.
pub struct ExtendedReader<R> {
    inner: R,
    inner_len: u64,
    extra: Vec<u8>,
    position: u64,
}

impl<R: Read + Seek> Read for ExtendedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position < self.inner_len {
            self.inner.seek(SeekFrom::Start(self.position))?;
            let room = (self.inner_len - self.position).min(buf.len() as u64) as usize;
            let n = self.inner.read(&mut buf[..room])?;
            self.position += n as u64;
            return Ok(n);
        }
        let start = (self.position - self.inner_len) as usize;
        let available = self.extra.get(start..).unwrap_or(&[]);
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl<R> Seek for ExtendedReader<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let end = self.inner_len + self.extra.len() as u64;
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => end.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}

/// Points every Q5_0 tensor of `content` at a Q8_0 copy; returns the reader that serves the
/// copies and how many tensors were widened.
pub fn widen_q5_0<R: Read + Seek>(
    content: &mut gguf_file::Content,
    mut inner: R,
) -> std::io::Result<(ExtendedReader<R>, usize)> {
    let inner_len = inner.seek(SeekFrom::End(0))?;
    let mut extra = Vec::new();
    let mut widened = 0;
    for info in content.tensor_infos.values_mut() {
        if info.ggml_dtype != GgmlDType::Q5_0 {
            continue;
        }
        // The header check already proved the tensor lies inside the file.
        let blocks = info.shape.elem_count() / BLOCK;
        let mut q5 = vec![0u8; blocks * Q5_0_BLOCK_BYTES];
        inner.seek(SeekFrom::Start(content.tensor_data_offset + info.offset))?;
        inner.read_exact(&mut q5)?;
        let new_offset = inner_len + extra.len() as u64 - content.tensor_data_offset;
        let start = extra.len();
        extra.resize(start + blocks * Q8_0_BLOCK_BYTES, 0);
        for (q5, q8) in q5
            .chunks_exact(Q5_0_BLOCK_BYTES)
            .zip(extra[start..].chunks_exact_mut(Q8_0_BLOCK_BYTES))
        {
            q5_0_block_to_q8_0(q5, q8);
        }
        info.offset = new_offset;
        info.ggml_dtype = GgmlDType::Q8_0;
        widened += 1;
    }
    let reader = ExtendedReader {
        inner,
        inner_len,
        extra,
        position: 0,
    };
    Ok((reader, widened))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{quantized::ggml_file::qtensor_from_ggml, Device};

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
        let mut q8 = vec![0u8; 64 * Q8_0_BLOCK_BYTES];
        for (a, b) in q5.chunks_exact(22).zip(q8.chunks_exact_mut(34)) {
            q5_0_block_to_q8_0(a, b);
        }
        let dims = vec![2, 1024];
        let original = qtensor_from_ggml(GgmlDType::Q5_0, &q5, dims.clone(), &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let widened = qtensor_from_ggml(GgmlDType::Q8_0, &q8, dims, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(original, widened);
        assert!(original.iter().any(|w| *w != 0.0));
    }

    #[test]
    fn the_extended_reader_reads_across_the_join() {
        let mut reader = ExtendedReader {
            inner: std::io::Cursor::new(b"abc".to_vec()),
            inner_len: 3,
            extra: b"defg".to_vec(),
            position: 0,
        };
        reader.seek(SeekFrom::Start(1)).unwrap();
        let mut out = [0u8; 5];
        reader.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"bcdef");
        assert_eq!(reader.seek(SeekFrom::End(0)).unwrap(), 7);
        assert!(reader.seek(SeekFrom::Current(-8)).is_err());
    }
}
