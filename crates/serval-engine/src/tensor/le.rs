//! Elements in their binary form: little-endian, row-major, as the V2 binary extension, gRPC's
//! raw contents and serval's worker frames carry them.

/// A fixed-size element with a little-endian form.
pub trait LeBytes: Copy {
    const SIZE: usize;
    fn read(bytes: &[u8]) -> Self;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

le_bytes!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// The elements of `bytes` (a trailing partial element is ignored: callers check the length).
pub fn decode<T: LeBytes>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::read).collect()
}

/// Appends the binary form of `values` to `out`.
pub fn encode<T: LeBytes>(values: &[T], out: &mut Vec<u8>) {
    out.reserve(values.len() * T::SIZE);
    for v in values {
        v.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut out = Vec::new();
        encode(&[1.5f32, -2.0], &mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(decode::<f32>(&out), vec![1.5, -2.0]);
        let mut out = Vec::new();
        encode(&[i64::MIN, 7], &mut out);
        assert_eq!(decode::<i64>(&out), vec![i64::MIN, 7]);
        assert_eq!(
            decode::<u16>(&[1, 0, 2]),
            vec![1],
            "a partial element is left out"
        );
    }
}
