//! Run-time choice of the widest vector instructions the CPU has, for
//! loops the compiler vectorises on its own: [`widest!`] compiles one body
//! three times (AVX-512, AVX2 + FMA, and the baseline target) and calls the
//! widest the CPU supports. The binary must run on any x86-64, so the
//! baseline is what the compiler targets by default (SSE2: 4 f32 or 2 f64
//! lanes); without this, element-wise kernels ran at that width on
//! AVX-512 machines. Users: the transformer's fused kernels
//! ([`crate::policy::transformer::kernels`]) and Adam ([`crate::optim`]).

/// Defines `$name`, which runs the `#[inline(always)]` function `$body`
/// compiled for the widest vector instructions the CPU has (AVX-512, or
/// AVX2 + FMA; chosen at run time, so the binary still runs on any x86-64
/// and other architectures compile only the portable body).
///
/// The results are the same bits on every path: Rust never contracts a
/// multiply and an add into a fused multiply-add on its own, and the
/// bodies' sums run in their written order, so the wider code only does
/// more lanes of the same operations at once.
macro_rules! widest {
    ($(#[$doc:meta])* $vis:vis fn $name:ident$(<$T:ident: $bound:path>)? = $body:ident($($a:ident: $t:ty),* $(,)?)) => {
        $(#[$doc])*
        $vis fn $name$(<$T: $bound>)?($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4$(<$T: $bound>)?($($a: $t),*) {
                    $body$(::<$T>)?($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3$(<$T: $bound>)?($($a: $t),*) {
                    $body$(::<$T>)?($($a),*)
                }
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                    // SAFETY: the CPU has every feature v4 enables (just checked).
                    return unsafe { v4$(::<$T>)?($($a),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (just checked).
                    return unsafe { v3$(::<$T>)?($($a),*) };
                }
            }
            $body$(::<$T>)?($($a),*)
        }
    };
}

pub(crate) use widest;
