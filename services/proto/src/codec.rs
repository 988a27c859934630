//! The API's codec: prost's, with a 1 KiB starting buffer instead of tonic's 8 KiB. A
//! response stream keeps its encoder's buffer for as long as it lasts, so with 10,000
//! `WatchDeployments` streams of ~200-byte messages the default would be 80 MiB of
//! mostly empty buffers; a larger message (a List page) grows the buffer as it needs.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Starting size of an encoder's or decoder's buffer.
const BUFFER_SIZE: usize = 1024;
/// Encoded bytes a stream gathers before handing them to the transport (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Encodes `T` and decodes `U` with prost.
#[derive(Debug, Clone, Copy)]
pub struct Codec1K<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec1K<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for Codec1K<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
