//! Token batches with an attention mask.
//!
//! Positions come from the mask (the i-th real token of a row has position i), so a left-padded
//! row gets the same positions — and therefore the same outputs — as the unpadded sequence.
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// Which side padding goes on when rows of different lengths are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    Left,
    Right,
}

/// A batch of token ids `[batch, pos]` (u32) and an optional mask `[batch, pos]` (u8, 1 = real
/// token, 0 = padding). Without a mask every position is real.
#[derive(Debug, Clone)]
pub struct Batch {
    pub tokens: Tensor,
    pub mask: Option<Tensor>,
}

impl Batch {
    /// One unpadded sequence.
    pub fn from_ids(ids: &[u32]) -> Result<Self> {
        Self::from_rows(&[ids.to_vec()], Padding::Right, 0)
    }

    /// Rows of possibly different lengths, padded with `pad_id` on the given side. The mask is
    /// only stored when some row is actually padded.
    pub fn from_rows(rows: &[Vec<u32>], padding: Padding, pad_id: u32) -> Result<Self> {
        if rows.is_empty() {
            bail!("empty batch: no token rows were given");
        }
        if let Some(i) = rows.iter().position(|r| r.is_empty()) {
            bail!("empty batch row {i}: every row needs at least one token");
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in rows {
            let pad = len - r.len();
            let (pre, post) = match padding {
                Padding::Left => (pad, 0),
                Padding::Right => (0, pad),
            };
            ids.extend(std::iter::repeat_n(pad_id, pre).chain(r.iter().copied()).chain(std::iter::repeat_n(pad_id, post)));
            mask.extend(std::iter::repeat_n(0u8, pre).chain(std::iter::repeat_n(1u8, r.len())).chain(std::iter::repeat_n(0u8, post)));
        }
        let dev = crate::device::device()?;
        let tokens = Tensor::from_vec(ids, (rows.len(), len), &dev)?;
        let padded = rows.iter().any(|r| r.len() != len);
        let mask = if padded { Some(Tensor::from_vec(mask, (rows.len(), len), &dev)?) } else { None };
        Ok(Batch { tokens, mask })
    }

    /// A batch from an existing `[batch, pos]` id tensor (any integer dtype) and optional mask.
    pub fn from_tensor(tokens: &Tensor, mask: Option<&Tensor>) -> Result<Self> {
        if tokens.rank() != 2 {
            bail!("tokens must be a [batch, pos] tensor, got shape {:?}", tokens.dims());
        }
        let tokens = tokens.to_dtype(DType::U32)?;
        let mask = match mask {
            None => None,
            Some(m) => {
                if m.dims() != tokens.dims() {
                    bail!("attention mask shape {:?} does not match tokens shape {:?}", m.dims(), tokens.dims());
                }
                Some(m.ne(0u8)?.to_dtype(DType::U8)?)
            }
        };
        Ok(Batch { tokens, mask })
    }

    pub fn batch_size(&self) -> usize {
        self.tokens.dims()[0]
    }

    pub fn seq_len(&self) -> usize {
        self.tokens.dims()[1]
    }

    /// `[batch, pos]` u8 mask, 1 = real token (all ones when the batch has no padding).
    pub fn valid_mask(&self) -> Result<Tensor> {
        Ok(match &self.mask {
            Some(m) => m.clone(),
            None => Tensor::ones(self.tokens.dims(), DType::U8, self.tokens.device())?,
        })
    }

    /// Token ids per row, as nested vectors.
    pub fn rows(&self) -> Result<Vec<Vec<u32>>> {
        Ok(self.tokens.to_vec2::<u32>()?)
    }

    /// Position ids `[batch, pos]` (u32): count of real tokens before each position. Padding
    /// positions get the position of their neighbour; they are masked out anyway.
    pub fn positions(&self) -> Result<Tensor> {
        let (b, p) = self.tokens.dims2()?;
        match &self.mask {
            None => Ok(Tensor::arange(0u32, p as u32, self.tokens.device())?.unsqueeze(0)?.repeat((b, 1))?),
            Some(m) => {
                let m = m.to_vec2::<u8>()?;
                let mut pos = Vec::with_capacity(b * p);
                for row in m {
                    let mut seen = 0u32;
                    for v in row {
                        pos.push(seen);
                        seen += u32::from(v != 0);
                    }
                }
                Ok(Tensor::from_vec(pos, (b, p), self.tokens.device())?)
            }
        }
    }
}

impl TryFrom<&[u32]> for Batch {
    type Error = anyhow::Error;
    fn try_from(ids: &[u32]) -> Result<Self> {
        Batch::from_ids(ids)
    }
}

/// Token rows grouped into right-padded batches of at most `batch_size` rows.
pub fn batches(rows: &[Vec<u32>], batch_size: usize, pad_id: u32) -> Result<Vec<Batch>> {
    if rows.is_empty() {
        return Err(crate::QiError::invalid("inputs", "[]", "no token sequences to analyse").into());
    }
    rows.chunks(batch_size.max(1)).map(|c| Batch::from_rows(c, Padding::Right, pad_id)).collect()
}

/// Indices of real (non-padding) tokens of a `[batch, pos]` mask, flattened row-major.
pub fn valid_indices(mask: &Tensor) -> Result<Vec<u32>> {
    let m: Vec<u8> = mask.to_dtype(DType::U8)?.flatten_all()?.to_vec1()?;
    Ok(m.iter().enumerate().filter(|(_, &v)| v != 0).map(|(i, _)| i as u32).collect())
}

/// The real-token rows of a `[batch, pos, …]` activation as `[n_valid, features]` (f32).
pub fn valid_rows(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, p) = (x.dim(0)?, x.dim(1)?);
    let feat: usize = x.dims()[2..].iter().product();
    let flat = x.to_dtype(DType::F32)?.reshape((b * p, feat))?;
    let idx = valid_indices(mask)?;
    let idx = Tensor::from_vec(idx.clone(), idx.len(), x.device())?;
    Ok(flat.index_select(&idx, 0)?)
}
