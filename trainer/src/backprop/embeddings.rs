//! Token embeddings before their layer norm: `word[id] + position[p] + token_type (+
//! shape[s])`, with `p` the index of the piece within its sentence and `s` its word shape.

use super::scalar::Real;

/// Gathers `out[i] = word[ids[i]] + position[p_i] + token_type` for every piece `i`, `out`
/// `[N, D]` overwritten, `D = token_type.len()`. Sentence `s` is `ids[offsets[s]..offsets[s+1]]`;
/// ids and positions must be in range of the tables (a validated [`super::PieceBatch`] is).
/// With a shape table `Some((table, shapes))`, `table[shapes[i]]` is added too.
pub fn embeddings_forward<T: Real>(
    word: &[T],
    position: &[T],
    token_type: &[T],
    shape: Option<(&[T], &[u8])>,
    ids: &[u32],
    offsets: &[usize],
    out: &mut [T],
) {
    let d = token_type.len();
    debug_assert_eq!(out.len(), ids.len() * d);
    for w in offsets.windows(2) {
        for (pos, i) in (w[0]..w[1]).enumerate() {
            let id = ids[i] as usize;
            let wr = &word[id * d..(id + 1) * d];
            let pr = &position[pos * d..(pos + 1) * d];
            let row = &mut out[i * d..(i + 1) * d];
            for (k, o) in row.iter_mut().enumerate() {
                *o = wr[k] + pr[k] + token_type[k];
            }
            if let Some((table, shapes)) = shape {
                let s = usize::from(shapes[i]);
                for (o, &v) in row.iter_mut().zip(&table[s * d..(s + 1) * d]) {
                    *o += v;
                }
            }
        }
    }
}

/// Backward of [`embeddings_forward`] given `d_out` `[N, D]`: scatter-adds each row into
/// `d_word[ids[i]]` and `d_position[p_i]` (and `d_shape[shapes[i]]` when given), and adds the
/// sum of all rows to `d_token_type`.
pub fn embeddings_backward<T: Real>(
    ids: &[u32],
    offsets: &[usize],
    d_out: &[T],
    d_word: &mut [T],
    d_position: &mut [T],
    d_token_type: &mut [T],
    d_shape: Option<(&mut [T], &[u8])>,
) {
    if let Some((table, shapes)) = d_shape {
        let d = d_token_type.len();
        for (g, &s) in d_out.chunks_exact(d).zip(shapes) {
            let s = usize::from(s);
            for (a, &v) in table[s * d..(s + 1) * d].iter_mut().zip(g) {
                *a += v;
            }
        }
    }
    let d = d_token_type.len();
    debug_assert_eq!(d_out.len(), ids.len() * d);
    for w in offsets.windows(2) {
        for (pos, i) in (w[0]..w[1]).enumerate() {
            let id = ids[i] as usize;
            let g = &d_out[i * d..(i + 1) * d];
            for (a, &v) in d_word[id * d..(id + 1) * d].iter_mut().zip(g) {
                *a += v;
            }
            for (a, &v) in d_position[pos * d..(pos + 1) * d].iter_mut().zip(g) {
                *a += v;
            }
            for (a, &v) in d_token_type.iter_mut().zip(g) {
                *a += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;

    #[test]
    fn embedding_gradients_match_finite_differences() {
        let (vocab, max_pos, d, classes) = (5, 4, 3, 3);
        let ids = [4u32, 1, 1, 0, 4, 2, 1];
        let shapes = [2u8, 0, 1, 1, 2, 0, 2];
        let offsets = [0, 3, 3, 4, 7];
        let word = random_vec(vocab * d, 1.0, 1);
        let position = random_vec(max_pos * d, 1.0, 2);
        let tt = random_vec(d, 1.0, 3);
        let table = random_vec(classes * d, 1.0, 5);
        let r = random_vec(ids.len() * d, 1.0, 4);
        let loss = |w: &[f64], p: &[f64], t: &[f64], s: &[f64]| {
            let mut out = vec![0.0; ids.len() * d];
            embeddings_forward(w, p, t, Some((s, &shapes[..])), &ids, &offsets, &mut out);
            weighted_sum(&out, &r)
        };
        let mut out = vec![0.0; ids.len() * d];
        embeddings_forward(&word, &position, &tt, None, &ids, &offsets, &mut out);
        assert_eq!(out[3 * d], word[0] + position[0] + tt[0]);
        assert_eq!(out[6 * d + 1], word[d + 1] + position[2 * d + 1] + tt[1]);
        let plain = out.clone();
        embeddings_forward(
            &word,
            &position,
            &tt,
            Some((&table, &shapes)),
            &ids,
            &offsets,
            &mut out,
        );
        assert_eq!(out[6 * d + 1], plain[6 * d + 1] + table[2 * d + 1]);
        assert_eq!(out[d], plain[d] + table[0]);
        let (mut dw, mut dp, mut dt) = (vec![0.0; vocab * d], vec![0.0; max_pos * d], vec![0.0; d]);
        let mut ds = vec![0.0; classes * d];
        embeddings_backward(
            &ids,
            &offsets,
            &r,
            &mut dw,
            &mut dp,
            &mut dt,
            Some((&mut ds, &shapes)),
        );
        assert_grad_close(
            "d_word",
            &dw,
            &numeric_grad(&word, |w| loss(w, &position, &tt, &table)),
        );
        assert_grad_close(
            "d_position",
            &dp,
            &numeric_grad(&position, |p| loss(&word, p, &tt, &table)),
        );
        assert_grad_close(
            "d_token_type",
            &dt,
            &numeric_grad(&tt, |t| loss(&word, &position, t, &table)),
        );
        assert_grad_close(
            "d_shape",
            &ds,
            &numeric_grad(&table, |s| loss(&word, &position, &tt, s)),
        );
        assert!(dp[3 * d..].iter().all(|&g| g == 0.0));
        assert!(dw[3 * d..4 * d].iter().all(|&g| g == 0.0));
    }
}
