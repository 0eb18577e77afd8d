//! The raw hash functions: MD5 (for carbon_ch), FNV-1a 32 and 64 with both byte conventions, jump.
//!
//! Everything here is a pure function of bytes; ring semantics live in `ring.rs`.

/// MD5 sine-derived round constants (RFC 1321 §3.4).
#[rustfmt::skip]
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const MD5_INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// One MD5 compression of a 64-byte block, fully unrolled by the macros below.
#[inline(always)]
fn md5_compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (word, chunk) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;

    // a = b + rotl(a + K[i] + m[g] + f(b, c, d), s), with the terms that do not wait for `b` added first.
    macro_rules! step {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $g:expr, $i:expr, $s:expr) => {
            $a = $b
                .wrapping_add($a.wrapping_add(K[$i].wrapping_add(m[$g])).wrapping_add($f($b, $c, $d)).rotate_left($s));
        };
    }
    macro_rules! round {
        ($f:expr, $g:expr, $base:expr, $s0:expr, $s1:expr, $s2:expr, $s3:expr) => {
            let mut i = $base;
            while i < $base + 16 {
                step!($f, a, b, c, d, $g(i), i, $s0);
                step!($f, d, a, b, c, $g(i + 1), i + 1, $s1);
                step!($f, c, d, a, b, $g(i + 2), i + 2, $s2);
                step!($f, b, c, d, a, $g(i + 3), i + 3, $s3);
                i += 4;
            }
        };
    }
    // RFC 1321's F, G, H, I in forms with fewer operations after `x` (the newest value) is known.
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (y & !z).wrapping_add(x & z);
    let h = |x: u32, y: u32, z: u32| x ^ (y ^ z);
    let i_ = |x: u32, y: u32, z: u32| y ^ (x | !z);
    round!(f, |i: usize| i, 0, 7, 12, 17, 22);
    round!(g, |i: usize| (5 * i + 1) % 16, 16, 5, 9, 14, 20);
    round!(h, |i: usize| (3 * i + 5) % 16, 32, 4, 11, 16, 23);
    round!(i_, |i: usize| (7 * i) % 16, 48, 6, 10, 15, 21);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// The MD5 digest of `data`.
pub(crate) fn md5(data: &[u8]) -> [u8; 16] {
    let mut state = MD5_INIT;
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        let mut buf = [0u8; 64];
        buf.copy_from_slice(block);
        md5_compress(&mut state, &buf);
    }
    // Padding: 0x80, zeros, the bit length; one block if the rest leaves room for it, else two.
    let rest = blocks.remainder();
    let bits = (data.len() as u64).wrapping_mul(8).to_le_bytes();
    let mut last = [0u8; 64];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0x80;
    if rest.len() >= 56 {
        md5_compress(&mut state, &last);
        last = [0u8; 64];
    }
    last[56..].copy_from_slice(&bits);
    md5_compress(&mut state, &last);
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// carbon_ch position: the first two bytes of the MD5 digest, big-endian (`int(hexdigest()[:4], 16)`).
#[inline]
pub(crate) fn carbon_position(data: &[u8]) -> u16 {
    let d = md5(data);
    u16::from_be_bytes([d[0], d[1]])
}

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;
const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// How bytes enter an FNV-1a XOR: carbon (Python `bytes`) uses them unsigned; carbon-c-relay XORs a C `char`,
/// which is signed on x86, so a byte >= 0x80 is sign-extended first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bytes {
    Unsigned,
    Signed,
}

/// FNV-1a 32 of `data`.
#[inline]
pub(crate) fn fnv1a_32(data: &[u8], bytes: Bytes) -> u32 {
    let mut h = FNV32_OFFSET;
    match bytes {
        Bytes::Unsigned => {
            for &b in data {
                h = (h ^ u32::from(b)).wrapping_mul(FNV32_PRIME);
            }
        }
        Bytes::Signed => {
            for &b in data {
                h = (h ^ (i32::from(b as i8) as u32)).wrapping_mul(FNV32_PRIME);
            }
        }
    }
    h
}

/// fnv1a_ch position: the 32-bit hash folded to 16 bits, `(h >> 16) ^ (h & 0xffff)`.
#[inline]
pub(crate) fn fnv1a_position(data: &[u8], bytes: Bytes) -> u16 {
    let h = fnv1a_32(data, bytes);
    ((h >> 16) ^ (h & 0xffff)) as u16
}

/// FNV-1a 64 with carbon-c-relay's signed bytes (the jump_fnv1a_ch key).
#[inline]
pub(crate) fn fnv1a_64_signed(data: &[u8]) -> u64 {
    let mut h = FNV64_OFFSET;
    for &b in data {
        h = (h ^ (i64::from(b as i8) as u64)).wrapping_mul(FNV64_PRIME);
    }
    h
}

/// Lamping & Veach's jump consistent hash with carbon-c-relay's exact `double` evaluation order.
/// Returns a bucket in `0..buckets`; `buckets` must be at least 1 (0 yields 0).
#[inline]
pub(crate) fn jump(mut key: u64, buckets: usize) -> usize {
    let n = buckets as i64;
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // (double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)); the product stays below 2^62.
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

/// carbon-c-relay's next key for the following jump_fnv1a_ch replica (xorshift64*).
#[inline]
pub(crate) fn xorshift(mut h: u64) -> u64 {
    h ^= h >> 12;
    h ^= h << 25;
    h ^= h >> 27;
    h.wrapping_mul(2_685_821_657_736_338_717)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_rfc1321_vectors() {
        let vectors = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in vectors {
            assert_eq!(hex(md5(input.as_bytes())), want, "md5({input:?})");
        }
        // Every length from 0 to 139 (one, two and three blocks; every padding case), checked as the MD5 of
        // the concatenated digests, computed with Python's hashlib.
        let digests: Vec<u8> =
            (0..140usize).flat_map(|n| md5(&(0..n).map(|i| ((i * 7 + 3) % 256) as u8).collect::<Vec<_>>())).collect();
        assert_eq!(hex(md5(&digests)), "57666a7201e2ca9f42a2538dac03ef75");
    }

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a test vectors (ASCII, so both byte conventions agree).
        assert_eq!(fnv1a_32(b"", Bytes::Unsigned), 0x811c9dc5);
        assert_eq!(fnv1a_32(b"a", Bytes::Signed), 0xe40c292c);
        assert_eq!(fnv1a_32(b"foobar", Bytes::Unsigned), 0xbf9cf968);
        assert_eq!(fnv1a_64_signed(b"foobar"), 0x85944171f73967e8);
        assert_eq!(fnv1a_64_signed(b"changed"), 0xdf38879af614707b);
    }

    #[test]
    fn signed_bytes_differ_only_above_0x7f() {
        assert_eq!(fnv1a_32(b"abc.def", Bytes::Signed), fnv1a_32(b"abc.def", Bytes::Unsigned));
        let s = "café".as_bytes();
        assert_ne!(fnv1a_32(s, Bytes::Signed), fnv1a_32(s, Bytes::Unsigned));
    }

    #[test]
    fn jump_stays_in_range() {
        let mut key = 1u64;
        for n in 1..200 {
            key = xorshift(key);
            assert!(jump(key, n) < n);
        }
        assert_eq!(jump(12345, 1), 0);
        assert_eq!(jump(12345, 0), 0);
    }
}
