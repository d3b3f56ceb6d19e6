//! The one random generator of iterdeploy: Xoshiro256++, seeded explicitly.
//!
//! rand documents Xoshiro256++ as a portable generator whose output stream
//! does not change between versions, so the same seed gives the same numbers
//! on every machine. Never use `thread_rng`; every function that samples
//! takes `&mut impl Rng` (or this type) from its caller.

use rand::SeedableRng;
pub use rand::rngs::Xoshiro256PlusPlus as Rng;

/// A generator for `seed`.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// An independent stream for (`seed`, `stream`), e.g. one per task or per
/// generation, so adding a stream never shifts the numbers of another.
pub fn stream(seed: u64, stream: u64) -> Rng {
    // SplitMix64 finaliser on the pair: well-spread 64-bit seeds.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Rng::seed_from_u64(z ^ (z >> 31))
}
