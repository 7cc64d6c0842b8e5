//! XXH64 (xxHash, 64-bit variant), the checksum of bundle format v1.
//!
//! Bit-exact with the reference `XXH64(data, len, seed)` of libxxhash. Not cryptographic: it
//! detects accidental corruption and tells bundles apart, it does not resist tampering.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline(always)]
fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge(acc: u64, v: u64) -> u64 {
    (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `data` with `seed`.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let (stripes, tail) = data.as_chunks::<32>();
    let mut h = if stripes.is_empty() {
        seed.wrapping_add(P5)
    } else {
        let mut v1 = seed.wrapping_add(P1).wrapping_add(P2);
        let mut v2 = seed.wrapping_add(P2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(P1);
        for stripe in stripes {
            let (lanes, _) = stripe.as_chunks::<8>();
            if let [a, b, c, d] = lanes {
                v1 = round(v1, u64::from_le_bytes(*a));
                v2 = round(v2, u64::from_le_bytes(*b));
                v3 = round(v3, u64::from_le_bytes(*c));
                v4 = round(v4, u64::from_le_bytes(*d));
            }
        }
        let h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        merge(merge(merge(merge(h, v1), v2), v3), v4)
    };
    h = h.wrapping_add(data.len() as u64);
    let (words, tail) = tail.as_chunks::<8>();
    for w in words {
        h ^= round(0, u64::from_le_bytes(*w));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    let (halves, tail) = tail.as_chunks::<4>();
    for w in halves {
        h ^= u64::from(u32::from_le_bytes(*w)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
    }
    for &b in tail {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

#[cfg(test)]
mod tests {
    use super::xxh64;

    #[test]
    fn matches_reference_vectors() {
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(b"a", 0), 0xd24e_c4f1_a98c_6e5b);
        assert_eq!(xxh64(b"abc", 0), 0x44bc_2cf5_ad77_0999);
        assert_eq!(
            xxh64(b"Nobody inspects the spammish repetition", 123),
            0xa8ba_4555_1f24_b7ae
        );
        let ramp: Vec<u8> = (0..100u8).collect();
        assert_eq!(xxh64(&ramp, 0x9E37_79B9_7F4A_7C15), 0x3b97_d91e_ba03_e785);
        let mut long: Vec<u8> = (0..=255u8).cycle().take(768).collect();
        long.extend_from_slice(b"xyz12");
        assert_eq!(xxh64(&long, 0), 0x9b7d_50c0_4781_8b1b);
    }
}
